"""Where the app runs (this machine, a CPU Space, ZeroGPU, a GPU Space), through ``app/zerogpu.py``.

``app/zerogpu.py`` (issue 10.5) provides ``gpu(duration=...)`` (``@spaces.GPU``
on ZeroGPU, a no-op elsewhere), ``hosting_mode()``, ``default_data_dir()``
and ``training_supported()``.  Until it is merged, the fallbacks below keep
the behaviour off Spaces: no decorator, no default data folder, training on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

try:
    from .zerogpu import default_data_dir, gpu, hosting_mode, training_supported  # noqa: F401
except ImportError:  # pragma: no cover - app/zerogpu.py not there yet
    def gpu(duration: int = 60) -> Callable:
        return lambda fn: fn

    def hosting_mode() -> str:
        return "local"

    def default_data_dir() -> Path | None:
        return None

    def training_supported():
        return True, ""


def training_message() -> str | None:
    """Why training cannot run here (None when it can), whatever shape ``training_supported()`` returns."""
    result = training_supported()
    if isinstance(result, tuple):
        ok, message = (result + ("",))[:2]
        return None if ok else (message or "Training is not possible on this server.")
    if isinstance(result, str):
        return result or None
    return None if result else "Training is not possible on this server."
