"""Dataset fingerprints: computed once from the bytes, cached on disk by file stats.

:func:`~byorn.data.content_fingerprint` (:mod:`.sample`) hashes ids, turns
and each image's encoded bytes, in order, in one streaming pass.  The same
data saved by any of our savers and loaded back fingerprints the same,
because savers copy image bytes as they are.

A loaded dataset (:class:`LoadedDataset`) computes it on first use and caches
it in ``$BYORN_CACHE/fingerprints`` (default ``~/.cache/byorn``), keyed by
the data files' paths, sizes and modification times, the load options, and
the size and modification time of every distinct image file: a ``stat`` pass,
so loading the same data again costs no hashing at all, and touching any file
recomputes.  An image that cannot be read is hashed as a marker naming it (a
long audit with ``--skip-invalid`` reports the sample when it decodes it,
instead of failing here).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable

from .sample import Sample, VLDataset, content_fingerprint

logger = logging.getLogger("byorn.data.io")

CACHE_VERSION = "1"
_HEX16 = re.compile(r"^[0-9a-f]{16}$")


def cache_dir() -> Path:
    """Where fingerprints are cached: ``$BYORN_CACHE/fingerprints`` (default ``~/.cache/byorn``)."""
    root = os.environ.get("BYORN_CACHE") or Path.home() / ".cache" / "byorn"
    return Path(root) / "fingerprints"


# ------------------------------------------------------------------ cache --

def cache_key(samples: list[Sample], data_files: list[str], options: dict[str, Any]) -> str:
    """Key of a loaded dataset's fingerprint: file stats and options, no file contents."""
    h = hashlib.sha256(f"byorn-fingerprint-v{CACHE_VERSION}\n".encode())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    h.update(f"\n{len(samples)}\n".encode())
    for f in data_files:
        h.update(_stat_line(os.path.abspath(f)))
    seen: set[str] = set()
    for s in samples:
        for r in s.images:
            path = r.source
            if isinstance(path, str) and path not in seen:
                seen.add(path)
                h.update(_stat_line(path))
    return h.hexdigest()


def _stat_line(path: str) -> bytes:
    try:
        st = os.stat(path)
        return f"{path}\x00{st.st_size}\x00{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape")
    except OSError:
        return f"{path}\x00missing\n".encode("utf-8", "surrogateescape")


def cached_fingerprint(samples: list[Sample], data_files: list[str], options: dict[str, Any],
                       folder: Path | None = None) -> str:
    """The fingerprint from the cache, or computed (one pass) and stored there."""
    folder = folder or cache_dir()
    key = cache_key(samples, data_files, options)
    path = folder / key[:2] / key
    try:
        value = path.read_text().strip()
        if _HEX16.match(value):
            return value
    except OSError:
        pass
    value = content_fingerprint(samples)
    _store(path, value)
    return value


def _store(path: Path, value: str) -> None:
    """Write atomically (a reader never sees half a value); a read-only cache is not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fp-")
        with os.fdopen(fd, "w") as f:
            f.write(value)
        os.replace(tmp, path)
    except OSError as e:
        logger.info("fingerprint cache %s not writable (%s): the fingerprint is not cached", path.parent, e)


class LoadedDataset(VLDataset):
    """A dataset read from files: its fingerprint is computed on first use and cached on disk.

    ``data_files`` and ``options`` (the load options that shape the samples)
    key the cache with the image files' stats; ``cache=False`` computes it
    each time a new object asks.
    """

    def __init__(self, samples: Iterable[Sample], name: str, *, data_files: list[str],
                 options: dict[str, Any], cache: bool = True):
        super().__init__(samples, name)
        self.data_files, self.options, self.cache = list(data_files), dict(options), cache

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = (cached_fingerprint(self.samples, self.data_files, self.options)
                                 if self.cache else content_fingerprint(self.samples))
        return self._fingerprint
