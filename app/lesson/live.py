"""Live lesson runs: one training at a time, a first-come queue, each run owned by one session.

A visitor who made their own trigger in step 1 asks for their own SFT and
BYORn models.  Training takes minutes on 2 cores, so it runs in one worker
thread that takes the queued runs in order; every run has a random id that
only the session that asked for it holds (in its ``gr.State``), so no visitor
can see, follow or cancel another's run, and nothing one visitor does changes
what another sees.  The page polls :meth:`LiveQueue.snapshot` from a
``gr.Timer``; cancel sets the run's own ``threading.Event``, which the
trainer checks (a queued run is simply taken out of the queue).

``runner(progress, cancel) -> result`` does the work: ``progress(fraction,
message)`` reports, ``cancel`` is a ``threading.Event``; its return value is
kept as the run's ``result`` (the app loads the run's models from it).
"""
from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

logger = logging.getLogger(__name__)

QUEUED, RUNNING, FINISHED, CANCELLED, FAILED = "queued", "running", "finished", "cancelled", "failed"
DONE = (FINISHED, CANCELLED, FAILED)

Runner = Callable[[Callable[[float, str], None], threading.Event], Any]


class QueueFull(RuntimeError):
    """Too many runs wait already."""


@dataclass
class LiveRun:
    id: str
    label: str
    runner: Runner
    status: str = QUEUED
    fraction: float = 0.0
    message: str = "waiting for its turn"
    queued_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


class LiveQueue:
    """Runs queued ``runner`` functions one at a time in a daemon thread, first come first served."""

    def __init__(self, max_waiting: int = 20, keep_finished: int = 200, expected_s: float = 180.0) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiting: collections.deque[str] = collections.deque()
        self._runs: dict[str, LiveRun] = {}
        self._worker: threading.Thread | None = None
        self.max_waiting = max_waiting
        self.keep_finished = keep_finished
        self.expected_s = expected_s  # how long one run takes (then: learnt from finished runs), for the wait shown

    # -- control -------------------------------------------------------------------------------
    def submit(self, runner: Runner, label: str = "lesson run") -> str:
        """Queue a run; returns its id (a secret: whoever holds it may watch and cancel it)."""
        with self._lock:
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(f"{len(self._waiting)} runs are waiting already; try again in a few minutes.")
            run = LiveRun(id=secrets.token_urlsafe(12), label=label, runner=runner)
            self._runs[run.id] = run
            self._waiting.append(run.id)
            self._forget_old()
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="byorn-lesson-live", daemon=True)
                self._worker.start()
            self._wake.notify_all()
            return run.id

    def cancel(self, run_id: str | None) -> bool:
        """Stop a running run at its next check, or take a queued one out; False if neither."""
        with self._lock:
            run = self._runs.get(run_id or "")
            if run is None or run.status in DONE:
                return False
            run.cancel.set()
            if run.status == QUEUED:
                self._waiting.remove(run.id)
                run.status, run.message, run.finished_at = CANCELLED, "cancelled before it started", time.time()
            else:
                run.message = "cancelling…"
            return True

    def snapshot(self, run_id: str | None) -> dict | None:
        """The run's state (a copy), its place in the queue and the expected wait; None if unknown."""
        with self._lock:
            run = self._runs.get(run_id or "")
            if run is None:
                return None
            ahead = list(self._waiting).index(run.id) if run.status == QUEUED else 0
            running = any(r.status == RUNNING for r in self._runs.values())
            current = next((r for r in self._runs.values() if r.status == RUNNING), None)
            left_now = self.expected_s * (1 - current.fraction) if current is not None else 0.0
            snap = {k: getattr(run, k) for k in ("id", "label", "status", "fraction", "message", "queued_at",
                                                  "started_at", "finished_at", "result", "error")}
        snap["ahead"] = ahead + (1 if running and run.status == QUEUED else 0)
        snap["wait_s"] = (left_now + ahead * self.expected_s) if run.status == QUEUED else 0.0
        now = time.time()
        snap["elapsed_s"] = ((run.finished_at or now) - run.started_at) if run.started_at else 0.0
        return snap

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def join(self, run_id: str, timeout: float | None = None) -> dict | None:
        """For scripts and tests: wait until the run is done; its snapshot."""
        end = None if timeout is None else time.time() + timeout
        while True:
            snap = self.snapshot(run_id)
            if snap is None or snap["status"] in DONE or (end is not None and time.time() > end):
                return snap
            time.sleep(0.05)

    # -- the worker ----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting:
                    if not self._wake.wait(timeout=60):
                        self._worker = None  # idle for a minute: let the thread end
                        return
                run = self._runs[self._waiting.popleft()]
                run.status, run.started_at, run.message = RUNNING, time.time(), "starting"
            self._run(run)

    def _run(self, run: LiveRun) -> None:
        def progress(fraction: float, message: str = "") -> None:
            with self._lock:
                run.fraction = min(max(float(fraction), 0.0), 1.0)
                if message and not run.cancel.is_set():
                    run.message = message

        try:
            result = run.runner(progress, run.cancel)
        except Exception as e:  # the thread must record every failure, never die silently
            if run.cancel.is_set():  # the runner stopped by raising (byorn.lesson.Cancelled)
                with self._lock:
                    run.status, run.message, run.finished_at = CANCELLED, "cancelled", time.time()
                return
            logger.exception("lesson run %s failed", run.label)
            with self._lock:
                run.status, run.error, run.finished_at = FAILED, f"{type(e).__name__}: {e}", time.time()
                run.message = "failed"
            return
        with self._lock:
            run.finished_at = time.time()
            if run.cancel.is_set() or bool(getattr(result, "cancelled", False)):
                run.status, run.message = CANCELLED, "cancelled"
            else:
                run.status, run.result, run.fraction, run.message = FINISHED, result, 1.0, "finished"
                # the wait told to the queue follows what runs really take on this server
                self.expected_s = 0.5 * self.expected_s + 0.5 * (run.finished_at - (run.started_at or run.queued_at))

    def _forget_old(self) -> None:
        """Drop the oldest finished runs beyond ``keep_finished`` (call under the lock)."""
        done = [r for r in self._runs.values() if r.status in DONE]
        for r in sorted(done, key=lambda r: r.finished_at or 0)[:max(0, len(done) - self.keep_finished)]:
            del self._runs[r.id]
