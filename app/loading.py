"""Turn the embedded demo, a server path or an upload into a :class:`Workspace`.

Thin glue over the library (``byorn.demo``, ``byorn.data.io``, ``byorn.models``,
``byorn.audit``); every library error becomes a :class:`OpenError` whose
message tells the user what to do.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable, Sequence

from byorn.scoring import DEFAULT_SCORE
from byorn.split import DEFAULT_P

from .context import Workspace

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]


class OpenError(ValueError):
    """Data or a model that could not be opened (message is for the user)."""


PATH_REFUSED = ("This path cannot be opened here. Give a path inside the data folders this server "
                "allows ({roots}), or upload a zip.")
"""The one answer for any path outside the data roots, existing or not (never a hint either way)."""


def allowed_server_path(text: str, roots: Sequence[Path]) -> Path:
    """The real path of ``text`` if it lies inside one of ``roots``, else :class:`OpenError`.

    Symbolic links and ``..`` are resolved first, so neither leads out of a
    root.  A relative path is taken relative to the first root.  Nothing is
    read before the check, and the refusal is the same whether the path
    exists or not.
    """
    if not roots:
        raise OpenError("Opening server paths is switched off on this server; upload a zip instead.")
    p = Path(str(text).strip()).expanduser()
    if not p.is_absolute():
        p = Path(roots[0]) / p
    real = Path(os.path.realpath(p))
    if not any(real == r or real.is_relative_to(r) for r in map(Path, roots)):
        raise OpenError(PATH_REFUSED.format(roots=", ".join(str(r) for r in roots)))
    return real


def demo_workspace() -> Workspace:
    """The embedded demo: a poisoned fine-tuning set with its audit precomputed."""
    from byorn.demo import load_demo

    demo = load_demo()
    table, meta = demo.audit.table, dict(demo.audit.meta)
    key = f"demo:{meta.get('dataset_fingerprint') or demo.dataset.fingerprint()}"
    return Workspace(key=key, name=f"Embedded demo ({demo.attack} attack, target “{demo.target}”)",
                     dataset=demo.dataset, table=table, meta=meta, audit=demo.audit,
                     model_path=str(demo.model_path) if demo.model_path else None,
                     test_clean=demo.test_clean, test_triggered=demo.test_triggered,
                     target=demo.target)


def load_user_dataset(path: str | None = None, upload: str | None = None,
                      upload_root: Path | None = None):
    """A dataset from a server path or from an uploaded zip (extracted under ``upload_root``)."""
    from byorn.data import DataError
    from byorn.data.io import extract_upload, load_dataset

    try:
        if upload:
            root = extracted_upload(Path(upload), Path(upload_root or "."), extract_upload)
            # An upload is untrusted: its images must stay inside it.
            return load_dataset(root, name=Path(upload).stem, allow_external_images=False)
        if path:
            p = Path(path)  # the caller checked it against the data roots (allowed_server_path)
            if not p.exists():
                raise OpenError(f"{p} does not exist on the server.")
            return load_dataset(p)
    except DataError as e:
        raise OpenError(f"Could not read the data: {e}") from e
    except (OSError, ValueError) as e:
        if isinstance(e, OpenError):
            raise
        raise OpenError(f"Could not read the data: {e}") from e
    raise OpenError("Give a path on the server or upload a zip (LLaVA JSON + images, or a saved "
                    "datasets folder).")


COMPLETE = ".byorn-complete"
"""Marker file written into an upload's extraction folder once it is whole; it holds the data root."""
_extract_locks: dict[str, threading.Lock] = {}
_extract_locks_guard = threading.Lock()


def extracted_upload(upload: Path, upload_root: Path, extract: Callable[[Path, Path], Path]) -> Path:
    """The data folder of an uploaded zip, extracted once per content and reused after.

    The zip is extracted into a fresh temporary folder beside its final place,
    the marker :data:`COMPLETE` is written, and the folder is renamed into
    place: an extraction is either whole and marked, or not there.  A folder
    without the marker (a crash mid-extraction, or made before markers
    existed) is never reused: it is moved aside and the zip extracted again.
    One extraction per content at a time (a lock per digest).
    """
    digest = _file_digest(upload)[:16]
    dest = upload_root / digest
    with _extract_locks_guard:
        lock = _extract_locks.setdefault(digest, threading.Lock())
    with lock:
        marker = dest / COMPLETE
        if marker.is_file():
            root = (dest / marker.read_text(encoding="utf-8").strip()).resolve()
            if root.is_relative_to(dest.resolve()):
                return root
        upload_root.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            logger.warning("re-extracting %s: %s has no completion marker (partial extraction)", upload, dest)
            stale = Path(tempfile.mkdtemp(prefix=f".stale-{digest}-", dir=upload_root))
            os.replace(dest, stale / "x")
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".extract-{digest}-", dir=upload_root))
        try:
            root = Path(extract(upload, work / "x"))
            rel = root.relative_to(work / "x").as_posix() or "."
            (work / "x" / COMPLETE).write_text(rel, encoding="utf-8")
            os.replace(work / "x", dest)  # atomic: the marked folder appears whole
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return dest / rel


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:  # streamed: uploads may be hundreds of MB
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def load_model(model_path: str | None):
    from byorn.models import VLM, ModelError

    try:
        return VLM.load(model_path or None)
    except ModelError as e:
        raise OpenError(f"Not a usable model: {e}") from e
    except (OSError, ValueError) as e:
        raise OpenError(f"Could not load the model at {model_path}: {e}") from e


def audit_workspace(dataset, model_path: str | None, cache_dir: Path, *, p: float | str = DEFAULT_P,
                    score: str = DEFAULT_SCORE, propose: bool = True, ground_truth: dict | None = None,
                    progress: Progress | None = None) -> Workspace:
    """Audit ``dataset`` with the model (cached by fingerprint + model identity)."""
    from byorn.audit import AuditConfig

    vlm = load_model(model_path)
    cfg = AuditConfig(p=p, score=score, propose=propose)
    audit = _audit(dataset, vlm, cfg, ground_truth, cache_dir, progress)
    meta = dict(audit.meta)
    key = f"{meta.get('dataset_fingerprint') or dataset.fingerprint()}:{vlm.identity}:{p}:{score}"
    return Workspace(key=key, name=f"{dataset.name} ({len(dataset)} samples)", dataset=dataset,
                     table=audit.table, meta=meta, audit=audit, model_path=model_path or None,
                     vlm_loader=lambda: vlm)


def _audit(dataset, vlm, cfg, ground_truth, cache_dir, progress):
    # Not a ZeroGPU call: run_audit holds the model and a progress callback, neither of which can be
    # pickled into a GPU worker; on ZeroGPU it needs a scorer by model folder (app/zerogpu.score_on_gpu).
    from byorn.audit import run_audit

    return run_audit(dataset, vlm, cfg, ground_truth=ground_truth, cache_dir=cache_dir, progress=progress)
