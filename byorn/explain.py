"""Show the trigger: which image regions and instruction words drive a response.

Occlusion, measured on the response's mean NLL (nats/token) of one assistant
turn given its conversation:

* **image** (:func:`image_heatmap`): square patches of the image are filled
  (with the image's mean colour by default), one at a time, in an overlapping
  grid; every occluded variant is scored in batches.
* **words** (:func:`word_importance`): each word of the user turn the
  assistant turn answers is left out, one at a time.

Two readings (``mode``):

* ``"rise"`` (default): the NLL *rise* when a region or word is hidden, under
  a model that learned the backdoor (e.g. the SFT run on the same data).
  Hiding the trigger makes the target response implausible again, so the
  trigger lights up.
* ``"fall"``: the NLL *fall* under the reference model: a region whose
  removal makes the response more plausible is what contradicts it.

Values are signed nats/token (positive = this region/word supports the
reading); :func:`overlay` shows the positive part.  :class:`TriggerMapCache`
keeps computed maps on disk, keyed by model identity, dataset fingerprint,
sample, turn and settings.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .data import Conversation, Sample, Turn, VLDataset
from .data.sample import IMAGE_TOKEN

logger = logging.getLogger(__name__)

MODES = ("rise", "fall")
FILLS = ("mean", "gray", "black")
#: default patch side as a fraction of the image's shorter side
PATCH_FRACTION = 1 / 8
# a word: letters / digits (with inner apostrophes or hyphens); punctuation is not part of it, so that
# leaving a word out keeps the sentence's punctuation (a tiny model that learned ". cf" as its trigger
# otherwise "lights up" the word before the trigger, whose removal also removes the full stop)
_WORD = re.compile(r"\w+(?:['\u2019-]\w+)*")


@dataclass
class TriggerMap:
    """Where the trigger is, for one assistant turn under one model.

    ``grid`` (gh, gw): mean occlusion effect per image cell (cells of about
    ``stride`` px tiling the image; None for a sample without an image);
    ``words``: (word, effect) per instruction word in order; both in
    nats/token, positive = supports the reading of ``mode``.
    """

    grid: np.ndarray | None
    words: list[tuple[str, float]]
    mode: str
    model_identity: str
    patch: int | None
    stride: int | None
    base_nll: float = float("nan")  # the response's mean NLL with nothing hidden
    image_size: tuple[int, int] | None = None  # (width, height) of the explained image

    def peak_box(self) -> tuple[int, int, int, int] | None:
        """Pixel box ``(left, top, right, bottom)`` of the grid's hottest cell (None without a grid)."""
        if self.grid is None or self.image_size is None:
            return None
        gh, gw = self.grid.shape
        r, c = np.unravel_index(int(np.nanargmax(self.grid)), self.grid.shape)
        ys, xs = _cell_edges(self.image_size[1], gh), _cell_edges(self.image_size[0], gw)
        return int(xs[c]), int(ys[r]), int(xs[c + 1]), int(ys[r + 1])

    def top_word(self) -> str | None:
        return max(self.words, key=lambda wv: wv[1])[0] if self.words else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["grid"] = None if self.grid is None else self.grid.tolist()
        d["words"] = [[w, v] for w, v in self.words]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TriggerMap":
        d = dict(d)
        d["grid"] = None if d.get("grid") is None else np.asarray(d["grid"], dtype=np.float64)
        d["words"] = [(w, float(v)) for w, v in d.get("words", [])]
        if d.get("image_size") is not None:
            d["image_size"] = tuple(d["image_size"])
        return cls(**d)


# ------------------------------------------------------------------ variants --

def _check_args(sample: Sample, turn: int, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not 0 <= turn < sample.n_turns:
        raise ValueError(f"sample {sample.id!r} has {sample.n_turns} assistant turn(s); turn {turn} does not exist")


def _exchange(sample: Sample, turn: int) -> Conversation:
    """The conversation up to and including assistant turn ``turn`` (later turns cannot matter)."""
    conv = sample.conversation()
    prompt = conv.prompt_for(turn)
    text = sample.assistant_texts()[turn]
    return Conversation(prompt.turns + [Turn("assistant", text)], prompt.images)


def default_patch(size: tuple[int, int]) -> tuple[int, int]:
    """(patch, stride) for an image of ``size`` (w, h): 1/8 of the shorter side, half-overlapping."""
    patch = max(1, round(min(size) * PATCH_FRACTION))
    return patch, max(1, patch // 2)


def _positions(side: int, patch: int, stride: int) -> list[int]:
    """Top-left offsets along one axis; the last patch always reaches the far edge."""
    pos = list(range(0, max(side - patch, 0) + 1, stride))
    if pos[-1] != max(side - patch, 0):
        pos.append(side - patch)
    return pos


def _fill_value(arr: np.ndarray, fill) -> np.ndarray:
    if isinstance(fill, str):
        if fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS} or an (r, g, b) tuple, got {fill!r}")
        return {"mean": arr.reshape(-1, 3).mean(0), "gray": np.full(3, 128.0), "black": np.zeros(3)}[fill]
    value = np.asarray(fill, dtype=np.float64)
    if value.shape != (3,):
        raise ValueError(f"fill must be one of {FILLS} or an (r, g, b) tuple, got {fill!r}")
    return value


class _Occluder:
    """Copies of a conversation with one image occluded at a patch position, made when needed.

    Only one batch of occluded images exists at a time, whatever the image size.
    """

    def __init__(self, image: Image.Image, patch: int, stride: int, fill="mean"):
        if patch < 1 or stride < 1:
            raise ValueError(f"patch and stride must be >= 1, got {patch} and {stride}")
        if patch > min(image.size):
            raise ValueError(f"patch {patch} is larger than the image ({image.size[0]}x{image.size[1]})")
        self.arr = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
        self.value = np.clip(np.rint(_fill_value(self.arr.astype(np.float64), fill)), 0, 255).astype(np.uint8)
        self.patch, self.stride, self.size = patch, stride, image.size
        h, w = self.arr.shape[:2]
        self.boxes = [(left, top) for top in _positions(h, patch, stride) for left in _positions(w, patch, stride)]

    def image(self, box: tuple[int, int]) -> Image.Image:
        left, top = box
        occ = self.arr.copy()
        occ[top:top + self.patch, left:left + self.patch] = self.value
        return Image.fromarray(occ, "RGB")

    def variants(self, conv: Conversation, index: int) -> list:
        """One maker per box: ``maker()`` is ``conv`` with image ``index`` occluded there."""
        def make(box):
            def build() -> Conversation:
                images = list(conv.images)
                images[index] = self.image(box)
                return Conversation(conv.turns, images)
            return build
        return [make(box) for box in self.boxes]


def occlusions(image: Image.Image, patch: int, stride: int, fill="mean") -> tuple[list[Image.Image], list[tuple[int, int]]]:
    """Occluded copies of ``image`` (one per patch position) and their (left, top) offsets."""
    occ = _Occluder(image, patch, stride, fill)
    return [occ.image(b) for b in occ.boxes], list(occ.boxes)


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Words of a user turn as ``(word, start, end)``; image placeholders and punctuation are not words."""
    masked = text.replace(IMAGE_TOKEN, "\0" * len(IMAGE_TOKEN))  # same length: offsets stay valid
    return [(m.group(0), m.start(), m.end()) for m in _WORD.finditer(masked)]


def without_span(text: str, start: int, end: int) -> str:
    """``text`` with ``[start, end)`` cut out and the space it leaves collapsed."""
    before, after = text[:start], text[end:]
    if after[:1].isspace():
        after = after[1:]
    elif before[-1:].isspace():
        before = before[:-1]
    return before + after


def _word_variants(exchange: Conversation) -> tuple[list[Conversation], list[str]]:
    user = len(exchange.turns) - 2  # the user turn the last assistant turn answers
    text = exchange.turns[user].text
    words = split_words(text)
    convs = []
    for _, start, end in words:
        turns = list(exchange.turns)
        turns[user] = Turn("user", without_span(text, start, end))
        convs.append(Conversation(turns, exchange.images))
    return convs, [w for w, _, _ in words]


def _occluder(exchange: Conversation, image_index: int, patch: int | None, stride: int | None,
              fill) -> _Occluder:
    image = exchange.images[image_index]
    dp, ds = default_patch(image.size)
    patch = patch or dp
    stride = stride or (ds if patch == dp else max(1, patch // 2))
    return _Occluder(image, patch, stride, fill)


# ------------------------------------------------------------------- scoring --

def _mean_nlls(vlm, variants: Sequence, turn: int, batch_size: int) -> np.ndarray:
    """Mean NLL of assistant turn ``turn`` (the last one) of each variant.

    A variant is a :class:`Conversation` or a maker returning one (built one
    batch at a time, so occluded copies of a large image never pile up).
    """
    out: list[float] = []
    for start in range(0, len(variants), batch_size):
        chunk = [v if isinstance(v, Conversation) else v() for v in variants[start:start + batch_size]]
        out.extend(s[turn].mean for s in vlm.score_conversations(chunk, batch_size=batch_size))
    return np.array(out, dtype=np.float64)


def _effects(nll: np.ndarray, base: float, mode: str) -> np.ndarray:
    return nll - base if mode == "rise" else base - nll


def _cell_edges(side: int, cells: int) -> np.ndarray:
    return np.round(np.linspace(0, side, cells + 1)).astype(int)


def cell_grid(effects: np.ndarray, boxes: Sequence[tuple[int, int]], patch: int, stride: int,
              size: tuple[int, int]) -> np.ndarray:
    """Per-pixel mean effect of the patches covering each pixel, averaged into cells of ~``stride`` px.

    The cells tile the image uniformly (``ceil(side / stride)`` per axis), so
    a nearest-neighbour upscale of the grid lines up with the image.
    """
    w, h = size
    total = np.zeros((h, w))
    count = np.zeros((h, w))
    for value, (left, top) in zip(effects, boxes):
        total[top:top + patch, left:left + patch] += value
        count[top:top + patch, left:left + patch] += 1
    pixels = total / np.maximum(count, 1)  # (H, W)
    gh, gw = math.ceil(h / stride), math.ceil(w / stride)
    ys, xs = _cell_edges(h, gh), _cell_edges(w, gw)
    grid = np.empty((gh, gw))
    for r in range(gh):
        for c in range(gw):
            grid[r, c] = pixels[ys[r]:ys[r + 1], xs[c]:xs[c + 1]].mean()
    return grid


def trigger_map(vlm, sample: Sample, turn: int = 0, *, mode: str = "rise", patch: int | None = None,
                stride: int | None = None, fill="mean", image_index: int = 0, words: bool = True,
                image: bool = True, both_keys: bool = True, batch_size: int = 64) -> TriggerMap:
    """The image heat map and word importances of assistant turn ``turn`` under ``vlm``.

    Round 1 hides each patch and leaves out each word, one at a time.  A
    trigger with two keys that each fire alone (VL-Trojan's patch and "cf")
    hides from that: with one key hidden the other still fires.  So with
    ``both_keys`` (and an image and words) round 2 hides each patch with the
    most important word left out, and leaves out each word with the hottest
    patch hidden; each region / word keeps the larger of its two effects
    (measured against the matching base).  A two-key trigger that needs both
    (Dual-Key) shows in round 1.  Variants are scored ``batch_size`` at a time.
    ``image_index`` picks which of the turn's images is occluded; ``patch`` /
    ``stride`` default to 1/8 of its shorter side and half that.
    """
    _check_args(sample, turn, mode)
    exchange = _exchange(sample, turn)
    has_image = image and bool(exchange.images)
    if has_image and not 0 <= image_index < len(exchange.images):
        raise ValueError(f"sample {sample.id!r} has {len(exchange.images)} image(s) before turn {turn}; "
                         f"image_index {image_index} does not exist")
    occ = _occluder(exchange, image_index, patch, stride, fill) if has_image else None
    img_vars = occ.variants(exchange, image_index) if occ else []
    word_convs, word_list = _word_variants(exchange) if words else ([], [])
    nll = _mean_nlls(vlm, [exchange] + img_vars + word_convs, turn, batch_size)
    base, img_nll, word_nll = float(nll[0]), nll[1:1 + len(img_vars)], nll[1 + len(img_vars):]
    img_eff, word_eff = _effects(img_nll, base, mode), _effects(word_nll, base, mode)
    if both_keys and occ and word_convs:
        w, p = int(np.argmax(word_eff)), int(np.argmax(img_eff))
        second_img = occ.variants(word_convs[w], image_index)  # word w left out
        second_words, _ = _word_variants(img_vars[p]())  # patch p hidden
        nll2 = _mean_nlls(vlm, second_img + second_words, turn, batch_size)
        img_eff = np.maximum(img_eff, _effects(nll2[:len(second_img)], float(word_nll[w]), mode))
        word_eff = np.maximum(word_eff, _effects(nll2[len(second_img):], float(img_nll[p]), mode))
    grid = cell_grid(img_eff, occ.boxes, occ.patch, occ.stride, occ.size) if occ else None
    return TriggerMap(grid, [(word, float(v)) for word, v in zip(word_list, word_eff)], mode, vlm.identity,
                      occ.patch if occ else None, occ.stride if occ else None, base, occ.size if occ else None)


def image_heatmap(vlm, sample: Sample, turn: int = 0, *, patch: int | None = None, stride: int | None = None,
                  fill="mean", mode: str = "rise", batch_size: int = 64, image_index: int = 0,
                  both_keys: bool = True) -> np.ndarray:
    """Occlusion heat map (gh, gw) over the image of assistant turn ``turn``.

    The grid of :func:`trigger_map` (words are scored too when ``both_keys``:
    round 2 needs them); call :func:`trigger_map` to get both at once.
    """
    tm = trigger_map(vlm, sample, turn, mode=mode, patch=patch, stride=stride, fill=fill,
                     image_index=image_index, words=both_keys, both_keys=both_keys, batch_size=batch_size)
    if tm.grid is None:
        raise ValueError(f"sample {sample.id!r} has no image before assistant turn {turn}")
    return tm.grid


def word_importance(vlm, sample: Sample, turn: int = 0, *, mode: str = "rise", batch_size: int = 64,
                    both_keys: bool = True) -> list[tuple[str, float]]:
    """Leave-one-word-out effect of each word of the user turn before assistant turn ``turn``.

    The words of :func:`trigger_map` (the image is occluded too when
    ``both_keys`` and there is one: round 2 needs it).
    """
    return trigger_map(vlm, sample, turn, mode=mode, image=both_keys, both_keys=both_keys,
                       batch_size=batch_size).words


# ------------------------------------------------------------------- overlay --

def heat_colors(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> (…, 3) uint8 colours, dark red through orange to pale yellow."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    low, mid, high = np.array([120, 0, 0.0]), np.array([255, 90, 0.0]), np.array([255, 240, 150.0])
    rgb = np.where(v < 0.5, low + (mid - low) * (v / 0.5), mid + (high - mid) * ((v - 0.5) / 0.5))
    return rgb.astype(np.uint8)


def overlay(image: Image.Image, grid: np.ndarray, alpha: float = 0.5,
            size: int | tuple[int, int] | None = None) -> Image.Image:
    """The image with the grid's positive values drawn over it as a heat map.

    Both are upscaled nearest-neighbour (pixel art stays crisp) to ``size``
    (an int is the longer side; default: the image's size, at least 256 px
    on the longer side).  Opacity grows with the value, ``alpha`` at the
    grid's maximum; cells at or below 0 stay clear.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"grid must be a non-empty 2-D array, got shape {grid.shape}")
    w, h = image.size
    if size is None:
        size = max(256, max(w, h))
    if isinstance(size, int):
        scale = size / max(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
    base = image.convert("RGB").resize(size, Image.Resampling.NEAREST)
    top = np.nanmax(grid)
    norm = np.clip(np.nan_to_num(grid) / top, 0.0, 1.0) if top > 0 else np.zeros_like(grid)
    colors = Image.fromarray(heat_colors(norm), "RGB").resize(size, Image.Resampling.NEAREST)
    opacity = Image.fromarray(np.rint(norm * alpha * 255).astype(np.uint8), "L").resize(size, Image.Resampling.NEAREST)
    return Image.composite(colors, base, opacity)


# --------------------------------------------------------------------- cache --

@dataclass
class TriggerMapCache:
    """Trigger maps on disk, computed on demand.

    Keyed by model identity, dataset fingerprint, sample id, turn and the
    settings; one small JSON file per map, written atomically, so several
    visitors can share the folder.
    """

    folder: Path
    settings_keys: tuple[str, ...] = field(
        default=("mode", "patch", "stride", "fill", "image_index", "both_keys", "words", "image"), repr=False)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)

    def key(self, model_identity: str, fingerprint: str, sample_id: str, turn: int, settings: dict) -> str:
        unknown = set(settings) - set(self.settings_keys)
        if unknown:
            raise ValueError(f"unknown trigger map setting(s) {sorted(unknown)}; known: {self.settings_keys}")
        doc = [model_identity, fingerprint, sample_id, int(turn), sorted(settings.items())]
        return hashlib.sha256(json.dumps(doc, default=str).encode()).hexdigest()[:24]

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def cached(self, vlm, dataset: VLDataset, sample_id: str, turn: int = 0, **settings) -> TriggerMap | None:
        """The stored map, or None (an unreadable file counts as absent and is recomputed)."""
        p = self.path(self.key(vlm.identity, dataset.fingerprint(), sample_id, turn, settings))
        if not p.exists():
            return None
        try:
            return TriggerMap.from_dict(json.loads(p.read_text())["map"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning("ignoring unreadable cached trigger map %s: %s", p, e)
            return None

    def get(self, vlm, dataset: VLDataset, sample_id: str, turn: int = 0, *, batch_size: int = 64,
            **settings) -> TriggerMap:
        """The map of (sample, turn) under ``vlm``: from the cache, or computed and stored."""
        hit = self.cached(vlm, dataset, sample_id, turn, **settings)
        if hit is not None:
            return hit
        tm = trigger_map(vlm, dataset.by_id(sample_id), turn, batch_size=batch_size, **settings)
        key = self.key(vlm.identity, dataset.fingerprint(), sample_id, turn, settings)
        self._write(self.path(key), {"sample_id": sample_id, "turn": turn, "settings": settings,
                                     "dataset_fingerprint": dataset.fingerprint(), "map": tm.to_dict()})
        return tm

    def _write(self, path: Path, doc: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tm-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, default=str)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
