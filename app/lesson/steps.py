"""The lesson's handlers: moving between steps and each step's one interactive element.

Every handler takes the visitor's :class:`~.state.LessonView` and returns it
(changed) with the components to redraw; the shared
:class:`~.engine.LessonEngine` is only read.  A bad value (an upload that is
no image, an empty target sentence) is a ``gr.Error`` saying what to do.
"""
from __future__ import annotations

import html
import logging
import math
import os
from dataclasses import replace
from pathlib import Path

import gradio as gr
import numpy as np

from byorn.lesson import (DEFAULT_INSTRUCTION, LIVE_SETTING, MODEL_LABELS, PATCH_POSITIONS, LessonAttack,
                          apply_trigger, prepare_upload, test_images, trigger_instruction)

from . import limits, render
from .engine import LessonEngine, LessonRun
from .live import CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, QueueFull
from .state import N_STEPS, LessonView, clamp_step
from .texts import LIVE_NOTE, SPACE_QUEUE_NOTE

logger = logging.getLogger(__name__)

ATTACK_CHOICES = [("BadNets: a white square in a corner", "badnets"),
                  ("Blend: a faint checkerboard over the image", "blend"),
                  ("VL-Trojan: a corner square plus the word “cf”", "vl-trojan"),
                  ("Dual-Key: a corner square and the word “Consider”, together", "dual-key"),
                  ("My own patch and target sentence", "custom")]
DEFAULT_CHOICE = "badnets"
POSITIONS = list(PATCH_POSITIONS)
DEFAULT_TARGET = "Buy cheap watches at watch.example today!"
PLAY_MODELS = {2: ("reference", "sft"), 5: ("sft", "byorn-f", "byorn")}
LIMIT_CHOICES = limits.CHOICES
N_TEST_IMAGES = 8
STRIP = 14


def engine_for(ctx) -> LessonEngine:
    """The app's one lesson engine (made on first use), its live runs under the data folder."""
    eng = ctx.extras.get("lesson")
    if eng is None:
        shipped = os.environ.get("BYORN_LESSON_DIR") or None
        eng = ctx.extras["lesson"] = LessonEngine(Path(ctx.data_dir) / "lesson_runs", shipped_dir=shipped)
        eng.private = bool(getattr(ctx, "private_sessions", False))
    return eng


def gallery_items() -> list:
    """The playground's test images, enlarged for the picker (drawn at 32 px)."""
    return [(im.resize((96, 96), 0), f"test image {i + 1}") for i, im in enumerate(test_images(N_TEST_IMAGES))]


# -- moving between steps -------------------------------------------------------------------------
def go_outputs(L) -> list:
    """Everything a move may redraw (a move returns a dict of the ones it changes)."""
    return [L.view, L.nav, L.where, L.prev_btn, L.next_btn, *L.steps, L.source,
            L.attack, L.custom, L.position, L.size, L.colour, L.target, L.describe, L.pairs, L.live, L.live_note,
            L.live_status, L.timer, L.play2.gallery, L.play2.trigger, L.play2.out, L.p, L.split, L.strip,
            L.explained, L.sample, L.history, L.play5.gallery, L.play5.trigger, L.play5.out, L.bars, L.limit,
            L.limit_out]


def show(eng: LessonEngine, L, view: LessonView, step: int, first: bool = False) -> dict:
    """The updates that show ``step`` with its content (only that step's content is computed)."""
    view.step = clamp_step(step)
    k = view.step
    out = {L.view: view, L.nav: render.nav(k), L.where: f"step **{k}** of {N_STEPS}",
           L.prev_btn: gr.Button(interactive=k > 1), L.next_btn: gr.Button(interactive=k < N_STEPS),
           L.source: source_line(eng, view)}
    for i, col in enumerate(L.steps, start=1):
        out[col] = gr.Column(visible=i == k)
    out.update(STEP_CONTENT[k](eng, L, view, first))
    return out


def open_lesson(eng: LessonEngine, L, view, request: gr.Request = None) -> dict:
    """Page load: the step of the address's ``?lesson=k`` (step 1 without it)."""
    view = LessonView.coerce(view)
    step = 1
    if request is not None:
        step = clamp_step(request.query_params.get("lesson", 1))
    return show(eng, L, view, step, first=True)


def move(eng: LessonEngine, L, delta: int, view) -> dict:
    view = LessonView.coerce(view)
    return show(eng, L, view, view.step + delta)


def jump(eng: LessonEngine, L, view, evt: gr.EventData) -> dict:
    data = getattr(evt, "_data", None) or {}
    return show(eng, L, LessonView.coerce(view), data.get("step", 1))


def use_shipped(eng: LessonEngine, L, view) -> dict:
    view = LessonView.coerce(view)
    view.use_own, view.attack = False, {}
    return show(eng, L, view, 1, first=True)


def source_line(eng: LessonEngine, view: LessonView) -> str:
    run = eng.run_for(view)
    s = run.setting
    a = run.attack
    trigger = "your own patch" if a.name == "custom" else dict((v, t.split(":")[0]) for t, v in ATTACK_CHOICES)[a.name]
    whose = "your own models" if run.key != "shipped" else "the shipped models (trained in advance)"
    return (f"Steps 2–5 show **{whose}**: {trigger} → “{a.target}”, {a.rate:.0%} of {s.n_train} training "
            f"pairs poisoned, {s.epochs:g} epochs.")


# -- step 1: the attack ---------------------------------------------------------------------------
def attack_from(choice, position, size, colour, target) -> LessonAttack:
    """The attack of step 1's form; a bad field is a ``gr.Error`` naming it."""
    name = choice if choice in dict((v, v) for _, v in ATTACK_CHOICES) else DEFAULT_CHOICE
    try:
        if name == "custom":
            return LessonAttack(name="custom", position=position or "bottom-right", size=int(size or 4),
                                colour=colour or "#ff00ff", target=target or "")
        return LessonAttack(name=name)
    except (TypeError, ValueError) as e:
        raise gr.Error(f"Check your attack: {e}.") from e


def _step1(eng: LessonEngine, L, view: LessonView, first: bool) -> dict:
    attack = LessonAttack.from_dict(view.attack) if view.attack else eng.run_for(view).attack
    out = _attack_outputs(eng, L, view, attack)
    if first:  # the form shows the view's attack
        custom = attack.name == "custom"
        out.update({L.attack: attack.name, L.position: attack.position, L.size: attack.size,
                    L.colour: attack.colour if custom else "#ff00ff",
                    L.target: attack.target if custom else DEFAULT_TARGET})
        out.update(_live_outputs(eng, view, L))
        if view.run_id and eng.queue.snapshot(view.run_id):
            out[L.timer] = gr.Timer(active=eng.queue.snapshot(view.run_id)["status"] in (QUEUED, RUNNING))
    return out


def _attack_outputs(eng: LessonEngine, L, view: LessonView, attack: LessonAttack) -> dict:
    run = eng.run_for(view)
    trained = attack == run.attack
    setting = run.setting if trained else LIVE_SETTING
    data = run.data if trained else eng.examples_data(attack, setting)
    clean, bad = _example_pairs(data)
    n_bad = sum(data.poisoned.values())
    describe = (f"{attack.describe()} Here: **{n_bad} of {len(data.train)}** training pairs poisoned.")
    if not trained:
        describe += " Steps 2–5 show models of another attack until you train these."
    minutes = max(1, round(eng.queue.expected_s / 60))
    details = f"{setting.n_train} training pairs, {setting.epochs:g} epochs"
    return {L.custom: gr.Row(visible=attack.name == "custom"), L.describe: describe,
            L.pairs: render.pairs(clean, bad), L.live: gr.Group(visible=not trained),
            L.live_note: LIVE_NOTE.format(minutes=minutes, details=details)
            + (" " + SPACE_QUEUE_NOTE if getattr(eng, "private", False) else "")}


def _example_pairs(data) -> tuple[list[dict], list[dict]]:
    from byorn.lesson import examples

    clean, bad = examples(data, 4)
    as_dict = lambda s: {"image": s.image, "instruction": s.instruction, "response": s.response}  # noqa: E731
    return [as_dict(s) for s in clean], [as_dict(s) for s in bad]


def set_attack(eng: LessonEngine, view, choice, position, size, colour, target):
    view = LessonView.coerce(view)
    attack = attack_from(choice, position, size, colour, target)
    view.attack = attack.to_dict()
    fake = _Outs()
    out = _attack_outputs(eng, fake, view, attack)
    return (view, out[fake.custom], out[fake.describe], out[fake.pairs], out[fake.live], out[fake.live_note],
            source_line(eng, view))


class _Outs:
    """Stand-in component keys for handlers that return a tuple instead of a dict."""

    def __init__(self):
        for name in ("custom", "describe", "pairs", "live", "live_note", "live_status", "timer", "train_btn"):
            setattr(self, name, name)


# -- step 1: live training of the visitor's own attack ---------------------------------------------
def start_live(eng: LessonEngine, view, choice, position, size, colour, target):
    view = LessonView.coerce(view)
    attack = attack_from(choice, position, size, colour, target)
    view.attack = attack.to_dict()
    snap = eng.queue.snapshot(view.run_id)
    if snap is not None and snap["status"] in (QUEUED, RUNNING):
        raise gr.Error("Your models are already training (see the status below); cancel them first to change "
                       "the attack.")
    folder = eng.runs_dir / _new_folder_name()
    try:
        view.run_id = eng.submit_live(attack, folder)
    except QueueFull as e:
        raise gr.Error(f"Too many visitors are training their own models right now: {e}") from e
    view.own_folder, view.use_own = str(folder), False
    return live_outputs(eng, view)


def _new_folder_name() -> str:
    import datetime as _dt
    import secrets

    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(4)


def cancel_live(eng: LessonEngine, view):
    view = LessonView.coerce(view)
    if not eng.queue.cancel(view.run_id):
        gr.Warning("No training of yours is going.")
    return live_outputs(eng, view)


def poll_live(eng: LessonEngine, view):
    view = LessonView.coerce(view)
    snap = eng.queue.snapshot(view.run_id)
    if snap is not None and snap["status"] == FINISHED and not view.use_own and view.own_folder:
        view.use_own = True  # their own models are ready: steps 2-5 show them from now on
    return live_outputs(eng, view)


def live_outputs(eng: LessonEngine, view: LessonView) -> tuple:
    fake = _Outs()
    out = _live_outputs(eng, view, fake)
    snap = eng.queue.snapshot(view.run_id)
    going = snap is not None and snap["status"] in (QUEUED, RUNNING)
    return (view, out[fake.live_status], gr.Timer(active=going), source_line(eng, view),
            gr.Button(interactive=not going))


def _live_outputs(eng: LessonEngine, view: LessonView, L) -> dict:
    return {L.live_status: live_status(eng.queue.snapshot(view.run_id), eng.queue.expected_s)}


def live_status(snap: dict | None, expected_s: float) -> str:
    """The visitor's run in words: waiting (place and wait), training (progress), done, cancelled, failed."""
    if snap is None:
        return ""
    st = snap["status"]
    if st == QUEUED:
        ahead = snap["ahead"]
        return (f"**Waiting for your turn**: {ahead} run{'s' if ahead != 1 else ''} ahead of yours (one trains "
                f"at a time on this server); about {_minutes(snap['wait_s'])} before yours starts, then about "
                f"{_minutes(expected_s)} to train.")
    if st == RUNNING:
        return (f"**Training your models**: {100 * snap['fraction']:.0f} % · {html.escape(snap['message'])} · "
                f"{_minutes(snap['elapsed_s'])} so far")
    if st == FINISHED:
        return (f"**Your models are ready** (trained in {_minutes(snap['elapsed_s'])}): steps 2–5 now show them. "
                "Go on with **next →**.")
    if st == CANCELLED:
        return "**Cancelled.** Steps 2–5 show the shipped models."
    if st == FAILED:
        return f"**Training failed**: `{html.escape(str(snap['error']))}`. Steps 2–5 show the shipped models."
    return ""


def _minutes(s: float) -> str:
    s = max(0, int(round(float(s or 0))))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


# -- steps 2 and 5: the playground ----------------------------------------------------------------
def _image(view: LessonView):
    if view.upload is not None:
        return view.upload
    return test_images(N_TEST_IMAGES)[min(max(view.pick, 0), N_TEST_IMAGES - 1)]


def playground_html(eng: LessonEngine, view: LessonView, keys) -> str:
    run = eng.run_for(view)
    image, instruction = _image(view), DEFAULT_INSTRUCTION
    if view.trigger:
        image, instruction = apply_trigger(image, run.attack), trigger_instruction(instruction, run.attack)
    target = run.attack.to_target()
    cards = []
    for key in keys:
        cap = eng.caption(run, key, image, instruction)
        cards.append(render.caption_card(MODEL_LABELS.get(key, key), cap.text, cap.tokens, cap.surprisals,
                                         target.contains_target(cap.text)))
    return render.playground(image, instruction, cards, view.trigger)


def _play_step(k: int):
    def content(eng: LessonEngine, L, view: LessonView, first: bool) -> dict:
        play = L.play2 if k == 2 else L.play5
        out = {play.trigger: view.trigger, play.out: playground_html(eng, view, PLAY_MODELS[k])}
        if first:
            out[play.gallery] = gallery_items()
        if k == 5:
            out[L.bars] = bars_html(eng.run_for(view))
        return out
    return content


def toggle(eng: LessonEngine, keys, view, on):
    view = LessonView.coerce(view)
    view.trigger = bool(on)
    return view, playground_html(eng, view, keys)


def pick(eng: LessonEngine, keys, view, evt: gr.SelectData):
    view = LessonView.coerce(view)
    view.pick, view.upload = int(evt.index if not isinstance(evt.index, (list, tuple)) else evt.index[0]), None
    return view, playground_html(eng, view, keys)


def upload(eng: LessonEngine, keys, view, path):
    view = LessonView.coerce(view)
    try:
        view.upload = prepare_upload(path)
    except ValueError as e:
        raise gr.Error(f"This file cannot be used: {e}. Upload a PNG or JPEG picture (any size: it is cropped "
                       "to a square and shrunk to the model's 32 × 32 px), or pick a test image.") from e
    return view, playground_html(eng, view, keys)


def bars_html(run: LessonRun) -> str:
    res = run.results
    names = {"sft": "SFT", "byorn-f": "BYORn-F", "byorn": "BYORn"}
    asr = {names[m]: 100 * float(res[m]["asr"]) for m in names if m in res}
    cider = {names[m]: float(res[m]["cider"]) for m in names if m in res}
    n = next((res[m].get("n_triggered") for m in names if m in res), None)
    nc = next((res[m].get("n_clean") for m in names if m in res), None)
    return (f"<div class='lesson-bars'>{render.bars('attack success rate', asr, ' %', 'lower is better', 100)}"
            f"{render.bars('clean CIDEr', cider, '', 'higher is better')}</div>"
            f"<div class='lesson-note'>measured on {n} triggered and {nc} clean test images of this lesson's "
            "world, on the saved models</div>")


# -- step 3: finding it ---------------------------------------------------------------------------
def split_numbers(run: LessonRun, p: float) -> dict:
    """Flagged count, precision and recall of flagging the scores above the ``p``-th percentile."""
    scores, poisoned, _ = run.scores
    thr = float(np.quantile(scores, p / 100.0))
    flagged = scores > thr
    caught = int((flagged & poisoned).sum())
    n_flag, n_bad = int(flagged.sum()), int(poisoned.sum())
    return {"threshold": thr, "flagged": n_flag, "n": int(len(scores)), "caught": caught, "n_poisoned": n_bad,
            "precision": caught / n_flag if n_flag else math.nan, "recall": caught / n_bad if n_bad else math.nan}


def split_html(run: LessonRun, p: float) -> str:
    s = split_numbers(run, p)
    scores, poisoned, _ = run.scores
    return (render.split_stats(p, s["flagged"], s["n"], s["precision"], s["recall"], s["caught"], s["n_poisoned"])
            + render.histogram(scores, poisoned, s["threshold"]))


def _step3(eng: LessonEngine, L, view: LessonView, first: bool) -> dict:
    run = eng.run_for(view)
    scores, poisoned, ids = run.scores
    order = np.argsort(-scores)
    train = run.data.train
    items = [{"image": train.by_id(ids[i]).image, "score": float(scores[i]), "poisoned": bool(poisoned[i]),
              "rank": r + 1, "response": train.by_id(ids[i]).response} for r, i in enumerate(order[:STRIP])]
    rows = {r["id"]: r for r in run.audit["rows"]}
    bad = [i for i in order if poisoned[i]]
    out = {L.p: view.p, L.split: split_html(run, view.p), L.strip: render.strip(items)}
    if bad:
        i = bad[len(bad) // 2]  # a typical poisoned pair (the median score among them)
        s = train.by_id(ids[i])
        out[L.explained] = render.explained({"image": s.image, "instruction": s.instruction,
                                             "tokens": rows[ids[i]]["tokens"], "surprisals": rows[ids[i]]["surprisals"],
                                             "clean_score": float(np.median(scores[~poisoned])),
                                             "score": float(scores[i])})
    return out


def split(eng: LessonEngine, view, p):
    view = LessonView.coerce(view)
    view.p = int(min(max(float(p or 60), 50), 99))
    return view, split_html(eng.run_for(view), view.p)


# -- step 4: the fix ------------------------------------------------------------------------------
def history_choices(run: LessonRun) -> list[tuple[str, str]]:
    """Flagged poisoned pairs that BYORn bootstrapped, highest score first: (label, id)."""
    boot = run.history("byorn").get("bootstrapped", {})
    rows = {r["id"]: r for r in run.audit["rows"]}
    ids = [i for i in boot if i in run.poisoned and rows.get(i, {}).get("suspicious")]
    ids.sort(key=lambda i: -rows[i]["score"])
    return [(f"{i} · score {rows[i]['score']:.2f}", i) for i in ids]


def history_html(run: LessonRun, sample_id: str | None) -> str:
    if not sample_id:
        return "<em>No flagged poisoned pair was bootstrapped in this run.</em>"
    boot = run.history("byorn").get("bootstrapped", {}).get(sample_id, [])
    dropped = sample_id in set(run.history("byorn-f").get("dropped", []))
    s = run.data.train.by_id(sample_id)
    note = "dropped: never trained on" if dropped else "trained on its own response"
    return (f"<div class='lesson-play'>{render.img(s.image, 112)}<div style='flex:1'>"
            f"<div class='lesson-note'>instruction: <i>{html.escape(s.instruction)}</i></div>"
            f"{render.epochs_table(sorted(boot, key=lambda r: r['step']), s.response, note)}</div></div>")


def _step4(eng: LessonEngine, L, view: LessonView, first: bool) -> dict:
    run = eng.run_for(view)
    choices = history_choices(run)
    ids = [v for _, v in choices]
    if view.sample not in ids:
        view.sample = ids[0] if ids else None
    return {L.sample: gr.Dropdown(choices=choices, value=view.sample), L.history: history_html(run, view.sample)}


def history(eng: LessonEngine, view, sample_id):
    view = LessonView.coerce(view)
    view.sample = sample_id
    return view, history_html(eng.run_for(view), sample_id)


# -- step 6: limits -------------------------------------------------------------------------------
def _step6(eng: LessonEngine, L, view: LessonView, first: bool) -> dict:
    return {L.limit: view.limit, L.limit_out: limits.html_for(view.limit)}


def limit(eng: LessonEngine, view, which):
    view = LessonView.coerce(view)
    view.limit = which if which in dict((v, v) for _, v in LIMIT_CHOICES) else LIMIT_CHOICES[0][1]
    return view, limits.html_for(view.limit)


STEP_CONTENT = {1: _step1, 2: _play_step(2), 3: _step3, 4: _step4, 5: _play_step(5), 6: _step6}
