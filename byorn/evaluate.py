"""Clean performance and attack success of a model on test sets.

The unit is the assistant turn: each assistant turn of a test conversation is
predicted from the original conversation before it (greedy decoding) and
compared with the turn's text.  Single-turn test sets have one turn each.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from .attacks import Target
from .data import VLDataset
from .metrics import attack_success_rate, bleu, cider, exact_match

logger = logging.getLogger(__name__)

CLEAN_METRICS: dict[str, Callable] = {"cider": cider, "bleu": bleu, "exact_match": exact_match}


def as_target(target: str | Target | None) -> Target | None:
    """A plain string is a fixed target sentence (ASR by substring)."""
    if target is None or isinstance(target, Target):
        return target
    return Target(mode="replace", text=target)


@dataclass
class EvalSuite:
    """What a run is evaluated on; travels as one object.

    ``clean_metric`` names the headline clean metric (CIDEr for captions,
    exact match for short answers) that run listings and plots show.
    """

    clean: VLDataset | None = None
    triggered: VLDataset | None = None
    target: Target | str | None = None
    extra_triggered: dict[str, VLDataset] = field(default_factory=dict)
    clean_metric: str = field(default="cider", metadata={"help": f"one of {tuple(CLEAN_METRICS)}"})
    max_samples: int | None = field(default=None, metadata={"help": "cap on samples per test set"})

    def __post_init__(self) -> None:
        self.target = as_target(self.target)
        if self.clean_metric not in CLEAN_METRICS:
            raise ValueError(f"clean_metric must be one of {tuple(CLEAN_METRICS)}, got {self.clean_metric!r}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples must be >= 1 or None, got {self.max_samples}")
        if (self.triggered is not None or self.extra_triggered) and self.target is None:
            raise ValueError("a triggered test set needs the attack target to measure ASR")

    @property
    def empty(self) -> bool:
        return self.clean is None and self.triggered is None and not self.extra_triggered

    def map(self, fn: Callable[[VLDataset], VLDataset]) -> "EvalSuite":
        """The same suite with every test set passed through ``fn`` (e.g. a defense's eval view)."""
        return EvalSuite(fn(self.clean) if self.clean is not None else None,
                         fn(self.triggered) if self.triggered is not None else None, self.target,
                         {k: fn(v) for k, v in self.extra_triggered.items()}, self.clean_metric,
                         self.max_samples)


def evaluate(vlm, suite: EvalSuite | VLDataset | None = None, triggered: VLDataset | None = None,
             target: str | Target | None = None, *, model=None, max_new_tokens: int = 32,
             batch_size: int = 64, max_samples: int | None = None,
             extra_triggered: dict[str, VLDataset] | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Greedy-decode the test sets and compute the metrics.

    Pass an :class:`EvalSuite`, or (for scripts) the clean / triggered sets
    and target as arguments.  Clean: CIDEr (x100), BLEU (0-100) and exact
    match (0-1) against the references, plus ``clean_metric`` /
    ``clean_value`` naming the headline one.  Triggered (needs ``target``):
    ASR in [0, 1] with the variant that suits the target, lower is better;
    ``extra_triggered`` sets (e.g. Dual-Key's partial triggers) get
    ``asr_<name>`` each.  ``model`` evaluates other weights with ``vlm``'s
    processor.
    """
    if not isinstance(suite, EvalSuite):
        suite = EvalSuite(suite, triggered, target, dict(extra_triggered or {}), max_samples=max_samples)
    out: dict = {"clean_metric": suite.clean_metric}
    # The generation budget covers the longest reference (plus the target, for ASR): a target
    # appended to a correct caption (insertion) must not be cut off and counted as a miss.
    target_tokens = _n_tokens(vlm, [suite.target.text]) if suite.target is not None else 0
    gen = lambda ds, extra=0: _predict(vlm, ds, model, max_new_tokens, batch_size, progress, extra)  # noqa: E731
    if suite.clean is not None and len(suite.clean):
        ds = _head(suite.clean, suite.max_samples)
        keys, preds, refs = gen(ds)
        out.update(cider=cider(preds, refs), bleu=bleu(preds, refs), exact_match=exact_match(preds, refs),
                   n_clean=len(ds), n_clean_turns=len(preds),
                   clean_examples=[{"id": k[0], "turn": k[1], "prediction": p, "reference": r}
                                   for k, p, r in list(zip(keys, preds, refs))[:5]])
        out["clean_value"] = out[suite.clean_metric]
    sets = {"": suite.triggered} if suite.triggered is not None else {}
    sets.update({f"_{k}": v for k, v in suite.extra_triggered.items()})
    for suffix, ds in sets.items():
        if not len(ds):
            continue
        ds = _head(ds, suite.max_samples)
        keys, preds, refs = gen(ds, target_tokens)
        spec = suite.target.success_spec()
        out[f"asr{suffix}"] = attack_success_rate(preds, references=refs, **spec)
        out[f"n_triggered{suffix}"] = len(ds)
        if suffix == "":
            out["asr_mode"] = spec["mode"]
            out["triggered_examples"] = [{"id": k[0], "turn": k[1], "prediction": p}
                                         for k, p in list(zip(keys, preds))[:5]]
    return out


def _head(ds: VLDataset, n: int | None) -> VLDataset:
    return ds[:n] if n else ds


MAX_EVAL_TOKENS = 512  # the most a generation budget grows to (a runaway reference must not cost more)


def _n_tokens(vlm, texts: list[str]) -> int:
    """Tokens of the longest of ``texts`` under the model's tokenizer (0 for none)."""
    texts = [t for t in texts if t]
    if not texts:
        return 0
    return max(len(ids) for ids in vlm.tokenizer(texts, add_special_tokens=False)["input_ids"])


def _predict(vlm, ds: VLDataset, model, max_new_tokens: int, batch_size: int, progress, extra_tokens: int = 0):
    """((id, turn) keys, greedy predictions, references) over every assistant turn of ``ds``.

    Generation stops at the model's stop token, or after ``max_new_tokens`` or the longest
    reference plus ``extra_tokens`` (+4), whichever is more (at most ``MAX_EVAL_TOKENS``).
    """
    keys, prompts, refs = [], [], []
    for s in ds:
        conv = s.conversation()
        for k, text in enumerate(s.assistant_texts()):
            keys.append((s.id, k))
            prompts.append(conv.prompt_for(k))
            refs.append(text)
    budget = max(max_new_tokens, min(MAX_EVAL_TOKENS, _n_tokens(vlm, refs) + extra_tokens + 4))
    preds = vlm.generate_conversations(prompts, model=model, max_new_tokens=budget, temperature=0.0,
                                       batch_size=batch_size, progress=progress)
    return keys, preds, refs
