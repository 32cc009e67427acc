"""BYE, "Believe Your Eyes" (Rong et al., NeurIPS 2025): filter training
samples whose trigger makes the fine-tuned model's attention collapse.

Given a model fine-tuned on the (poisoned) data:

1. per sample, the attention of the last prompt position (the one that
   predicts the first response token) over the image tokens, per layer,
   averaged over heads, renormalised over the image tokens; its entropy per
   layer (:func:`image_attention_entropy`, shape (N, L), nats, in
   [0, log n_image_tokens]);
2. sensitive layers: those whose 2-component GMM over the per-sample
   entropies separates, ``|mu1 - mu2| > 2 (sigma1 + sigma2)``
   (:func:`sensitive_layers`);
3. sample score: mean entropy over the sensitive layers (:func:`bye_scores`);
4. a 2-component GMM on the scores; the low-entropy cluster is flagged
   (:func:`bye_flags`) and left out when fine-tuning again.

:func:`bye_detect` runs 2-4 and falls back, saying so, to the most separated
layer when no layer passes the test (the reference code gives up there).
Only attention is read: BYE ignores the response text, so it is weak when a
trigger spreads over the whole image (Blend).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from ..data import Sample

log = logging.getLogger(__name__)

SEPARATION = 2.0  # |mu1 - mu2| > SEPARATION * (sigma1 + sigma2)


@dataclass
class ByeConfig:
    """BYE's settings."""

    separation: float = field(default=SEPARATION, metadata={
        "help": "a layer is sensitive when |mu1 - mu2| > separation * (sigma1 + sigma2)"})
    batch_size: int = field(default=32, metadata={"help": "samples per forward pass with attentions"})
    seed: int = field(default=0, metadata={"help": "random_state of the GMMs"})

    def __post_init__(self) -> None:
        if not self.separation > 0:
            raise ValueError(f"separation must be > 0, got {self.separation}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


# --------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------

def attention_entropy(weights: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Entropy (nats) of attention weights renormalised over the last axis.

    ``weights`` (..., n) are non-negative; each row is divided by its sum
    and ``H = -sum p log p`` is taken.  Range [0, log n]: 0 when all the
    mass is on one token, log n when it is uniform.  A row summing to 0
    gives NaN.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape[-1] < 1:
        raise ValueError("attention_entropy needs at least one token")
    if np.any(w < 0):
        raise ValueError("attention weights must be non-negative")
    total = w.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = w / total
        h = -np.sum(np.where(p > 0, p * np.log(np.maximum(p, eps)), 0.0), axis=-1)
    return np.where(total[..., 0] > 0, h, np.nan)


def _gmm(values: np.ndarray, seed: int):
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(n_components=2, random_state=seed).fit(values.reshape(-1, 1))


def layer_separation(entropies: np.ndarray, seed: int = 0, separation: float = SEPARATION) -> list[dict]:
    """Per layer, the 2-component GMM over the samples' entropies: ``mu``
    (2,), ``sigma`` (2,), ``ratio`` = |mu1 - mu2| / (sigma1 + sigma2)
    (larger = better separated) and ``separated`` (ratio > ``separation``,
    BYE: 2).  A layer whose entropies are all equal has ratio 0."""
    e = _check_entropies(entropies)
    out = []
    for l in range(e.shape[1]):
        col = e[:, l]
        if np.ptp(col) == 0:
            out.append({"layer": l, "mu": [float(col[0])] * 2, "sigma": [0.0, 0.0], "ratio": 0.0,
                        "separated": False})
            continue
        g = _gmm(col, seed)
        mu, sigma = g.means_.ravel(), np.sqrt(g.covariances_.ravel())
        ratio = float(abs(mu[0] - mu[1]) / (sigma[0] + sigma[1]))
        out.append({"layer": l, "mu": mu.tolist(), "sigma": sigma.tolist(), "ratio": ratio,
                    "separated": ratio > separation})
    return out


def sensitive_layers(entropies: np.ndarray, seed: int = 0, separation: float = SEPARATION) -> list[int]:
    """Layers whose 2-GMM over per-sample entropies separates:
    ``|mu1 - mu2| > 2 (sigma1 + sigma2)``.  May be empty."""
    return [d["layer"] for d in layer_separation(entropies, seed, separation) if d["separated"]]


def bye_scores(entropies: np.ndarray, layers: Sequence[int]) -> np.ndarray:
    """Per-sample score: mean entropy over ``layers`` (non-empty).  Shape
    (N,); lower = attention more collapsed = more suspicious."""
    e = _check_entropies(entropies)
    layers = list(layers)
    if not layers:
        raise ValueError("bye_scores needs at least one layer (see bye_detect for the fallback)")
    if min(layers) < 0 or max(layers) >= e.shape[1]:
        raise ValueError(f"layers {layers} out of range for {e.shape[1]} layers")
    return e[:, layers].mean(axis=1)


def bye_flags(scores: Sequence[float], seed: int = 0) -> np.ndarray:
    """Boolean mask: the samples a 2-component GMM puts in the cluster with
    the lower mean score (low entropy = suspicious).  Nothing is flagged
    when all scores are equal or there are fewer than 2."""
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1 or not np.all(np.isfinite(s)):
        raise ValueError("scores must be a finite 1-D array")
    if s.size < 2 or np.ptp(s) == 0:
        return np.zeros(s.shape, dtype=bool)
    g = _gmm(s, seed)
    return g.predict(s.reshape(-1, 1)) == int(np.argmin(g.means_.ravel()))


@dataclass
class ByeResult:
    """Output of :func:`bye_detect`: ``scores`` (N,), ``flags`` (N,) bool,
    the ``layers`` used, whether they are a ``fallback`` (no layer
    separated), and the per-layer GMM statistics."""

    scores: np.ndarray
    flags: np.ndarray
    layers: list[int]
    fallback: bool
    layer_stats: list[dict]


def bye_detect(entropies: np.ndarray, seed: int = 0, separation: float = SEPARATION) -> ByeResult:
    """Steps 2-4 of BYE on an (N, L) entropy matrix.

    When no layer separates, falls back to the single layer with the largest
    separation ratio (``fallback=True``, logged as a warning).
    """
    stats = layer_separation(entropies, seed, separation)
    layers = [d["layer"] for d in stats if d["separated"]]
    fallback = not layers
    if fallback:
        best = max(stats, key=lambda d: d["ratio"])
        layers = [best["layer"]]
        log.warning("BYE: no layer's entropies separate (best ratio %.2f <= %.1f at layer %d); using that layer",
                    best["ratio"], separation, best["layer"])
    scores = bye_scores(entropies, layers)
    return ByeResult(scores, bye_flags(scores, seed), layers, fallback, stats)


def _check_entropies(entropies: np.ndarray) -> np.ndarray:
    e = np.asarray(entropies, dtype=float)
    if e.ndim != 2 or e.shape[0] < 2 or e.shape[1] < 1:
        raise ValueError(f"entropies must be (N >= 2 samples, L >= 1 layers), got {e.shape}")
    if np.isnan(e).any():  # as the reference code: a NaN takes its layer's mean
        e = np.where(np.isnan(e), np.nanmean(e, axis=0, keepdims=True), e)
    if not np.all(np.isfinite(e)):
        raise ValueError("entropies contain inf or a layer that is all NaN")
    return e


# --------------------------------------------------------------------------
# Attention of the fine-tuned model
# --------------------------------------------------------------------------

def image_token_mask(vlm, input_ids):
    """Bool tensor, True at image-token positions of ``input_ids``.

    LLaVA-style models mark them with ``config.image_token_id`` (older
    configs: ``image_token_index``); other families need their own branch.
    """
    cfg = vlm.model.config
    image_id = getattr(cfg, "image_token_id", None)
    if image_id is None:
        image_id = getattr(cfg, "image_token_index", None)
    if image_id is None:
        raise ValueError(f"{type(vlm.model).__name__} has no config.image_token_id: BYE cannot find "
                         f"the image tokens of this model family")
    return input_ids == image_id


@contextlib.contextmanager
def eager_attention(model) -> Iterator[None]:
    """Switch ``model`` to the eager attention implementation (the only one
    that returns attention weights) and back afterwards."""
    before = getattr(model.config, "_attn_implementation", None)
    if before == "eager":
        yield
        return
    if not hasattr(model, "set_attn_implementation"):
        raise ValueError(f"{type(model).__name__} cannot switch its attention implementation at run "
                         f"time; load it with attn_implementation='eager' for BYE")
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before or "sdpa")


def query_positions(labels) -> "list[int]":
    """Per row, the position that predicts the first response token: the
    one before the first label that is not the ignore index (-100)."""
    out = []
    for r, row in enumerate(labels.tolist()):
        first = next((i for i, t in enumerate(row) if t != -100), None)
        if first is None or first == 0:
            raise ValueError(f"row {r} has no response token after a prompt")
        out.append(first - 1)
    return out


def image_attention_entropy(vlm, samples: Sequence[Sample], batch_size: int = 32,
                            progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """BYE step 1: (N, L) entropies, one per sample and language-model layer.

    For each sample (its image, instruction and response, through
    ``vlm.collate``), the attention of the last prompt position over the
    image tokens, averaged over heads and renormalised over the image
    tokens; entropy in nats, in [0, log n_image_tokens].  Runs with eager
    attention and ``output_attentions=True``; the weights are not changed.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = vlm.model
    device = next(model.parameters()).device
    rows: list[np.ndarray] = []
    was_training = model.training
    model.eval()
    try:
        with eager_attention(model), torch.no_grad():
            for start in range(0, len(samples), batch_size):
                chunk = samples[start:start + batch_size]
                batch = vlm.collate([s.image for s in chunk], [s.instruction for s in chunk],
                                    [s.response for s in chunk])
                q = query_positions(batch.pop("labels"))
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                out = model(**batch, output_attentions=True)
                rows.append(_entropies(out.attentions, q, image_token_mask(vlm, batch["input_ids"])))
                if progress:
                    progress(min(start + batch_size, len(samples)), len(samples))
    finally:
        model.train(was_training)
    return np.concatenate(rows) if rows else np.zeros((0, 0))


def _entropies(attentions, q: list[int], img_mask) -> np.ndarray:
    """(B, L) entropies from per-layer attentions (B, heads, T, T)."""
    import torch

    b = torch.arange(len(q))
    qpos = torch.tensor(q)
    out = np.empty((len(q), len(attentions)))
    for l, att in enumerate(attentions):
        a = att[b, :, qpos, :].float().mean(dim=1).cpu().numpy()  # (B, T): last prompt position, head mean
        for i in range(len(q)):
            out[i, l] = attention_entropy(a[i][img_mask[i].cpu().numpy()])
    return out


# --------------------------------------------------------------------------
# The registered defense
# --------------------------------------------------------------------------

from .base import Defense, build_plan, register  # noqa: E402  (the parts above stand alone)


@register("bye")
@dataclass
class BYE(Defense):
    """BYE as a defense: fine-tune (SFT) on the data, flag the low-entropy cluster, fine-tune again without it.

    The first fine-tune lives in the run folder's ``bye-stage1/`` (resumed or
    reused when the run is resumed); ``bye.json`` records the sensitive
    layers, the scores and the flagged samples.
    """

    summary = "fine-tune, flag the low image-attention-entropy cluster (BYE), retrain on the rest"
    separation: float = SEPARATION

    def plan(self, dataset, *, flags, decisions, ctx):
        import json

        from ..models import VLM

        stage1 = ctx.out_dir / "bye-stage1"
        if not (stage1 / "metrics.json").exists():
            if ctx.fine_tune is None:
                raise ValueError("BYE fine-tunes a first stage: plan it with the trainer's context "
                                 "(byorn.train.defense_context), which knows how to fine-tune")
            ctx.fine_tune(dataset, stage1, decisions)
        tuned = VLM.load(stage1 / "model", device=str(next(ctx.ref.model.parameters()).device))
        cfg = ByeConfig(separation=self.separation, seed=ctx.train_config.seed)
        entropies = image_attention_entropy(tuned, list(dataset), cfg.batch_size)
        result = bye_detect(entropies, cfg.seed, cfg.separation)
        del tuned
        flagged = {s.id for s, f in zip(dataset, result.flags) if f}
        if _main_process():
            (ctx.out_dir / "bye.json").write_text(json.dumps(
                {"layers": [int(x) for x in result.layers], "fallback": bool(result.fallback),
                 "n_flagged": len(flagged), "flagged": sorted(flagged),
                 "scores": {s.id: float(v) for s, v in zip(dataset, result.scores)}}, indent=1))
        turn_flags = {(s.id, k): s.id in flagged for s in dataset for k in range(s.n_turns)}
        return build_plan(dataset, "mask", turn_flags, decisions, flag_reason="flagged (BYE)")


def _main_process() -> bool:
    from ..runtime import process_state

    return process_state().is_main_process
