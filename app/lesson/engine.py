"""What the lesson's handlers share: the lesson runs (shipped, or a visitor's own), captions, live runs.

One :class:`LessonEngine` per app (``ctx.extras["lesson"]``).  It holds the
shipped lesson (loaded once, read-only), visitors' finished runs (a few,
least recently used dropped), a cache of captions (the same image asked of
the same model gives the same caption, so a class of visitors on the same
test images costs one generation each) and the queue of live runs.  No
method logic here: everything comes from :mod:`byorn.lesson`.
"""
from __future__ import annotations

import collections
import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from byorn.lesson import (DEFAULT_INSTRUCTION, LIVE_SETTING, Caption, LessonAttack, LessonModel, LessonSetting,
                          build_data, caption, train_lesson)

from .live import LiveQueue

logger = logging.getLogger(__name__)

SHIPPED = "shipped"
LIVE_EXPECTED_S = 180.0  # what a live run takes on 2 cores (benchmarks/lesson_results.json), for the wait shown


@dataclass
class LessonRun:
    """One lesson folder (``byorn.lesson.build``): its attack, audit, histories, results and models."""

    folder: Path
    key: str
    _models: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def info(self) -> dict:
        return json.loads((self.folder / "lesson.json").read_text())

    @cached_property
    def attack(self) -> LessonAttack:
        return LessonAttack.from_dict(self.info["attack"])

    @cached_property
    def setting(self) -> LessonSetting:
        return LessonSetting.from_dict(self.info["setting"])

    @cached_property
    def audit(self) -> dict:
        return json.loads((self.folder / "audit.json").read_text())

    @cached_property
    def poisoned(self) -> set[str]:
        return set(self.info.get("poisoned", []))

    @cached_property
    def data(self):
        """The poisoned training set (rebuilt from the seed: the same samples the models were trained on)."""
        s = self.setting
        return build_data(self.attack, s.n_train, s.n_test, s.seed)

    @cached_property
    def scores(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        rows = self.audit["rows"]
        return (np.array([r["score"] for r in rows], float), np.array([r["id"] in self.poisoned for r in rows]),
                [r["id"] for r in rows])

    def history(self, method: str) -> dict:
        path = self.folder / method / "history.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @property
    def results(self) -> dict:
        return self.info.get("results", {})

    @property
    def methods(self) -> list[str]:
        return [m for m in ("sft", "byorn-f", "byorn") if (self.folder / m).is_dir()]

    def model(self, key: str) -> LessonModel:
        with self._lock:
            if key not in self._models:
                self._models[key] = LessonModel.load(key, self.folder / key)
            return self._models[key]


def image_key(image) -> str:
    return hashlib.sha1(image.convert("RGB").tobytes()).hexdigest()


class LessonEngine:
    """The shared, read-only side of the lesson (module docstring)."""

    def __init__(self, runs_dir: Path, shipped_dir: Path | None = None, max_own: int = 4,
                 max_captions: int = 4096) -> None:
        self.runs_dir = Path(runs_dir)
        self.shipped_dir = shipped_dir
        self.queue = LiveQueue(expected_s=LIVE_EXPECTED_S)
        self._lock = threading.Lock()
        self._shipped: LessonRun | None = None
        self._own: collections.OrderedDict[str, LessonRun] = collections.OrderedDict()
        self._reference: LessonModel | None = None
        self._captions: collections.OrderedDict[tuple, Caption] = collections.OrderedDict()
        self.max_own, self.max_captions = max_own, max_captions
        self._examples: collections.OrderedDict[tuple, object] = collections.OrderedDict()

    # -- runs ------------------------------------------------------------------------------------
    def shipped(self) -> LessonRun:
        with self._lock:
            if self._shipped is None:
                from byorn.lesson.assets import LESSON_DIR

                self._shipped = LessonRun(Path(self.shipped_dir or LESSON_DIR), SHIPPED)
            return self._shipped

    def own(self, folder: str) -> LessonRun:
        with self._lock:
            run = self._own.pop(folder, None) or LessonRun(Path(folder), "own:" + Path(folder).name)
            self._own[folder] = run
            while len(self._own) > self.max_own:
                self._own.popitem(last=False)
            return run

    def run_for(self, view) -> LessonRun:
        """The run a visitor's steps 2-5 show: their own finished one if they chose it, else the shipped."""
        if view.use_own and view.own_folder and Path(view.own_folder, "lesson.json").exists():
            return self.own(view.own_folder)
        return self.shipped()

    def reference(self) -> LessonModel:
        with self._lock:
            if self._reference is None:
                self._reference = LessonModel.load("reference", None)
            return self._reference

    def model(self, run: LessonRun, key: str) -> LessonModel:
        return self.reference() if key == "reference" else run.model(key)

    # -- captions ----------------------------------------------------------------------------------
    def caption(self, run: LessonRun, key: str, image, instruction: str = DEFAULT_INSTRUCTION) -> Caption:
        """``key``'s caption of ``image``, tokens scored by the reference model (cached)."""
        ck = (run.key, key, image_key(image), instruction)
        with self._lock:
            hit = self._captions.get(ck)
            if hit is not None:
                self._captions.move_to_end(ck)
                return hit
        out = caption(self.model(run, key), image, instruction, scorer=self.reference())
        with self._lock:
            self._captions[ck] = out
            while len(self._captions) > self.max_captions:
                self._captions.popitem(last=False)
        return out

    def examples_data(self, attack: LessonAttack, setting: LessonSetting):
        """The poisoned training set of an attack (for its example pairs), a few kept."""
        k = (json.dumps(attack.to_dict(), sort_keys=True), setting.n_train, setting.seed)
        with self._lock:
            if k in self._examples:
                self._examples.move_to_end(k)
                return self._examples[k]
        data = build_data(attack, setting.n_train, max(setting.n_test, 8), setting.seed)
        with self._lock:
            self._examples[k] = data
            while len(self._examples) > 16:
                self._examples.popitem(last=False)
        return data

    # -- live runs ---------------------------------------------------------------------------------
    def submit_live(self, attack: LessonAttack, folder: Path, setting: LessonSetting = LIVE_SETTING) -> str:
        """Queue a live training of ``attack`` into ``folder``; returns the run id."""
        def runner(progress, cancel):
            return train_lesson(attack, setting, folder, ref=self.reference().vlm, progress=progress, cancel=cancel)

        return self.queue.submit(runner, label=f"lesson: {attack.name} → {attack.target!r}")
