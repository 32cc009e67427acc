"""Model calls the app makes, placed for the host: here, or in ZeroGPU calls (``app/zerogpu.py``).

``app/zerogpu.py`` (issue 10.5) provides ``gpu(duration=...)`` (``@spaces.GPU``
on ZeroGPU, a no-op elsewhere), ``hosting_mode()``, ``default_data_dir()``,
``training_supported()`` and GPU calls that take a model *by folder*
(``ModelRef``): a loaded model cannot be pickled into a ZeroGPU worker.  On
ZeroGPU the functions below go through those calls; everywhere else they call
the library directly with the model the app already holds.  If
``app/zerogpu.py`` is absent, the fallbacks keep the behaviour off Spaces.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

logger = logging.getLogger(__name__)

try:
    from . import zerogpu as _zg
except ImportError:  # pragma: no cover - app/zerogpu.py not merged yet
    _zg = None


def gpu(duration=60) -> Callable:
    """``@spaces.GPU(duration=...)`` on ZeroGPU, nothing elsewhere (decorate at import time)."""
    return _zg.gpu(duration) if _zg is not None else (lambda fn: fn)


def hosting_mode() -> str:
    return _zg.hosting_mode() if _zg is not None else "cpu"


def on_zerogpu() -> bool:
    return _zg is not None and hosting_mode() == "zerogpu"


def default_data_dir() -> Path | None:
    return _zg.default_data_dir() if _zg is not None else None


def training_message() -> str | None:
    """Why training cannot run here (None when it can), whatever shape ``training_supported()`` returns."""
    result = _zg.training_supported() if _zg is not None else (True, "")
    if isinstance(result, tuple):
        ok, message = (tuple(result) + ("",))[:2]
        return None if ok else (message or "Training is not possible on this server.")
    if isinstance(result, str):
        return result or None
    return None if result else "Training is not possible on this server."


def storage_warning() -> str | None:
    """A line for the page when decisions would be lost at the next restart (a Space without storage)."""
    fn = getattr(_zg, "ephemeral_storage_warning", None)
    return fn() if fn is not None else None


# -- model calls --------------------------------------------------------------------------------
def generate(vlm, model_path: str | None, dataset, keys: list, **settings) -> dict:
    """One replacement per ``(sample id, turn)`` from the model (``byorn.audit.propose_replacements``)."""
    if on_zerogpu():
        convs = [dataset.by_id(sid).conversation().prompt_for(turn) for sid, turn in keys]
        return dict(zip(keys, _zg.generate_on_gpu(_zg.ModelRef.of(model_path), convs, **settings)))
    from byorn.audit import propose_replacements

    return propose_replacements(vlm, dataset, keys, **settings)


def candidates_for(vlm, model_folder: str | None, dataset, keys: list, **settings) -> dict:
    """``k`` candidates per turn (``byorn.propose.propose_candidates``) from a loaded model or its folder."""
    if on_zerogpu():
        sub = dataset.subset(dict.fromkeys(sid for sid, _ in keys))
        return _zg.propose_on_gpu(model_folder, sub, list(keys), **settings)
    from byorn.propose import propose_candidates

    return propose_candidates(vlm, dataset, keys, **settings)


def candidates_with_run(run_dir: str, dataset, keys: list, *, vlm=None, **kwargs) -> dict:
    """``byorn.propose.propose_with_run``: chunks in GPU calls on ZeroGPU, else with ``vlm`` (the run's model)."""
    from byorn.propose import propose_with_run

    if on_zerogpu():
        return propose_with_run(run_dir, dataset, keys, runner=_zg.propose_on_gpu, **kwargs)
    return propose_with_run(run_dir, dataset, keys, vlm=vlm, **kwargs)


def trigger_map(vlm, model_path: str | None, dataset, sample_id: str, turn: int, folder: Path, **settings):
    """The cached trigger map of one turn (``byorn.explain.TriggerMapCache``), computed where the GPU is."""
    from byorn.explain import TriggerMapCache

    cache = TriggerMapCache(folder)
    if not on_zerogpu():
        return cache.get(vlm, dataset, sample_id, turn, **settings)
    hit = cache.cached(vlm, dataset, sample_id, turn, **settings)
    if hit is not None:
        return hit
    tm = _zg.trigger_map_on_gpu(_zg.ModelRef.of(model_path), dataset.by_id(sample_id), turn, **settings)
    put = getattr(cache, "put", None)
    if put is not None:
        put(vlm, dataset, sample_id, turn, tm, **settings)
    return tm
