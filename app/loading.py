"""Turn the embedded demo, a server path or an upload into a :class:`Workspace`.

Thin glue over the library (``byorn.demo``, ``byorn.data.io``, ``byorn.models``,
``byorn.audit``); every library error becomes a :class:`OpenError` whose
message tells the user what to do.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Callable

from .context import Workspace

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]


class OpenError(ValueError):
    """Data or a model that could not be opened (message is for the user)."""


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
            digest = hashlib.sha256(Path(upload).read_bytes()).hexdigest()[:16]
            dest = Path(upload_root or ".") / digest
            # Content-addressed: the same zip uploaded again reuses its (complete) extraction.
            root = extract_upload(upload, dest, reuse=True)
            # An upload is untrusted: its images must stay inside it.
            return load_dataset(root, name=Path(upload).stem, allow_external_images=False)
        if path:
            p = Path(path).expanduser()
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


def load_model(model_path: str | None):
    from byorn.models import VLM, ModelError

    try:
        return VLM.load(model_path or None)
    except ModelError as e:
        raise OpenError(f"Not a usable model: {e}") from e
    except (OSError, ValueError) as e:
        raise OpenError(f"Could not load the model at {model_path}: {e}") from e


def audit_workspace(dataset, model_path: str | None, cache_dir: Path, *, p: float = 0.6,
                    score: str = "mean", propose: bool = True, ground_truth: dict | None = None,
                    progress: Progress | None = None) -> Workspace:
    """Audit ``dataset`` with the model (cached by fingerprint + model identity)."""
    from byorn.audit import AuditConfig, run_audit

    vlm = load_model(model_path)
    cfg = AuditConfig(p=p, score=score, propose=propose)
    audit = run_audit(dataset, vlm, cfg, ground_truth=ground_truth, cache_dir=cache_dir,
                      progress=progress)
    meta = dict(audit.meta)
    key = f"{meta.get('dataset_fingerprint') or dataset.fingerprint()}:{vlm.identity}:{p}:{score}"
    return Workspace(key=key, name=f"{dataset.name} ({len(dataset)} samples)", dataset=dataset,
                     table=audit.table, meta=meta, audit=audit, model_path=model_path or None,
                     vlm_loader=lambda: vlm)
