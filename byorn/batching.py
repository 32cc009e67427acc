"""Which sample trains on what, and in which minibatch (pure functions).

:func:`resolve_plan` turns the method, the suspicious flags of the audit and
the review decisions into a per-sample role; :func:`plan_batches` builds one
epoch of *poison-aware* minibatches: every batch is all-clean or
all-suspicious, and the suspicious batches are spread evenly over the epoch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .data import VLDataset

METHODS = ("sft", "byorn-f", "byorn")


@dataclass
class Plan:
    """Per-sample roles for one training run.

    ``fixed``: (index, response text) pairs trained on that text as is.
    ``bootstrap``: indices whose response is replaced by the EMA model's own
    generation each time they are drawn (BYORn's suspicious samples).
    ``dropped``: ids left out, with the reason.
    """

    fixed: list[tuple[int, str]] = field(default_factory=list)
    bootstrap: list[int] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {"fixed": len(self.fixed), "bootstrap": len(self.bootstrap), "dropped": len(self.dropped)}


def resolve_plan(dataset: VLDataset, method: str, flags: Mapping[str, bool] | None = None,
                 decisions: Mapping[tuple[str, int], object] | None = None) -> Plan:
    """Each sample's role under ``method``, honouring review decisions.

    Decisions (objects with ``status`` and ``text``) win over the method:
    ``approved`` / ``edited`` train on their text, ``rejected`` on the
    original response, ``dropped`` are left out.  ``pending`` (or no decision)
    follows the method: SFT trains on the original, BYORn-F drops flagged
    samples, BYORn bootstraps them.  ``flags`` come from the audit's score
    split, never from ground truth.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method != "sft" and flags is None:
        raise ValueError(f"method {method!r} needs the audit's suspicious flags")
    decisions = decisions or {}
    if decisions and not isinstance(next(iter(decisions)), tuple):
        raise TypeError("decisions are keyed by (sample_id, turn) (DecisionStore.all())")
    plan = Plan()
    for i, s in enumerate(dataset):
        d = decisions.get((s.id, 0))  # turn 0 until batching is per turn
        status = getattr(d, "status", "pending")
        if status in ("approved", "edited"):
            plan.fixed.append((i, d.text))
        elif status == "rejected":
            plan.fixed.append((i, s.response))
        elif status == "dropped":
            plan.dropped[s.id] = "dropped by review"
        elif method != "sft" and flags.get(s.id, False):
            if method == "byorn-f":
                plan.dropped[s.id] = "flagged (BYORn-F)"
            else:
                plan.bootstrap.append(i)
        else:
            plan.fixed.append((i, s.response))
    return plan


def _chunks(idx: np.ndarray, size: int) -> list[list[int]]:
    return [idx[k:k + size].tolist() for k in range(0, len(idx), size)]


def plan_batches(n_fixed: int, bootstrap: Sequence[int], batch_size: int,
                 rng: np.random.Generator) -> list[tuple[bool, list[int]]]:
    """One epoch of minibatches as ``(is_bootstrap, positions)``.

    Fixed samples are addressed by their position ``0..n_fixed-1`` in
    ``Plan.fixed``; bootstrap samples by their dataset index.  Both groups
    are shuffled separately and cut into batches; the ``m`` bootstrap batches
    go to positions ``floor((k + 0.5) * n / m)`` of the ``n`` batches, i.e.
    evenly spread over the epoch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    fixed_batches = _chunks(rng.permutation(n_fixed), batch_size)
    boot_batches = _chunks(rng.permutation(np.asarray(bootstrap, dtype=int)), batch_size)
    n, m = len(fixed_batches) + len(boot_batches), len(boot_batches)
    boot_pos = {int((k + 0.5) * n / m) for k in range(m)} if m else set()
    out: list[tuple[bool, list[int]]] = []
    fi = bi = 0
    for pos in range(n):
        if pos in boot_pos:
            out.append((True, boot_batches[bi]))
            bi += 1
        else:
            out.append((False, fixed_batches[fi]))
            fi += 1
    return out
