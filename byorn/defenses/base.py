"""What a defense decides, and the registry of defenses.

A defense turns the training data, the audit's suspicious flags (when it uses
them) and the review decisions into a :class:`Plan`: for every sample, which
of its assistant turns train on what.

* a turn trains on its original text, on a fixed text (an approved or edited
  replacement, or a defense's cleaned text), or on a **bootstrapped** response
  that the EMA model generates during training (BYORn);
* a **masked** turn stays in the conversation as context but has no loss;
* a sample whose every turn is masked is **dropped**.

Review decisions always win over the defense (DESIGN.md section 5):
``approved`` / ``edited`` train on their text, ``rejected`` on the original,
``dropped`` masks the turn; ``pending`` (or no decision) follows the defense.
Flags come from the reference model's scores, never from ground truth.

Defenses register by name (:func:`register`, :data:`DEFENSES`) like the
attacks do, and :func:`get_defense` builds one; ``sft``, ``byorn-f``,
``byorn``, ``onion`` and ``bye`` are peers selectable wherever a method is.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

from ..data import Sample, VLDataset
from ..registry import build, registrar

logger = logging.getLogger(__name__)

TurnKey = tuple[str, int]  # (sample id, assistant turn index)

#: What happens to a pending flagged turn.
ON_FLAGGED = ("keep", "mask", "bootstrap")


@dataclass
class PlannedSample:
    """One training sample and the role of each of its assistant turns.

    ``sample`` is what trains (decisions' texts and a defense's edits already
    applied); turns in ``bootstrap`` are replaced by the EMA model's
    generation each time the sample is drawn; turns in ``masked`` have no loss.
    """

    sample: Sample
    bootstrap: frozenset[int] = frozenset()
    masked: frozenset[int] = frozenset()

    @property
    def trained_turns(self) -> set[int]:
        return set(range(self.sample.n_turns)) - set(self.masked)


@dataclass
class Plan:
    """Per-sample roles for one training run."""

    items: list[PlannedSample] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)  # sample id -> reason

    @property
    def fixed(self) -> list[int]:
        """Positions in ``items`` of samples with no bootstrapped turn."""
        return [i for i, it in enumerate(self.items) if not it.bootstrap]

    @property
    def bootstrap(self) -> list[int]:
        """Positions in ``items`` of samples with at least one bootstrapped turn."""
        return [i for i, it in enumerate(self.items) if it.bootstrap]

    def counts(self) -> dict[str, int]:
        """Samples by role (``fixed`` / ``bootstrap`` / ``dropped``) and turns by role."""
        return {"fixed": len(self.fixed), "bootstrap": len(self.bootstrap), "dropped": len(self.dropped),
                "turns_bootstrapped": sum(len(it.bootstrap) for it in self.items),
                "turns_masked": sum(len(it.masked) for it in self.items)}


def build_plan(dataset: VLDataset, on_flagged: str, flags: Mapping[TurnKey, bool] | None = None,
               decisions: Mapping[TurnKey, Any] | None = None, *,
               edit: Callable[[Sample], Sample] | None = None, flag_reason: str = "flagged") -> Plan:
    """Each turn's role: decisions first, then ``on_flagged`` for pending flagged turns.

    ``flags`` / ``decisions`` are keyed by ``(sample id, turn)``; decisions are
    objects with ``status`` and ``text``.  ``edit`` (optional) rewrites a
    sample before decisions apply (e.g. ONION's word removal).
    """
    if on_flagged not in ON_FLAGGED:
        raise ValueError(f"on_flagged must be one of {ON_FLAGGED}, got {on_flagged!r}")
    if on_flagged != "keep" and flags is None:
        raise ValueError("this defense needs the audit's suspicious flags")
    flags, decisions = flags or {}, decisions or {}
    plan = Plan()
    for s in dataset:
        sample = edit(s) if edit is not None else s
        boot, masked, reasons = set(), set(), []
        for k in range(s.n_turns):
            d = decisions.get((s.id, k))
            status = getattr(d, "status", "pending")
            if status in ("approved", "edited"):
                sample = sample.with_assistant(k, d.text)
            elif status == "rejected":
                sample = sample.with_assistant(k, s.assistant_texts()[k])
            elif status == "dropped":
                masked.add(k)
                reasons.append("dropped by review")
            elif flags.get((s.id, k), False) and on_flagged != "keep":
                if on_flagged == "mask":
                    masked.add(k)
                    reasons.append(flag_reason)
                else:
                    boot.add(k)
        if len(masked) == s.n_turns:
            plan.dropped[s.id] = reasons[0] if len(set(reasons)) == 1 else "; ".join(sorted(set(reasons)))
            continue
        plan.items.append(PlannedSample(sample, frozenset(boot), frozenset(masked)))
    return plan


@dataclass
class DefenseContext:
    """What a defense may use while planning (never ground truth)."""

    ref: Any                                 # byorn.models.VLM, the frozen reference model
    train_config: Any                        # byorn.train.TrainConfig of the run
    out_dir: Path                            # the run folder (a defense may write a sub-folder)
    callbacks: Sequence[Any] = ()
    cancel: Any = None                       # threading.Event
    #: ``fine_tune(dataset, out_dir, decisions)``: a plain (``sft``) fine-tune of the reference model with the
    #: run's settings into ``out_dir``, resumed from its checkpoint (BYE's first stage); the trainer sets it
    fine_tune: Callable[..., Any] | None = None


class Defense:
    """Base class: one defense.  Subclasses are dataclasses of their options."""

    name: ClassVar[str] = "defense"
    summary: ClassVar[str] = ""
    #: whether :meth:`plan` reads the audit's suspicious flags (the trainer audits when none is given)
    uses_flags: ClassVar[bool] = False

    def plan(self, dataset: VLDataset, *, flags: Mapping[TurnKey, bool] | None,
             decisions: Mapping[TurnKey, Any] | None, ctx: DefenseContext) -> Plan:
        raise NotImplementedError

    def eval_view(self, dataset: VLDataset, ctx: DefenseContext) -> VLDataset:
        """Test inputs as the defended model sees them (ONION cleans them; others: unchanged)."""
        return dataset

    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)} if hasattr(self, "__dataclass_fields__") else {}


DEFENSES: dict[str, type[Defense]] = {}


register = registrar(DEFENSES, "defense")  # class decorator: add a Defense subclass to DEFENSES under a name


def get_defense(name: str, **options: Any) -> Defense:
    """Build the registered defense ``name`` with keyword ``options``."""
    return build(DEFENSES, "defense", name, options)
