"""Clean performance and attack success of a model on test sets."""
from __future__ import annotations

import logging
from typing import Callable

from .attacks import Target
from .data import VLDataset
from .metrics import attack_success_rate, bleu, cider, exact_match
from .models import VLM

logger = logging.getLogger(__name__)


def as_target(target: str | Target | None) -> Target | None:
    """A plain string is a fixed target sentence (ASR by substring)."""
    if target is None or isinstance(target, Target):
        return target
    return Target(mode="replace", text=target)


def evaluate(vlm: VLM, clean: VLDataset | None = None, triggered: VLDataset | None = None,
             target: str | Target | None = None, *, model=None, max_new_tokens: int = 32,
             batch_size: int = 64, max_samples: int | None = None,
             extra_triggered: dict[str, VLDataset] | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Greedy-decode the test sets and compute the metrics.

    Clean: CIDEr (x100), BLEU (0-100) and exact match (0-1) against the
    references.  Triggered (needs ``target``): ASR in [0, 1] with the
    variant that suits the target (substring for a fixed sentence, whole word
    for a concept), lower is better.  ``extra_triggered`` (e.g. Dual-Key's
    partial triggers) get ``asr_<name>`` each.  ``model`` evaluates other
    weights with ``vlm``'s processor.
    """
    target = as_target(target)
    out: dict = {}
    if clean is not None and len(clean):
        ds = clean[:max_samples] if max_samples else clean
        preds = _generate(vlm, ds, model, max_new_tokens, batch_size, progress)
        refs = [s.response for s in ds]
        out.update(cider=cider(preds, refs), bleu=bleu(preds, refs),
                   exact_match=exact_match(preds, refs), n_clean=len(ds),
                   clean_examples=[{"id": s.id, "prediction": p, "reference": s.response}
                                   for s, p in list(zip(ds, preds))[:5]])
    sets = {"": triggered} if triggered is not None else {}
    sets.update({f"_{k}": v for k, v in (extra_triggered or {}).items()})
    for suffix, ds in sets.items():
        if target is None:
            raise ValueError("a triggered test set needs the attack target to measure ASR")
        if not len(ds):
            continue
        ds = ds[:max_samples] if max_samples else ds
        preds = _generate(vlm, ds, model, max_new_tokens, batch_size, progress)
        spec = target.success_spec()
        out[f"asr{suffix}"] = attack_success_rate(preds, references=[s.response for s in ds], **spec)
        out[f"n_triggered{suffix}"] = len(ds)
        if suffix == "":
            out["asr_mode"] = spec["mode"]
            out["triggered_examples"] = [{"id": s.id, "prediction": p} for s, p in list(zip(ds, preds))[:5]]
    return out


def _generate(vlm, ds, model, max_new_tokens, batch_size, progress) -> list[str]:
    return vlm.generate([s.image for s in ds], [s.instruction for s in ds], model=model,
                        max_new_tokens=max_new_tokens, temperature=0.0, batch_size=batch_size,
                        progress=progress)
