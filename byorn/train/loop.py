"""The training loop: one run's model, EMA, optimizer, data order and steps.

Runs on ``accelerate``: one process, or several under ``accelerate launch``,
where each epoch's minibatches are split across processes (not repeated on
each), each process bootstraps the responses of the suspicious batches it
trains on, and only the main process evaluates and writes the run folder.
Images are decoded in a ``DataLoader`` (``num_workers``) as batches are
drawn.  Memory per step is bounded by tokens when ``max_batch_tokens`` is
set: a minibatch above it is split into chunks whose gradients add up.
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
from typing import Sequence

import numpy as np
import torch

from ..batching import batches_per_process, plan_batches, shard_batches, token_chunks
from ..data import Conversation, DataError, VLDataset
from ..defenses import Defense, Plan
from ..evaluate import EvalSuite, evaluate
from ..models import VLM
from .checkpoint import RunClaim, load_checkpoint, restore_rng, rng_state, save_checkpoint
from .config import TrainConfig
from .setup import EMA, apply_lora, ema_decay_at, enable_gradient_checkpointing, freeze_vision

logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    """What callbacks see after each optimizer step."""

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


def make_accelerator(precision: str):
    """An ``Accelerator`` for this run (CPU when no GPU)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.state import AcceleratorState

    from ..runtime import process_state

    if precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("precision fp16 needs a CUDA GPU; use bf16 or fp32 on this machine")
    if process_state().num_processes == 1:
        # Several runs in one process (tests, the app, the bench) may ask for different precisions.
        AcceleratorState._reset_state()
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    # Some parameters get no gradient in a step (CLIP's unused post-layernorm, a frozen branch):
    # DDP must be told, or it waits for them forever.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed, kwargs_handlers=[ddp])


class _Decode:
    """DataLoader collate: a batch of plan positions -> their conversations, images decoded."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def __call__(self, positions: list[int]) -> tuple[list[int], list[Conversation]]:
        return positions, [self.plan.items[i].sample.conversation() for i in positions]


class Trainer:
    """One run.  :meth:`run` trains to ``total_steps`` (or until cancelled)."""

    def __init__(self, dataset: VLDataset, plan: Plan, cfg: TrainConfig, ref: VLM, claim: RunClaim | None,
                 accel, *, defense: Defense, evals: EvalSuite | None, callbacks: Sequence[Callback] = (),
                 cancel: threading.Event | None = None, copy_model: bool = True, ctx=None):
        self.dataset, self.plan, self.cfg, self.accel, self.ctx = dataset, plan, cfg, accel, ctx
        self.out = Path(cfg.out_dir)
        self.claim, self.defense, self.evals = claim, defense, evals
        self.callbacks, self.cancel = list(callbacks), cancel
        model = copy.deepcopy(ref.model) if copy_model else ref.model  # the reference stays frozen
        model.train()
        if cfg.vision_frozen and not cfg.lora:
            freeze_vision(model)
        if cfg.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        if cfg.lora:
            model = apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_targets)
        self.ema = EMA(model) if plan.bootstrap else None
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        n_batches = -(-len(plan.fixed) // cfg.batch_size) + -(-len(plan.bootstrap) // cfg.batch_size)
        self.micro_per_epoch = batches_per_process(n_batches, accel.num_processes)
        total = cfg.max_steps or max(1, math.ceil(cfg.epochs * self.micro_per_epoch / cfg.grad_accum))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup_steps, total))
        self.model, self.opt, self.sched = accel.prepare(model, opt, sched)
        self.vlm = VLM(accel.unwrap_model(self.model), ref.processor, name=f"{ref.name}+{cfg.method}",
                       identity=f"{ref.identity}+{cfg.method}")
        self.state = TrainState(total_steps=total, vlm=self.vlm)
        self.rng = np.random.default_rng(cfg.seed)
        self.epoch, self.batch_in_epoch, self.epoch_rng = 0, 0, None
        self.cancelled = False
        self.train_s = self.generate_s = 0.0
        self.replacements_written = 0
        self.bootstrap_cap = min(cfg.max_new_tokens, bootstrap_token_cap(plan, ref.tokenizer) or cfg.max_new_tokens)
        self.bootstrap_counts = {"responses": 0, "at_cap": 0}
        if plan.bootstrap:
            logger.info("bootstrapped responses: at most %d new tokens (the data's responses; --max-new-tokens %d)",
                        self.bootstrap_cap, cfg.max_new_tokens)
        self.skipped: dict[str, str] = {}
        self._micro_losses: list[tuple[float, bool]] = []
        self._pending_replacements: list[dict] = []

    # ------------------------------------------------------------------ helpers --
    @property
    def main(self) -> bool:
        return self.accel.is_main_process

    def _emit(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self.state, *args)

    def _trainable(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.vlm.model.named_parameters() if p.requires_grad}

    # ------------------------------------------------------------------- resume --
    def resume(self) -> None:
        """Continue from ``out_dir/checkpoint`` (model, EMA, optimizer, scheduler, RNG, position)."""
        ck = load_checkpoint(self.out)
        params = self._trainable()
        missing = set(params) - set(ck["trainable"])
        if missing:
            raise ValueError(f"the checkpoint in {self.out} does not match this model "
                             f"({len(missing)} trainable tensors missing, e.g. {sorted(missing)[0]})")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(ck["trainable"][n].to(p.device, p.dtype))
        if self.ema is not None:
            if ck["ema"] is None:
                raise ValueError(f"the checkpoint in {self.out} has no EMA weights but this run bootstraps")
            self.ema.load_state_dict(ck["ema"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        st = ck["state"]
        self.state.step, self.state.history, self.state.evals = st["step"], st["history"], st["evals"]
        self.state.bootstrap_batches = st["bootstrap_batches"]
        self.epoch, self.batch_in_epoch = st["epoch"], st["batch_in_epoch"]
        self.epoch_rng = st["epoch_rng"]
        self.train_s, self.generate_s = st["train_s"], st["generate_s"]
        self.replacements_written = st["replacements"]
        self.skipped = st.get("skipped", {})
        self.bootstrap_counts = st.get("bootstrap_counts", self.bootstrap_counts)
        restore_rng(st["rng"], self.rng, random)
        if self.main:
            _truncate_lines(self.out / "replacements.jsonl", self.replacements_written)
        logger.info("resumed %s at step %d (epoch %d, batch %d)", self.out, self.state.step, self.epoch,
                    self.batch_in_epoch)

    def bootstrap_summary(self) -> dict:
        """The cap of bootstrapped responses (None: nothing bootstrapped), how many were sampled, and how many
        reached it (counted by re-tokenizing their text, so approximate where a tokenizer merges differently)."""
        if not self.plan.bootstrap:
            return {"max_new_tokens": None, **self.bootstrap_counts}
        return {"max_new_tokens": self.bootstrap_cap, **self.bootstrap_counts}

    def checkpoint(self) -> None:
        """Write a resumable checkpoint (main process; the others wait)."""
        self.accel.wait_for_everyone()
        if self.main:
            state = {"step": self.state.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                     "epoch_rng": self.epoch_rng, "rng": rng_state(self.rng, random),
                     "history": self.state.history, "evals": self.state.evals,
                     "bootstrap_batches": self.state.bootstrap_batches, "train_s": self.train_s,
                     "generate_s": self.generate_s, "replacements": self.replacements_written,
                     "skipped": self.skipped, "bootstrap_counts": self.bootstrap_counts}
            save_checkpoint(self.out, trainable=self._trainable(),
                            ema=self.ema.state_dict() if self.ema is not None else None,
                            optimizer=self.opt.state_dict(), scheduler=self.sched.state_dict(), state=state)
        self.accel.wait_for_everyone()

    # --------------------------------------------------------------------- loop --
    def run(self) -> None:
        cfg, st = self.cfg, self.state
        t_start = time.time() - self.train_s - self.generate_s
        self._emit("on_train_begin")
        micro = 0
        while st.step < st.total_steps and not self.cancelled:
            batches = self._epoch_batches()
            loader = self._loader([idx for _, idx in batches[self.batch_in_epoch:]])
            for (boot, _), (positions, convs) in zip(batches[self.batch_in_epoch:], loader):
                self._micro_step(boot, positions, convs)
                self.batch_in_epoch += 1
                micro += 1
                if micro % cfg.grad_accum:
                    continue
                self._optimizer_step()
                st.epoch = self.epoch + self.batch_in_epoch / len(batches)
                st.elapsed_s = time.time() - t_start
                st.eta_s = st.elapsed_s / max(st.step, 1) * (st.total_steps - st.step)
                self._emit("on_step_end")
                if cfg.eval_every and st.step % cfg.eval_every == 0 and st.step < st.total_steps:
                    self._evaluate()
                if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0 and st.step < st.total_steps:
                    self.checkpoint()
                if self.cancel is not None and self._cancel_requested():
                    self.cancelled = True
                    logger.info("cancelled after step %d", st.step)
                    break
                if st.step >= st.total_steps:
                    break
            else:
                self.epoch, self.batch_in_epoch, self.epoch_rng = self.epoch + 1, 0, None
        self.model.eval()
        self.checkpoint()  # a cancelled run can be resumed; a finished one keeps its final state
        self._evaluate()
        self._emit("on_train_end")

    def _cancel_requested(self) -> bool:
        flag = torch.tensor(float(self.cancel.is_set()), device=self.accel.device)
        return bool(self.accel.reduce(flag, "sum").item()) if self.accel.num_processes > 1 else bool(flag.item())

    def _epoch_batches(self) -> list[tuple[bool, list[int]]]:
        """This process's minibatches of the current epoch (re-derived exactly on resume)."""
        if self.epoch_rng is None:
            self.epoch_rng = self.rng.bit_generator.state
        else:
            self.rng.bit_generator.state = self.epoch_rng
        batches = plan_batches(self.plan.fixed, self.plan.bootstrap, self.cfg.batch_size, self.rng)
        return shard_batches(batches, self.accel.process_index, self.accel.num_processes)

    def _loader(self, batch_positions: list[list[int]]):
        workers = self.cfg.num_workers
        return torch.utils.data.DataLoader(
            range(len(self.plan.items)), batch_sampler=batch_positions, collate_fn=_Decode(self.plan),
            num_workers=workers, prefetch_factor=2 if workers else None, persistent_workers=False)

    # --------------------------------------------------------------------- steps --
    def _micro_step(self, boot: bool, positions: list[int], convs: list[Conversation]) -> None:
        items = [self.plan.items[i] for i in positions]
        turns = [set(it.trained_turns) for it in items]
        if boot:
            convs = self._bootstrap(items, convs, turns)
        t = time.time()
        self.model.train()
        loss = self._forward_backward(items, convs, turns)
        self._micro_losses.append((loss, boot))
        self.train_s += time.time() - t

    def _optimizer_step(self) -> None:
        t = time.time()
        if self.cfg.max_grad_norm:
            self.accel.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(ema_decay_at(self.state.step, self.cfg.ema_decay))
        self.train_s += time.time() - t
        losses, self._micro_losses = self._micro_losses, []
        loss = float(np.mean([x for x, _ in losses])) if losses else float("nan")
        if self.accel.num_processes > 1:
            loss = float(self.accel.reduce(torch.tensor(loss, device=self.accel.device), "mean"))
            self._gather_replacements()
        st = self.state
        st.step += 1
        st.loss = loss
        st.lr = float(self.sched.get_last_lr()[0])
        st.history.append({"step": st.step, "loss": st.loss, "bootstrap": any(b for _, b in losses)})

    def _forward_backward(self, items, convs, turns) -> float:
        """Loss of one minibatch (chunks by ``max_batch_tokens``), backward included; returns the loss."""
        batch = self._encode(items, convs, turns)
        if batch is None:
            return float("nan")
        chunks = token_chunks(batch.lengths, self.cfg.max_batch_tokens)
        n_labels = int((batch.inputs["labels"] != -100).sum())
        if n_labels == 0:
            return float("nan")
        total = 0.0
        for idx in chunks:
            sub = batch if len(chunks) == 1 else self._encode([items[i] for i in idx], [convs[i] for i in idx],
                                                              [turns[i] for i in idx])
            weight = int((sub.inputs["labels"] != -100).sum()) / n_labels
            with self.accel.autocast():
                loss = self.model(**self.vlm.to_device(sub.inputs)).loss
            self.accel.backward(loss * weight / self.cfg.grad_accum)
            total += float(loss.detach()) * weight
        return total

    def _encode(self, items, convs, turns):
        """``vlm.encode`` with over-long conversations handled per ``too_long`` (reported)."""
        from ..models.adapter import SequenceTooLong

        items, convs, turns = list(items), list(convs), list(turns)
        while items:
            try:
                return self.vlm.encode(convs, train_turns=turns, max_length=self.cfg.max_length)
            except SequenceTooLong as e:
                i = e.index
                sid = items[i].sample.id
                if self.cfg.too_long == "error":
                    raise DataError(f"{e.length} tokens, above the limit of {e.limit}; shorten it, raise "
                                    "max_length, or pass --too-long skip / truncate", sample_id=sid,
                                    field="turns") from None
                if self.cfg.too_long == "truncate":
                    cut = convs[i].without_last_exchange()
                    if cut is not None:
                        convs[i], turns[i] = cut, {k for k in turns[i] if k < len(cut.assistant_positions())}
                        self.skipped.setdefault(sid, "truncated at a turn boundary (too long)")
                        continue
                self.skipped[sid] = f"skipped: {e.length} tokens, above the limit of {e.limit}"
                del items[i], convs[i], turns[i]
        return None

    def _bootstrap(self, items, convs, turns) -> list[Conversation]:
        """Replace each bootstrapped turn by the EMA model's sample given the original turns before it."""
        prompts, where = [], []
        for i, (it, conv) in enumerate(zip(items, convs)):
            for k in sorted(it.bootstrap):
                prompts.append(conv.prompt_for(k))
                where.append((i, k))
        t = time.time()
        # One seed per (epoch, minibatch, process): the same on resume, different across processes.
        seed = (self.cfg.seed * 100_003 + self.epoch * 10_007 + self.batch_in_epoch) * 64 + self.accel.process_index
        with self.ema.swapped_in(), self.accel.autocast():
            texts = self.vlm.generate_conversations(
                prompts, max_new_tokens=self.bootstrap_cap, temperature=self.cfg.temperature,
                top_p=self.cfg.top_p, seed=seed, batch_size=len(prompts))
        self.generate_s += time.time() - t
        self.state.bootstrap_batches += 1
        self.bootstrap_counts["responses"] += len(texts)
        # a response continues the "ASSISTANT:" prompt: re-tokenized after a space, as it was generated
        lengths = _token_lengths(self.vlm.tokenizer, [" " + t for t in texts])
        self.bootstrap_counts["at_cap"] += sum(n >= self.bootstrap_cap for n in lengths)
        out = list(convs)
        for (i, k), text in zip(where, texts):
            if text.strip():
                out[i] = out[i].with_assistant(k, text)
            else:  # an empty sample teaches nothing but to stop: keep the turn as context only
                turns[i].discard(k)
            self._pending_replacements.append({"step": self.state.step + 1, "id": items[i].sample.id,
                                               "turn": k, "response": text})
        if self.accel.num_processes == 1:
            self._write_replacements(self._pending_replacements)
            self._pending_replacements = []
        return out

    def _gather_replacements(self) -> None:
        from accelerate.utils import gather_object

        rows = gather_object([self._pending_replacements])
        self._pending_replacements = []
        if self.main:
            self._write_replacements([r for part in rows for r in part])

    def _write_replacements(self, rows: list[dict]) -> None:
        if not rows:
            return
        with (self.out / "replacements.jsonl").open("a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        self.replacements_written += len(rows)

    def _evaluate(self) -> None:
        if self.evals is None or self.evals.empty:
            return
        self.accel.wait_for_everyone()
        if self.main:
            t = time.time()
            self.model.eval()
            suite = self.evals.map(lambda ds: self.defense.eval_view(ds, self.ctx))
            if self.cfg.eval_max_samples:
                suite.max_samples = self.cfg.eval_max_samples
            with self.accel.autocast():
                metrics = evaluate(self.vlm, suite)
            metrics.update(step=self.state.step, eval_s=round(time.time() - t, 2))
            self.state.evals.append(metrics)
            self._emit("on_evaluate", metrics)
        self.accel.wait_for_everyone()


#: the quantile of the data's response lengths that bounds a bootstrapped response, and the margin above it
#: (tokens, or a fraction of the quantile if larger) for the end-of-turn token and sampling's variety
CAP_QUANTILE, CAP_MARGIN, CAP_MARGIN_FRACTION = 0.99, 4, 0.1


def bootstrap_token_cap(plan: Plan, tokenizer) -> int | None:
    """How many new tokens a bootstrapped response needs, from the data's own responses (None: nothing to bootstrap).

    The 99th percentile of the token lengths of every response in the plan, or of the flagged ones if those
    are longer (their prompts may ask for longer answers), plus a margin of max(4 tokens, 10 %).  Flagged
    responses alone would not do: when the split catches only the poison, their lengths are the attacker's
    target's, not a clean answer's.  Generation stops when every response in a batch has ended, so the cap
    only bites on a sample that runs on past what the data ever needed.
    """
    if not plan.bootstrap:
        return None
    every = [t for it in plan.items for t in it.sample.assistant_texts()]
    flagged = [it.sample.assistant_texts()[k] for it in plan.items for k in it.bootstrap]
    q = max(float(np.quantile(_token_lengths(tokenizer, texts), CAP_QUANTILE, method="higher"))
            for texts in (every, flagged))
    return int(q) + max(CAP_MARGIN, math.ceil(CAP_MARGIN_FRACTION * q))


def _token_lengths(tokenizer, texts: Sequence[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]] if texts else []


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return f


def _truncate_lines(path: Path, n: int) -> None:
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    if len(lines) > n:
        path.write_text("".join(lines[:n]))
