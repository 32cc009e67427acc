"""Samples and datasets: the unit every other module works on.

A :class:`Sample` is one supervised fine-tuning example of a vision-language
model: a **conversation** of user / assistant turns (a system turn may lead),
zero or more images, and free-form metadata.  Each image is an
:class:`ImageRef`, decoded only when a batch needs it, and sits in the
conversation where an ``<image>`` placeholder (:data:`IMAGE_TOKEN`) stands in
a turn's text.  Single-turn data (one image, one instruction, one response) is
the case of one exchange; :meth:`Sample.single` builds it, and the properties
``image`` / ``instruction`` / ``response`` read it back.

A :class:`Conversation` is what a model sees: the same turns with the images
decoded.  A :class:`VLDataset` is an ordered list of samples with unique ids
and a content fingerprint that keys caches and review decisions.

The unit the method works on is the **assistant turn** (DESIGN.md section 7):
turn ``k`` of a sample is its ``k``-th assistant turn, counted from 0.

Loading and saving in the on-disk formats lives in :mod:`byorn.data.io`.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator, Sequence

from PIL import Image

IMAGE_TOKEN = "<image>"
ROLES = ("system", "user", "assistant")
DEFAULT_MAX_PIXELS = 40_000_000

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad input data.  The message names the sample id, the field and the file."""

    def __init__(self, message: str, *, sample_id: str | None = None,
                 field: str | None = None, path: str | None = None):
        parts = []
        if sample_id is not None:
            parts.append(f"sample {sample_id!r}")
        if field is not None:
            parts.append(f"field {field!r}")
        if path is not None:
            parts.append(f"file {path}")
        prefix = (", ".join(parts) + ": ") if parts else ""
        super().__init__(prefix + message)
        self.sample_id, self.field, self.path = sample_id, field, path


# ------------------------------------------------------------------ images --

class ImageRef:
    """An image decoded on demand: a file path, encoded bytes, or a PIL image.

    Holding references instead of pixels keeps a 100k-sample dataset small;
    :meth:`load` decodes (in the batch pipeline), refusing images above
    ``max_pixels`` (decompression bombs) and naming the file on failure.
    """

    __slots__ = ("source", "label")

    def __init__(self, source: str | os.PathLike | bytes | Image.Image, label: str | None = None):
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        if not isinstance(source, (str, bytes, Image.Image)):
            raise TypeError(f"an image is a path, bytes or a PIL image, got {type(source).__name__}")
        self.source = source
        self.label = label or (source if isinstance(source, str) else "(embedded)")

    @property
    def path(self) -> str | None:
        return self.source if isinstance(self.source, str) else None

    def load(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
        """The decoded RGB image (an in-memory RGB image is returned as is: do not mutate it).

        Raises :class:`DataError` (field ``images``, the file named) for a
        missing, corrupt or oversized image.
        """
        if isinstance(self.source, Image.Image):
            return self.source.convert("RGB") if self.source.mode != "RGB" else self.source
        opener = (lambda: Image.open(self.source)) if isinstance(self.source, str) \
            else (lambda: Image.open(io.BytesIO(self.source)))
        try:
            with opener() as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise DataError(f"image {self.label} is {width}x{height}, above the limit of "
                                    f"{max_pixels:,} pixels", field="images")
                im.load()
                return im.convert("RGB")
        except DataError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise DataError(f"cannot read image {self.label}: {e}", field="images") from None

    def digest(self) -> str:
        """SHA-256 of the image's encoded bytes (files are read in a streaming pass).

        In-memory images are hashed as the PNG :func:`png_bytes` writes, so an
        image saved by :mod:`byorn.data.io` and read back has the same digest.
        """
        h = hashlib.sha256()
        if isinstance(self.source, str):
            try:
                with open(self.source, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
            except OSError as e:
                raise DataError(f"cannot read image {self.label}: {e}", field="images") from None
        elif isinstance(self.source, bytes):
            h.update(self.source)
        else:
            h.update(png_bytes(self.source))
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"ImageRef({self.label!r})"


def as_image_ref(image: "ImageRef | Image.Image | str | os.PathLike | bytes") -> ImageRef:
    return image if isinstance(image, ImageRef) else ImageRef(image)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def image_digest(image: Image.Image) -> str:
    """SHA-256 of an image's decoded RGB pixels and size (format independent)."""
    rgb = image.convert("RGB")
    h = hashlib.sha256()
    h.update(f"{rgb.size[0]}x{rgb.size[1]}".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


def strip_image_token(text: str) -> str:
    """Remove ``<image>`` placeholders and the whitespace around them."""
    if IMAGE_TOKEN not in text:
        return text
    return " ".join(p.strip() for p in text.split(IMAGE_TOKEN) if p.strip())


# ------------------------------------------------------------ conversations --

@dataclass(frozen=True)
class Turn:
    """One turn: ``role`` in :data:`ROLES`; ``text`` may hold ``<image>`` placeholders."""

    role: str
    text: str

    @property
    def n_images(self) -> int:
        return self.text.count(IMAGE_TOKEN)


@dataclass
class Conversation:
    """Turns and their decoded images (in placeholder order): what a model sees."""

    turns: list[Turn]
    images: list[Image.Image] = field(default_factory=list)

    @classmethod
    def single(cls, image: Image.Image | None, instruction: str,
               response: str | None = None) -> "Conversation":
        """One exchange; the image (if any) goes before the instruction."""
        user = (IMAGE_TOKEN + instruction) if image is not None else instruction
        turns = [Turn("user", user)] + ([Turn("assistant", response)] if response is not None else [])
        return cls(turns, [image] if image is not None else [])

    def assistant_positions(self) -> list[int]:
        """Indices into ``turns`` of the assistant turns, in order."""
        return [i for i, t in enumerate(self.turns) if t.role == "assistant"]

    def prompt_for(self, k: int) -> "Conversation":
        """Everything before assistant turn ``k`` (it ends with a user turn), with its images."""
        pos = self.assistant_positions()[k]
        turns = self.turns[:pos]
        n_img = sum(t.n_images for t in turns)
        return Conversation(list(turns), self.images[:n_img])

    def without_last_exchange(self) -> "Conversation | None":
        """The conversation cut before its last assistant turn's user turn (None if one exchange is left).

        Used to truncate an over-long conversation at a turn boundary.
        """
        pos = self.assistant_positions()
        if len(pos) <= 1:
            return None
        keep = self.turns[:pos[-1] - 1]
        return Conversation(list(keep), self.images[:sum(t.n_images for t in keep)])

    def with_assistant(self, k: int, text: str) -> "Conversation":
        """A copy whose assistant turn ``k`` says ``text``."""
        pos = self.assistant_positions()[k]
        turns = list(self.turns)
        turns[pos] = Turn("assistant", text)
        return Conversation(turns, list(self.images))


def check_turns(turns: Sequence[Turn], n_images: int, *, sample_id: str | None = None,
                path: str | None = None, need_assistant: bool = True) -> None:
    """Raise :class:`DataError` unless ``turns`` are a well-formed conversation.

    Well-formed: an optional leading system turn, then user / assistant
    alternating from a user turn; every assistant turn non-empty and free of
    image placeholders; as many placeholders as images; at least one
    assistant turn when ``need_assistant``.
    """
    def err(msg: str, fld: str) -> DataError:
        return DataError(msg, sample_id=sample_id, field=fld, path=path)

    body = list(turns)
    if body and body[0].role == "system":
        body = body[1:]
    if not body:
        raise err("the conversation has no user turn", "turns")
    for i, t in enumerate(turns):
        if t.role not in ROLES:
            raise err(f"unknown role {t.role!r} (expected one of {', '.join(ROLES)})", f"turns[{i}].role")
        if not isinstance(t.text, str):
            raise err(f"expected text, got {type(t.text).__name__}", f"turns[{i}].text")
    offset = len(turns) - len(body)
    for j, t in enumerate(body):
        want = "user" if j % 2 == 0 else "assistant"
        if t.role != want:
            raise err(f"turn {offset + j} is {t.role!r} where {want!r} was expected: turns must "
                      "alternate user / assistant (an optional system turn first)", f"turns[{offset + j}].role")
        if t.role == "assistant":
            if not t.text.strip():
                raise err(f"assistant turn {j // 2} is empty", f"turns[{offset + j}].text")
            if IMAGE_TOKEN in t.text:
                raise err(f"assistant turn {j // 2} holds an image placeholder", f"turns[{offset + j}].text")
    if need_assistant and not any(t.role == "assistant" for t in body):
        raise err("the conversation has no assistant turn to train on", "turns")
    placeholders = sum(t.n_images for t in turns)
    if placeholders != n_images:
        raise err(f"{placeholders} image placeholder(s) {IMAGE_TOKEN!r} in the turns but "
                  f"{n_images} image(s)", "images")


# ------------------------------------------------------------------ samples --

@dataclass
class Sample:
    """One training example: a conversation with image references and metadata.

    ``meta`` holds anything else that travels with the sample (source path,
    the trigger of a test sample ...).  The defense never reads ``meta``.
    Build single-turn samples with :meth:`single`.
    """

    id: str
    turns: list[Turn]
    images: list[ImageRef] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def single(cls, id: str, image: Image.Image | ImageRef | str | None, instruction: str,
               response: str, meta: dict[str, Any] | None = None) -> "Sample":
        """One image (or none), one instruction, one response."""
        refs = [as_image_ref(image)] if image is not None else []
        user = (IMAGE_TOKEN + instruction) if refs else instruction
        return cls(id, [Turn("user", user), Turn("assistant", response)], refs, dict(meta or {}))

    # -- the single-exchange view (first user turn, first assistant turn) --
    @property
    def image(self) -> Image.Image | None:
        """The first image, decoded (None for a text-only sample)."""
        return self.images[0].load() if self.images else None

    @property
    def instruction(self) -> str:
        """The first user turn's text, placeholders removed."""
        return strip_image_token(next(t.text for t in self.turns if t.role == "user"))

    @property
    def response(self) -> str:
        """The first assistant turn's text."""
        return self.assistant_texts()[0]

    @property
    def n_turns(self) -> int:
        """Number of assistant turns."""
        return sum(t.role == "assistant" for t in self.turns)

    def assistant_texts(self) -> list[str]:
        return [t.text for t in self.turns if t.role == "assistant"]

    def user_text_before(self, k: int) -> str:
        """The user turn that assistant turn ``k`` answers, placeholders removed."""
        pos = [i for i, t in enumerate(self.turns) if t.role == "assistant"][k]
        return strip_image_token(self.turns[pos - 1].text)

    def conversation(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> Conversation:
        """The turns with the images decoded (errors name this sample)."""
        images = []
        for k, ref in enumerate(self.images):
            try:
                images.append(ref.load(max_pixels))
            except DataError as e:
                raise DataError(str(e).split(": ", 1)[-1], sample_id=self.id,
                                field=f"images[{k}]", path=ref.path) from None
        return Conversation(list(self.turns), images)

    def with_(self, *, image: Image.Image | ImageRef | None = None, instruction: str | None = None,
              response: str | None = None, **changes: Any) -> "Sample":
        """A copy with fields replaced (``meta`` is copied, not shared).

        ``image`` replaces the first image, ``instruction`` the text of the first
        user turn (its placeholders kept in front), ``response`` the first
        assistant turn; other keywords replace dataclass fields.
        """
        changes.setdefault("meta", dict(self.meta))
        turns = list(changes.pop("turns", self.turns))
        images = list(changes.pop("images", self.images))
        if image is not None:
            if not images:
                raise ValueError(f"sample {self.id!r} has no image to replace")
            images[0] = as_image_ref(image)
        if instruction is not None:
            i = next(i for i, t in enumerate(turns) if t.role == "user")
            turns[i] = Turn("user", IMAGE_TOKEN * turns[i].n_images + instruction)
        if response is not None:
            turns = _replace_assistant(turns, 0, response)
        return replace(self, turns=turns, images=images, **changes)

    def with_assistant(self, k: int, text: str) -> "Sample":
        """A copy whose assistant turn ``k`` says ``text``."""
        return replace(self, turns=_replace_assistant(self.turns, k, text), meta=dict(self.meta))


def turn_key(key: "tuple[str, int] | str", turn: int = 0) -> tuple[str, int]:
    """``(sample id, assistant turn)`` from such a pair, or from a plain sample id (then turn ``turn``).

    Decisions, flags and proposals are keyed by the pair; single-turn callers
    may pass sample ids alone.
    """
    if isinstance(key, tuple):
        sid, k = key
        return str(sid), int(k)
    return str(key), int(turn)


def _replace_assistant(turns: Sequence[Turn], k: int, text: str) -> list[Turn]:
    out, seen = list(turns), -1
    for i, t in enumerate(out):
        if t.role == "assistant":
            seen += 1
            if seen == k:
                out[i] = Turn("assistant", text)
                return out
    raise IndexError(f"no assistant turn {k} (the sample has {seen + 1})")


# ----------------------------------------------------------------- datasets --

class VLDataset(Sequence[Sample]):
    """An ordered collection of samples with unique ids."""

    def __init__(self, samples: Iterable[Sample], name: str = "dataset", *,
                 fingerprint: str | None = None):
        self.samples: list[Sample] = list(samples)
        self.name = name
        self._index: dict[str, int] = {}
        for i, s in enumerate(self.samples):
            if s.id in self._index:
                raise DataError("duplicate sample id", sample_id=s.id, field="id")
            self._index[s.id] = i
        self._fingerprint = fingerprint

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return VLDataset(self.samples[i], name=self.name)
        return self.samples[i]

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def by_id(self, sample_id: str) -> Sample:
        try:
            return self.samples[self._index[sample_id]]
        except KeyError:
            raise KeyError(f"no sample with id {sample_id!r} in {self.name}") from None

    def index_of(self, sample_id: str) -> int:
        return self._index[sample_id]

    def __contains__(self, sample_id: object) -> bool:  # type: ignore[override]
        return sample_id in self._index

    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def subset(self, ids: Iterable[str], name: str | None = None) -> "VLDataset":
        return VLDataset((self.by_id(i) for i in ids), name=name or self.name)

    def fingerprint(self) -> str:
        """Content hash over ids, turns and the images' bytes (one streaming pass).

        Computed once per dataset object (loaders may supply a cached value).
        The same files loaded from LLaVA JSON or a ``datasets`` folder written
        by :mod:`byorn.data.io` give the same fingerprint.
        """
        if self._fingerprint is None:
            self._fingerprint = content_fingerprint(self.samples)
        return self._fingerprint


def content_fingerprint(samples: Iterable[Sample]) -> str:
    """Content hash over ids, turns and the images' bytes, in one streaming pass.

    An image file shared by several samples is read once.  An image that
    cannot be read is hashed as a marker naming it, so that a dataset with a
    broken image still has a fingerprint and the audit can name (or, with
    ``skip_invalid``, skip) the sample when it decodes it.  The on-disk cache
    of loaded datasets' fingerprints is :mod:`byorn.data.fingerprint`.
    """
    h = hashlib.sha256()
    digests: dict[Any, str] = {}
    for s in samples:
        parts = [s.id.encode("utf-8")]
        parts += [f"{t.role}\x01{t.text}".encode("utf-8") for t in s.turns]
        parts += [_digest(r, digests).encode("ascii") for r in s.images]
        h.update(b"\x00".join(parts) + b"\x00\x02")
    return h.hexdigest()[:16]


def _digest(ref: ImageRef, memo: dict[Any, str]) -> str:
    src = ref.source
    key = src if isinstance(src, str) else id(src)  # objects outlive the pass: ids stay unique
    got = memo.get(key)
    if got is None:
        got = memo[key] = _hash_source(ref)
    return got


def _hash_source(ref: ImageRef) -> str:
    src = ref.source
    if isinstance(src, bytes):
        return hashlib.sha256(src).hexdigest()
    if isinstance(src, Image.Image):
        return hashlib.sha256(png_bytes(src)).hexdigest()
    h = hashlib.sha256()
    try:
        with open(src, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError as e:
        logger.debug("fingerprint: image %s unreadable (%s): hashed as a marker", src, e)
        return "unreadable:" + hashlib.sha256(src.encode("utf-8")).hexdigest()
    return h.hexdigest()
