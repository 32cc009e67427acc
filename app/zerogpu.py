"""Hosting on Hugging Face Spaces: ZeroGPU calls, persistent storage, what can train where.

Three ways to host (docs/hosting.md):

* ``"cpu"``: CPU basic (or any machine without CUDA); the embedded demo.
* ``"zerogpu"``: a ZeroGPU Space (``SPACES_ZERO_GPU`` set by the platform).
  A GPU is lent per call: the functions decorated with ``spaces.GPU`` run in
  a forked worker process, their arguments and results pickled; a call from
  a background thread carries no visitor's token (it is charged to the
  Space).  ``spaces`` must be imported before torch: ``app.py`` does
  ``import spaces`` first when it is installed.
* ``"gpu"``: a dedicated GPU (a GPU Space or your own machine with CUDA).

:func:`gpu` is ``spaces.GPU(duration=...)`` on ZeroGPU and a no-op
everywhere else; ``spaces`` is never required.  The helpers below
(:func:`score_on_gpu`, :func:`generate_on_gpu`, :func:`trigger_map_on_gpu`,
:func:`propose_on_gpu`) are what the app calls for scoring, generation, the
trigger map and candidate proposals.  They take a model **by folder**
(:class:`ModelRef`), not a loaded model: a model cannot be pickled into the
worker, and a reused worker was forked before later models were loaded.  In
each process the model is loaded once and kept (:func:`model_for`); off
ZeroGPU the app hands over the model it already has with :func:`remember`.

This module imports neither gradio nor torch at import time.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)

MODES = ("cpu", "zerogpu", "gpu")
SPACE_DATA = Path("/data")  # where a Space mounts its persistent storage
TRUE = ("1", "t", "true", "yes", "on")  # spaces reads SPACES_ZERO_GPU with 1 / t / true


def _env(env) -> dict:
    return os.environ if env is None else env


def on_space(env=None) -> bool:
    """Whether this is a Hugging Face Space (the platform sets ``SPACE_ID``)."""
    return bool(_env(env).get("SPACE_ID"))


def zerogpu_present(env=None) -> bool:
    """Whether the platform says this is a ZeroGPU Space (``SPACES_ZERO_GPU``)."""
    return str(_env(env).get("SPACES_ZERO_GPU", "")).strip().lower() in TRUE


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover (torch is a requirement)
        return False
    return bool(torch.cuda.is_available())


def hosting_mode(env=None, *, cuda: bool | None = None) -> str:
    """``"zerogpu"``, ``"gpu"`` (CUDA present) or ``"cpu"``.

    ZeroGPU is checked first: there ``torch.cuda.is_available()`` is patched
    to True in the main process although no GPU is attached outside calls.
    ``cuda`` overrides the CUDA check (tests).
    """
    if zerogpu_present(env):
        return "zerogpu"
    return "gpu" if (_cuda_available() if cuda is None else cuda) else "cpu"


# --------------------------------------------------------------------- the decorator --

def _spaces_module():
    """The ``spaces`` package when ZeroGPU is present and it imports, else None."""
    if not zerogpu_present():
        return None
    try:
        spaces = importlib.import_module("spaces")
    except ImportError:
        logger.warning("SPACES_ZERO_GPU is set but the `spaces` package is not installed: GPU calls run "
                       "without ZeroGPU (add `spaces` to the Space's requirements)")
        return None
    return spaces


def import_spaces_first() -> bool:
    """Import ``spaces`` now if ZeroGPU is present; call before anything imports torch.

    Returns whether it is imported.  Warns when torch came first (ZeroGPU
    then fails at startup with "CUDA has been initialized before importing
    the `spaces` package").
    """
    if not zerogpu_present():
        return False
    if "torch" in sys.modules and "spaces" not in sys.modules:
        logger.warning("torch was imported before `spaces`: import app.zerogpu (or spaces) first in app.py")
    return _spaces_module() is not None


def gpu(duration: int | float | Callable[..., int | float] = 60):
    """Decorator: ``spaces.GPU(duration=duration)`` on ZeroGPU, the function itself elsewhere.

    ``duration`` is the expected seconds per call (ZeroGPU schedules by it:
    shorter calls queue sooner), or a function of the call's arguments
    returning it.  Decorate at import time (module level), as ZeroGPU wants.
    """
    def decorate(fn):
        spaces = _spaces_module()
        if spaces is None:
            return fn
        return spaces.GPU(duration=duration)(fn)

    return decorate


# ------------------------------------------------------------------- models by folder --

@dataclass(frozen=True)
class ModelRef:
    """A model by its folder (``None`` = the embedded tiny model): cheap to pickle into a GPU worker."""

    path: str | None = None

    @classmethod
    def of(cls, path: str | os.PathLike | None) -> "ModelRef":
        return cls(None if path is None else str(Path(path).resolve()))


_MODELS: dict[ModelRef, Any] = {}
_MODELS_LOCK = threading.Lock()


def remember(ref: ModelRef, vlm) -> None:
    """Use ``vlm`` (already loaded from ``ref``'s folder) for ``ref`` in this process and in workers forked later."""
    with _MODELS_LOCK:
        _MODELS[ref] = vlm


def model_for(ref: ModelRef):
    """The model of ``ref`` in this process: remembered or inherited, else loaded once and kept."""
    if not isinstance(ref, ModelRef):
        raise TypeError(f"pass a ModelRef (a model folder), not {type(ref).__name__}: a loaded model cannot "
                        "be sent into a ZeroGPU worker")
    with _MODELS_LOCK:
        vlm = _MODELS.get(ref)
        if vlm is None:
            from byorn.models import VLM

            vlm = _MODELS[ref] = VLM.load(ref.path)
        return vlm


def forget(ref: ModelRef | None = None) -> None:
    """Drop one remembered model (or all) from this process."""
    with _MODELS_LOCK:
        if ref is None:
            _MODELS.clear()
        else:
            _MODELS.pop(ref, None)


# ---------------------------------------------------------------------- GPU calls --

def _per_item(seconds_each: float, base: float = 10.0, cap: float = 300.0):
    """A ZeroGPU duration function of a call ``fn(ref, items, ...)``: ``base + seconds_each * len(items)``, capped."""
    def duration(ref, items, *args, **kwargs) -> float:
        try:
            n = len(items)
        except TypeError:
            n = 1
        return min(cap, base + seconds_each * n)
    return duration


@gpu(duration=_per_item(0.02, base=10.0))
def score_on_gpu(ref: ModelRef, convs: list, batch_size: int = 64, embed: bool = False):
    """``VLM.score_conversations`` of the model ``ref`` (per conversation, per assistant turn)."""
    return model_for(ref).score_conversations(list(convs), batch_size=batch_size, embed=embed)


@gpu(duration=_per_item(0.05, base=10.0))
def generate_on_gpu(ref: ModelRef, convs: list, **settings) -> list[str]:
    """``VLM.generate_conversations`` of the model ``ref`` (settings: max_new_tokens, temperature, top_p, seed, batch_size)."""
    return model_for(ref).generate_conversations(list(convs), **settings)


@gpu(duration=30)
def trigger_map_on_gpu(ref: ModelRef, sample, turn: int = 0, **settings):
    """:func:`byorn.explain.trigger_map` of one sample's turn under the model ``ref``."""
    from byorn.explain import trigger_map

    return trigger_map(model_for(ref), sample, turn, **settings)


def _propose_duration(model_folder, dataset, keys, **settings) -> float:
    return min(300.0, 10.0 + 0.05 * len(keys) * int(settings.get("k", 4)))


@gpu(duration=_propose_duration)
def _propose_call(model_folder: str | None, dataset, keys: list, **settings) -> dict:
    from byorn.propose import propose_candidates

    return propose_candidates(model_for(ModelRef(model_folder)), dataset, keys, **settings)


def propose_on_gpu(model_folder: str | None, dataset, keys: list, **settings) -> dict:
    """One chunk of :func:`byorn.propose.propose_candidates` in a GPU call.

    Matches ``propose_with_run(..., runner=propose_on_gpu)``: that loop keeps
    progress and cancel in the app's process and sends one chunk (its
    samples only) per call.
    """
    if model_folder is not None:
        model_folder = str(Path(model_folder).resolve())
    return _propose_call(model_folder, dataset, list(keys), **settings)


# ------------------------------------------------------------------------ storage --

def persistent_storage(env=None, mount: Path = SPACE_DATA) -> Path | None:
    """The Space's persistent storage (``/data``) when this is a Space and it is a writable folder."""
    if not on_space(env):
        return None
    return mount if mount.is_dir() and os.access(mount, os.W_OK | os.X_OK) else None


def default_data_dir(env=None, mount: Path = SPACE_DATA) -> Path:
    """Where decisions, uploads, audits and runs live.

    ``BYORN_DATA_DIR`` if set; on a Space with persistent storage
    ``/data/byorn``; else ``./byorn_data`` (on a Space without persistent
    storage that disk is wiped at every restart: the app says so).
    """
    e = _env(env)
    if e.get("BYORN_DATA_DIR"):
        return Path(e["BYORN_DATA_DIR"]).expanduser().resolve()
    store = persistent_storage(env, mount)
    if store is not None:
        return store / "byorn"
    return Path("./byorn_data").resolve()


def storage_defaults(env=None, mount: Path = SPACE_DATA) -> dict[str, str]:
    """Environment defaults that keep caches on persistent storage when a Space has it.

    ``BYORN_DATA_DIR`` (decisions, runs), ``BYORN_CACHE`` (audit cache) and
    ``HF_HOME`` (Hugging Face caches); empty off Spaces or without storage.
    Apply with ``os.environ.setdefault`` (see :func:`apply_storage_defaults`).
    """
    store = persistent_storage(env, mount)
    if store is None:
        return {}
    return {"BYORN_DATA_DIR": str(store / "byorn"), "BYORN_CACHE": str(store / "byorn" / "cache"),
            "HF_HOME": str(store / ".huggingface")}


def apply_storage_defaults(mount: Path = SPACE_DATA) -> dict[str, str]:
    """Set :func:`storage_defaults` in ``os.environ`` where not set already; returns what was set."""
    applied = {}
    for name, value in storage_defaults(None, mount).items():
        if name not in os.environ:
            os.environ[name] = value
            applied[name] = value
    return applied


def ephemeral_storage_warning(env=None, mount: Path = SPACE_DATA) -> str | None:
    """A line for the page when decisions would be lost at the next restart (a Space without storage)."""
    e = _env(env)
    if not on_space(env) or e.get("BYORN_DATA_DIR") or persistent_storage(env, mount) is not None:
        return None
    return ("This Space has no persistent storage: decisions and runs are kept on its disk, which is wiped "
            "when the Space restarts. Attach persistent storage (Settings → Persistent storage) or export "
            "your decisions before leaving.")


# ------------------------------------------------------------------------ training --

def training_supported(env=None, *, cuda: bool | None = None) -> tuple[bool, str]:
    """Whether this host can run training, and a sentence saying so (shown in the Train tab).

    On ZeroGPU it cannot: a GPU is lent for one call of a few minutes at
    most, in a forked worker, and a training run is a long background job
    that belongs to no visitor (so it would not get a GPU on their quota);
    and the main process has no usable CUDA (it is emulated), so the trainer
    cannot fall back to the CPU either.
    """
    mode = hosting_mode(env, cuda=cuda)
    if mode == "zerogpu":
        return False, ("Training needs a dedicated GPU Space: on ZeroGPU a GPU is lent for one short call at a "
                       "time, and a training run is a long background job. Duplicate this Space with GPU "
                       "hardware (Settings → Hardware, e.g. an L4), or train elsewhere (`byorn train`) and "
                       "upload the run folder. Auditing, the trigger map and proposals work here.")
    if mode == "gpu":
        return True, "Training runs on this machine's GPU."
    return True, ("Training runs on the CPU: minutes for the embedded tiny model; a real checkpoint needs a "
                  "GPU (a dedicated GPU Space or your own machine).")
