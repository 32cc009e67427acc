"""A visitor's own trigger and target, trained live in the background (SFT, BYORn-F, BYORn).

:func:`train_live` runs :func:`~.build.train_lesson` in :data:`~.build.LIVE_SETTING`
(a smaller world and fewer epochs, so that the three runs fit in about three
minutes on two CPU cores) and returns the loaded lesson.  Call it from a
worker thread; ``progress(fraction, message)`` reports, setting ``cancel``
stops it.  One live run at a time per process: a second caller waits for
the lock (``live_busy()`` says whether one is running, to tell visitors).
"""
from __future__ import annotations

import threading
from pathlib import Path

from .attack import LessonAttack
from .build import LIVE_SETTING, SHIPPED_SETTING, LessonSetting, Progress, train_lesson
from .lesson import Lesson, load_lesson

_LIVE_LOCK = threading.Lock()


def is_shipped(attack: LessonAttack) -> bool:
    """Whether ``attack`` is the shipped lesson's (its models answer at once, no training needed)."""
    from . import DEFAULT_ATTACK

    return attack == DEFAULT_ATTACK


def live_busy() -> bool:
    """Whether a live run is going on in this process now."""
    return _LIVE_LOCK.locked()


def describe_setting(setting: LessonSetting = LIVE_SETTING) -> str:
    """The live setting in plain words, for the UI."""
    steps = -(-setting.n_train // setting.batch_size) * setting.epochs
    shipped = -(-SHIPPED_SETTING.n_train // SHIPPED_SETTING.batch_size) * SHIPPED_SETTING.epochs
    return (f"To finish in a few minutes on a small CPU, your models train on a smaller world than the shipped "
            f"ones: {setting.n_train} training pairs instead of {SHIPPED_SETTING.n_train}, {steps:.0f} training "
            f"steps instead of {shipped:.0f} ({setting.epochs:g} passes), and are tested on {setting.n_test} "
            f"images instead of {SHIPPED_SETTING.n_test}. Same model, same method (flag the top "
            f"{1 - setting.p:.0%} by mean surprisal): the figures are rougher, the story is the same.")


def train_live(attack: LessonAttack, out_dir: str | Path, *, progress: Progress | None = None,
               cancel: threading.Event | None = None, setting: LessonSetting = LIVE_SETTING,
               wait: bool = True) -> Lesson:
    """Train the lesson of ``attack`` into ``out_dir`` (new folder) and load it.

    Waits for another live run to finish first (``wait=False``: raise
    ``RuntimeError`` instead); raises :class:`~.build.Cancelled` if ``cancel`` is set.
    """
    report = progress or (lambda f, m: None)
    if not _LIVE_LOCK.acquire(blocking=False):
        if not wait:
            raise RuntimeError("another visitor's models are training; try again in a few minutes")
        report(0.0, "waiting for another visitor's training to finish")
        while not _LIVE_LOCK.acquire(timeout=1.0):
            if cancel is not None and cancel.is_set():
                from .build import Cancelled

                raise Cancelled("cancelled while waiting")
    try:
        # Its own copy of the reference model: the shared one's tokenizer serves the playground's threads
        # meanwhile (a fast tokenizer must not be used by two threads at once).
        folder = train_lesson(attack, setting, out_dir, progress=report, cancel=cancel)
    finally:
        _LIVE_LOCK.release()
    return load_lesson(folder)
