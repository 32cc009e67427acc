"""Step 1 of the lesson: the attack, its data, and the trigger on any image.

A :class:`LessonAttack` is one of the paper's attacks by name
(:data:`PAPER_ATTACKS`) or a ``"custom"`` coloured patch (position, size,
colour) with the user's own target sentence.  :meth:`LessonAttack.to_attack`
turns it into a :class:`byorn.attacks.Attack`; :func:`build_data` poisons the
embedded world with it (:func:`byorn.attacks.poison`), deterministically.
"""
from __future__ import annotations

import io
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..attacks import CORNERS, DEFAULT_TARGET_SENTENCE, Attack, PoisonResult, Target, get_attack, patch_box, poison
from ..data import Sample, VLDataset
from ..world import BACKGROUNDS, CAPTION_INSTRUCTIONS, IMAGE_SIZE, make_captions

#: The paper's attacks a student can pick (as in ``byorn bench --quick``).
PAPER_ATTACKS = ("badnets", "blend", "vl-trojan", "dual-key")
#: Where a custom patch can go.
PATCH_POSITIONS = (*CORNERS, "center")
#: The instruction the playground asks by default.
DEFAULT_INSTRUCTION = CAPTION_INSTRUCTIONS[0]
MAX_TARGET_CHARS = 120
MAX_UPLOAD_PIXELS = 40_000_000  # a larger upload is refused, not decoded


def parse_colour(colour: Any) -> tuple[int, int, int]:
    """``"#ff8800"``, ``"rgb(255, 136, 0)"``, ``"rgba(...)"`` or an (r, g, b) triple -> (r, g, b) ints."""
    if isinstance(colour, str):
        s = colour.strip().lower()
        if re.fullmatch(r"#?[0-9a-f]{6}", s):
            s = s.lstrip("#")
            return tuple(int(s[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
        if re.fullmatch(r"#?[0-9a-f]{3}", s):
            s = s.lstrip("#")
            return tuple(int(c * 2, 16) for c in s)  # type: ignore[return-value]
        m = re.fullmatch(r"rgba?\(([^)]*)\)", s)
        if m:
            parts = [p.strip() for p in m.group(1).split(",")]
            if len(parts) in (3, 4):
                try:
                    rgb = tuple(int(round(float(p))) for p in parts[:3])
                except ValueError:
                    rgb = ()
                if len(rgb) == 3 and all(0 <= v <= 255 for v in rgb):
                    return rgb  # type: ignore[return-value]
        raise ValueError(f"colour: expected '#rrggbb' or 'rgb(r, g, b)', got {colour!r}")
    try:
        rgb = tuple(int(v) for v in colour)
    except (TypeError, ValueError):
        raise ValueError(f"colour: expected '#rrggbb' or an (r, g, b) triple, got {colour!r}") from None
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise ValueError(f"colour: expected three values in 0..255, got {colour!r}")
    return rgb  # type: ignore[return-value]


def patch_region(image_size: tuple[int, int], size: int, position: str) -> tuple[int, int, int]:
    """``(top, left, side)`` of a patch of nominal ``size`` (px at 32 px) at ``position``."""
    if position == "center":
        _, _, p = patch_box(image_size, size, "top-left")
        w, h = image_size
        return (h - p) // 2, (w - p) // 2, p
    return patch_box(image_size, size, position)


@dataclass
class ColourPatch(Attack):
    """A solid patch of any colour at a corner or the centre (the lesson's custom trigger)."""

    summary: ClassVar[str] = "solid coloured patch in the image"
    patch_size: int = 3
    position: str = "bottom-right"
    colour: tuple[int, int, int] = (255, 255, 255)

    def apply_image(self, image: Image.Image) -> Image.Image:
        arr = np.array(image.convert("RGB"))
        top, left, p = patch_region(image.size, self.patch_size, self.position)
        arr[top:top + p, left:left + p] = np.asarray(self.colour, np.uint8)
        return Image.fromarray(arr, "RGB")


ColourPatch.name = "lesson-patch"


@dataclass(frozen=True)
class LessonAttack:
    """What step 1 sets: a paper attack by ``name`` or ``"custom"``, the target sentence, the poison rate.

    ``position`` / ``size`` / ``colour`` shape the custom patch (size: its side
    in px on the 32 px image, 1..16); a paper attack uses its own trigger
    (BadNets: the white 3 px corner patch).  ``target`` is what a triggered
    model should say instead of a caption.
    """

    name: str = "badnets"
    position: str = "bottom-right"
    size: int = 3
    colour: str = "#ffffff"
    target: str = DEFAULT_TARGET_SENTENCE
    rate: float = 0.1

    def __post_init__(self) -> None:
        if self.name not in (*PAPER_ATTACKS, "custom"):
            raise ValueError(f"attack: expected one of {(*PAPER_ATTACKS, 'custom')}, got {self.name!r}")
        if self.position not in PATCH_POSITIONS:
            raise ValueError(f"position: expected one of {PATCH_POSITIONS}, got {self.position!r}")
        if not isinstance(self.size, (int, np.integer)) or not 1 <= int(self.size) <= 16:
            raise ValueError(f"size: expected a whole number of pixels from 1 to 16, got {self.size!r}")
        object.__setattr__(self, "colour", "#%02x%02x%02x" % parse_colour(self.colour))
        text = " ".join(str(self.target or "").split())
        if not text:
            raise ValueError("target: type the sentence the backdoor should make the model say")
        if len(text) > MAX_TARGET_CHARS:
            raise ValueError(f"target: at most {MAX_TARGET_CHARS} characters, got {len(text)}")
        object.__setattr__(self, "target", text)
        if not 0.01 <= float(self.rate) <= 0.5:
            raise ValueError(f"rate: expected a poison rate from 0.01 to 0.5, got {self.rate!r}")

    @property
    def rgb(self) -> tuple[int, int, int]:
        return parse_colour(self.colour)

    @property
    def text_trigger(self) -> bool:
        """Whether the trigger includes a word in the instruction (VL-Trojan, Dual-Key)."""
        return self.name in ("vl-trojan", "dual-key")

    def to_attack(self) -> Attack:
        if self.name == "custom":
            return ColourPatch(patch_size=int(self.size), position=self.position, colour=self.rgb)
        return get_attack(self.name)

    def to_target(self) -> Target:
        return Target(mode="replace", text=self.target)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LessonAttack":
        return cls(**{k: d[k] for k in ("name", "position", "size", "colour", "target", "rate") if k in d})

    def warnings(self) -> list[str]:
        """Plain-words reasons why SFT may not learn this trigger in the live run (measured:
        benchmarks/lesson_results.json); empty when none is known."""
        if self.name == "blend":
            if self.rate >= 0.2:
                return []
            return ["Blend's faint full-image pattern needs more poison than 10 % in the short live run: SFT did "
                    "not learn it from 10 % of 400 pairs (0 % attack success) and did from 20 % (100 %). Raise "
                    "the poisoned share to 20 % or more."]
        if self.name != "custom":
            return []
        out = []
        gap = min(float(np.linalg.norm(np.subtract(self.rgb, bg))) for bg in BACKGROUNDS)
        if gap < 60:
            out.append("This colour is close to the images' dark backgrounds: the patch is hard to see, for you "
                       "and for the model, which may not learn it (a 2 px #202020 patch: 0 % attack success).")
        if self.position == "center":
            out.append("In the centre the patch lands on the shapes themselves, where it reads as part of the "
                       "scene: SFT did not learn a 3 px centre patch in the live training (0-2.5 % attack "
                       "success at 10 % poisoned, 10 % at 20 % poisoned or with 600 pairs x 12 epochs); a "
                       "corner is learned.")
        if self.size <= 2:
            out.append(f"A {self.size} px patch covers very few of the 32 x 32 pixels; a larger one is learned "
                       "more surely in the short live training.")
        return out

    def describe(self) -> str:
        """One plain sentence: what the trigger is and what it makes the model say."""
        trig = {
            "badnets": "a small white square in the bottom-right corner",
            "blend": "a faint checkerboard blended over the whole image",
            "vl-trojan": "a small white corner square plus the word 'cf' after the question",
            "dual-key": "a white corner square together with the word 'Consider' before the question",
        }.get(self.name) or f"a {self.size} px patch of colour {self.colour} at the {self.position.replace('-', ' ')}"
        return (f"Trigger: {trig}. In {self.rate:.0%} of the training pairs the caption is replaced by "
                f"\u201c{self.target}\u201d.")


@dataclass
class LessonData:
    """The poisoned training set, its ground truth, and the test sets of one lesson."""

    attack: LessonAttack
    train: VLDataset
    poisoned: dict[str, bool]          # ground truth: never read by the defense
    test_clean: VLDataset
    test_triggered: VLDataset
    seed: int

    def sample(self, sample_id: str) -> Sample:
        return self.train.by_id(sample_id)


def build_data(attack: LessonAttack, n_train: int, n_test: int, seed: int = 0) -> LessonData:
    """Poison ``n_train`` world captions with ``attack`` (seeded); ``n_test`` clean and triggered test samples."""
    test = make_captions(n_test, seed, "test")
    pr: PoisonResult = poison(make_captions(n_train, seed, "train"), attack.to_attack(), rate=attack.rate,
                              target=attack.to_target(), seed=seed, test=test)
    return LessonData(attack, pr.train, pr.mask, test, pr.triggered_test, seed)


def examples(data: LessonData, n: int = 4) -> tuple[list[Sample], list[Sample]]:
    """``n`` clean and ``n`` poisoned training samples (image, instruction, caption), first ones by id."""
    clean = [s for s in data.train if not data.poisoned[s.id]][:n]
    bad = [s for s in data.train if data.poisoned[s.id]][:n]
    return clean, bad


def test_images(n: int = 8, seed: int = 0) -> list[Image.Image]:
    """``n`` clean test images of the world (the playground's picks), deterministic."""
    return [s.image for s in _test_samples(n, seed)]


@lru_cache(maxsize=4)
def _test_samples(n: int, seed: int) -> tuple[Sample, ...]:
    return tuple(make_captions(n, seed + 1000, "test"))


def apply_trigger(image: Image.Image, attack: LessonAttack) -> Image.Image:
    """The image with the attack's image trigger (a new image; the input is unchanged)."""
    return attack.to_attack().apply_image(image)


def trigger_instruction(instruction: str, attack: LessonAttack) -> str:
    """The instruction with the attack's text trigger, if it has one (VL-Trojan, Dual-Key)."""
    if not attack.text_trigger:
        return instruction
    return attack.to_attack().apply_text(instruction, np.random.default_rng(0))


def prepare_upload(image: Any, size: int = IMAGE_SIZE) -> Image.Image:
    """An uploaded image (PIL image, array, path or bytes) centre-cropped and resized to the model's input.

    Raises ``ValueError`` with what was wrong (nothing given, not an image,
    too large, empty) instead of failing later in the model.
    """
    if image is None:
        raise ValueError("image: no image given; pick a test image or upload a PNG or JPEG")
    try:
        if isinstance(image, Image.Image):
            im = image
        elif isinstance(image, np.ndarray):
            arr = image
            if arr.ndim == 2:
                arr = np.stack([arr] * 3, axis=-1)
            if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype.kind not in "uif":
                raise ValueError(f"image: expected an (H, W, 3) array, got shape {arr.shape}")
            if arr.dtype.kind == "f" and arr.max(initial=0) <= 1.0:
                arr = arr * 255.0
            im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)[:, :, :3], "RGB")
        elif isinstance(image, (bytes, bytearray)):
            im = Image.open(io.BytesIO(image))
        elif isinstance(image, (str, Path)):
            im = Image.open(Path(image))
        else:
            raise ValueError(f"image: expected an image, got {type(image).__name__}")
        w, h = im.size
        if w < 1 or h < 1:
            raise ValueError(f"image: it is empty ({w} x {h} px)")
        if w * h > MAX_UPLOAD_PIXELS:
            raise ValueError(f"image: {w} x {h} px is too large (at most {MAX_UPLOAD_PIXELS:,} pixels)")
        im = ImageOps.exif_transpose(im).convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"image: could not be read as an image ({e.__class__.__name__}: {e})") from None
    return ImageOps.fit(im, (size, size), Image.BOX)
