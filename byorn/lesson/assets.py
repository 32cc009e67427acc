"""The shipped lesson's files and their manifest (``assets/lesson/manifest.json``).

The manifest records the command and seed that built the files
(``scripts/make_lesson_assets.py``) and each file's size and SHA-256;
:func:`verify_manifest` checks that the files on disk are those.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..models import ASSETS

LESSON_DIR = ASSETS / "lesson"
MANIFEST = "manifest.json"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_table(folder: Path) -> dict[str, dict]:
    """``{relative path: {"size", "sha256"}}`` of every file under ``folder`` but the manifest."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def write_manifest(folder: Path, *, command: str, seed: int, extra: dict | None = None) -> dict:
    doc = {"built_by": "scripts/make_lesson_assets.py", "command": command, "seed": seed, **(extra or {}),
           "files": file_table(folder)}
    doc["total_bytes"] = sum(f["size"] for f in doc["files"].values())
    (Path(folder) / MANIFEST).write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def verify_manifest(folder: Path = LESSON_DIR) -> dict:
    """The manifest, after checking every file it names (size, SHA-256) and that no other file is there.

    Raises ``ValueError`` naming the first file that differs.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{folder} has no {MANIFEST}; run `python scripts/make_lesson_assets.py`")
    doc = json.loads(path.read_text())
    named, actual = doc.get("files", {}), file_table(folder)
    for rel, want in named.items():
        got = actual.get(rel)
        if got is None:
            raise ValueError(f"{folder / rel}: named in the manifest but missing")
        if got != want:
            raise ValueError(f"{folder / rel}: size/sha256 {got['size']}/{got['sha256'][:12]} differ from the "
                             f"manifest's {want['size']}/{want['sha256'][:12]}; rebuild with "
                             "`python scripts/make_lesson_assets.py`")
    extra = sorted(set(actual) - set(named))
    if extra:
        raise ValueError(f"{folder / extra[0]}: not named in the manifest")
    return doc
