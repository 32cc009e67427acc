"""Unpack a user's zip archive safely, and never leave half an extraction in place.

Members are checked before anything is written (no absolute paths, no
``..``, no symbolic links, at most ``max_files`` members and ``max_bytes``
declared) and the bytes are counted again while extracting (headers can lie).
Extraction goes to a temporary folder beside the destination, which is
renamed into place only when complete: an interrupted or refused extraction
leaves nothing at the destination, so it is never mistaken for a finished one.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

from .sample import DataError

logger = logging.getLogger("byorn.data.io")

DONE_MARKER = ".byorn-extracted"
_STALE_AFTER_S = 24 * 3600


def extract_upload(zip_path: str | Path, dest_dir: str | Path, *, max_bytes: int = 500 * 2**20,
                   max_files: int = 200_000, reuse: bool = False) -> Path:
    """Safely extract an uploaded zip; returns the folder to give :func:`~byorn.data.io.load_dataset`.

    ``dest_dir`` must be new or empty, unless ``reuse``: then a complete
    earlier extraction there is returned as it is (callers that name the
    folder after the archive's hash extract each upload once), and anything
    else there (a partial extraction left by an older version) is replaced.
    When the archive holds a single top-level folder, that folder is
    returned.  ``__MACOSX`` entries are ignored.
    """
    src, dest = Path(zip_path), Path(dest_dir)
    if dest.exists():
        if reuse and (dest / DONE_MARKER).is_file():
            return upload_root(dest)
        if not reuse and any(dest.iterdir()):
            raise ValueError(f"extraction folder {dest} is not empty")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(dest)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial-"))
    try:
        _extract(src, tmp, max_bytes, max_files)
        (tmp / DONE_MARKER).write_text("complete\n")
        _move_into_place(tmp, dest, reuse)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed
    return upload_root(dest)


def _extract(src: Path, into: Path, max_bytes: int, max_files: int) -> None:
    try:
        with zipfile.ZipFile(src) as zf:
            members = _checked_members(zf, src.name, max_bytes, max_files)
            _extract_members(zf, members, into, max_bytes, src.name)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        raise DataError(f"not a readable zip archive: {e}", path=src.name) from None


def _move_into_place(tmp: Path, dest: Path, reuse: bool) -> None:
    """Rename the complete extraction to ``dest`` (atomic; an empty ``dest`` is replaced)."""
    try:
        os.rename(tmp, dest)
        return
    except OSError:
        if not dest.exists():
            raise
    if (dest / DONE_MARKER).is_file():
        return  # another request extracted the same archive meanwhile: use theirs
    if not reuse:
        raise ValueError(f"extraction folder {dest} is not empty")
    # an incomplete folder from an older version: set it aside, then put ours in place
    aside = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.stale-"))
    os.rename(dest, aside / "old")
    os.rename(tmp, dest)
    shutil.rmtree(aside, ignore_errors=True)
    logger.info("replaced an incomplete extraction at %s", dest)


def _remove_stale_partials(dest: Path) -> None:
    """Remove temporary folders of extractions into ``dest`` interrupted more than a day ago."""
    now = time.time()
    for p in dest.parent.glob(f".{dest.name}.partial-*"):
        try:
            if now - p.stat().st_mtime > _STALE_AFTER_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _checked_members(zf: zipfile.ZipFile, label: str, max_bytes: int,
                     max_files: int) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    """(member, path parts) for every member to extract; raises on anything unsafe."""
    infos = zf.infolist()
    if len(infos) > max_files:
        raise DataError(f"archive has {len(infos):,} members, above the limit of {max_files:,}", path=label)
    declared = sum(i.file_size for i in infos)
    if declared > max_bytes:
        raise DataError(f"archive unpacks to {declared:,} bytes, above the limit of {max_bytes:,}", path=label)
    members = []
    for info in infos:
        parts = _safe_parts(info.filename, label)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(f"archive member {info.filename!r} is a symbolic link", path=label)
        if parts and parts[0] != "__MACOSX" and parts != [DONE_MARKER]:
            members.append((info, parts))
    return members


def _safe_parts(name: str, label: str) -> list[str]:
    posix = name.replace("\\", "/")
    if "\x00" in posix or posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise DataError(f"archive member {name!r} has an absolute path", path=label)
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"archive member {name!r} escapes the archive folder ('..')", path=label)
    return parts


def _extract_members(zf: zipfile.ZipFile, members: list[tuple[zipfile.ZipInfo, list[str]]],
                     dest: Path, max_bytes: int, label: str) -> None:
    total = 0
    for info, parts in members:
        target = dest.joinpath(*parts)
        try:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as fin, target.open("xb") as fout:
                while chunk := fin.read(1 << 20):
                    total += len(chunk)
                    if total > max_bytes:
                        raise DataError(f"archive unpacks to more than {max_bytes:,} bytes", path=label)
                    fout.write(chunk)
        except (FileExistsError, NotADirectoryError):
            raise DataError(f"archive member {info.filename!r} clashes with another "
                            "member of the same name", path=label) from None


def upload_root(dest: Path) -> Path:
    """The folder to load: the archive's single top-level folder, or ``dest``."""
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest
