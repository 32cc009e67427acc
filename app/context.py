"""Shared objects of the app and the per-user view state.

Shared by every visitor (explicit objects, created once in :func:`make_context`):

- :class:`Workspace`: an opened dataset with its audit (immutable once built);
  :class:`WorkspaceRegistry` holds a few of them by key;
- the :class:`~byorn.decisions.DecisionStore` (SQLite under ``BYORN_DATA_DIR``);
- the one :class:`~app.jobs.TrainingJob`.

Per user (``gr.State``, a plain dict made by :func:`new_view`): which workspace
they look at, their threshold, the current filter order, the sample open in
the inspector, unsaved regenerated replacements.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from byorn.decisions import Decision, DecisionStore

from .jobs import TrainingJob
from .views import join_decisions, threshold_at, with_threshold

DEFAULT_PERCENTILE = 0.6


@dataclass
class Workspace:
    """One opened dataset and its audit table, shared read-only by all sessions."""

    key: str
    name: str
    dataset: Any                      # byorn.data.VLDataset
    table: pd.DataFrame               # the audit table (docs/architecture.md)
    meta: dict = field(default_factory=dict)
    audit: Any = None                 # byorn.audit.Audit when built by run_audit
    model_path: str | None = None     # None = embedded model
    test_clean: Any = None
    test_triggered: Any = None
    target: str | None = None
    vlm_loader: Callable[[], Any] | None = None
    _vlm: Any = None
    _vlm_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def fingerprint(self) -> str:
        return self.meta.get("dataset_fingerprint") or self.dataset.fingerprint()

    def vlm(self):
        """The reference model, loaded on first use (shared, loaded once)."""
        with self._vlm_lock:
            if self._vlm is None:
                if self.vlm_loader is not None:
                    self._vlm = self.vlm_loader()
                else:
                    from byorn.models import VLM
                    self._vlm = VLM.load(self.model_path)
            return self._vlm

    def default_threshold(self) -> float:
        t = self.meta.get("threshold")
        if t is None:
            t = threshold_at(self.table["score"], float(self.meta.get("p", DEFAULT_PERCENTILE)))
        return float(t)


class WorkspaceRegistry:
    """Opened workspaces by key; keeps the pinned ones and the last few others."""

    def __init__(self, max_unpinned: int = 4):
        self._lock = threading.Lock()
        self._items: OrderedDict[str, Workspace] = OrderedDict()
        self._pinned: set[str] = set()
        self.max_unpinned = max_unpinned

    def add(self, ws: Workspace, pinned: bool = False) -> Workspace:
        with self._lock:
            self._items[ws.key] = ws
            self._items.move_to_end(ws.key)
            if pinned:
                self._pinned.add(ws.key)
            unpinned = [k for k in self._items if k not in self._pinned]
            for k in unpinned[: max(0, len(unpinned) - self.max_unpinned)]:
                del self._items[k]
        return ws

    def get(self, key: str) -> Workspace | None:
        with self._lock:
            return self._items.get(key)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None


Trainer = Callable[..., Any]
"""``trainer(ws, settings: dict, decisions, audit_table, callbacks, cancel) -> RunResult``."""


@dataclass
class AppContext:
    """Everything the handlers share, passed to each tab's wiring."""

    store: DecisionStore
    workspaces: WorkspaceRegistry
    job: TrainingJob
    data_dir: Path
    runs_dir: Path
    default_key: str
    trainer: Trainer | None = None           # None = byorn.train.train
    list_runs: Callable[[Path], pd.DataFrame] | None = None  # None = byorn.train.list_runs
    allow_server_paths: bool = True

    # -- per-user view over the shared things ----------------------------
    def workspace(self, view: dict) -> Workspace:
        ws = self.workspaces.get(view.get("ws") or self.default_key)
        if ws is None:  # evicted (many uploads since): fall back to the default
            ws = self.workspaces.get(self.default_key)
            view.update(new_view(ws))
        return ws

    def decisions(self, ws: Workspace) -> dict[str, Decision]:
        return self.store.all(ws.fingerprint)

    def view_table(self, view: dict) -> pd.DataFrame:
        """The audit table with this user's threshold and everyone's decisions."""
        ws = self.workspace(view)
        return join_decisions(with_threshold(ws.table, view["threshold"]), self.decisions(ws))


def new_view(ws: Workspace | None) -> dict:
    """Fresh per-user state for a workspace."""
    if ws is None:
        return {"ws": None, "threshold": float("inf"), "percentile": DEFAULT_PERCENTILE,
                "order": [], "current": None, "proposals": {}, "selection": [], "bulk": None}
    return {"ws": ws.key, "threshold": ws.default_threshold(),
            "percentile": float(ws.meta.get("p", DEFAULT_PERCENTILE)),
            "order": [], "current": None, "proposals": {}, "selection": [], "bulk": None}


def data_dir_from_env() -> Path:
    return Path(os.environ.get("BYORN_DATA_DIR", "./byorn_data")).expanduser().resolve()


def make_context(default: Workspace, data_dir: Path | None = None, **kwargs) -> AppContext:
    """The shared objects: decision store and runs under ``data_dir``, one job."""
    data_dir = Path(data_dir) if data_dir is not None else data_dir_from_env()
    data_dir.mkdir(parents=True, exist_ok=True)
    registry = WorkspaceRegistry()
    registry.add(default, pinned=True)
    allow = os.environ.get("BYORN_ALLOW_SERVER_PATHS", "1") not in ("0", "false", "no")
    kwargs.setdefault("allow_server_paths", allow)
    return AppContext(store=DecisionStore(data_dir / "decisions.sqlite"), workspaces=registry,
                      job=TrainingJob(), data_dir=data_dir, runs_dir=data_dir / "runs",
                      default_key=default.key, **kwargs)
