"""Samples and datasets: the unit every other module works on.

A :class:`Sample` is one supervised fine-tuning example of a vision-language
model: an image, an instruction and the response to train on, plus free-form
metadata.  A :class:`VLDataset` is an ordered list of samples with unique ids
and a content fingerprint used to key caches and review decisions.

Loading and saving in the on-disk formats (LLaVA JSON, messages+images JSONL,
Hugging Face ``datasets`` folders) lives in :mod:`byorn.io`.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator, Sequence

from PIL import Image


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


@dataclass
class Sample:
    """One (image, instruction, response) training example.

    ``instruction`` never contains the ``<image>`` placeholder: where the image
    goes is the chat template's business.  ``meta`` holds anything else that
    travels with the sample (source path, ground-truth poison flag for
    evaluation, trigger name ...).  The defense never reads ``meta``.
    """

    id: str
    image: Image.Image
    instruction: str
    response: str
    meta: dict[str, Any] = field(default_factory=dict)

    def with_(self, **changes: Any) -> "Sample":
        """A copy with some fields replaced (``meta`` is copied, not shared)."""
        changes.setdefault("meta", dict(self.meta))
        return replace(self, **changes)


def image_digest(image: Image.Image) -> str:
    """SHA-256 of an image's decoded RGB pixels and size (format independent)."""
    rgb = image.convert("RGB")
    h = hashlib.sha256()
    h.update(f"{rgb.size[0]}x{rgb.size[1]}".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


class VLDataset(Sequence[Sample]):
    """An ordered collection of samples with unique ids."""

    def __init__(self, samples: Iterable[Sample], name: str = "dataset"):
        self.samples: list[Sample] = list(samples)
        self.name = name
        seen: set[str] = set()
        for s in self.samples:
            if s.id in seen:
                raise DataError("duplicate sample id", sample_id=s.id, field="id")
            seen.add(s.id)
        self._index = {s.id: i for i, s in enumerate(self.samples)}
        self._fingerprint: str | None = None

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

    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def subset(self, ids: Iterable[str], name: str | None = None) -> "VLDataset":
        return VLDataset((self.by_id(i) for i in ids), name=name or self.name)

    def fingerprint(self) -> str:
        """Content hash over ids, instructions, responses and image pixels.

        Stable across formats and file locations: the same data saved as LLaVA
        JSON or as a ``datasets`` folder has the same fingerprint.
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            for s in self.samples:
                for part in (s.id, s.instruction, s.response, image_digest(s.image)):
                    h.update(part.encode("utf-8"))
                    h.update(b"\x00")
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
