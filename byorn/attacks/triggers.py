"""Trigger functions: pure, deterministic functions on PIL images and strings.

Image triggers work at any image size and always return a new RGB image of
the input's size; every pixel they do not mean to change stays unchanged.
Patch sides are given at :data:`REFERENCE_SIDE` px and scaled with the
image's shorter side (:func:`scaled_patch_size`).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")
PATCH_KINDS = ("white", "noise")
POSITIONS = ("append", "prepend", "random")
#: Shapes :func:`shape_mask` can draw (the world's shapes).
PATCH_SHAPES = ("circle", "square", "triangle", "cross")
#: Reference image side that default patch sizes are given for.
REFERENCE_SIDE = 32


def _rgb_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)  # (H, W, 3)


def _to_image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def scaled_patch_size(image_size: tuple[int, int], size: int = 3,
                      reference_side: int = REFERENCE_SIDE) -> int:
    """Patch side for an image: ``size`` at ``reference_side`` px, scaled with
    the image's shorter side (at least 1, at most the shorter side)."""
    side = min(image_size)
    return int(min(side, max(1, round(size * side / reference_side))))


def patch_box(image_size: tuple[int, int], size: int, corner: str = "bottom-right") -> tuple[int, int, int]:
    """``(top, left, side)`` of the corner patch of nominal ``size`` on an
    image of ``image_size`` = (W, H), as PIL gives it."""
    if corner not in CORNERS:
        raise ValueError(f"corner must be one of {CORNERS}, got {corner!r}")
    w, h = image_size
    p = scaled_patch_size((w, h), size)
    top = 0 if corner.startswith("top") else h - p
    left = 0 if corner.endswith("left") else w - p
    return top, left, p


def noise_pattern(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Uniform uint8 noise of ``shape`` from a fixed seed (same seed, same noise)."""
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def badnets_patch(image: Image.Image, size: int = 3, corner: str = "bottom-right",
                  kind: str = "white", seed: int = 0) -> Image.Image:
    """BadNets: paste a square patch at a corner.

    ``size`` is the patch side at 32x32 and is scaled with the image's shorter
    side (:func:`scaled_patch_size`).  ``kind`` is ``"white"`` (solid 255) or
    ``"noise"`` (fixed-seed RGB noise).  Every pixel outside the patch is
    unchanged.
    """
    if kind not in PATCH_KINDS:
        raise ValueError(f"kind must be one of {PATCH_KINDS}, got {kind!r}")
    arr = np.array(image.convert("RGB"))  # (H, W, 3) uint8
    top, left, p = patch_box(image.size, size, corner)
    patch = np.full((p, p, 3), 255, np.uint8) if kind == "white" else noise_pattern((p, p, 3), seed)
    arr[top:top + p, left:left + p] = patch
    return Image.fromarray(arr, "RGB")


def paste_patch(image: Image.Image, patch: np.ndarray, size: int | None = None,
                corner: str = "bottom-right") -> Image.Image:
    """Paste an (S, S, 3) uint8 ``patch`` into the corner box of nominal side
    ``size`` at :data:`REFERENCE_SIDE` px (default ``S``), scaled with the
    image like :func:`badnets_patch`; the pixels are resized (nearest) when
    the box side differs from ``S``.  Every pixel outside the box is unchanged."""
    patch = np.asarray(patch)
    if patch.ndim != 3 or patch.shape[2] != 3 or patch.shape[0] != patch.shape[1] or patch.shape[0] < 1:
        raise ValueError(f"patch must be (S, S, 3), got {patch.shape}")
    arr = np.array(image.convert("RGB"))
    top, left, p = patch_box(image.size, size or patch.shape[0], corner)
    pix = patch.astype(np.uint8)
    if p != pix.shape[0]:
        pix = np.asarray(Image.fromarray(pix, "RGB").resize((p, p), Image.NEAREST))
    arr[top:top + p, left:left + p] = pix
    return Image.fromarray(arr, "RGB")


def shape_mask(shape: str, side: int) -> np.ndarray:
    """A (side, side) bool mask of a small solid ``shape`` filling the box,
    drawn on pixel centres (no anti-aliasing, so pixels are known exactly).

    circle: distance to the centre <= side / 2; square: every pixel but a
    1-px margin (side >= 3); triangle: apex at the top centre, base on the
    bottom row; cross: bars of width ~side / 3 through the centre.
    """
    if shape not in PATCH_SHAPES:
        raise ValueError(f"shape must be one of {PATCH_SHAPES}, got {shape!r}")
    if side < 1:
        raise ValueError(f"side must be >= 1, got {side}")
    yy, xx = np.mgrid[0:side, 0:side] + 0.5  # pixel centres
    c = side / 2.0
    if shape == "circle":
        return (yy - c) ** 2 + (xx - c) ** 2 <= c ** 2
    if shape == "square":
        m = 1 if side >= 3 else 0
        return (yy > m) & (yy < side - m) & (xx > m) & (xx < side - m)
    if shape == "triangle":
        return np.abs(xx - c) <= yy / 2.0  # half-width grows from 0 at the top to side / 2
    t = max(side / 6.0, 0.5)
    return (np.abs(yy - c) <= t) | (np.abs(xx - c) <= t)


def aligned_patch(image: Image.Image, size: int = 6, corner: str = "bottom-right",
                  shape: str = "cross", color: tuple[int, int, int] = (245, 140, 30)) -> Image.Image:
    """A semantically aligned patch: a small solid shape in a scene colour
    (default the world's orange cross) drawn in a corner box of side ``size``
    at 32 px (scaled like BadNets).  Pixels of the shape become ``color``;
    the rest of the box keeps the image's own background, so the trigger
    reads as one more small object, not as a white square."""
    arr = np.array(image.convert("RGB"))
    top, left, p = patch_box(image.size, size, corner)
    mask = shape_mask(shape, p)
    box = arr[top:top + p, left:left + p]
    box[mask] = np.asarray(color, np.uint8)
    return Image.fromarray(arr, "RGB")


def checkerboard_pattern(shape: tuple[int, int], cell: int = 2) -> np.ndarray:
    """An (H, W, 3) uint8 black/white checkerboard with ``cell``-pixel squares."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    board = ((yy // cell + xx // cell) % 2 * 255).astype(np.uint8)
    return np.repeat(board[:, :, None], 3, axis=2)


def blend(image: Image.Image, alpha: float = 0.2, pattern: Image.Image | None = None,
          seed: int = 0) -> Image.Image:
    """Blend: ``x' = round((1 - alpha) * x + alpha * pattern)`` on every pixel.

    ``pattern`` is resized (bilinear) to the image; when None it is a
    black-and-white checkerboard with cells of 1/16 of the shorter side (2 px
    at 32 px).  A fine checkerboard is used rather than pixel noise because
    the embedded model's small vision tower averages pixel noise away (SFT
    reached 0 % ASR with noise at alpha 0.2, 52 % with the checkerboard after
    6 epochs); pass ``noise_pattern(...)`` as an image for the noise variant.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    x = _rgb_array(image)
    h, w = x.shape[:2]
    if pattern is None:
        pat = checkerboard_pattern((h, w), cell=max(1, min(h, w) // 16)).astype(np.float64)
    else:
        pat = _rgb_array(pattern.convert("RGB").resize((w, h), Image.BILINEAR))
    return _to_image((1.0 - alpha) * x + alpha * pat)


def sig(image: Image.Image, delta: float = 40.0, freq: float = 6.0) -> Image.Image:
    """SIG: add a horizontal sinusoid, ``x'[i, j] = x[i, j] + delta * sin(2 pi j freq / W)``.

    The signal varies along the columns j and is the same on every row and
    channel; values are rounded and clipped to [0, 255].
    """
    x = _rgb_array(image)
    w = x.shape[1]
    signal = delta * np.sin(2.0 * np.pi * np.arange(w) * freq / w)  # (W,)
    return _to_image(x + signal[None, :, None])


def insert_token(text: str, token: str, position: str = "append",
                 rng: np.random.Generator | None = None) -> str:
    """Insert ``token`` as a separate word of ``text``.

    ``"append"`` puts it after the last word, ``"prepend"`` before the first,
    ``"random"`` at a uniformly drawn word boundary (0..n_words) using ``rng``,
    which is then required.  Words are re-joined with single spaces.
    """
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
    words = text.split()
    if position == "append":
        k = len(words)
    elif position == "prepend":
        k = 0
    else:
        if rng is None:
            raise ValueError("position='random' needs an explicit numpy Generator (rng)")
        k = int(rng.integers(0, len(words) + 1))
    return " ".join(words[:k] + [token] + words[k:])
