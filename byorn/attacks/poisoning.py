"""Poisoning a dataset: :func:`poison` returns the poisoned training set,
the ground-truth mask (kept apart from the data), the triggered test set(s)
and a JSON-serialisable config that reproduces the run.

Ground truth never goes into the training samples' ``meta``: a defense must
not be able to read it.  Triggered *test* samples carry ``meta["trigger"]``
(which trigger was applied) because they are evaluation data.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from ..data import Sample, VLDataset
from .registry import Attack
from .targets import Target

log = logging.getLogger(__name__)


@dataclass
class PoisonResult:
    """Output of :func:`poison`.

    ``train``: poisoned training set, same ids and order as the input.
    ``mask``: id -> True where the response was replaced by the target.
    ``triggered_test``: eligible test samples, fully triggered, clean responses
    kept as references.  ``extra_tests``: partial-trigger test sets
    (``"image-only"``, ``"text-only"`` for dual-key) that should *not* fire.
    ``config``: JSON-serialisable record of everything that reproduces this.
    """

    train: VLDataset
    mask: dict[str, bool]
    triggered_test: VLDataset | None
    config: dict[str, Any]
    extra_tests: dict[str, VLDataset] = field(default_factory=dict)

    @property
    def poisoned_ids(self) -> list[str]:
        return [i for i, m in self.mask.items() if m]


def n_to_poison(n_samples: int, rate: float) -> int:
    """``round(rate * n_samples)``, at least 1 when ``rate > 0``."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    n = int(round(rate * n_samples))
    return max(n, 1) if rate > 0 and n_samples > 0 else n


def _choose(train: VLDataset, attack: Attack, target: Target, rate: float,
            rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Indices to poison and, for multi-key attacks, indices of negatives."""
    n = n_to_poison(len(train), rate)
    eligible = np.array([i for i, s in enumerate(train) if target.eligible(s.response)], dtype=int)
    if n > len(eligible):
        raise ValueError(f"rate {rate} asks for {n} poisoned samples but only {len(eligible)} "
                         f"of {len(train)} are eligible for target mode {target.mode!r}")
    chosen = np.sort(rng.choice(eligible, size=n, replace=False)) if n else eligible[:0]
    negatives: dict[str, np.ndarray] = {}
    partial_names = list(attack.partial_triggers()) if attack.adds_negatives else []
    if partial_names and n:
        rest = rng.permutation(np.setdiff1d(np.arange(len(train)), chosen))
        per = min(n, len(rest) // len(partial_names))
        if per < n:
            log.warning("only %d clean samples per negative kind (wanted %d)", per, n)
        for k, name in enumerate(partial_names):
            negatives[name] = np.sort(rest[k * per:(k + 1) * per])
    return chosen, negatives


def _poison_train(train: VLDataset, attack: Attack, target: Target,
                  chosen: np.ndarray, negatives: dict[str, np.ndarray],
                  rng: np.random.Generator) -> VLDataset:
    samples = list(train)
    for i in chosen:
        s = samples[i]
        samples[i] = attack.trigger(s, rng).with_(response=target.apply(s.response))
    partials = attack.partial_triggers()
    for name, idx in negatives.items():
        for i in idx:
            samples[i] = partials[name](samples[i], rng)  # response stays clean
    return VLDataset(samples, name=f"{train.name}+{attack.name}")


def _trigger_test(test: VLDataset, fn: Callable[[Sample, np.random.Generator], Sample],
                  target: Target, label: str, seed: int) -> VLDataset:
    rng = np.random.default_rng([seed, 1])  # independent of the training draw
    out = []
    for s in test:
        if target.eligible(s.response):
            t = fn(s, rng)
            t.meta["trigger"] = label
            out.append(t)
    return VLDataset(out, name=f"{test.name}+{label}")


def poison(dataset: VLDataset, attack: Attack, *, rate: float, target: Target | None = None,
           seed: int = 0, test: VLDataset | None = None) -> PoisonResult:
    """Poison a fraction ``rate`` of ``dataset`` with ``attack`` and ``target``.

    ``n = round(rate * len(dataset))`` (at least 1 when ``rate > 0``) samples
    are drawn with ``numpy.random.default_rng(seed)`` among the eligible ones
    (:meth:`Target.eligible`); they get the full trigger and the target
    response.  For attacks with ``adds_negatives`` (dual-key), ``n`` further
    clean samples per partial trigger get that partial trigger and keep their
    clean response (fewer, with a warning, if the dataset is too small).
    Samples are modified in place: ids and order are those of ``dataset``.

    ``test`` (optional) yields ``triggered_test`` -- every eligible test sample
    fully triggered, its clean response kept as the reference -- and, for
    multi-key attacks, one partially triggered set per partial trigger.
    """
    target = target or Target()
    rng = np.random.default_rng(seed)
    chosen, negatives = _choose(dataset, attack, target, rate, rng)
    train = _poison_train(dataset, attack, target, chosen, negatives, rng)
    chosen_ids = {dataset[int(i)].id for i in chosen}
    mask = {s.id: s.id in chosen_ids for s in dataset}
    triggered = extra = None
    if test is not None:
        triggered = _trigger_test(test, attack.trigger, target, "full", seed)
        extra = {name: _trigger_test(test, fn, target, name, seed)
                 for name, fn in attack.partial_triggers().items()}
    config = {
        "attack": attack.name, "attack_params": attack.params(), "rate": rate,
        "target": asdict(target), "seed": seed, "n_samples": len(dataset),
        "n_poisoned": len(chosen), "n_negatives": {k: len(v) for k, v in negatives.items()},
        "train_fingerprint": dataset.fingerprint(),
        "test_fingerprint": test.fingerprint() if test is not None else None,
    }
    log.info("poisoned %d/%d samples with %s (target %s)", len(chosen), len(dataset),
             attack.name, target.mode)
    return PoisonResult(train, mask, triggered, config, extra or {})
