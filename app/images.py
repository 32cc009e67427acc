"""Finished image files for the Inspector, so concurrent requests never see a partial file.

Handing ``gr.Image`` a PIL image makes Gradio encode it and write it into its
cache on every request (``processing_utils.save_pil_to_cache``: the same
path, truncated and rewritten each time), so a browser downloading the image
while another session opens the same sample can read a half-written file
("Too little data for declared Content-Length"; 10-16 of 60 downloads with 20
sessions on one sample).  Instead the app writes each image once, under a
temporary name, and renames it into place (``os.replace`` is atomic: a reader
sees the old file or the whole new one), then hands Gradio the finished path,
which Gradio copies into its cache the same way (staging file + rename).
"""
from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Hashable

from PIL import Image

from byorn.data.sample import png_bytes


class ImageFiles:
    """PNG files named by their content hash in one folder, remembered by a caller's key.

    The folder defaults to a fresh one under the system temp folder (Gradio
    serves files from there without extra settings), made on first use and
    removed when the process exits.  ``max_remembered`` bounds the key ->
    path memo, not the files.
    """

    def __init__(self, folder: str | Path | None = None, max_remembered: int = 4096):
        self._folder = Path(folder) if folder is not None else None
        self.max_remembered = max_remembered
        self._paths: OrderedDict[Hashable, str] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def folder(self) -> Path:
        with self._lock:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="byorn-images-"))
                atexit.register(shutil.rmtree, self._folder, ignore_errors=True)
            self._folder.mkdir(parents=True, exist_ok=True)
            return self._folder

    def path(self, key: Hashable, render: Callable[[], Image.Image]) -> str:
        """The finished file of ``key``'s image, rendering and writing it the first time."""
        with self._lock:
            known = self._paths.get(key)
            if known is not None and os.path.exists(known):
                self._paths.move_to_end(key)
                return known
        data = png_bytes(render())
        final = self.folder / f"{hashlib.sha256(data).hexdigest()[:32]}.png"
        if not final.exists():
            write_atomically(final, data)
        with self._lock:
            self._paths[key] = str(final)
            while len(self._paths) > self.max_remembered:
                self._paths.popitem(last=False)
        return str(final)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a unique temporary file beside ``path``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def thumbnail(image: Image.Image, size: int = 128) -> Image.Image:
    """Small images as they are (the page scales them up crisply); larger ones down to ``size`` px."""
    image = image.convert("RGB")
    if max(image.size) > size:
        image = image.copy()
        image.thumbnail((size, size))
    return image


def thumb_path(files: ImageFiles, ws_key: str, sample, index: int = 0) -> str | None:
    """A finished thumbnail file of image ``index`` of ``sample`` (None: the sample has no such image)."""
    if index >= len(sample.images):
        return None
    ref = sample.images[index]
    return files.path(("thumb", ws_key, sample.id, index), lambda: thumbnail(ref.load()))
