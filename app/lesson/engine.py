"""What the lesson's handlers share: the lessons (shipped, or visitors' own), cached answers, live runs.

One :class:`LessonEngine` per app (``ctx.extras["lesson"]``).  It holds the
shipped lesson (:func:`byorn.lesson.load_lesson`, loaded once, read-only),
visitors' finished lessons (a few; the least recently used is forgotten), a
cache of playground answers (the same image asked of the same lesson gives
the same captions, so a class of visitors on the same test images costs one
generation each) and the queue of live runs (:mod:`.live`).  No method logic
here: everything comes from :mod:`byorn.lesson`.
"""
from __future__ import annotations

import collections
import hashlib
import json
import logging
import shutil
import threading
from pathlib import Path

from byorn.lesson import (DEFAULT_INSTRUCTION, LIVE_SETTING, Lesson, LessonAttack, LessonSetting, build_data,
                          forget_lesson, load_lesson, playground, train_live)

from .live import LiveQueue

logger = logging.getLogger(__name__)

LIVE_EXPECTED_S = 180.0  # a live run on 2 cores (benchmarks/lesson_results.json), for the wait shown


def image_key(image) -> str:
    return hashlib.sha1(image.convert("RGB").tobytes() + repr(image.size).encode()).hexdigest()


class LessonEngine:
    """The shared, read-only side of the lesson (module docstring)."""

    def __init__(self, runs_dir: Path, shipped_dir: Path | None = None, max_own: int = 4,
                 max_answers: int = 4096) -> None:
        self.runs_dir = Path(runs_dir)
        self.shipped_dir = Path(shipped_dir) if shipped_dir else None
        self.queue = LiveQueue(expected_s=LIVE_EXPECTED_S)
        self.live_setting: LessonSetting = LIVE_SETTING  # the world and epochs of a visitor's own run
        self.private = False  # a public Space: say that live runs queue for everyone
        self._lock = threading.Lock()
        self._own: collections.OrderedDict[str, Lesson] = collections.OrderedDict()
        self._answers: collections.OrderedDict[tuple, tuple] = collections.OrderedDict()
        self._examples: collections.OrderedDict[tuple, object] = collections.OrderedDict()
        self._memo: dict[tuple, object] = {}
        self.max_own, self.max_answers = max_own, max_answers
        self.max_folders = 24  # visitors' finished runs kept on disk (about 14 MB each)

    # -- lessons ---------------------------------------------------------------------------------
    def shipped(self) -> Lesson:
        """The shipped lesson (its manifest checked), or the one in ``shipped_dir`` (development)."""
        return load_lesson(self.shipped_dir, verify=self.shipped_dir is None)

    def own(self, folder: str) -> Lesson:
        with self._lock:
            lesson = self._own.pop(folder, None)
        if lesson is None:
            lesson = load_lesson(folder)
        with self._lock:
            self._own[folder] = lesson
            while len(self._own) > self.max_own:
                old, _ = self._own.popitem(last=False)
                forget_lesson(old)
        return lesson

    def lesson_for(self, view) -> Lesson:
        """The lesson a visitor's steps 2-5 show: their own finished one if they chose it, else the shipped."""
        if view.use_own and view.own_folder and Path(view.own_folder, "lesson.json").exists():
            return self.own(view.own_folder)
        return self.shipped()

    def discard(self, folder: str) -> None:
        """Forget a visitor's lesson and remove its folder (they replaced it with a new run)."""
        with self._lock:
            self._own.pop(folder, None)
            for key in [k for k in self._memo if k[0] == str(Path(folder))]:
                del self._memo[key]
        forget_lesson(folder)
        path = Path(folder)
        if path.parent == self.runs_dir and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)

    def _prune(self) -> None:
        """Keep the newest ``max_folders`` run folders on disk (a public Space's disk is small)."""
        if not self.runs_dir.is_dir():
            return
        folders = sorted((p for p in self.runs_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        for old in folders[:max(0, len(folders) - self.max_folders)]:
            self.discard(str(old))

    def memo(self, lesson: Lesson, name, fn):
        """``fn()`` computed once per lesson and ``name`` (a lesson never changes once trained)."""
        key = (str(lesson.folder), name)
        with self._lock:
            if key in self._memo:
                return self._memo[key]
        value = fn()
        with self._lock:
            self._memo[key] = value
        return value

    # -- the playground ----------------------------------------------------------------------------
    def answers(self, lesson: Lesson, image, triggered: bool, models: tuple,
                instruction: str = DEFAULT_INSTRUCTION) -> tuple:
        """``byorn.lesson.playground`` (cached): (image shown, instruction asked, answers)."""
        key = (str(lesson.folder), image_key(image), bool(triggered), tuple(models), instruction)
        with self._lock:
            hit = self._answers.get(key)
            if hit is not None:
                self._answers.move_to_end(key)
                return hit
        out = playground(lesson, image, triggered=triggered, models=models, instruction=instruction)
        with self._lock:
            self._answers[key] = out
            while len(self._answers) > self.max_answers:
                self._answers.popitem(last=False)
        return out

    def examples_data(self, attack: LessonAttack, setting: LessonSetting):
        """The poisoned training set of an attack not trained yet (for its example pairs), a few kept."""
        k = (json.dumps(attack.to_dict(), sort_keys=True), setting.n_train, setting.seed)
        with self._lock:
            if k in self._examples:
                self._examples.move_to_end(k)
                return self._examples[k]
        data = build_data(attack, setting.n_train, setting.n_test, setting.seed)
        with self._lock:
            self._examples[k] = data
            while len(self._examples) > 16:
                self._examples.popitem(last=False)
        return data

    # -- live runs ---------------------------------------------------------------------------------
    def submit_live(self, attack: LessonAttack, folder: Path) -> str:
        """Queue a live training of ``attack`` into ``folder``; returns the run id."""
        setting = self.live_setting
        self._prune()

        def runner(progress, cancel):
            return train_live(attack, folder, progress=progress, cancel=cancel, setting=setting)

        return self.queue.submit(runner, label=f"lesson: {attack.name} → {attack.target!r}")
