"""The lesson's handlers: moving between steps and each step's one interactive element.

Every handler takes the visitor's :class:`~.state.LessonView` and returns it
(changed) with the components to redraw; the shared
:class:`~.engine.LessonEngine` is only read.  A bad value (an upload that is
no image, an empty target sentence) is a ``gr.Error`` saying what to do.
"""
from __future__ import annotations

import html
import logging
import os
import threading
from pathlib import Path

import gradio as gr
import numpy as np

from byorn.lesson import (PATCH_POSITIONS, Lesson, LessonAttack, describe_setting, examples, explain_sample,
                          fix_story, limits, lesson_split, most_suspicious, prepare_upload,
                          result_table, test_images)

from ..hosting import training_message
from . import render
from .engine import LessonEngine
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
LIMIT_CHOICES = [("A plausible target (approximately clean-label)", "plausible"),
                 ("More poison than flags (50 % of the data poisoned)", "rate")]
N_TEST_IMAGES = 8
STRIP = 14


def engine_for(ctx) -> LessonEngine:
    """The app's one lesson engine (made on first use), its live runs under the data folder."""
    eng = ctx.extras.get("lesson")
    if eng is None:
        shipped = os.environ.get("BYORN_LESSON_DIR") or None
        eng = ctx.extras["lesson"] = LessonEngine(Path(ctx.data_dir) / "lesson_runs", shipped_dir=shipped)
        eng.private = bool(getattr(ctx, "private_sessions", False))
        threading.Thread(target=_warm_up, args=(eng,), name="byorn-lesson-warmup", daemon=True).start()
    return eng


def _warm_up(eng: LessonEngine) -> None:
    """Load the shipped lesson and answer the first playground off the request path (the first visitor waits less)."""
    try:
        view = LessonView()
        lesson = eng.lesson_for(view)
        for on in (True, False):
            view.trigger = on
            playground_html(eng, view, PLAY_MODELS[2])
            playground_html(eng, view, PLAY_MODELS[5])
        eng.memo(lesson, ("pairs", _attack_key(lesson.attack)), lambda: _pairs_html(lesson.data))
        eng.memo(lesson, ("split", view.p), lambda: split_html(lesson, view.p))
        eng.memo(lesson, "strip", lambda: _strip_html(lesson))
        eng.memo(lesson, "explained", lambda: _explained_html(lesson))
        eng.memo(lesson, "choices", lambda: history_choices(lesson))
        eng.memo(lesson, "bars", lambda: bars_html(lesson))
    except Exception:  # only a warm-up: the steps report real failures themselves
        logger.exception("lesson warm-up failed")


def gallery_items() -> list:
    """The playground's test images, enlarged for the picker (drawn at 32 px)."""
    return [im.resize((96, 96), 0) for im in test_images(N_TEST_IMAGES)]


# -- moving between steps -------------------------------------------------------------------------
def go_outputs(L) -> list:
    """Everything a move may redraw (a move returns a dict of the ones it changes)."""
    return [L.view, L.nav, L.where, L.prev_btn, L.next_btn, *L.steps, L.source,
            L.attack, L.rate, L.custom, L.position, L.size, L.colour, L.target, L.describe, L.pairs, L.live,
            L.live_note, L.live_status, L.timer, L.play2.gallery, L.play2.trigger, L.play2.out, L.p, L.split, L.strip,
            L.explained, L.sample, L.history, L.play5.gallery, L.play5.trigger, L.play5.out, L.bars, L.limit,
            L.limit_out]


def show(eng: LessonEngine, L, view: LessonView, step: int, first: bool = False) -> dict:
    """The updates that show ``step`` with its content (only that step's content is computed)."""
    view.step = clamp_step(step)
    k = view.step
    out = {L.view: view, L.nav: render.nav(k), L.where: f"step **{k}** of {N_STEPS}",
           L.prev_btn: gr.update(interactive=k > 1), L.next_btn: gr.update(interactive=k < N_STEPS),
           L.source: source_line(eng, view)}
    for i, col in enumerate(L.steps, start=1):
        out[col] = gr.update(visible=i == k)
    out.update(STEP_CONTENT[k](eng, L, view, first))
    return out


def show_first(eng: LessonEngine, L, view) -> dict:
    """Page load, only where step 1 could not be drawn at start: step 1 (or what keeps it from showing).
    A step's own address (``?lesson=k``) is followed in the page (``ui.NAV_JS``), as a click on step k."""
    return show(eng, L, LessonView.coerce(view), 1, first=True)


def draw_first_step(eng: LessonEngine, L) -> bool:
    """Give step 1 its content as the page's initial values, so a new visitor's page shows it without
    asking the server anything (a class opening the Space at once costs it no lesson event); False when
    the shipped lesson cannot be loaded (a page-load event draws step 1 then: :func:`show_first`)."""
    try:
        out = show(eng, L, LessonView(), 1, first=True)
    except Exception:  # a missing or damaged lesson: the steps report it on the page
        logger.exception("the lesson's first step could not be drawn at start")
        return False
    for comp in (L.nav, L.where, L.source, L.describe, L.pairs, L.live_note, L.live_status):
        if comp in out:
            comp.value = out[comp]
    L.custom.visible = bool(out[L.custom]["visible"])
    L.live.visible = bool(out[L.live]["visible"])
    L.drawn = True
    return True


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
    run = eng.lesson_for(view)
    s = run.setting
    a = run.attack
    trigger = "your own patch" if a.name == "custom" else dict((v, t.split(":")[0]) for t, v in ATTACK_CHOICES)[a.name]
    whose = "the shipped models (trained in advance)" if run.shipped else "your own models"
    line = (f"Steps 2–5 show **{whose}**: {trigger} → “{a.target}”, {a.rate:.0%} of {s.n_train} training "
            f"pairs poisoned, {s.epochs:g} epochs.")
    sft = run.results.get("sft", {}).get("asr")
    if not run.shipped and sft is not None and sft < 0.5:
        line += (f" **Your SFT model did not learn this backdoor well** (it says the target on {100 * sft:.0f} % "
                 "of triggered test images): in this small world a larger or more striking patch is learnt more "
                 "surely. Try one in step 1, or go back to the shipped models.")
    return line


# -- step 1: the attack ---------------------------------------------------------------------------
def attack_from(choice, position, size, colour, target, rate=None) -> LessonAttack:
    """The attack of step 1's form (``rate``: the poisoned share in percent; None: 10 %); a bad field is a
    ``gr.Error`` naming it."""
    name = choice if choice in dict((v, v) for _, v in ATTACK_CHOICES) else DEFAULT_CHOICE
    try:
        share = 0.1 if rate is None else round(float(rate)) / 100
        if name == "custom":
            return LessonAttack(name="custom", position=position or "bottom-right", size=int(size or 4),
                                colour=colour or "#ff00ff", target=target or "", rate=share)
        return LessonAttack(name=name, rate=share)
    except (TypeError, ValueError) as e:
        raise gr.Error(f"Check your attack: {e}.") from e


def _step1(eng: LessonEngine, L, view: LessonView, first: bool) -> dict:
    attack = LessonAttack.from_dict(view.attack) if view.attack else eng.lesson_for(view).attack
    out = _attack_outputs(eng, L, view, attack)
    if first:  # the form shows the view's attack
        custom = attack.name == "custom"
        out.update({L.attack: attack.name, L.rate: round(100 * attack.rate), L.position: attack.position,
                    L.size: attack.size,
                    L.colour: attack.colour if custom else "#ff00ff",
                    L.target: attack.target if custom else DEFAULT_TARGET})
        out.update(_live_outputs(eng, view, L))
        if view.run_id and eng.queue.snapshot(view.run_id):
            out[L.timer] = gr.update(active=eng.queue.snapshot(view.run_id)["status"] in (QUEUED, RUNNING))
    return out


def _attack_outputs(eng: LessonEngine, L, view: LessonView, attack: LessonAttack) -> dict:
    run = eng.lesson_for(view)
    trained = attack == run.attack
    setting = run.setting if trained else eng.live_setting
    data = run.data if trained else eng.examples_data(attack, setting)
    pairs = (eng.memo(run, ("pairs", _attack_key(attack)), lambda: _pairs_html(data)) if trained
             else _pairs_html(data))
    n_bad = sum(data.poisoned.values())
    describe = (f"{attack.describe()} Here: **{n_bad} of {len(data.train)}** training pairs poisoned.")
    if not trained:
        describe += " Steps 2–5 show models of another attack until you train these."
        heads_up = attack.warnings()  # what the live run measured about triggers like this one
        if heads_up:
            describe += "\n\n" + "\n".join(f"- ⚠ {w}" for w in heads_up)
    minutes = max(1, round(eng.queue.expected_s / 60))
    note = LIVE_NOTE.format(minutes=minutes, details=describe_setting(eng.live_setting))
    return {L.custom: gr.update(visible=attack.name == "custom"), L.describe: describe,
            L.pairs: pairs, L.live: gr.update(visible=not trained),
            L.live_note: note + (" " + SPACE_QUEUE_NOTE if eng.private else "")}


def _attack_key(attack: LessonAttack) -> str:
    return repr(sorted(attack.to_dict().items()))


def _pairs_html(data) -> str:
    """Four clean and four poisoned training pairs of the data."""
    clean, bad = examples(data, 4)
    as_dict = lambda s: {"image": s.image, "instruction": s.instruction, "response": s.response}  # noqa: E731
    return render.pairs([as_dict(s) for s in clean], [as_dict(s) for s in bad])


def set_attack(eng: LessonEngine, view, choice, position, size, colour, target, rate=None):
    view = LessonView.coerce(view)
    attack = attack_from(choice, position, size, colour, target, rate)
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
def start_live(eng: LessonEngine, view, choice, position, size, colour, target, rate=None):
    view = LessonView.coerce(view)
    attack = attack_from(choice, position, size, colour, target, rate)
    view.attack = attack.to_dict()
    snap = eng.queue.snapshot(view.run_id)
    if snap is not None and snap["status"] in (QUEUED, RUNNING):
        raise gr.Error("Your models are already training (see the status below); cancel them first to change "
                       "the attack.")
    blocked = training_message()  # e.g. a ZeroGPU Space: training needs a dedicated machine there
    if blocked:
        raise gr.Error(f"Training is not possible on this server: {blocked}")
    if view.own_folder:  # their earlier run: replaced by this one (only this session ever showed it)
        eng.discard(view.own_folder)
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
    return (view, out[fake.live_status], gr.update(active=going), source_line(eng, view),
            gr.update(interactive=not going))


def _live_outputs(eng: LessonEngine, view: LessonView, L) -> dict:
    return {L.live_status: live_status(eng.queue.snapshot(view.run_id), eng.queue.expected_s)}


def live_status(snap: dict | None, expected_s: float) -> str:
    """The visitor's run in words: waiting (place and wait), training (progress), done, cancelled, failed."""
    if snap is None:
        return ""
    st = snap["status"]
    if st == QUEUED and snap["ahead"] == 0:
        return "**Starting your training…**"
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
    lesson = eng.lesson_for(view)
    image, question, answers = eng.answers(lesson, _image(view), view.trigger, tuple(keys))
    cards = [render.caption_card(a.label, a.caption.text, a.caption.tokens, a.caption.surprisals, a.fired)
             for a in answers]
    return render.playground(image, question, cards, view.trigger)


def _play_step(k: int):
    def content(eng: LessonEngine, L, view: LessonView, first: bool) -> dict:
        play = L.play2 if k == 2 else L.play5
        out = {play.trigger: view.trigger, play.out: playground_html(eng, view, PLAY_MODELS[k])}
        if k == 5:
            lesson = eng.lesson_for(view)
            out[L.bars] = eng.memo(lesson, "bars", lambda: bars_html(lesson))
        return out
    return content


def toggle(eng: LessonEngine, keys, view, on):
    view = LessonView.coerce(view)
    view.trigger = bool(on)
    return view, playground_html(eng, view, keys)


def pick(eng: LessonEngine, keys, view, evt: gr.SelectData):
    view = LessonView.coerce(view)
    index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    view.pick, view.upload = int(index or 0), None
    return view, playground_html(eng, view, keys)


def upload(eng: LessonEngine, keys, view, path):
    view = LessonView.coerce(view)
    try:
        view.upload = prepare_upload(path)
    except ValueError as e:
        name = Path(str(path)).name if path else ""
        why = str(e).replace(str(path), name) if path else str(e)  # never show the server's file path
        raise gr.Error(f"“{name}” cannot be used: {why}. Upload a PNG or JPEG picture (any size: it is cropped "
                       "to a square and shrunk to the model's 32 × 32 px), or pick a test image.") from e
    return view, playground_html(eng, view, keys)


def bars_html(lesson: Lesson) -> str:
    rows = result_table(lesson)
    names = {"sft": "SFT", "byorn-f": "BYORn-F", "byorn": "BYORn"}
    asr = {names.get(r["model"], r["model"]): r["asr_percent"] for r in rows}
    cider = {names.get(r["model"], r["model"]): r["cider"] for r in rows}
    n, nc = (rows[0]["n_triggered"], rows[0]["n_clean"]) if rows else (0, 0)
    return (f"<div class='lesson-bars'>{render.bars('attack success rate', asr, ' %', 'lower is better', 100)}"
            f"{render.bars('clean CIDEr', cider, '', 'higher is better')}</div>"
            f"<div class='lesson-note'>measured on {n} triggered and {nc} clean test images of this lesson's "
            "world, with the saved models</div>")


# -- step 3: finding it ---------------------------------------------------------------------------
def split_html(lesson: Lesson, p: float) -> str:
    s = lesson_split(lesson, p / 100.0)
    return (render.split_stats(p, s.n_flagged, s.n, s.precision, s.recall, s.true_positives, s.n_poisoned)
            + render.histogram(lesson.scores, lesson.poisoned, s.threshold))


def _strip_html(lesson: Lesson) -> str:
    items = [{"image": s.image, "score": s.score, "poisoned": s.poisoned, "rank": r + 1, "response": s.response}
             for r, s in enumerate(most_suspicious(lesson, STRIP))]
    return render.strip(items)


def _explained_html(lesson: Lesson) -> str:
    try:
        ex = explain_sample(lesson)
    except ValueError as e:  # no poisoned sample in this lesson
        return f"<em>{html.escape(str(e))}</em>"
    return render.explained({"image": ex.sample.image, "instruction": ex.sample.instruction,
                             "tokens": ex.tokens, "surprisals": ex.surprisals, "text": ex.text})


def _step3(eng: LessonEngine, L, view: LessonView, first: bool) -> dict:
    lesson = eng.lesson_for(view)
    return {L.p: view.p, L.split: eng.memo(lesson, ("split", view.p), lambda: split_html(lesson, view.p)),
            L.strip: eng.memo(lesson, "strip", lambda: _strip_html(lesson)),
            L.explained: eng.memo(lesson, "explained", lambda: _explained_html(lesson))}


def split(eng: LessonEngine, view, p):
    view = LessonView.coerce(view)
    try:
        view.p = int(min(max(float(p), 50), 99))
    except (TypeError, ValueError):
        raise gr.Error("Set the percentile p to a number from 50 to 99.") from None
    lesson = eng.lesson_for(view)
    return view, eng.memo(lesson, ("split", view.p), lambda: split_html(lesson, view.p))


# -- step 4: the fix ------------------------------------------------------------------------------
def history_choices(lesson: Lesson) -> list[tuple[str, str]]:
    """Flagged poisoned pairs that BYORn bootstrapped, highest score first: (label, id)."""
    boot = lesson.histories.get("byorn", {}).get("bootstrapped", {})
    poisoned = lesson.poisoned  # a property that builds the array: once
    rows = [i for i in np.argsort(-lesson.scores, kind="stable")
            if poisoned[i] and lesson.flagged[i] and lesson.ids[i] in boot]
    return [(f"{lesson.ids[i]} · score {lesson.scores[i]:.2f}", lesson.ids[i]) for i in rows]


def history_html(lesson: Lesson, sample_id: str | None) -> str:
    if not sample_id:
        return "<em>No flagged poisoned pair was bootstrapped in this lesson.</em>"
    story = fix_story(lesson, sample_id)
    s = story.sample
    rows = [{"epoch": e, "response": r} for e, r in story.byorn]
    return (f"<div class='lesson-play'>{render.img(s.image, 112)}<div style='flex:1'>"
            f"<div class='lesson-note'>instruction: <i>{html.escape(s.instruction)}</i></div>"
            f"{render.epochs_table(rows, s.response, story.byorn_f)}</div></div>")


def _step4(eng: LessonEngine, L, view: LessonView, first: bool) -> dict:
    lesson = eng.lesson_for(view)
    choices = eng.memo(lesson, "choices", lambda: history_choices(lesson))
    ids = [v for _, v in choices]
    if view.sample not in ids:
        view.sample = ids[0] if ids else None
    sample = view.sample
    return {L.sample: gr.update(choices=choices, value=sample),
            L.history: eng.memo(lesson, ("history", sample), lambda: history_html(lesson, sample))}


def history(eng: LessonEngine, view, sample_id):
    view = LessonView.coerce(view)
    lesson = eng.lesson_for(view)
    if sample_id not in [v for _, v in eng.memo(lesson, "choices", lambda: history_choices(lesson))]:
        raise gr.Error(f"Pick one of the listed training pairs ({sample_id!r} is not a flagged poisoned pair here).")
    view.sample = sample_id
    return view, eng.memo(lesson, ("history", sample_id), lambda: history_html(lesson, sample_id))


# -- step 6: limits -------------------------------------------------------------------------------
def limit_html(which: str) -> str:
    lim = limits()[0 if which == "plausible" else 1]
    f = lim.figures
    rows = [("SFT (no defense)", f.get("sft_asr")), ("BYORn-F", f.get("byorn_f_asr")),
            ("BYORn (the paper's score, mean NLL)", f.get("byorn_asr"))]
    if "byorn_mean_grounding_asr" in f:
        rows.append(("BYORn flagging by mean NLL + grounding", f["byorn_mean_grounding_asr"]))
    table = "".join(f"<tr><td>{html.escape(n)}</td><td>{v:.1f} %</td></tr>" for n, v in rows if v is not None)
    return (f"<div class='lesson-limit'><p><b>{html.escape(lim.title)}.</b> {html.escape(lim.what)}</p>"
            f"<table><tr><th>model</th><th>attack success</th></tr>{table}</table>"
            f"<p class='lesson-note'>{100 * f.get('rate', 0):.0f} % of the data poisoned; mean of 3 seeds, 1,000 training "
            "pairs, 8 epochs (the project's benchmark matrix, benchmarks/RESULTS.md).</p>"
            f"<p><b>What catches it:</b> {html.escape(lim.caught_by)}</p></div>")


def _step6(eng: LessonEngine, L, view: LessonView, first: bool) -> dict:
    return {L.limit: view.limit, L.limit_out: limit_html(view.limit)}


def limit(eng: LessonEngine, view, which):
    view = LessonView.coerce(view)
    view.limit = which if which in dict((v, v) for _, v in LIMIT_CHOICES) else LIMIT_CHOICES[0][1]
    return view, limit_html(view.limit)


STEP_CONTENT = {1: _step1, 2: _play_step(2), 3: _step3, 4: _step4, 5: _play_step(5), 6: _step6}
