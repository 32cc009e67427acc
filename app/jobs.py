"""The one background training job shared by every visitor of the app.

A training run takes minutes, longer than a request should, and ``gr.Progress``
cannot report from a thread the event did not run in.  So the run goes into a
background thread owned by a single :class:`TrainingJob`; the run's callbacks
write progress into the job under its lock, and each open page polls
:meth:`TrainingJob.snapshot` from a ``gr.Timer``.  One run at a time: a second
:meth:`TrainingJob.start` raises :class:`JobBusy`, and everyone can watch the
running one.  Cancel sets a ``threading.Event`` that the trainer checks after
each step.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
import traceback
from typing import Any, Callable

logger = logging.getLogger(__name__)

IDLE, RUNNING, FINISHED, CANCELLED, FAILED = "idle", "running", "finished", "cancelled", "failed"

Runner = Callable[[list, threading.Event], Any]
"""``runner(callbacks, cancel_event) -> result``; the result may have ``out_dir``,
``metrics`` and ``cancelled`` (``byorn.train.RunResult``)."""


class JobBusy(RuntimeError):
    """A training run is already going."""


class _ProgressCallback:
    """Trainer callback (``byorn.train`` hook names) writing into the job."""

    def __init__(self, job: "TrainingJob"):
        self.job = job

    def on_train_begin(self, state) -> None:
        self.job._update(total_steps=_get(state, "total_steps"), step=_get(state, "step", 0))

    def on_step_end(self, state) -> None:
        self.job._record_step(state)

    def on_evaluate(self, state, metrics: dict) -> None:
        self.job._record_eval(_get(state, "step", 0), metrics)

    def on_train_end(self, state) -> None:
        self.job._update(step=_get(state, "step"), eta_s=0.0)


def _is_bootstrap_step(state) -> bool:
    """Whether the last step trained on bootstrapped (model-generated) responses (BYORn)."""
    history = getattr(state, "history", None) or [{}]
    return bool(history[-1].get("bootstrap", False))


def _get(state, name: str, default=None):
    value = getattr(state, name, default)
    return default if value is None else value


class BackgroundJob:
    """One background thread at a time, with its state dict under a lock, cancel and join.

    Subclasses keep their own state fields and say how the thread's work reports.
    """

    def __init__(self, state: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._state: dict[str, Any] = state

    def _launch(self, target: Callable, args: tuple, name: str) -> None:
        """Start ``target(*args, cancel_event)`` in a daemon thread (call under ``self._lock``)."""
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=target, args=(*args, self._cancel), name=name, daemon=True)
        self._thread.start()

    def cancel(self) -> bool:
        """Ask the running job to stop at its next check; False when none runs."""
        with self._lock:
            if self._state["status"] != RUNNING:
                return False
            self._cancel.set()
            self._state["label"] += " (cancelling…)" if "cancelling" not in self._state["label"] else ""
            return True

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; True when no job is going afterwards."""
        t = self._thread
        if t is not None:
            t.join(timeout)
        return not self.running

    @property
    def running(self) -> bool:
        with self._lock:
            return self._state["status"] == RUNNING

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._state.update(changes)


class TrainingJob(BackgroundJob):
    """Holds at most one running training thread and its progress."""

    def __init__(self) -> None:
        super().__init__(self._fresh(IDLE, ""))

    @staticmethod
    def _fresh(status: str, label: str) -> dict[str, Any]:
        return {"status": status, "label": label, "run_no": 0, "step": 0, "total_steps": None,
                "epoch": None, "loss": None, "elapsed_s": 0.0, "eta_s": None,
                "losses": [], "evals": [], "error": None, "out_dir": None,
                "metrics": None, "started_at": None, "finished_at": None,
                "owner": None, "shared": True}

    # -- control ---------------------------------------------------------
    def start(self, runner: Runner, label: str = "training run", *, owner: str | None = None,
              shared: bool = True) -> int:
        """Start ``runner`` in a background thread; returns the run number.

        ``owner`` (who started it) and ``shared`` (whether others may watch
        it) travel in the snapshot, for the app to decide who sees what.

        Raises :class:`JobBusy` when a run is going (check and start happen
        under one lock, so two simultaneous clicks cannot both start).
        """
        with self._lock:
            if self._state["status"] == RUNNING:
                raise JobBusy(f"A training run is already going ({self._state['label']}, "
                              f"step {self._state['step']}/{self._state['total_steps'] or '?'}). "
                              "Watch it here, or cancel it first.")
            run_no = self._state["run_no"] + 1
            self._state = self._fresh(RUNNING, label)
            self._state.update(run_no=run_no, started_at=time.time(), owner=owner, shared=bool(shared))
            self._launch(self._run, (runner,), f"byorn-train-{run_no}")
        return run_no

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the progress, safe to read while the run goes on."""
        with self._lock:
            snap = copy.deepcopy(self._state)
        if snap["status"] == RUNNING and snap["started_at"]:
            snap["elapsed_s"] = time.time() - snap["started_at"]
        return snap

    # -- the thread ------------------------------------------------------
    def _run(self, runner: Runner, cancel: threading.Event) -> None:
        try:
            result = runner([_ProgressCallback(self)], cancel)
        except Exception as e:  # the thread must record every failure, never die silently
            logger.exception("training run failed")
            self._update(status=FAILED, error=f"{type(e).__name__}: {e}",
                         traceback=traceback.format_exc(limit=5), finished_at=time.time())
            return
        cancelled = bool(getattr(result, "cancelled", False)) or cancel.is_set()
        self._update(status=CANCELLED if cancelled else FINISHED,
                     out_dir=str(getattr(result, "out_dir", "") or "") or None,
                     metrics=dict(getattr(result, "metrics", {}) or {}),
                     finished_at=time.time(), eta_s=0.0)

    def _update(self, **changes: Any) -> None:
        super()._update(**{k: v for k, v in changes.items() if v is not None or k == "eta_s"})

    def _record_step(self, state) -> None:
        step, loss = _get(state, "step", 0), _get(state, "loss")
        with self._lock:
            s = self._state
            s.update(step=step, total_steps=_get(state, "total_steps", s["total_steps"]),
                     epoch=_get(state, "epoch"), eta_s=_get(state, "eta_s"),
                     elapsed_s=_get(state, "elapsed_s", s["elapsed_s"]))
            if loss is not None:
                s["loss"] = float(loss)
                s["losses"].append((int(step), float(loss), _is_bootstrap_step(state)))

    def _record_eval(self, step: int, metrics: dict) -> None:
        row = {"step": int(step)}
        row.update({k: (float(v) if isinstance(v, (int, float)) else v) for k, v in metrics.items()})
        with self._lock:
            self._state["evals"].append(row)
