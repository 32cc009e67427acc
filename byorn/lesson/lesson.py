"""A loaded lesson: its data, scores, models, training histories and results.

:func:`load_lesson` reads a lesson folder (the shipped one by default) once
per process; the result is shared read-only by every visitor.  The data is
regenerated from the seed (it is a pure function of it) and checked against
the fingerprint the folder recorded.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..models import VLM
from .assets import LESSON_DIR, verify_manifest
from .attack import LessonAttack, LessonData, build_data
from .build import LessonSetting
from .models import LessonModel

logger = logging.getLogger(__name__)

_CACHE: dict[str, "Lesson"] = {}
_CACHE_LOCK = threading.Lock()
_REF: list[LessonModel] = []


@dataclass
class Lesson:
    """Everything steps 1-5 show for one attack (shipped, or a visitor's live run)."""

    folder: Path
    attack: LessonAttack
    setting: LessonSetting
    data: LessonData
    ids: list[str]                       # audit rows, in data order
    scores: np.ndarray                   # mean surprisal of each response under the reference model
    tokens: list[list[str]]
    surprisals: list[list[float]]
    flagged: np.ndarray                  # the defense's flags (p-split of the scores, never ground truth)
    threshold: float
    models: dict[str, LessonModel]       # "reference", "sft", "byorn-f", "byorn"
    histories: dict[str, dict]
    results: dict[str, dict]             # method -> {"asr", "cider", ...} on the test sets
    info: dict = field(default_factory=dict)
    shipped: bool = False

    @property
    def poisoned(self) -> np.ndarray:
        """Ground truth per audit row (for display and evaluation only)."""
        return np.array([self.data.poisoned[i] for i in self.ids], dtype=bool)

    def row(self, sample_id: str) -> int:
        try:
            return self.ids.index(sample_id)
        except ValueError:
            raise KeyError(f"sample {sample_id!r} is not in this lesson's training set") from None


def reference_model() -> LessonModel:
    """The embedded pretrained model, loaded once per process."""
    with _CACHE_LOCK:
        if not _REF:
            _REF.append(LessonModel("reference", VLM.load(device="cpu")))
        return _REF[0]


def load_lesson(folder: str | Path | None = None, *, verify: bool = True) -> Lesson:
    """The lesson in ``folder`` (default: the shipped one, its manifest checked), loaded once per process."""
    folder = Path(folder) if folder is not None else LESSON_DIR
    key = str(folder.resolve())
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    shipped = folder.resolve() == LESSON_DIR.resolve()
    if shipped and verify:
        verify_manifest(folder)
    lesson = _read(folder, shipped)
    with _CACHE_LOCK:
        return _CACHE.setdefault(key, lesson)


def forget_lesson(folder: str | Path) -> None:
    """Drop a (live) lesson from the process cache, e.g. when its visitor's session ends."""
    with _CACHE_LOCK:
        _CACHE.pop(str(Path(folder).resolve()), None)


def _read(folder: Path, shipped: bool) -> Lesson:
    if not (folder / "lesson.json").exists():
        raise FileNotFoundError(f"{folder} holds no lesson (no lesson.json)")
    info = json.loads((folder / "lesson.json").read_text())
    attack = LessonAttack.from_dict(info["attack"])
    setting = LessonSetting.from_dict(info["setting"])
    data = build_data(attack, setting.n_train, setting.n_test, setting.seed)
    if data.train.fingerprint() != info["train_fingerprint"]:
        raise ValueError(f"{folder}: the regenerated training data (fingerprint {data.train.fingerprint()}) is not "
                         f"what the lesson was trained on ({info['train_fingerprint']}): the world changed; rebuild "
                         "with `python scripts/make_lesson_assets.py`")
    audit = json.loads((folder / "audit.json").read_text())
    rows = audit["rows"]
    models = {"reference": reference_model()}
    histories = {}
    for m in setting.methods:
        models[m] = LessonModel.load(m, folder / m)
        histories[m] = json.loads((folder / m / "history.json").read_text())
    return Lesson(folder, attack, setting, data, [r["id"] for r in rows],
                  np.array([r["score"] for r in rows], float), [r["tokens"] for r in rows],
                  [r["surprisals"] for r in rows], np.array([r["suspicious"] for r in rows], bool),
                  float(audit["threshold"]), models, histories, info["results"], info, shipped)
