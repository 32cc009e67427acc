"""Replacements worth approving: candidates proposed by a fine-tuned run's model.

"Propose with run X" samples ``k`` candidate replacements for each flagged
turn with the model of a finished run (BYORn-F and BYORn models know the
downstream task, the reference model does not), in a background
:class:`ProposalJob` with progress, via ``byorn.propose.propose_with_run``.
The candidates land in a :class:`CandidateBook` shared by every session
(keyed by workspace and run folder); the Inspector shows those of the open
turn with each one's mean NLL under the proposing model.  Approving one
stores ``source = "run:<run folder name>"`` with the decision.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from . import hosting
from .jobs import CANCELLED, FAILED, FINISHED, IDLE, RUNNING, BackgroundJob
from .runs import load_runs

logger = logging.getLogger(__name__)

Key = tuple[str, int]


def run_source(run_dir: str | Path) -> str:
    """The decision ``source`` of a text proposed by the model of ``run_dir``."""
    return f"run:{Path(run_dir).name}"


class CandidateBook:
    """Candidates by workspace and run: ``{(sample id, turn): [Candidate, ...]}`` (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[tuple[str, str], dict[Key, list]] = {}

    def for_run(self, ws, run_dir: str | None) -> dict[Key, list]:
        if not run_dir:
            return {}
        with self._lock:
            return self._data.get((ws.key, str(run_dir)), {})

    def get(self, ws, run_dir: str | None, key: Key) -> list:
        return list(self.for_run(ws, run_dir).get(key) or [])

    def put(self, ws, run_dir: str, found: dict) -> None:
        with self._lock:
            book = dict(self._data.get((ws.key, str(run_dir)), {}))
            book.update({(str(s), int(t)): list(c) for (s, t), c in found.items()})
            self._data[(ws.key, str(run_dir))] = book


class RunModels:
    """The last few run models loaded (``byorn.propose.run_model``), shared; loading is serialised."""

    def __init__(self, keep: int = 2):
        self._lock = threading.Lock()
        self._models: OrderedDict[str, tuple[Any, str, str]] = OrderedDict()
        self.keep = keep

    def get(self, run_dir: str) -> tuple[Any, str]:
        """(the run's model, its source ``"run:<name>"``)."""
        vlm, source, _ = self.entry(run_dir)
        return vlm, source

    def folder(self, run_dir: str) -> str:
        """The run's model folder (what a ZeroGPU call loads)."""
        return self.entry(run_dir)[2]

    def entry(self, run_dir: str) -> tuple[Any, str, str]:
        from byorn.propose import run_model, run_model_folder

        with self._lock:
            hit = self._models.get(str(run_dir))
            if hit is None:
                folder, _ = run_model_folder(run_dir)
                vlm, source = run_model(run_dir)
                hit = (vlm, source, str(folder))
                self._models[str(run_dir)] = hit
                while len(self._models) > self.keep:
                    self._models.popitem(last=False)
            self._models.move_to_end(str(run_dir))
            return hit


class ProposalJob(BackgroundJob):
    """At most one proposal run at a time, in a thread; progress read by each page's timer."""

    def __init__(self) -> None:
        super().__init__({"status": IDLE, "label": "", "done": 0, "total": 0, "error": None,
                          "started_at": None, "finished_at": None, "owner": None, "n_found": 0})

    def start(self, work: Callable[[Callable, threading.Event], dict], label: str, total: int,
              on_done: Callable[[dict], None], owner: str | None = None) -> None:
        """Run ``work(progress, cancel) -> results`` in a thread; ``on_done(results)`` stores them."""
        with self._lock:
            if self._state["status"] == RUNNING:
                raise RuntimeError(f"Candidates are being proposed already ({self._state['label']}, "
                                   f"{self._state['done']}/{self._state['total']}); wait or cancel it.")
            self._state = {"status": RUNNING, "label": label, "done": 0, "total": int(total), "error": None,
                           "started_at": time.time(), "finished_at": None, "owner": owner, "n_found": 0}
            self._launch(self._run, (work, on_done), "byorn-propose")

    def _progress(self, *args) -> None:
        """``progress(done, total)`` (or ``(fraction, message)``) from the library."""
        with self._lock:
            if len(args) >= 2 and isinstance(args[1], (int, float)) and not isinstance(args[1], bool):
                self._state["done"], self._state["total"] = int(args[0]), int(args[1])
            elif args and isinstance(args[0], float):
                self._state["done"] = int(round(args[0] * (self._state["total"] or 0)))

    def _run(self, work, on_done, cancel: threading.Event) -> None:
        try:
            results = work(self._progress, cancel)
            on_done(results)
        except Exception as e:  # recorded for the page, never lost in the thread
            logger.exception("proposing candidates failed")
            self._update(status=FAILED, error=f"{type(e).__name__}: {e}", trace=traceback.format_exc(limit=4),
                         finished_at=time.time())
            return
        self._update(status=CANCELLED if cancel.is_set() else FINISHED, n_found=len(results or {}),
                     finished_at=time.time())

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._state)


def book(ctx) -> CandidateBook:
    return ctx.extras.setdefault("candidates", CandidateBook())


def models(ctx) -> RunModels:
    return ctx.extras.setdefault("run_models", RunModels())


def job(ctx) -> ProposalJob:
    return ctx.extras.setdefault("proposal_job", ProposalJob())


# -- the model calls (ZeroGPU calls on ZeroGPU: app/hosting.py) ------------------------------------
def propose_with_run(ctx, run_dir: str, dataset, keys: list, k: int, progress=None, cancel=None) -> dict:
    """Candidates for ``keys`` from the run's model (loaded once and shared, except on ZeroGPU)."""
    vlm = None if hosting.on_zerogpu() else models(ctx).get(run_dir)[0]
    return hosting.candidates_with_run(str(run_dir), dataset, keys, vlm=vlm, k=k, progress=progress,
                                       cancel=cancel)


def propose_for_turn(ctx, run_dir: str, dataset, key: tuple[str, int], k: int, seed: int) -> list:
    """``k`` fresh candidates for one turn from the run's model, best first."""
    vlm, source, folder = models(ctx).entry(run_dir)
    found = hosting.candidates_for(vlm, folder, dataset, [key], k=k, seed=seed, source=source)
    return list(found.get(key) or [])


# -- finished runs --------------------------------------------------------------------------------
def runs_with_models(ctx, view) -> pd.DataFrame:
    """Runs this visitor sees that saved a model: ``run_id``, ``label``, ``out_dir``, ``same_data``."""
    try:
        runs = load_runs(ctx, view)
    except Exception as e:  # a broken run folder must not break the Inspector
        logger.warning("cannot list runs: %s", e)
        return pd.DataFrame(columns=["run_id", "label", "out_dir", "method", "same_data"])
    ws = ctx.workspace(view)
    rows = []
    for r in runs.to_dict("records"):
        folder = Path(str(r.get("out_dir") or ""))
        if not (folder / "model" / "config.json").exists():
            continue
        same = _fingerprint_of(folder) == ws.fingerprint
        asr = r.get("asr")
        tail = f", ASR {100 * float(asr):.0f} %" if isinstance(asr, (int, float)) and asr == asr else ""
        label = f"{r.get('run_id')} ({r.get('method')}{tail}{'' if same else ', other data'})"
        rows.append({"run_id": r.get("run_id"), "label": label, "out_dir": str(folder),
                     "method": r.get("method"), "same_data": same})
    table = pd.DataFrame(rows, columns=["run_id", "label", "out_dir", "method", "same_data"])
    return table.sort_values("same_data", ascending=False, kind="stable") if len(table) else table


def check_run(ctx, view, run_dir: str) -> str:
    """``run_dir`` if it is a run this visitor sees that saved a model, else ``ValueError`` (never a
    path typed by an API client: that would load any folder on the server)."""
    runs = runs_with_models(ctx, view)
    known = {str(Path(p).resolve()): p for p in runs["out_dir"]}
    hit = known.get(str(Path(str(run_dir)).resolve()))
    if hit is None:
        raise ValueError(f"{Path(str(run_dir)).name!r} is not one of your finished runs with a saved model")
    return hit


def _fingerprint_of(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text()).get("dataset_fingerprint")
    except (OSError, ValueError):
        return None
