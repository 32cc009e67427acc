"""What the savers share: image files written byte for byte, meta, file names.

Savers copy each image's encoded bytes as they are (a file is copied, bytes
are written, an in-memory image is written as the PNG that
:func:`~byorn.data.png_bytes` makes), never re-encoding, so the fingerprint of
the saved data equals the fingerprint of the data saved, whichever format.
An image file shared by several samples is written once.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any, Iterator

from PIL import Image

from .sample import DataError, ImageRef, Sample, check_turns, png_bytes

logger = logging.getLogger("byorn.data.io")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
_MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"GIF87a", ".gif"),
          (b"GIF89a", ".gif"), (b"BM", ".bmp"), (b"II*\x00", ".tiff"), (b"MM\x00*", ".tiff"))


def check_sample(sample: Sample) -> None:
    """Refuse to write a sample that would not load back (DataError naming it)."""
    check_turns(sample.turns, len(sample.images), sample_id=sample.id)


def image_bytes(ref: ImageRef, sample_id: str, k: int) -> bytes:
    """The encoded bytes of an image (a PNG for an in-memory image)."""
    if isinstance(ref.source, bytes):
        return ref.source
    if isinstance(ref.source, Image.Image):
        return png_bytes(ref.source)
    try:
        with open(ref.source, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"cannot read image {ref.label}: {e}", sample_id=sample_id,
                        field=f"images[{k}]", path=ref.source) from None


def suffix_for(data: bytes) -> str:
    """A file suffix for encoded image bytes, from their magic number."""
    for magic, suffix in _MAGIC:
        if data.startswith(magic):
            return suffix
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".img"  # PIL reads by content, not by name


class ImageWriter:
    """Writes the images of samples under ``out/image_dir``; returns POSIX paths relative to ``out``."""

    def __init__(self, out: Path, image_dir: str = "images"):
        self.folder = out / image_dir
        self.folder.mkdir(parents=True, exist_ok=True)
        self.prefix = PurePosixPath(Path(image_dir).as_posix())
        self.used: set[str] = set()
        self.written: dict[Any, str] = {}  # source path, or id() of bytes / image -> relative path

    def write(self, sample: Sample) -> list[str]:
        rels = []
        for k, ref in enumerate(sample.images):
            key = ref.source if isinstance(ref.source, str) else id(ref.source)
            rel = self.written.get(key)
            if rel is None:
                stem = safe_filename(sample.id) + (f"_{k}" if len(sample.images) > 1 else "")
                rel = self.written[key] = self._write(ref, unique_name(stem, self.used), sample.id, k)
            rels.append(rel)
        return rels

    def _write(self, ref: ImageRef, name: str, sample_id: str, k: int) -> str:
        if isinstance(ref.source, str):
            suffix = Path(ref.source).suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                try:
                    shutil.copyfile(ref.source, self.folder / f"{name}{suffix}")
                except OSError as e:
                    raise DataError(f"cannot copy image {ref.label}: {e}", sample_id=sample_id,
                                    field=f"images[{k}]", path=ref.source) from None
                return str(self.prefix / f"{name}{suffix}")
        data = image_bytes(ref, sample_id, k)
        filename = f"{name}{suffix_for(data)}"
        (self.folder / filename).write_bytes(data)
        return str(self.prefix / filename)


def safe_filename(text: str, max_len: int = 100) -> str:
    """A filesystem-safe stem for ``text`` (not unique on its own)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:max_len]
    return stem or "sample"


def unique_name(stem: str, used: set[str]) -> str:
    name, k = stem, 1
    while name.lower() in used:  # case-insensitive filesystems
        k += 1
        name = f"{stem}-{k}"
    used.add(name.lower())
    return name


def serialisable_meta(sample: Sample) -> dict[str, Any]:
    """``meta`` less the values JSON cannot hold (logged at debug level)."""
    meta = {}
    for key, value in sample.meta.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError, RecursionError):
            logger.debug("sample %r: meta key %r is not JSON-serialisable; dropped", sample.id, key)
            continue
        meta[key] = value
    return meta


def with_meta(record: dict[str, Any], sample: Sample) -> dict[str, Any]:
    meta = serialisable_meta(sample)
    return {**record, "meta": meta} if meta else record


@contextmanager
def atomic_text(path: Path) -> Iterator[IO[str]]:
    """A text file written under a temporary name and renamed into place when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
