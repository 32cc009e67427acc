"""Fine-tuning with or without the BYORn defense.

Methods:

* ``sft``: plain supervised fine-tuning on every response (no defense).
* ``byorn-f``: drop the samples the audit flags, train on the rest.
* ``byorn``: keep every sample; for flagged ones, train on a response the
  EMA model generates on the fly (bootstrapped response), in all-suspicious
  minibatches spread evenly over each epoch.

The loop runs on ``accelerate`` (``accelerate launch`` spreads it over GPUs),
supports full fine-tuning and LoRA (``peft``), is seeded, and hangs
progress, periodic evaluation, checkpointing and cooperative cancel off
callbacks.  Each run writes one folder: ``config.json`` (resolved config,
seed, data and model identity), ``metrics.json`` (final metrics, loss and
evaluation history), ``replacements.jsonl`` and ``model/``.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .audit import Audit, AuditConfig, run_audit
from .batching import METHODS, Plan, plan_batches, resolve_plan
from .data import VLDataset
from .evaluate import evaluate
from .models import VLM

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Settings of one fine-tuning run."""

    method: str = field(default="byorn", metadata={"help": f"one of {METHODS}"})
    epochs: float = field(default=8.0, metadata={"help": "passes over the data"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many steps (overrides epochs)"})
    batch_size: int = field(default=32, metadata={"help": "samples per minibatch"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=10, metadata={"help": "linear warm-up steps, then cosine decay"})
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters instead of all weights"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    ema_decay: float = field(default=0.95, metadata={"help": "EMA decay λ; effective decay min(λ, (1+t)/(10+t)) suits short runs"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of bootstrapped responses (1 = unbiased self-training)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling of bootstrapped responses"})
    max_new_tokens: int = field(default=32, metadata={"help": "length cap of bootstrapped responses"})
    p: float = field(default=0.6, metadata={"help": "split percentile when no audit is given"})
    score: str = field(default="mean", metadata={"help": "score aggregate when no audit is given"})
    seed: int = field(default=0, metadata={"help": "seeds data order, sampling and init"})
    eval_every: int = field(default=0, metadata={"help": "evaluate every N steps (0 = at the end only)"})
    eval_max_samples: int | None = field(default=None, metadata={"help": "cap on test samples per evaluation"})
    checkpoint_every: int = field(default=0, metadata={"help": "save model/ every N steps (0 = at the end only)"})
    out_dir: str = field(default="runs/run", metadata={"help": "run folder (must not hold a run already)"})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.epochs <= 0 and not self.max_steps:
            raise ValueError("epochs must be > 0 (or give max_steps)")
        if self.batch_size < 1 or self.lr <= 0:
            raise ValueError("batch_size must be >= 1 and lr > 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass
class TrainState:
    """What callbacks see after each step."""

    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    loss: float = float("nan")
    lr: float = 0.0
    elapsed_s: float = 0.0
    eta_s: float = float("nan")
    bootstrap_batches: int = 0
    history: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    vlm: VLM | None = field(default=None, repr=False)  # the model being trained

    def snapshot(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("vlm", "history", "evals")}


class Callback:
    """Hooks into the loop; override what you need."""

    def on_train_begin(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_evaluate(self, state: TrainState, metrics: dict) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...


class CheckpointCallback(Callback):
    """Saves the model being trained every ``every`` steps to ``folder``."""

    def __init__(self, folder: Path, every: int):
        self.folder, self.every = folder, every

    def on_step_end(self, state: TrainState) -> None:
        if self.every and state.step % self.every == 0 and state.vlm is not None:
            save_model(state.vlm, self.folder)


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
    """Save (LoRA adapters merged into a copy, so the folder loads like any model)."""
    model = vlm.model
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    return VLM(model, vlm.processor).save(folder)


def _apply_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    return get_peft_model(model, lcfg)


@torch.no_grad()
def ema_update(ema, model, decay: float) -> None:
    """θ_EMA ← decay·θ_EMA + (1 − decay)·θ over the trainable parameters."""
    params = dict(model.named_parameters())
    for name, p_ema in ema.named_parameters():
        p = params[name]
        if p.requires_grad:
            p_ema.lerp_(p.detach(), 1.0 - decay)


def ema_decay_at(step: int, decay: float) -> float:
    """Warm-up of the EMA decay: ``min(decay, (1 + t) / (10 + t))``.

    Early on the EMA follows the model closely, so that bootstrapped
    responses already reflect the downstream task in short runs.
    """
    return min(decay, (1.0 + step) / (10.0 + step))


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


def _prepare_out_dir(out_dir: str) -> Path:
    out = Path(out_dir)
    if (out / "config.json").exists():
        raise FileExistsError(f"{out} already holds a run; choose another output folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _flags(dataset: VLDataset, ref: VLM, audit: Audit | None, cfg: TrainConfig) -> dict[str, bool] | None:
    if cfg.method == "sft" and audit is None:
        return None
    if audit is None:
        audit = run_audit(dataset, ref, AuditConfig(p=cfg.p, score=cfg.score, propose=False, maps=False))
    flags = audit.flags()
    missing = [i for i in dataset.ids() if i not in flags]
    if missing:
        raise ValueError(f"the audit does not cover {len(missing)} samples of the data "
                         f"(e.g. {missing[0]!r}); audit this dataset first")
    return flags


def train(dataset: VLDataset, cfg: TrainConfig, *, vlm: VLM | None = None, audit: Audit | None = None,
          decisions: dict[str, Any] | None = None, eval_clean: VLDataset | None = None,
          eval_triggered: VLDataset | None = None, target=None,
          extra_triggered: dict[str, VLDataset] | None = None,
          callbacks: Sequence[Callback] = (), cancel: threading.Event | None = None) -> RunResult:
    """Fine-tune a copy of ``vlm`` (default: the embedded model) on ``dataset``.

    ``audit`` supplies the suspicious flags (computed here with ``cfg.p`` if
    absent); ``decisions`` (sample id -> Decision) override the method per
    sample.  Setting ``cancel`` stops after the current step; the model so far
    is saved and ``cancelled`` is True.
    """
    t0 = time.time()
    set_seed(cfg.seed)
    out = _prepare_out_dir(cfg.out_dir)
    ref = vlm or VLM.load()
    flags = _flags(dataset, ref, audit, cfg)
    t_audit = time.time() - t0
    plan = resolve_plan(dataset, cfg.method, flags, decisions)
    if not plan.fixed and not plan.bootstrap:
        raise ValueError("nothing left to train on: every sample was dropped")
    loop = _Loop(dataset, cfg, ref, plan, out, list(callbacks) + [CheckpointCallback(out / "model", cfg.checkpoint_every)], cancel)
    loop.run(eval_clean, eval_triggered, target, extra_triggered)
    metrics = dict(loop.state.evals[-1]) if loop.state.evals else {}
    metrics.update(
        method=cfg.method, wall_s=round(time.time() - t0, 2), audit_s=round(t_audit, 2),
        train_s=round(loop.train_s, 2), generate_s=round(loop.generate_s, 2),
        steps=loop.state.step, final_loss=loop.state.loss, cancelled=loop.cancelled,
        plan=plan.counts())
    _write_run(out, cfg, dataset, ref, plan, metrics, loop)
    return RunResult(out, metrics, loop.cancelled)


class _Loop:
    """One training run's moving parts: model, EMA, optimizer, data order."""

    def __init__(self, dataset, cfg: TrainConfig, ref: VLM, plan: Plan, out: Path,
                 callbacks: list[Callback], cancel: threading.Event | None):
        from accelerate import Accelerator

        self.dataset, self.cfg, self.plan, self.out = dataset, cfg, plan, out
        self.callbacks, self.cancel = callbacks, cancel
        self.accel = Accelerator(cpu=not torch.cuda.is_available())
        model = copy.deepcopy(ref.model)  # the reference stays frozen and intact
        model.train()
        if cfg.lora:
            model = _apply_lora(model, cfg)
        self.ema = None
        if plan.bootstrap:
            self.ema = copy.deepcopy(model).eval().requires_grad_(False).to(self.accel.device)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.rng = np.random.default_rng(cfg.seed)
        bs = cfg.batch_size
        self.steps_per_epoch = math.ceil(len(plan.fixed) / bs) + math.ceil(len(plan.bootstrap) / bs)
        total = cfg.max_steps or int(math.ceil(cfg.epochs * self.steps_per_epoch))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup_steps, total))
        self.model, self.opt, self.sched = self.accel.prepare(model, opt, sched)
        self.vlm = VLM(self.accel.unwrap_model(self.model), ref.processor, name=f"{ref.name}+{cfg.method}")
        self.state = TrainState(total_steps=total, vlm=self.vlm)
        self.cancelled = False
        self.train_s = self.generate_s = 0.0
        self.replacements: list[dict] = []

    def _emit(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self.state, *args)

    def run(self, eval_clean, eval_triggered, target, extra_triggered) -> None:
        self.eval_args = (eval_clean, eval_triggered, target, extra_triggered)
        t_start = time.time()
        self._emit("on_train_begin")
        epoch = 0
        while self.state.step < self.state.total_steps and not self.cancelled:
            batches = plan_batches(len(self.plan.fixed), self.plan.bootstrap, self.cfg.batch_size, self.rng)
            # each process takes its share (no-op on one device)
            batches = batches[self.accel.process_index::self.accel.num_processes]
            for k, (boot, idx) in enumerate(batches):
                self._step(boot, idx)
                st = self.state
                st.epoch = epoch + (k + 1) / len(batches)
                st.elapsed_s = time.time() - t_start
                st.eta_s = st.elapsed_s / st.step * (st.total_steps - st.step)
                self._emit("on_step_end")
                if self.cfg.eval_every and st.step % self.cfg.eval_every == 0 and st.step < st.total_steps:
                    self._evaluate()
                if self.cancel is not None and self.cancel.is_set():
                    self.cancelled = True
                    logger.info("cancelled after step %d", st.step)
                    break
                if st.step >= st.total_steps:
                    break
            epoch += 1
        self.model.eval()
        self._evaluate()
        save_model(self.vlm, self.out / "model")
        self._emit("on_train_end")

    def _step(self, boot: bool, idx: list[int]) -> None:
        if boot:
            samples = [self.dataset[i] for i in idx]
            t = time.time()
            responses = self.vlm.generate(
                [s.image for s in samples], [s.instruction for s in samples], model=self.ema,
                max_new_tokens=self.cfg.max_new_tokens, temperature=self.cfg.temperature,
                top_p=self.cfg.top_p, seed=self.cfg.seed * 100_003 + self.state.step,
                batch_size=len(samples))
            self.generate_s += time.time() - t
            self.state.bootstrap_batches += 1
            self.replacements.extend({"step": self.state.step, "id": s.id, "response": r}
                                     for s, r in zip(samples, responses))
        else:
            pairs = [self.plan.fixed[i] for i in idx]
            samples = [self.dataset[i] for i, _ in pairs]
            responses = [text for _, text in pairs]
        t = time.time()
        self.model.train()
        batch = self.vlm.collate([s.image for s in samples], [s.instruction for s in samples], responses)
        batch = self.vlm.to_device(batch)
        loss = self.model(**batch).loss
        self.accel.backward(loss)
        self.accel.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            ema_update(self.ema, self.vlm.model, ema_decay_at(self.state.step, self.cfg.ema_decay))
        self.train_s += time.time() - t
        st = self.state
        st.step += 1
        st.loss = float(loss.detach())
        st.lr = float(self.sched.get_last_lr()[0])
        st.history.append({"step": st.step, "loss": st.loss, "bootstrap": boot})

    def _evaluate(self) -> None:
        clean, triggered, target, extra = self.eval_args
        if clean is None and triggered is None:
            return
        t = time.time()
        metrics = evaluate(self.vlm, clean, triggered, target, max_samples=self.cfg.eval_max_samples,
                           extra_triggered=extra)
        metrics.update(step=self.state.step, eval_s=round(time.time() - t, 2))
        self.state.evals.append(metrics)
        self._emit("on_evaluate", metrics)


def _write_run(out: Path, cfg: TrainConfig, dataset: VLDataset, ref: VLM, plan: Plan,
               metrics: dict, loop: _Loop) -> None:
    config = {
        "train_config": asdict(cfg), "seed": cfg.seed,
        "dataset_fingerprint": dataset.fingerprint(), "dataset_name": dataset.name, "n_samples": len(dataset),
        "reference_model": ref.name, "reference_model_identity": ref.identity,
        "plan": plan.counts(), "dropped": plan.dropped, "torch": torch.__version__,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    hist = {"loss": loop.state.history, "evals": loop.state.evals}
    (out / "metrics.json").write_text(json.dumps({**metrics, "history": hist}, indent=2, default=float))
    with (out / "replacements.jsonl").open("w") as f:
        for r in loop.replacements:
            f.write(json.dumps(r) + "\n")


def list_runs(root: str | Path):
    """One row per run folder under ``root`` (finished or cancelled)."""
    import pandas as pd

    rows = []
    for cfg_path in sorted(Path(root).glob("*/config.json")):
        folder = cfg_path.parent
        metrics_path = folder / "metrics.json"
        if not metrics_path.exists():
            continue
        cfg = json.loads(cfg_path.read_text())
        m = json.loads(metrics_path.read_text())
        tc = cfg.get("train_config", {})
        rows.append({
            "run_id": folder.name, "method": tc.get("method"), "epochs": tc.get("epochs"),
            "lr": tc.get("lr"), "lora": tc.get("lora"), "seed": cfg.get("seed"),
            "clean_metric": "cider", "clean_value": m.get("cider"), "asr": m.get("asr"),
            "wall_s": m.get("wall_s"), "cancelled": m.get("cancelled", False),
            "started_at": cfg.get("started_at"), "out_dir": str(folder),
        })
    return pd.DataFrame(rows, columns=["run_id", "method", "epochs", "lr", "lora", "seed", "clean_metric",
                                       "clean_value", "asr", "wall_s", "cancelled", "started_at", "out_dir"])
