"""Training a lesson: poison the world, audit it, fine-tune SFT / BYORn-F / BYORn, evaluate, save.

One function, :func:`train_lesson`, serves both the shipped lesson
(``scripts/make_lesson_assets.py``, :data:`SHIPPED_SETTING`) and a visitor's
own trigger trained live (:data:`LIVE_SETTING`, :mod:`.live`).  It writes a
lesson folder:

* ``lesson.json`` -- the attack, the setting, the data's fingerprints, the
  ground truth (ids of the poisoned samples; display only) and each model's
  ASR and clean CIDEr on the test sets (measured on the saved weights);
* ``audit.json`` -- every sample's score (mean surprisal under the reference
  model), its tokens and their surprisals, the threshold and the flags;
* ``<method>/`` -- the fine-tuned model (16-bit safetensors, loads like any
  model folder) and ``history.json``: the loss per step and, for BYORn, the
  response the EMA model bootstrapped for each flagged sample in each epoch;
* ``timings.json`` -- the wall time of the whole and of each model (the only
  file that differs between two builds with the same seed).
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from ..audit import AuditConfig, run_audit
from ..evaluate import EvalSuite, evaluate
from ..models import VLM
from ..train import Callback, TrainConfig, train
from .attack import LessonAttack, LessonData, build_data

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]  # (fraction done in [0, 1], message)
METHODS = ("sft", "byorn-f", "byorn")
TIMINGS = "timings.json"


class Cancelled(RuntimeError):
    """Live training was cancelled (the partial lesson folder is removed)."""


@dataclass(frozen=True)
class LessonSetting:
    """The world and training budget of a lesson (the paper's method: p = 0.6, mean NLL)."""

    n_train: int = 800
    n_test: int = 200
    epochs: float = 8.0
    batch_size: int = 32
    lr: float = 2e-3
    p: float = 0.6
    score: str = "mean"
    seed: int = 0
    methods: tuple[str, ...] = METHODS
    threads: int = 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["methods"] = list(self.methods)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LessonSetting":
        d = dict(d)
        d["methods"] = tuple(d.get("methods", METHODS))
        return cls(**d)


#: The shipped lesson: the setting of the project's quick benchmark on an 800-sample world (one thread:
#: reproducible on any machine, and not slowed by a busy one).
SHIPPED_SETTING = LessonSetting(threads=1)
#: A visitor's own trigger, trained live on 2 CPU cores: a smaller world, fewer epochs.
#: (320 pairs and 6 epochs were too few: SFT did not learn a green corner patch, ASR 0 %; 400 and 10 did, 100 %.)
LIVE_SETTING = LessonSetting(n_train=400, n_test=40, epochs=10.0, batch_size=32, lr=3e-3)


class _StepProgress(Callback):
    def __init__(self, report: Progress, start: float, span: float, label: str):
        self.report, self.start, self.span, self.label = report, start, span, label

    def on_step_end(self, state) -> None:
        f = state.step / max(state.total_steps, 1)
        self.report(self.start + self.span * f, f"{self.label}: step {state.step} of {state.total_steps}")


def _phase_spans(setting: LessonSetting) -> dict[str, float]:
    """Rough share of the wall time of each phase (BYORn generates, so it costs about twice SFT)."""
    weight = {"audit": 0.4, "sft": 1.0, "byorn-f": 0.6, "byorn": 1.6, "eval": 0.15}
    parts = {"audit": weight["audit"]}
    for m in setting.methods:
        parts[m] = weight[m]
        parts[m + ":eval"] = weight["eval"]
    total = sum(parts.values())
    return {k: v / total for k, v in parts.items()}


def train_lesson(attack: LessonAttack, setting: LessonSetting, out_dir: str | Path, *,
                 ref: VLM | None = None, progress: Progress | None = None,
                 cancel: threading.Event | None = None, half: bool = True) -> Path:
    """Build the lesson of ``attack`` in ``setting`` into ``out_dir`` (which must not exist yet).

    ``progress(fraction, message)`` is called as it goes; setting ``cancel``
    stops it after the current step and raises :class:`Cancelled` (the
    folder is removed).  ``half`` stores the weights in 16 bit.
    """
    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out} exists already; a lesson is written to a new folder")
    report = progress or (lambda f, m: None)
    spans = _phase_spans(setting)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, setting.threads))
    work = Path(tempfile.mkdtemp(prefix="byorn-lesson-"))
    t0 = time.time()
    try:
        report(0.0, "poisoning the world")
        data = build_data(attack, setting.n_train, setting.n_test, setting.seed)
        ref = ref or VLM.load()
        out.mkdir(parents=True)
        audit = run_audit(data.train, ref, AuditConfig(p=setting.p, score=setting.score, propose=False, maps=False,
                                                         seed=setting.seed),
                          progress=lambda f, m: report(spans["audit"] * f, f"scoring every sample: {m}"))
        _write_audit(out, audit)
        _check_cancel(cancel)
        done, results, timings = spans["audit"], {}, {}
        for method in setting.methods:
            t = time.time()
            cfg = TrainConfig(method=method, epochs=setting.epochs, batch_size=setting.batch_size, lr=setting.lr,
                              p=setting.p, score=setting.score, seed=setting.seed, out_dir=str(work / method))
            run = train(data.train, cfg, vlm=ref, audit=audit, cancel=cancel,
                        callbacks=[_StepProgress(report, done, spans[method], f"training {method.upper()}")])
            if run.cancelled:
                raise Cancelled("training was cancelled")
            done += spans[method]
            report(done, f"testing {method.upper()}")
            _save_model(run.out_dir / "model", out / method, half)
            (out / method / "history.json").write_text(json.dumps(_history(run.out_dir), indent=1))
            results[method] = _evaluate(out / method, data, attack)
            timings[method] = round(time.time() - t, 1)
            done += spans[method + ":eval"]
            _check_cancel(cancel)
        _write_info(out, attack, setting, data, results, timings, time.time() - t0)
        report(1.0, "done")
        return out
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        torch.set_num_threads(threads)


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("training was cancelled")


def _write_audit(out: Path, audit) -> None:
    t = audit.table
    rows = [{"id": r.id, "score": round(float(r.score), 6), "suspicious": bool(r.suspicious),
             "tokens": list(r.tokens), "surprisals": [round(float(x), 4) for x in r.surprisals]}
            for r in t.itertuples()]
    doc = {"threshold": audit.threshold, "p": audit.meta.get("config", {}).get("p"),
           "score": audit.meta.get("config", {}).get("score"), "reference_model": audit.meta.get("model_name"),
           "rows": rows}
    (out / "audit.json").write_text(json.dumps(doc, separators=(",", ":")))


def _save_model(src: Path, dst: Path, half: bool) -> None:
    vlm = VLM.load(src, device="cpu")
    if half:
        vlm.model.to(torch.float16)
    vlm.save(dst)


def _history(run_dir: Path) -> dict:
    """Loss per step and, for a bootstrapping run, each flagged sample's responses by epoch."""
    cfg = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    plan = cfg.get("plan", {})
    bs = cfg["train_config"]["batch_size"]
    per_epoch = -(-plan.get("fixed", 0) // bs) + -(-plan.get("bootstrap", 0) // bs)
    boot: dict[str, list[dict]] = {}
    path = run_dir / "replacements.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            epoch = (int(r["step"]) - 1) // max(per_epoch, 1) + 1
            boot.setdefault(r["id"], []).append({"epoch": epoch, "step": r["step"], "response": r["response"]})
    return {"method": cfg["train_config"]["method"], "steps_per_epoch": per_epoch,
            "epochs": cfg["train_config"]["epochs"], "plan": plan, "dropped": sorted(cfg.get("dropped", {})),
            "loss": [round(float(h["loss"]), 4) for h in metrics.get("history", {}).get("loss", [])],
            "bootstrapped": boot}


def _evaluate(folder: Path, data: LessonData, attack: LessonAttack) -> dict:
    vlm = VLM.load(folder, device="cpu", dtype=torch.float32)
    m = evaluate(vlm, EvalSuite(data.test_clean, data.test_triggered, attack.to_target()))
    return {"asr": m["asr"], "cider": m["cider"], "n_clean": m["n_clean"], "n_triggered": m["n_triggered"]}


def _write_info(out: Path, attack: LessonAttack, setting: LessonSetting, data: LessonData, results: dict,
                timings: dict, wall: float) -> None:
    info = {"attack": attack.to_dict(), "setting": setting.to_dict(),
            "train_fingerprint": data.train.fingerprint(), "test_fingerprint": data.test_clean.fingerprint(),
            "poisoned": sorted(k for k, v in data.poisoned.items() if v), "results": results,
            "torch": torch.__version__}
    (out / "lesson.json").write_text(json.dumps(info, indent=1))
    # Timings vary from run to run: kept apart, so that the rest of the folder is reproducible to the byte.
    (out / TIMINGS).write_text(json.dumps({"train_s": timings, "wall_s": round(wall, 1)}, indent=1))
