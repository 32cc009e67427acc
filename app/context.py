"""Shared objects of the app and the per-user view state.

Shared by every visitor (explicit objects, created once in :func:`make_context`):

- :class:`Workspace`: an opened dataset with its audit (immutable once built);
  :class:`WorkspaceRegistry` holds a few of them by key;
- the :class:`~byorn.decisions.DecisionStore` (SQLite under ``BYORN_DATA_DIR``),
  opened read-only (or not at all, :class:`UnavailableStore`) when it cannot
  be written or read: ``store_problem`` then says why, and the app shows it;
- the one :class:`~app.jobs.TrainingJob`;
- :class:`~app.images.ImageFiles`, the finished image files the Inspector serves.

Per user (``gr.State``): a :class:`~app.state.View` made by :func:`new_view`
(which workspace they look at, their threshold, the current filter and its
order, the map selection, the turn open in the inspector, unsaved proposed
replacements, and with private sessions the visitor token that owns their
training runs).

Decisions are read through :class:`DecisionCache`: ``store.all`` of 100k
decisions takes ~0.6 s, too slow for every event, so the app keeps them in
memory, with one status code per table row, and reloads only when the store
file changed behind its back (another process, the CLI).

Deployment settings (environment, read by :func:`make_context`):

- ``BYORN_ALLOW_SERVER_PATHS``: ``1`` / ``0`` switches the "path on the
  server" boxes on / off.  Default: on, except on a Hugging Face Space
  (``SPACE_ID`` set), where it is off.
- ``BYORN_DATA_ROOTS``: the folders (``os.pathsep``-separated) server paths
  may point into; default: the data dir.  A path outside them is refused
  with one message, whether or not it exists.
- ``BYORN_PRIVATE_SESSIONS``: ``1`` gives each visitor (each browser) their
  own training runs: runs go to ``runs/visitors/<visitor>/`` and are seen only
  by that browser, unless "share this run" is ticked when starting it (shared
  runs go to ``runs/``, seen by everyone).  Default: on on a Space, off
  elsewhere (one user: every run is seen).  Uploads and their audits are
  always private to the session that opened them.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import gradio as gr
import numpy as np
import pandas as pd

from byorn.audit import score_components, score_method_of
from byorn.decisions import STATUSES, Decision, DecisionStore, DecisionStoreError
from byorn.split import AUTO, PAPER_P, Split

from .images import ImageFiles
from .index import TableIndex, status_codes
from .jobs import TrainingJob
from .state import View
from .views import join_decisions, threshold_at, with_threshold

logger = logging.getLogger(__name__)


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
    embeddings: Any = None            # (N, D) per-row embeddings (None: from ``audit``)
    _vlm: Any = None
    _vlm_lock: threading.Lock = field(default_factory=threading.Lock)
    _index: TableIndex | None = None
    _clusters: Any = None
    _auto: Split | None = None
    _lazy_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def fingerprint(self) -> str:
        return self.meta.get("dataset_fingerprint") or self.dataset.fingerprint()

    @property
    def index(self) -> TableIndex:
        """Column arrays of the audit table (built on first use, shared by every session)."""
        with self._lazy_lock:
            if self._index is None:
                self._index = TableIndex(self.table)
            return self._index

    def joint_embeddings(self):
        """(N, D) embeddings of the rows for nearest neighbours (None when the audit kept none)."""
        with self._lazy_lock:
            if self.embeddings is None and self.audit is not None:
                get = getattr(self.audit, "joint_embeddings", None)
                self.embeddings = get() if get is not None else None
            return self.embeddings

    def cluster_labels(self):
        """A cluster label per row (``byorn.neighbors.clusters`` on the joint map), computed once."""
        if self._clusters is None:
            from byorn.neighbors import clusters

            x, y = "umap_joint_x", "umap_joint_y"
            if x in self.table.columns and self.table[x].notna().all():
                points = self.table[[x, y]].to_numpy(dtype="float64")
            else:
                points = self.joint_embeddings()
            if points is None:
                raise ValueError("this audit has neither a map nor embeddings to cluster")
            labels = clusters(points)
            with self._lazy_lock:
                self._clusters = labels
        return self._clusters

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

    @property
    def score_method(self) -> str:
        """The score the audit ranks turns by."""
        return score_method_of(self.meta)

    def default_threshold(self) -> float:
        t = self.meta.get("threshold")
        if t is None:
            t = self.audit_split().threshold
        return float(t)

    def audit_split(self) -> Split:
        """The split the audit flagged by (audits older than the record: its p, else the paper's)."""
        if self.meta.get("split"):
            return Split.from_dict(self.meta["split"])
        p = self.meta.get("p", PAPER_P)
        if p == AUTO:
            return self.auto_split()
        t = self.meta.get("threshold")
        return Split("percentile", p=float(p),
                     threshold=float(t) if t is not None else threshold_at(self.table["score"], float(p)))

    def auto_split(self) -> Split:
        """The adaptive split of this audit's scores, with what it saw (computed once)."""
        with self._lazy_lock:
            if self._auto is None:
                self._auto = Split(AUTO).apply(self.table["score"].to_numpy(dtype=float),
                                               score_components(self.table, self.score_method))[1]
            return self._auto


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
"""``trainer(ws, cfg: TrainConfig, decisions, callbacks, cancel) -> RunResult`` (the run folder is
``cfg.out_dir``; the split to train by is ``cfg.p`` / ``cfg.threshold``)."""


class UnavailableStore:
    """Stands in for a decision store that could not be opened: no decisions, every write refused."""

    readonly = True

    def __init__(self, path: Path, reason: str):
        self.path, self.readonly_reason = Path(path), reason

    def _refuse(self, *args, **kwargs):
        raise DecisionStoreError(self.readonly_reason, path=self.path, kind="corrupt")

    set = set_many = clear = clear_many = _refuse

    def get(self, fingerprint: str, sample_id: str, turn: int = 0) -> None:
        return None

    def all(self, fingerprint: str) -> dict:
        return {}

    def counts(self, fingerprint: str) -> dict:
        return {}

    def history(self, *args, **kwargs) -> list:
        return []


def open_store(path: Path) -> tuple[DecisionStore | UnavailableStore, str | None]:
    """The app's decision store and, when deciding is not possible, the message to show.

    Read-only file or folder: the store opens read-only (decisions shown,
    deciding disabled).  Damaged file or not a decision store: no decisions
    at all, the path and what to do.  Never raises: the app must start.
    """
    try:
        store = DecisionStore(path, mode="auto")
        damage = store.check()
        if damage is not None:
            raise DecisionStoreError(f"the decision store {path} is damaged ({damage}). Move it aside (e.g. "
                                     f"rename it to {Path(path).name}.broken) and restart: a fresh store is "
                                     "made, and the moved file can be inspected later", path=path, kind="corrupt")
    except DecisionStoreError as e:
        logger.error("decision store unusable: %s", e)
        return UnavailableStore(path, str(e)), (f"**Decisions are switched off.** {e}. Until then no "
                                                "decision can be shown or saved.")
    if store.readonly:
        logger.warning("decision store read-only: %s", store.readonly_reason)
        return store, (f"**Read-only mode: decisions are shown but cannot be saved.** {store.readonly_reason}. "
                       f"To decide, make {path} and its folder writable (or set BYORN_DATA_DIR to a "
                       "writable folder) and restart the app.")
    return store, None


TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


def new_visitor_token() -> str:
    return secrets.token_urlsafe(24)


def visitor_folder(token: str) -> str:
    """The folder name of a visitor's private runs: a hash, so paths never show the token."""
    return hashlib.sha256(token.encode()).hexdigest()[:20]


@dataclass
class AppContext:
    """Everything the handlers share, passed to each tab's wiring."""

    store: DecisionStore | UnavailableStore
    workspaces: WorkspaceRegistry
    job: TrainingJob
    data_dir: Path
    runs_dir: Path
    default_key: str
    trainer: Trainer | None = None           # None = byorn.train.train
    list_runs: Callable[[Path], pd.DataFrame] | None = None  # None = byorn.train.list_runs
    allow_server_paths: bool = True
    data_roots: tuple[Path, ...] = ()        # server paths must lie inside one of these
    private_sessions: bool = False           # each visitor sees only their own (and shared) runs
    store_problem: str | None = None         # why deciding is off (None: it is on)
    images: ImageFiles = field(default_factory=ImageFiles)
    cache: "DecisionCache | None" = None     # made from ``store`` when not given
    extras: dict = field(default_factory=dict)  # shared helpers of the tabs (candidates, run models)

    def __post_init__(self) -> None:
        if self.cache is None:
            self.cache = DecisionCache(self.store)

    # -- per-user view over the shared things ----------------------------
    def workspace(self, view: View) -> Workspace:
        ws = self.workspaces.get(view.ws or self.default_key)
        if ws is None:  # evicted (many uploads since): fall back to the default
            ws = self.workspaces.get(self.default_key)
            fresh = new_view(ws)
            for name in ("ws", "threshold", "percentile", "split"):
                setattr(view, name, getattr(fresh, name))
            view.order, view.current, view.selection, view.bulk, view.proposals = fresh.order, None, None, None, {}
        return ws

    def decisions(self, ws: Workspace) -> dict[tuple[str, int], Decision]:
        """Every decision on this workspace's data, by ``(sample_id, turn)`` (do not modify it)."""
        with store_errors():
            return self.cache.all(ws.fingerprint)

    def status_codes(self, ws: Workspace) -> np.ndarray:
        """One status code per row of ``ws.table`` (``STATUSES`` order, 0 = pending)."""
        with store_errors():
            return self.cache.codes(ws.fingerprint, ws.index)

    def decision(self, ws: Workspace, sample_id: str, turn: int = 0) -> Decision | None:
        return self.decisions(ws).get((sample_id, int(turn)))

    def decide_many(self, ws: Workspace, items: Iterable[Decision]) -> list[Decision]:
        """Save decisions (one transaction: all or none); a store problem is a message for the user."""
        with store_errors():
            return self.cache.set_many(ws.fingerprint, items)

    def clear_many(self, ws: Workspace, keys: Iterable[tuple[str, int]]) -> int:
        with store_errors():
            return self.cache.clear_many(ws.fingerprint, keys)

    def view_table(self, view: View) -> pd.DataFrame:
        """The audit table with this user's threshold and everyone's decisions (a copy: small tables only)."""
        ws = self.workspace(view)
        return join_decisions(with_threshold(ws.table, view.threshold), self.decisions(ws))

    # -- visitors (private sessions) ---------------------------------------
    def owner(self, view: View) -> str:
        """Who this session is, for run ownership: ``"local"`` without private sessions."""
        if not self.private_sessions:
            return "local"
        if not TOKEN_RE.match(str(view.owner or "")):
            view.owner = new_visitor_token()  # an API client without a browser: this session
        return view.owner

    def run_folder(self, view: View, name: str, shared: bool) -> Path:
        """Where a new run of this visitor goes (module docstring)."""
        if not self.private_sessions or shared:
            return self.runs_dir / name
        return self.runs_dir / "visitors" / visitor_folder(self.owner(view)) / name

    def run_roots(self, view: View) -> list[Path]:
        """Folders whose runs this visitor sees: shared runs, then their own."""
        if not self.private_sessions:
            return [self.runs_dir]
        return [self.runs_dir, self.runs_dir / "visitors" / visitor_folder(self.owner(view))]


@contextmanager
def store_errors() -> Iterator[None]:
    """Turn a decision-store failure into a message on the page (``gr.Error``), not a traceback."""
    try:
        yield
    except DecisionStoreError as e:
        raise gr.Error(f"Decisions: {e}") from e


def new_view(ws: Workspace | None, owner: str | None = None) -> View:
    """Fresh per-user state for a workspace."""
    if ws is None:
        return View(owner=owner)
    split = ws.audit_split()
    return View(ws=ws.key, threshold=ws.default_threshold(), split=split.kind,
                percentile={"percentile": split.p, "value": None}.get(split.kind, PAPER_P), owner=owner)


class DecisionCache:
    """Decisions of each fingerprint in memory, with a status code per table row, kept in step with the store.

    Reads reload from the store only when its file changed (size, mtime and
    inode of the database and its WAL file) since the cache last saw it.  The
    app's own writes go through :meth:`set_many` / :meth:`clear_many`, which
    update the cached decisions and codes in place instead of reloading,
    provided nothing else wrote since the last read (else: reload next time).
    One lock serialises the writes of all sessions (SQLite does anyway).
    """

    def __init__(self, store):
        self.store = store
        self._lock = threading.RLock()
        self._entries: dict[str, dict] = {}  # fp -> {"sig", "decisions", "codes": {id(index): (index, codes)}}

    def _signature(self):
        path = getattr(self.store, "path", None)
        if path is None or isinstance(self.store, UnavailableStore):
            return ("unavailable",)
        sig = []
        for p in (Path(path), Path(f"{path}-wal")):
            try:
                st = p.stat()
                sig.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                sig.append(None)
        return tuple(sig)

    def _entry(self, fp: str) -> dict:
        sig = self._signature()
        entry = self._entries.get(fp)
        if entry is None or entry["sig"] != sig:
            entry = {"sig": sig, "decisions": self.store.all(fp), "codes": {}}
            self._entries[fp] = entry
        return entry

    def all(self, fp: str) -> dict:
        with self._lock:
            return self._entry(fp)["decisions"]

    def codes(self, fp: str, index: TableIndex) -> np.ndarray:
        with self._lock:
            entry = self._entry(fp)
            hit = entry["codes"].get(id(index))
            if hit is None or hit[0] is not index:
                hit = (index, status_codes(index, entry["decisions"]))
                entry["codes"][id(index)] = hit
            return hit[1]

    def _write(self, fp: str, write: Callable[[], Any], apply: Callable[[dict, dict, Any], None]):
        with self._lock:
            before = self._signature()
            result = write()
            after = self._signature()
            for key, entry in list(self._entries.items()):
                if entry["sig"] != before:
                    self._entries.pop(key)      # someone else wrote meanwhile: reload on next read
                elif key == fp:
                    apply(entry["decisions"], entry["codes"], result)
                    entry["sig"] = after
                else:
                    entry["sig"] = after        # our write touched only ``fp``'s rows
            return result

    def set_many(self, fp: str, items: Iterable[Decision]) -> list[Decision]:
        code_of = {s: i for i, s in enumerate(STATUSES)}

        def apply(decisions, codes, saved):
            for d in saved:
                decisions[d.key] = d
                for index, arr in codes.values():
                    pos = index.turn_pos.get(d.key)
                    if pos is not None:
                        arr[pos] = code_of[d.status]

        items = list(items)
        return self._write(fp, lambda: self.store.set_many(fp, items), apply)

    def clear_many(self, fp: str, keys: Iterable[tuple[str, int]]) -> int:
        keys = [(str(s), int(t)) for s, t in keys]

        def apply(decisions, codes, _n):
            for key in keys:
                decisions.pop(key, None)
                for index, arr in codes.values():
                    pos = index.turn_pos.get(key)
                    if pos is not None:
                        arr[pos] = 0

        return self._write(fp, lambda: self.store.clear_many(fp, keys), apply)


def data_dir_from_env() -> Path:
    """``BYORN_DATA_DIR``; unset: the hosting default (``/data/byorn`` with persistent storage on a
    Space, from ``app/zerogpu.py``), else ``./byorn_data``."""
    raw = os.environ.get("BYORN_DATA_DIR")
    if not raw:
        from .hosting import default_data_dir

        default = default_data_dir()
        raw = str(default) if default else "./byorn_data"
    return Path(raw).expanduser().resolve()


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def data_roots_from_env(data_dir: Path) -> tuple[Path, ...]:
    raw = os.environ.get("BYORN_DATA_ROOTS", "")
    roots = [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()] or [data_dir]
    return tuple(Path(os.path.realpath(p)) for p in roots)


def make_context(default: Workspace, data_dir: Path | None = None, **kwargs) -> AppContext:
    """The shared objects: decision store and runs under ``data_dir``, one job.

    Settings not given in ``kwargs`` come from the environment (module docstring).
    Never raises for a bad decision store: ``store_problem`` says what is wrong.
    """
    data_dir = Path(data_dir) if data_dir is not None else data_dir_from_env()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only place: the store below says so on the page
        logger.error("cannot create the data folder %s: %s", data_dir, e)
    registry = WorkspaceRegistry()
    registry.add(default, pinned=True)
    on_space = bool(os.environ.get("SPACE_ID"))
    kwargs.setdefault("allow_server_paths", _env_flag("BYORN_ALLOW_SERVER_PATHS", not on_space))
    kwargs.setdefault("private_sessions", _env_flag("BYORN_PRIVATE_SESSIONS", on_space))
    kwargs.setdefault("data_roots", data_roots_from_env(data_dir))
    kwargs["data_roots"] = tuple(Path(os.path.realpath(p)) for p in kwargs["data_roots"])
    store, problem = open_store(data_dir / "decisions.sqlite")
    return AppContext(store=store, workspaces=registry, job=TrainingJob(), data_dir=data_dir,
                      runs_dir=data_dir / "runs", default_key=default.key, store_problem=problem, **kwargs)
