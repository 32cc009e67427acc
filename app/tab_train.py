"""Train tab: one background training run at a time, watched live by everyone.

Start builds the :class:`~byorn.train.TrainConfig` from the form (a bad value
is a form error, before any run starts), builds a runner and hands it to the
shared :class:`~app.jobs.TrainingJob`; a ``gr.Timer`` on each page polls the
job; ``demo.load`` re-attaches a reloaded page to a running job.

With private sessions (``app/context.py``) a run belongs to the visitor who
started it: others see only that *a* run is going (and its progress), not its
data, settings, curve or folder, unless it was started with "share this run";
only its owner can cancel it.
"""
from __future__ import annotations

import datetime as _dt
import math
import re
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from byorn.split import Split
from byorn.train import TrainConfig

from .context import AppContext, Workspace
from .hosting import training_message
from .jobs import RUNNING, JobBusy
from .plots import loss_figure
from .state import View

_LABELS = {"byorn": "BYORn (bootstrap replacements)", "byorn-f": "BYORn-F (drop flagged)",
           "onion": "ONION (remove outlier words)", "bye": "BYE (attention entropy, retrain)",
           "sft": "SFT (no defense)"}


def _methods() -> dict[str, str]:
    """Form label -> registered defense name; every defense of the registry (a new one included)."""
    from byorn.defenses import DEFENSES

    order = [n for n in _LABELS if n in DEFENSES] + sorted(n for n in DEFENSES if n not in _LABELS)
    return {_LABELS.get(n, f"{n} ({DEFENSES[n].summary})" if DEFENSES[n].summary else n): n for n in order}


METHODS = _methods()
POLL_S = 1.0
EVAL_EVERY = 25  # live clean metric and ASR about every 25 steps
EVAL_MAX = 100   # test samples per evaluation: keeps each evaluation to seconds


def build_train(private_sessions: bool = False) -> SimpleNamespace:
    gr.Markdown("Fine-tune the reference model on the open dataset. **Your review decisions are "
                "used**: approved / edited samples train on their new text, rejected ones as "
                "clean, dropped ones are left out; pending flagged ones follow the method.")
    blocked = training_message()  # e.g. a ZeroGPU Space: training needs a dedicated GPU there
    gr.Markdown(f"**Training is not available on this server.** {blocked}", visible=bool(blocked),
                elem_id="train-blocked")
    d = TrainConfig()  # the form starts at the library's measured defaults
    with gr.Row():
        method = gr.Radio(list(METHODS), value="BYORn (bootstrap replacements)", label="method",
                          scale=2, elem_id="train-method")
        epochs = gr.Slider(1, 20, value=d.epochs, step=1, label="epochs", scale=1)
        batch_size = gr.Slider(4, 128, value=d.batch_size, step=4, label="batch size", scale=1)
    with gr.Row():
        lr = gr.Number(value=d.lr, label="learning rate", scale=1)
        lora = gr.Checkbox(value=d.lora, label="LoRA (instead of full fine-tuning)", scale=1)
        ema_decay = gr.Number(value=d.ema_decay, label="EMA decay λ", scale=1)
        temperature = gr.Number(value=d.temperature, label="sampling temperature (bootstrapped responses)",
                                scale=1)
    with gr.Row():
        seed = gr.Number(value=d.seed, precision=0, label="seed", scale=1)
        max_steps = gr.Number(value=0, precision=0, label="max steps (0 = all epochs)", scale=1,
                              elem_id="max-steps")
        eval_every = gr.Number(value=EVAL_EVERY, precision=0, label="evaluate every n steps (0 = at the end)",
                               scale=1, elem_id="eval-every")
        eval_max = gr.Number(value=EVAL_MAX, precision=0, label="test samples per evaluation (0 = all)", scale=1,
                             elem_id="eval-max")
    with gr.Row():
        start_btn = gr.Button("start training", variant="primary", elem_id="train-start", interactive=not blocked)
        cancel_btn = gr.Button("cancel", variant="stop", elem_id="train-cancel")
        share = gr.Checkbox(value=False, visible=private_sessions, elem_id="train-share",
                            label="share this run with every visitor (its curve, metrics and model)")
    status = gr.Markdown("No training run yet.", elem_id="train-status")
    curve = gr.Plot(label="loss, clean metric and ASR", elem_id="train-curve")
    evals = gr.Dataframe(label="evaluations", interactive=False, elem_id="train-evals")
    timer = gr.Timer(POLL_S, active=False)
    return SimpleNamespace(**{k: v for k, v in locals().items()})


FORM_LABELS = {"method": "method", "epochs": "epochs", "batch_size": "batch size", "lr": "learning rate",
               "lora": "LoRA", "ema_decay": "EMA decay λ", "temperature": "sampling temperature",
               "seed": "seed", "max_steps": "max steps", "eval_every": "evaluate every n steps",
               "eval_max_samples": "test samples per evaluation"}


def settings_from(method, epochs, batch_size, lr, lora, ema_decay, temperature, seed, max_steps,
                  eval_every, eval_max) -> dict:
    """``TrainConfig`` fields from the form (raises gr.Error on a missing one; :func:`config_from` checks the
    values)."""
    if method not in METHODS:
        raise gr.Error(f"Unknown method {method!r}.")
    for name, v in (("learning rate", lr), ("EMA decay", ema_decay), ("temperature", temperature),
                    ("epochs", epochs), ("batch size", batch_size)):
        if v is None:
            raise gr.Error(f"Set the {name}.")
    settings = {"method": METHODS[method], "epochs": float(epochs), "batch_size": int(batch_size),
                "lr": float(lr), "lora": bool(lora), "ema_decay": float(ema_decay),
                "temperature": float(temperature), "seed": int(seed or 0),
                "max_steps": int(max_steps) if max_steps else None,
                "eval_every": int(eval_every) if eval_every else 0,
                "eval_max_samples": int(eval_max) if eval_max else None}
    return settings


def config_from(settings: dict, split: Split, score: str | None, out_dir: Path) -> TrainConfig:
    """The run's one ``TrainConfig``: the form's settings, this user's split and the audit's score.

    The library's validation is the one source of truth: the config is built
    here, in the handler, so a value it rejects is a form error naming the
    field, and no run starts.
    """
    if split.kind == "value":
        chosen = {"threshold": float(split.value)}
    else:
        chosen = {"p": split.kind if split.kind == "auto" else float(split.p)}
    try:
        return TrainConfig(**settings, **chosen, score=score, out_dir=str(out_dir))
    except (TypeError, ValueError) as e:
        raise gr.Error(f"Check the training settings: {_with_labels(str(e))}") from e


def _with_labels(message: str) -> str:
    """``"ema_decay must be ..."`` -> ``"ema_decay (EMA decay λ) must be ..."``: the form's names."""
    for name, label in FORM_LABELS.items():
        if re.search(rf"\b{name}\b", message) and label != name:
            return re.sub(rf"\b{name}\b", f"{name} ({label})", message, count=1)
    return message


def library_trainer(ws: Workspace, cfg: TrainConfig, decisions: dict, callbacks: list, cancel):
    """Run ``byorn.train.train`` on the workspace (the default trainer).

    The workspace's audit goes in as it is; ``train`` splits it at the run's
    split (``cfg.p`` / ``cfg.threshold``: this user's) and records it.
    """
    from byorn.evaluate import EvalSuite
    from byorn.models import VLM
    from byorn.train import train

    vlm = VLM.load(ws.model_path)  # a fresh copy: training must never touch the shared reference model
    evals = EvalSuite(ws.test_clean, ws.test_triggered, ws.target if ws.test_triggered is not None else None)
    return train(ws.dataset, cfg, vlm=vlm, audit=ws.audit, decisions=decisions, evals=evals,
                 callbacks=callbacks, cancel=cancel, copy_model=False)


def start_training(ctx: AppContext, view: View, *raw):
    """Check the form, then start the run (``raw``: the settings, then "share this run")."""
    *raw, share = raw
    view = View.coerce(view)
    blocked = training_message()
    if blocked:
        raise gr.Error(blocked)
    ws = ctx.workspace(view)
    settings = settings_from(*raw)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = ctx.run_folder(view, f"{stamp}-{settings['method']}", shared=bool(share))
    score = (ws.meta.get("config") or {}).get("score")  # the audit's: the run flags by this user's split of it
    cfg = config_from(settings, view.split_spec(), score, out_dir)
    decisions = dict(ctx.decisions(ws))  # a snapshot: the run must not see later decisions change
    trainer = ctx.trainer or library_trainer
    label = f"{settings['method']} on {ws.name}, {len(decisions)} review decisions"
    if ws.test_clean is None and ws.test_triggered is None:
        label += " (no test sets with this data: no clean metric / ASR)"

    def runner(callbacks, cancel):
        return trainer(ws, cfg, decisions, callbacks, cancel)

    try:
        ctx.job.start(runner, label=label, owner=ctx.owner(view), shared=bool(share) or not ctx.private_sessions)
    except JobBusy as e:
        if not _visible(ctx, view, ctx.job.snapshot()):
            raise gr.Error("Another visitor's training run is going; one run at a time on this server. "
                           "Start yours when it ends (the status below shows its progress).") from e
        raise gr.Error(str(e)) from e
    return (*poll(ctx, view)[:-1], gr.Timer(active=True))


def cancel_training(ctx: AppContext, view: View):
    view = View.coerce(view)
    snap = ctx.job.snapshot()
    if snap["status"] == RUNNING and ctx.private_sessions and snap["owner"] != ctx.owner(view):
        raise gr.Error("This run was started by another visitor: only they can cancel it.")
    if not ctx.job.cancel():
        gr.Warning("No training run is going.")
    return poll(ctx, view)


def _visible(ctx: AppContext, view: View, snap: dict) -> bool:
    """Whether this visitor may see the job's details (its own run, or a shared one)."""
    return not ctx.private_sessions or snap["shared"] or snap["owner"] == ctx.owner(view)


def poll(ctx: AppContext, view: View | None = None):
    """Status, curve, evaluations, and the timer (on only while a run goes).

    Another visitor's private run shows as "a run is going" and its progress only.
    """
    snap = ctx.job.snapshot()
    running = snap["status"] == RUNNING
    if snap["status"] != "idle" and not _visible(ctx, View.coerce(view), snap):
        status = (f"Another visitor's training run is going: step {snap['step']} / {snap['total_steps'] or '?'}. "
                  "Yours can start when it ends." if running else "No training run of yours yet.")
        return status, loss_figure([], []), evals_table([]), gr.Timer(active=running)
    return (status_markdown(snap), loss_figure(snap["losses"], snap["evals"]), evals_table(snap["evals"]),
            gr.Timer(active=running))


EVAL_COLUMNS = {"step": "step", "cider": "CIDEr (clean)", "bleu": "BLEU (clean)", "asr": "ASR (triggered)",
                "n_clean": "clean samples", "n_triggered": "triggered samples", "eval_s": "eval time (s)"}


def evals_table(evals: list[dict]) -> pd.DataFrame:
    """The evaluations, scalar metrics only (the trainer also reports example predictions)."""
    rows = [{name: e.get(key) for key, name in EVAL_COLUMNS.items() if key in e} for e in evals]
    table = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["step"])
    return table.round(3)


def status_markdown(snap: dict) -> str:
    st = snap["status"]
    if st == "idle":
        return "No training run yet."
    total = snap["total_steps"] or "?"
    pct = f" ({100 * snap['step'] / snap['total_steps']:.0f} %)" if snap["total_steps"] else ""
    loss = f" · loss {snap['loss']:.4f}" if snap["loss"] is not None and math.isfinite(snap["loss"]) else ""
    eta = f" · ETA {_fmt_s(snap['eta_s'])}" if st == RUNNING and snap["eta_s"] is not None else ""
    head = {"cancelled": "cancelled (checkpoint kept)"}.get(st, st)
    lines = [f"**{head}** — run {snap['run_no']}: {snap['label']}",
             f"step **{snap['step']} / {total}**{pct}{loss} · elapsed {_fmt_s(snap['elapsed_s'])}{eta}"]
    if snap["evals"]:
        last = snap["evals"][-1]
        shown = [f"{name} **{last[key]:.3f}**" for key, name in EVAL_COLUMNS.items()
                 if key in ("cider", "asr") and isinstance(last.get(key), (int, float))]
        lines.append(f"evaluation at step {int(last.get('step', 0))}: " + ", ".join(shown))
    if snap["error"]:
        lines.append(f"error: `{snap['error']}`")
    if snap["out_dir"]:
        lines.append(f"run folder: `{snap['out_dir']}`")
    return "  \n".join(lines)


def _fmt_s(s) -> str:
    if s is None or not math.isfinite(float(s)):  # the trainer reports NaN before it knows
        return "?"
    s = int(round(float(s)))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def wire_train(ui, ctx: AppContext) -> None:
    t = ui.train
    settings = [t.method, t.epochs, t.batch_size, t.lr, t.lora, t.ema_decay, t.temperature, t.seed,
                t.max_steps, t.eval_every, t.eval_max]
    outs = [t.status, t.curve, t.evals, t.timer]
    t.start_btn.click(partial(start_training, ctx), [ui.view, *settings, t.share], outs, api_name="train_start",
                      concurrency_id="train-control", concurrency_limit=1)
    t.cancel_btn.click(partial(cancel_training, ctx), [ui.view], outs, api_name="train_cancel")
    t.timer.tick(partial(poll, ctx), [ui.view], outs, api_name="train_poll", show_progress="hidden")


def wait_until_idle(ctx: AppContext, timeout: float = 60.0) -> bool:
    """For scripts and tests: wait for the running job to end."""
    end = time.time() + timeout
    while ctx.job.running and time.time() < end:
        time.sleep(0.05)
    return not ctx.job.running
