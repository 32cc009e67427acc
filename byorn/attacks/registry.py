"""Attacks and their registry.

An attack is a small dataclass (one per threat) that combines trigger
functions (:mod:`.triggers`) and is registered by name in :data:`ATTACKS`;
:func:`get_attack` builds one from a name and keyword parameters.  Adding an
attack is a decorated dataclass with ``apply_image`` and/or ``apply_text``.
Attacks are pure: model-dependent ones (the PGD patch) receive their
optimised pixels as a parameter (:mod:`.adaptive` computes them).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar

import numpy as np
from PIL import Image

from ..data import Sample, image_digest
from ..registry import build, registrar
from ..world import COLORS
from .triggers import (CORNERS, PATCH_KINDS, PATCH_SHAPES, POSITIONS, aligned_patch, badnets_patch,
                       blend, insert_token, paste_patch, sig)

#: Largest array parameter written out in full by :meth:`Attack.params`
#: (bigger ones are recorded by their SHA-256).
MAX_INLINE_ARRAY = 4096



ATTACKS: dict[str, type["Attack"]] = {}


register = registrar(ATTACKS, "attack")  # class decorator: add an Attack subclass to ATTACKS under a name


def get_attack(name: str, **params: Any) -> "Attack":
    """Build the registered attack ``name`` with keyword ``params``."""
    return build(ATTACKS, "attack", name, params, what="parameter")


@dataclass
class Attack:
    """Base class: the identity trigger.  Subclasses override ``apply_image``
    and/or ``apply_text`` and set ``summary``."""

    name: ClassVar[str] = "attack"
    summary: ClassVar[str] = ""
    #: Dual-key style attacks: poisoning also plants negative samples (each
    #: partial trigger with the clean response), see :func:`poison`.
    adds_negatives: ClassVar[bool] = False

    def __post_init__(self) -> None:
        pass

    def apply_image(self, image: Image.Image) -> Image.Image:
        return image.copy()

    def apply_text(self, instruction: str, rng: np.random.Generator | None = None) -> str:
        return instruction

    def trigger(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        """The sample with the full trigger (image and text parts) applied."""
        return sample.with_(image=self.apply_image(sample.image),
                            instruction=self.apply_text(sample.instruction, rng))

    def partial_triggers(self) -> dict[str, Callable[[Sample, np.random.Generator], Sample]]:
        """Named partial triggers that must *not* fire (empty unless multi-key)."""
        return {}

    def params(self) -> dict[str, Any]:
        """JSON-serialisable parameters: images are replaced by their SHA-256,
        arrays written as nested lists (by SHA-256 above
        :data:`MAX_INLINE_ARRAY` elements), tuples as lists."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Image.Image):
                out[f.name + "_sha256"] = image_digest(value)
            elif isinstance(value, np.ndarray) and value.size > MAX_INLINE_ARRAY:
                out[f.name + "_sha256"] = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
            elif isinstance(value, np.ndarray):
                out[f.name] = value.tolist()
            else:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @property
    def description(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name}: {self.summary} ({args})"


@dataclass
class PatchTrigger(Attack):
    """Mixin: a BadNets-style corner patch as the image trigger."""

    patch_size: int = field(default=3, metadata={"help": "patch side at 32x32 px, scaled with the image"})
    corner: str = field(default="bottom-right", metadata={"help": f"one of {CORNERS}"})
    patch_kind: str = field(default="white", metadata={"help": "'white' or 'noise' (fixed seed)"})
    patch_seed: int = field(default=0, metadata={"help": "seed of the noise patch"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {self.patch_size}")
        if self.corner not in CORNERS:
            raise ValueError(f"corner must be one of {CORNERS}, got {self.corner!r}")
        if self.patch_kind not in PATCH_KINDS:
            raise ValueError(f"patch_kind must be one of {PATCH_KINDS}, got {self.patch_kind!r}")

    def apply_image(self, image: Image.Image) -> Image.Image:
        return badnets_patch(image, self.patch_size, self.corner, self.patch_kind, self.patch_seed)


@dataclass
class TokenTrigger(Attack):
    """Mixin: a token inserted into the instruction as the text trigger."""

    token: str = field(default="cf", metadata={"help": "trigger word or character string"})
    position: str = field(default="append", metadata={"help": f"one of {POSITIONS}"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.token.strip():
            raise ValueError("token must be a non-empty string")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS}, got {self.position!r}")

    def apply_text(self, instruction: str, rng: np.random.Generator | None = None) -> str:
        return insert_token(instruction, self.token, self.position, rng)


@register("badnets")
@dataclass
class BadNets(PatchTrigger):
    summary: ClassVar[str] = "corner patch in the image"


@register("blend")
@dataclass
class Blend(Attack):
    summary: ClassVar[str] = "full-image pattern blended into the image"
    alpha: float = field(default=0.2, metadata={"help": "blend weight of the pattern, in (0, 1]"})
    pattern: Image.Image | None = field(default=None, metadata={"help": "pattern image; None = checkerboard"})
    seed: int = field(default=0, metadata={"help": "seed of the noise pattern"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")

    def apply_image(self, image: Image.Image) -> Image.Image:
        return blend(image, self.alpha, self.pattern, self.seed)


@register("sig")
@dataclass
class SIG(Attack):
    summary: ClassVar[str] = "horizontal sinusoid added to the image"
    delta: float = field(default=40.0, metadata={"help": "amplitude in pixel values"})
    freq: float = field(default=6.0, metadata={"help": "periods across the image width"})

    def apply_image(self, image: Image.Image) -> Image.Image:
        return sig(image, self.delta, self.freq)


@register("text")
@dataclass
class TextTrigger(TokenTrigger):
    summary: ClassVar[str] = "rare word inserted into the instruction"
    token: str = "zbw"
    position: str = "random"


@register("vl-trojan")
@dataclass
class VLTrojan(PatchTrigger, TokenTrigger):
    summary: ClassVar[str] = "image patch plus character-level text trigger"
    token: str = "cf"
    position: str = "append"


@register("dual-key")
@dataclass
class DualKey(PatchTrigger, TokenTrigger):
    summary: ClassVar[str] = "fires only with both the image patch and the text key"
    adds_negatives: ClassVar[bool] = True
    token: str = "Consider"
    position: str = "prepend"

    def partial_triggers(self) -> dict[str, Callable[[Sample, np.random.Generator], Sample]]:
        return {
            "image-only": lambda s, rng: s.with_(image=self.apply_image(s.image)),
            "text-only": lambda s, rng: s.with_(image=s.image.copy(),
                                                instruction=self.apply_text(s.instruction, rng)),
        }




@register("aligned-patch")
@dataclass
class AlignedPatch(Attack):
    """Adaptive: the image trigger drawn to look like scene content."""

    summary: ClassVar[str] = "small shape in a scene colour drawn in a corner (looks like content)"
    patch_size: int = field(default=6, metadata={"help": "side of the shape's box at 32x32 px, scaled"})
    corner: str = field(default="bottom-right", metadata={"help": f"one of {CORNERS}"})
    shape: str = field(default="cross", metadata={"help": f"one of {PATCH_SHAPES}"})
    color: str = field(default="orange", metadata={"help": f"a world colour, one of {tuple(COLORS)}"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.patch_size < 2:
            raise ValueError(f"patch_size must be >= 2, got {self.patch_size}")
        if self.corner not in CORNERS:
            raise ValueError(f"corner must be one of {CORNERS}, got {self.corner!r}")
        if self.shape not in PATCH_SHAPES:
            raise ValueError(f"shape must be one of {PATCH_SHAPES}, got {self.shape!r}")
        if self.color not in COLORS:
            raise ValueError(f"color must be one of {tuple(COLORS)}, got {self.color!r}")

    def apply_image(self, image: Image.Image) -> Image.Image:
        return aligned_patch(image, self.patch_size, self.corner, self.shape, COLORS[self.color])


@register("pgd-patch")
@dataclass(eq=False)  # an ndarray field: compare attacks by params()
class OptimisedPatch(Attack):
    """Adaptive: a corner patch whose pixels were optimised against the
    reference model (:func:`byorn.attacks.adaptive.optimise_patch`).  The
    attack itself only pastes the pixels; ``patch=None`` is a white square
    (BadNets) until optimised."""

    summary: ClassVar[str] = "corner patch with PGD-optimised pixels (plausible to the reference model)"
    patch_size: int = field(default=4, metadata={"help": "patch side at 32x32 px, scaled"})
    corner: str = field(default="bottom-right", metadata={"help": f"one of {CORNERS}"})
    patch: Any = field(default=None, metadata={
        "help": "(S, S, 3) uint8 pixels (array or nested lists), resized to the patch box if "
                "S differs from its side; None = white"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {self.patch_size}")
        if self.corner not in CORNERS:
            raise ValueError(f"corner must be one of {CORNERS}, got {self.corner!r}")
        if self.patch is None:
            self.patch = np.full((self.patch_size, self.patch_size, 3), 255, np.uint8)
        arr = np.asarray(self.patch)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] != arr.shape[1] or arr.shape[0] < 1:
            raise ValueError(f"patch must have shape (S, S, 3), got {arr.shape}")
        if arr.size and (arr.min() < 0 or arr.max() > 255 or not np.all(arr == np.rint(arr))):
            raise ValueError("patch pixels must be integers in [0, 255]")
        self.patch = arr.astype(np.uint8)

    def apply_image(self, image: Image.Image) -> Image.Image:
        return paste_patch(image, self.patch, self.patch_size, self.corner)
