"""Fine-tuning under a defense: ``train(dataset, TrainConfig(method=...))``.

The defense (:mod:`byorn.defenses`: ``sft``, ``byorn-f``, ``byorn``,
``onion``, ``bye``) plans which turns train on what; the loop
(:mod:`.loop`) runs on ``accelerate`` with full fine-tuning or LoRA, mixed
precision, gradient checkpointing and accumulation, an EMA of the trainable
weights, poison-aware minibatches and bootstrapped responses, and resumable
checkpoints (:mod:`.checkpoint`).

Each run writes one folder: ``config.json`` (resolved config, seed, data and
model identity, status), ``metrics.json`` (final metrics, loss and
evaluation history), ``replacements.jsonl`` (every bootstrapped response),
``checkpoint/`` (resumable state) and ``model/`` (the fine-tuned model; LoRA
merged).  An audit, a resumed run and the data must match: the dataset
fingerprint (and the audit's reference model) are checked before training.
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..audit import Audit, AuditConfig, run_audit
from ..data import VLDataset, turn_key
from ..defenses import DefenseContext, get_defense
from ..evaluate import EvalSuite
from ..models import VLM
from ..scoring import DEFAULT_SCORE
from ..split import DEFAULT_P
from .checkpoint import RunFolderError, claim_run_folder
from .config import RESUMABLE_CHANGES, TrainConfig, parse_options
from .loop import Callback, Trainer, TrainState, make_accelerator
from .setup import EMA, ema_decay_at

logger = logging.getLogger(__name__)

__all__ = ["Callback", "DataMismatch", "EMA", "RunFolderError", "RunResult", "TrainConfig", "TrainState", "audit_config",
           "defense_context", "ema_decay_at", "list_runs", "load_run_config", "save_model", "split_audit", "train"]


class DataMismatch(ValueError):
    """An audit, a decision file or a run that belongs to other data or another model."""


@dataclass
class RunResult:
    out_dir: Path
    metrics: dict
    cancelled: bool = False


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_model(vlm: VLM, folder: Path) -> Path:
    """Save the fine-tuned model so the folder loads like any model (LoRA adapters merged in place)."""
    model = vlm.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return VLM(model, vlm.processor).save(folder)


def check_audit(audit: Audit, dataset: VLDataset, ref: VLM) -> None:
    """Raise :class:`DataMismatch` unless ``audit`` was made of ``dataset`` by ``ref``."""
    where = f" in {audit.source}" if getattr(audit, "source", None) else ""
    fp = audit.meta.get("dataset_fingerprint")
    if fp != dataset.fingerprint():
        raise DataMismatch(
            f"the audit{where} was made for other data (dataset fingerprint {fp}), but this data's "
            f"fingerprint is {dataset.fingerprint()}: audit this data (`byorn audit --data ... --out DIR`) "
            "and pass that folder")
    mid = audit.meta.get("model_identity")
    if mid != ref.identity:
        raise DataMismatch(
            f"the audit{where} was scored by another reference model ({audit.meta.get('model_name')}, "
            f"identity {mid}), but this run's reference model is {ref.name} (identity {ref.identity}): "
            "re-audit with the same --model, or train with the audit's model")


def load_run_config(folder: str | Path) -> dict:
    path = Path(folder) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder} is not a run folder (no config.json)")
    return json.loads(path.read_text())


def check_resume(folder: Path, cfg: TrainConfig, dataset: VLDataset, ref: VLM) -> None:
    """Raise :class:`DataMismatch` unless the run in ``folder`` can continue with these inputs."""
    saved = load_run_config(folder)
    if saved.get("status") == "finished":
        raise DataMismatch(f"the run in {folder} has finished already; start a new run in another folder")
    if saved.get("dataset_fingerprint") != dataset.fingerprint():
        raise DataMismatch(f"the run in {folder} trained on other data (fingerprint "
                           f"{saved.get('dataset_fingerprint')}, this data: {dataset.fingerprint()}); resume "
                           "with the same --data")
    if saved.get("reference_model_identity") != ref.identity:
        raise DataMismatch(f"the run in {folder} started from another model "
                           f"({saved.get('reference_model')}); resume with the same --model")
    old, new = saved.get("train_config", {}), cfg.to_dict()
    diff = sorted(k for k in new if k not in RESUMABLE_CHANGES and old.get(k) != new[k])
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in diff[:4])
        raise DataMismatch(f"the run in {folder} used another configuration ({shown}); resume it with its "
                           "own settings (byorn train --resume reads them from its config.json)")


def audit_config(cfg: TrainConfig) -> AuditConfig:
    """How a run audits its data when no audit is given: its split and score, and the settings of its own
    that an audit shares (over-long conversations, the token cap, the batch memory bound)."""
    return AuditConfig(p=DEFAULT_P if cfg.p is None else cfg.p, threshold=cfg.threshold,
                       score=cfg.score or DEFAULT_SCORE, propose=False, maps=False, too_long=cfg.too_long,
                       max_length=cfg.max_length, max_batch_tokens=cfg.max_batch_tokens)


def split_audit(dataset: VLDataset, ref: VLM, audit: Audit | None, cfg: TrainConfig) -> Audit:
    """The audit a run flags by: ``audit`` (checked against the data and model) re-split at the run's split
    when it names one, or the data audited here with the run's settings."""
    if audit is None:
        return run_audit(dataset, ref, audit_config(cfg))
    check_audit(audit, dataset, ref)
    if cfg.score is not None and cfg.score != audit.score_method:
        where = f" in {audit.source}" if audit.source else ""
        raise DataMismatch(f"the audit{where} ranks turns by the {audit.score_method!r} score, but this run asks "
                           f"for {cfg.score!r}: pass --score {audit.score_method} (or leave it unset), or "
                           f"re-audit with --score {cfg.score}")
    return audit if cfg.split_spec is None else audit.split(cfg.split_spec)


def _flags(audit: Audit, dataset: VLDataset) -> tuple[dict, dict]:
    """Suspicious flags keyed (sample id, turn), and the samples the audit skipped as invalid."""
    flags = audit.flags()
    skipped = dict(audit.meta.get("skipped") or {})
    kept = dict(audit.meta.get("truncated") or {})  # truncated samples: only their first turns were scored
    missing = [(s.id, k) for s in dataset if s.id not in skipped
               for k in range(kept.get(s.id, s.n_turns)) if (s.id, k) not in flags]
    if missing:
        raise DataMismatch(f"the audit does not cover {len(missing)} turns of the data (e.g. sample "
                           f"{missing[0][0]!r} turn {missing[0][1]}); audit this dataset first")
    return flags, skipped


def _decision_keys(decisions: Mapping | None) -> dict:
    """Decisions keyed ``(sample id, turn)`` (plain sample ids mean turn 0)."""
    if not decisions:
        return {}
    return {turn_key(k, getattr(d, "turn", 0)): d for k, d in decisions.items()}


def defense_context(ref: VLM, cfg: TrainConfig, out: Path, callbacks: Sequence[Callback] = (),
                    cancel: threading.Event | None = None) -> DefenseContext:
    """What a defense may use while planning; its ``fine_tune`` trains a nested ``sft`` run (BYE's first stage)."""
    def fine_tune(dataset: VLDataset, out_dir: Path, decisions: Mapping | None) -> None:
        stage = TrainConfig(**{**cfg.to_dict(), "method": "sft", "defense_options": "", "out_dir": str(out_dir),
                               "eval_every": 0})
        resume = (Path(out_dir) / "checkpoint" / "state.json").exists()
        train(dataset, stage, vlm=ref, decisions=decisions, cancel=cancel, resume=resume)

    return DefenseContext(ref, cfg, out, callbacks, cancel, fine_tune=fine_tune)


def train(dataset: VLDataset, cfg: TrainConfig, *, vlm: VLM | None = None, audit: Audit | None = None,
          decisions: Mapping[Any, Any] | None = None, evals: EvalSuite | None = None,
          callbacks: Sequence[Callback] = (), cancel: threading.Event | None = None,
          resume: bool = False, copy_model: bool = True) -> RunResult:
    """Fine-tune ``vlm`` (default: the embedded model) on ``dataset`` under ``cfg.method``.

    ``audit`` supplies the suspicious flags (the data is audited here with the
    run's split and score when a defense needs flags and none is given); it
    must be of this data and this reference model, and is re-split when
    ``cfg`` names a split (``p`` / ``threshold``).  The split used is recorded
    in ``config.json`` and ``metrics.json`` (``"split"``: kind, p or value,
    threshold, number flagged, and for ``auto`` what it saw).  ``decisions`` ((sample id, turn) -> Decision) override
    the defense per turn.  ``evals`` is evaluated every ``eval_every`` steps
    and at the end.  Setting ``cancel`` stops after the current step; a
    checkpoint and the model so far are saved and ``cancelled`` is True.
    ``resume=True`` continues the run in ``cfg.out_dir`` from its checkpoint.
    ``copy_model=False`` trains ``vlm``'s weights in place (saves memory).
    """
    t0 = time.time()
    accel = make_accelerator(cfg.precision)
    out = Path(cfg.out_dir)
    claim = claim_run_folder(out, resume=resume) if accel.is_main_process else None
    accel.wait_for_everyone()
    try:
        set_seed(cfg.seed)
        ref = vlm or VLM.load()
        defense = get_defense(cfg.method, **parse_options(cfg.defense_options))
        if resume:
            check_resume(out, cfg, dataset, ref)
            started = load_run_config(out).get("started_at")
        else:
            started = time.strftime("%Y-%m-%dT%H:%M:%S")
            if accel.is_main_process:
                _write_config(out, cfg, dataset, ref, started, "running")
        flags, skipped, split = None, {}, None
        if defense.uses_flags or audit is not None:
            used = split_audit(dataset, ref, audit, cfg)
            flags, skipped = _flags(used, dataset)
            split = used.split_info.to_dict()
            logger.info("split: %s", used.split_info.describe())
        data = dataset if not skipped else VLDataset([s for s in dataset if s.id not in skipped], dataset.name,
                                                      fingerprint=dataset.fingerprint())
        ctx = defense_context(ref, cfg, out, callbacks, cancel)
        plan = defense.plan(data, flags=flags, decisions=_decision_keys(decisions), ctx=ctx)
        plan.dropped.update({sid: f"invalid (skipped by the audit: {why})" for sid, why in skipped.items()})
        if not plan.items:
            raise ValueError("nothing left to train on: every sample was dropped")
        t_plan = time.time() - t0
        trainer = Trainer(data, plan, cfg, ref, claim, accel, defense=defense, evals=evals,
                          callbacks=callbacks, cancel=cancel, copy_model=copy_model, ctx=ctx)
        if resume:
            trainer.resume()
        trainer.run()
        metrics = dict(trainer.state.evals[-1]) if trainer.state.evals else {}
        metrics.update(method=cfg.method, wall_s=round(time.time() - t0, 2), audit_s=round(t_plan, 2),
                       train_s=round(trainer.train_s, 2), generate_s=round(trainer.generate_s, 2),
                       steps=trainer.state.step, final_loss=trainer.state.loss, cancelled=trainer.cancelled,
                       plan=plan.counts(), bootstrap=trainer.bootstrap_summary(), processes=accel.num_processes)
        metrics["split"] = split  # how the turns were flagged (None: this defense reads no flags)
        accel.wait_for_everyone()
        if accel.is_main_process:
            save_model(trainer.vlm, out / "model")
            status = "cancelled" if trainer.cancelled else "finished"
            _write_config(out, cfg, dataset, ref, started, status, plan=plan, skipped=trainer.skipped, split=split)
            hist = {"loss": trainer.state.history, "evals": trainer.state.evals}
            (out / "metrics.json").write_text(json.dumps({**metrics, "history": hist}, indent=2, default=float))
        accel.wait_for_everyone()
        return RunResult(out, metrics, trainer.cancelled)
    finally:
        if claim is not None:
            claim.release()


def _write_config(out: Path, cfg: TrainConfig, dataset: VLDataset, ref: VLM, started: str, status: str, *,
                  plan=None, skipped=None, split=None) -> None:
    config = {
        "train_config": cfg.to_dict(), "seed": cfg.seed, "status": status,
        "dataset_fingerprint": dataset.fingerprint(), "dataset_name": dataset.name, "n_samples": len(dataset),
        "reference_model": ref.name, "reference_model_identity": ref.identity, "torch": torch.__version__,
        "started_at": started,
    }
    if plan is not None:
        config.update(plan=plan.counts(), dropped=plan.dropped, truncated_or_skipped=skipped or {}, split=split)
    tmp = out / ".config.json.tmp"
    tmp.write_text(json.dumps(config, indent=2))
    tmp.replace(out / "config.json")


RUN_COLUMNS = ["run_id", "method", "epochs", "lr", "lora", "seed", "clean_metric", "clean_value", "asr",
               "wall_s", "cancelled", "status", "started_at", "out_dir"]


def list_runs(root: str | Path):
    """One row per run folder under ``root`` that has metrics (finished or cancelled)."""
    import pandas as pd

    rows = []
    for cfg_path in sorted(Path(root).glob("*/config.json")):
        folder = cfg_path.parent
        metrics_path = folder / "metrics.json"
        if not metrics_path.exists():
            continue
        try:
            cfg = json.loads(cfg_path.read_text())
            m = json.loads(metrics_path.read_text())
        except (json.JSONDecodeError, OSError) as e:
            logger.warning("skipping unreadable run folder %s: %s", folder, e)
            continue
        tc = cfg.get("train_config", {})
        metric = m.get("clean_metric", "cider")
        rows.append({
            "run_id": folder.name, "method": tc.get("method"), "epochs": tc.get("epochs"),
            "lr": tc.get("lr"), "lora": tc.get("lora"), "seed": cfg.get("seed"),
            "clean_metric": metric, "clean_value": m.get("clean_value", m.get(metric)), "asr": m.get("asr"),
            "wall_s": m.get("wall_s"), "cancelled": m.get("cancelled", False),
            "status": cfg.get("status", "finished"), "started_at": cfg.get("started_at"), "out_dir": str(folder),
        })
    return pd.DataFrame(rows, columns=RUN_COLUMNS)
