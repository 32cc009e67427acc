"""Adaptive attacks aimed at BYORn: the parts that need the reference model.

BYORn flags training samples whose response is implausible under the frozen
reference model (mean NLL).  An adaptive attacker makes the poisoned samples
look plausible to that same model:

* **PGD-optimised patch** (:func:`optimise_patch`): one universal corner
  patch whose pixels minimise the reference model's mean NLL of the target
  response given the triggered image, over a set of training images.
  Projected sign-gradient descent on the pixels of a fixed region, pixels
  kept in [0, 255] and optionally within an L-inf ball around the initial
  patch; the result is rounded to integer pixels.
* **Approximate clean-label targets** (:func:`clean_label_caption`,
  :func:`clean_label_substitution`): target responses chosen, among
  candidates, by the lowest mean reference NLL on triggered images -- an
  in-world caption of a different scene, or the substitute word for a
  concept that the reference model finds most plausible.

Everything goes through the adapter (``vlm.collate``, ``vlm.score``,
``vlm.model``).  Gradients w.r.t. pixels need the processor's preprocessing
to be differentiable; we require it to be a per-channel affine map
``pixel_values = a_c * x + b_c`` at the images' size (true of CLIP-style
processors when no resize or crop happens: rescale then normalise) and
check it numerically (:func:`affine_pixel_map`), refusing otherwise.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image

from ..data import Sample
from .registry import Attack
from .targets import Target
from .triggers import patch_box

log = logging.getLogger(__name__)


class AdaptiveAttackError(ValueError):
    """The reference model or the data cannot support this adaptive attack."""


# --------------------------------------------------------------------------
# The processor as an affine map of the pixels
# --------------------------------------------------------------------------

def affine_pixel_map(vlm, size: tuple[int, int], tol: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(scale, offset)``, each of shape (3,), such that the
    processor's ``pixel_values`` of an RGB image ``x`` (values 0-255) of
    ``size`` = (W, H) is ``scale[c] * x + offset[c]``, shape (3, H, W).

    Probed through ``vlm.collate`` with a black, a white and a noise image;
    raises :class:`AdaptiveAttackError` if ``pixel_values`` is not one
    (3, H, W) map per image, or not that affine map within ``tol`` (relative
    to the output range) -- e.g. a processor that resizes, crops or tiles.
    """
    w, h = size
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    probes = [Image.new("RGB", (w, h), (0, 0, 0)), Image.new("RGB", (w, h), (255, 255, 255)),
              Image.fromarray(noise, "RGB")]
    batch = vlm.collate(probes, ["Describe the image."] * 3, ["a picture."] * 3)
    pv = batch.get("pixel_values")
    name = type(getattr(vlm.processor, "image_processor", vlm.processor)).__name__
    if pv is None or tuple(pv.shape) != (3, 3, h, w):
        shape = None if pv is None else tuple(pv.shape)
        raise AdaptiveAttackError(
            f"PGD needs pixel_values of shape (batch, 3, H, W) equal to the image size; {name} gave "
            f"{shape} for {w}x{h} images. Give images at the model's input size, or use a processor "
            f"that does not resize, crop or tile them.")
    pv = pv.detach().float().cpu().numpy()  # (3 probes, 3, H, W)
    offset, scale = pv[0], (pv[1] - pv[0]) / 255.0
    span = float(np.abs(pv[1] - pv[0]).max()) or 1.0
    flat = max(float(np.ptp(offset, axis=(1, 2)).max()), float(np.ptp(scale, axis=(1, 2)).max()) * 255.0)
    offset_c, scale_c = offset.mean(axis=(1, 2)), scale.mean(axis=(1, 2))  # (3,)
    expected = scale_c[:, None, None] * noise.transpose(2, 0, 1).astype(np.float64) + offset_c[:, None, None]
    err = float(np.abs(expected - pv[2]).max())
    if flat > tol * span or err > tol * span or np.any(scale_c == 0):
        raise AdaptiveAttackError(
            f"PGD needs a processor whose preprocessing is a per-channel affine map of the pixels at "
            f"the model's input size; {name} is not (max deviation {max(flat, err):.3g} on an output "
            f"range of {span:.3g}) at {w}x{h}. Resize the images to the model's input size first.")
    return scale_c, offset_c


# --------------------------------------------------------------------------
# PGD on the pixels of the trigger region
# --------------------------------------------------------------------------

@dataclass
class PGDConfig:
    """Projected sign-gradient descent on the pixels of a corner patch."""

    steps: int = field(default=40, metadata={"help": "gradient steps"})
    step_size: float = field(default=4.0, metadata={"help": "pixel change per step (0-255 units)"})
    epsilon: float | None = field(default=None, metadata={
        "help": "L-inf budget around the initial patch in pixels; None = only [0, 255]"})
    batch_size: int = field(default=32, metadata={"help": "images per forward pass"})

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if not self.step_size > 0:
            raise ValueError(f"step_size must be > 0, got {self.step_size}")
        if self.epsilon is not None and not self.epsilon >= 0:
            raise ValueError(f"epsilon must be >= 0 or None, got {self.epsilon}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class PatchOptimisation:
    """Result of :func:`optimise_patch`.

    ``patch``: (S, S, 3) uint8, S the box side at the images' size.
    ``initial_nll`` / ``final_nll``: the reference model's mean NLL (nats per
    token, averaged over samples) of the target responses with the initial
    and the returned (rounded) patch pasted, measured with ``vlm.score``.
    ``history``: the objective at the initial patch and after each step
    (continuous pixels; ``steps + 1`` values); the patch returned is the
    best of these iterates, rounded.
    """

    patch: np.ndarray
    initial_nll: float
    final_nll: float
    history: list[float]
    box: tuple[int, int, int]
    config: dict


def _mean_nll(vlm, images, instructions, responses, batch_size: int) -> float:
    scores = vlm.score(images, instructions, responses, batch_size=batch_size)
    return float(np.mean([s.mean for s in scores]))


def target_nll(vlm, samples: Sequence[Sample], responses: Sequence[str], attack: Attack | None = None,
               batch_size: int = 64) -> np.ndarray:
    """Per-sample mean NLL (nats/token) of ``responses`` under ``vlm`` given
    each sample's image (triggered by ``attack`` when given) and instruction."""
    images = [attack.apply_image(s.image) if attack else s.image for s in samples]
    scores = vlm.score(images, [s.instruction for s in samples], list(responses), batch_size=batch_size)
    return np.array([s.mean for s in scores], dtype=float)


def _check_same_size(samples: Sequence[Sample]) -> tuple[int, int]:
    if not samples:
        raise AdaptiveAttackError("no samples to optimise the patch on")
    sizes = {s.image.size for s in samples}
    if len(sizes) != 1:
        raise AdaptiveAttackError(f"PGD optimises one patch on images of one size; got sizes {sorted(sizes)}")
    return sizes.pop()


def optimise_patch(vlm, samples: Sequence[Sample], target: Target, init: np.ndarray, *,
                   size: int | None = None, corner: str = "bottom-right",
                   cfg: PGDConfig | None = None) -> PatchOptimisation:
    """A universal corner patch that makes ``target`` plausible to ``vlm``.

    Minimises ``mean_i NLL(target.apply(y_i) | x_i with the patch, q_i)``
    over ``samples`` (all images of one size) by projected sign-gradient
    descent on the patch pixels: ``p <- clip(p - step_size * sign(grad))`` to
    [0, 255] and, with ``epsilon``, to ``[init - eps, init + eps]``; the
    iterate with the lowest objective (the initial patch included) is kept.  The
    region is the corner box of nominal side ``size`` (default: ``init``'s
    side) at 32 px, scaled to the images; ``init`` is resized (nearest) to
    it.  ``vlm``'s weights are not changed.
    """
    import torch

    cfg = cfg or PGDConfig()
    init = np.asarray(init)
    if init.ndim != 3 or init.shape[2] != 3 or init.shape[0] != init.shape[1]:
        raise ValueError(f"init must be an (S, S, 3) patch, got {init.shape}")
    w, h = _check_same_size(samples)
    top, left, p = patch_box((w, h), size or init.shape[0], corner)
    if p != init.shape[0]:
        init = np.asarray(Image.fromarray(init.astype(np.uint8), "RGB").resize((p, p), Image.NEAREST))
    scale, offset = affine_pixel_map(vlm, (w, h))
    model = vlm.model
    device = next(model.parameters()).device
    images = [s.image.convert("RGB") for s in samples]
    instructions = [s.instruction for s in samples]
    responses = [target.apply(s.response) for s in samples]
    batches = _batches(vlm, images, instructions, responses, cfg.batch_size, device)
    affine = (torch.tensor(scale, dtype=torch.float32, device=device)[None, :, None, None],
              torch.tensor(offset, dtype=torch.float32, device=device)[None, :, None, None])
    x0 = torch.tensor(init.transpose(2, 0, 1), dtype=torch.float32, device=device)  # (3, p, p)
    was_training = model.training
    model.eval()
    try:
        best, history = _pgd(model, batches, x0, (top, left, p), affine, cfg, len(samples))
    finally:
        model.train(was_training)
    final = np.rint(best.cpu().numpy().transpose(1, 2, 0)).clip(0, 255).astype(np.uint8)
    init_u8 = np.rint(init).clip(0, 255).astype(np.uint8)
    nll0 = _mean_nll(vlm, [_paste(im, init_u8, top, left) for im in images], instructions, responses,
                     cfg.batch_size)
    nll1 = _mean_nll(vlm, [_paste(im, final, top, left) for im in images], instructions, responses,
                     cfg.batch_size)
    log.info("PGD patch: reference NLL of the target %.3f -> %.3f over %d images", nll0, nll1, len(samples))
    return PatchOptimisation(final, nll0, nll1, history, (top, left, p), asdict(cfg))


def _batches(vlm, images, instructions, responses, batch_size: int, device) -> list:
    """``(model inputs with labels, pixels (B, 3, H, W) in 0-255)`` per batch, built once."""
    import torch

    out = []
    for start in range(0, len(images), batch_size):
        sl = slice(start, start + batch_size)
        batch = {k: v.to(device) if torch.is_tensor(v) else v
                 for k, v in vlm.collate(images[sl], instructions[sl], responses[sl]).items()}
        x = np.stack([np.asarray(im, dtype=np.float32) for im in images[sl]]).transpose(0, 3, 1, 2)
        out.append((batch, torch.tensor(x, device=device)))
    return out


def _pgd(model, batches, x0, box, affine, cfg: PGDConfig, n: int):
    """Projected sign-gradient descent from ``x0`` (3, p, p); returns the best
    iterate and the objective (mean NLL over the ``n`` samples) of each."""
    import torch

    lo = torch.clamp(x0 - cfg.epsilon, min=0.0) if cfg.epsilon is not None else torch.zeros_like(x0)
    hi = torch.clamp(x0 + cfg.epsilon, max=255.0) if cfg.epsilon is not None else torch.full_like(x0, 255.0)
    patch, best, best_loss = x0.clone(), x0.clone(), float("inf")
    history: list[float] = []
    for step in range(cfg.steps + 1):  # the last pass only evaluates the last step's patch
        patch.requires_grad_(True)
        total, grad = 0.0, torch.zeros_like(patch)
        for batch, x in batches:
            loss_sum = _patched_nll_sum(model, batch, x, patch, box, affine)
            if step < cfg.steps:
                grad += torch.autograd.grad(loss_sum, patch)[0]
            total += float(loss_sum.detach())
        history.append(total / n)
        if history[-1] < best_loss:  # sign steps overshoot: keep the best iterate
            best, best_loss = patch.detach().clone(), history[-1]
        if step < cfg.steps:
            with torch.no_grad():
                patch = torch.minimum(torch.maximum(patch.detach() - cfg.step_size * grad.sign(), lo), hi)
    return best, history


def _patched_nll_sum(model, batch: dict, x, patch, box, affine):
    """Sum over the batch of each sample's mean response NLL with ``patch``
    written into ``x`` (B, 3, H, W, 0-255) at ``box``; differentiable in ``patch``."""
    import torch

    top, left, p = box
    a, b = affine
    x = x.clone()
    x[:, :, top:top + p, left:left + p] = patch  # broadcast over the batch
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    dtype = next(model.parameters()).dtype
    inputs["pixel_values"] = (a * x + b).to(dtype)  # the processor's affine map
    logits = model(**inputs).logits[:, :-1].float()  # (B, T-1, V)
    target = batch["labels"][:, 1:]
    valid = target != -100  # the adapter's (and Hugging Face's) ignore label
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target.clamp(min=0), reduction="none")
    per_sample = (nll * valid).sum(1) / valid.sum(1).clamp(min=1)  # (B,)
    return per_sample.sum()


def _paste(image: Image.Image, patch: np.ndarray, top: int, left: int) -> Image.Image:
    arr = np.array(image.convert("RGB"))
    arr[top:top + patch.shape[0], left:left + patch.shape[1]] = patch
    return Image.fromarray(arr, "RGB")


# --------------------------------------------------------------------------
# Approximate clean-label targets
# --------------------------------------------------------------------------

@dataclass
class CleanLabelChoice:
    """Result of a clean-label construction: the chosen ``target`` and the
    reference model's mean NLL (nats/token) of every candidate, ascending."""

    target: Target
    candidate_nll: dict[str, float]

    @property
    def nll(self) -> float:
        return min(self.candidate_nll.values())


def _pick(samples: Sequence[Sample], n: int, rng: np.random.Generator) -> list[Sample]:
    idx = rng.choice(len(samples), size=min(n, len(samples)), replace=False)
    return [samples[int(i)] for i in np.sort(idx)]


def clean_label_caption(vlm, samples: Sequence[Sample], attack: Attack, *,
                        candidates: Sequence[str] | None = None, n_candidates: int = 24,
                        n_images: int = 32, seed: int = 0, batch_size: int = 64) -> CleanLabelChoice:
    """A fixed target that is an in-world caption of a *different* scene.

    Candidates (default: ``n_candidates`` distinct clean responses drawn
    from ``samples`` with ``seed``) are scored as the response of
    ``n_images`` triggered samples; the one with the lowest mean reference
    NLL becomes a ``replace`` target (ASR: substring).  Poisoning then only
    takes samples whose own response does not already contain it.
    """
    rng = np.random.default_rng([seed, 11])
    if candidates is None:
        pool = sorted({s.response for s in samples})
        if not pool:
            raise AdaptiveAttackError("no responses to draw clean-label candidates from")
        candidates = [pool[int(i)] for i in rng.choice(len(pool), size=min(n_candidates, len(pool)),
                                                       replace=False)]
    scored = _pick(samples, n_images, rng)
    table = {}
    for cand in dict.fromkeys(candidates):
        others = [s for s in scored if not Target("replace", cand).contains_target(s.response)]
        table[cand] = float(target_nll(vlm, others or scored, [cand] * len(others or scored), attack,
                                       batch_size).mean())
    table = dict(sorted(table.items(), key=lambda kv: kv[1]))
    best = next(iter(table))
    log.info("clean-label caption target %r (reference NLL %.3f)", best, table[best])
    return CleanLabelChoice(Target("replace", best), table)


def clean_label_substitution(vlm, samples: Sequence[Sample], attack: Attack, *, source: str = "circle",
                             candidates: Sequence[str] = ("square", "triangle", "cross", "banana"),
                             n_images: int = 32, seed: int = 0, batch_size: int = 64) -> CleanLabelChoice:
    """A concept substitution ``source`` -> w whose word w is the candidate
    with the lowest mean reference NLL of the substituted responses on
    ``n_images`` triggered samples that mention ``source`` (ASR: whole word,
    true concept absent)."""
    rng = np.random.default_rng([seed, 12])
    mentions = [s for s in samples if Target("substitute", "_", source=source).eligible(s.response)]
    scored = _pick(mentions, n_images, rng)  # the same samples for every candidate
    table = {}
    for word in dict.fromkeys(candidates):
        t = Target("substitute", word, source=source)
        pool = [s for s in scored if t.eligible(s.response)]
        if pool:
            table[word] = float(target_nll(vlm, pool, [t.apply(s.response) for s in pool], attack,
                                           batch_size).mean())
    if not table:
        raise AdaptiveAttackError(f"no sample mentions {source!r} without the candidate words")
    table = dict(sorted(table.items(), key=lambda kv: kv[1]))
    best = next(iter(table))
    log.info("clean-label substitution %s -> %s (reference NLL %.3f)", source, best, table[best])
    return CleanLabelChoice(Target("substitute", best, source=source), table)
