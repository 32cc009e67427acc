"""The Lesson tab's layout and wiring: six steps, one shown at a time, next / previous, ← / → keys.

:func:`build_lesson` lays the steps out (each a ``gr.Column`` shown only on
its turn); :func:`wire_lesson` binds the handlers of :mod:`.steps` to them.
Per-visitor state is a :class:`~.state.LessonView` in ``gr.State``; the
shipped models, the caption cache and the live-run queue are one shared
:class:`~.engine.LessonEngine` (read-only for visitors).
"""
from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import gradio as gr

from . import render, steps
from .state import N_STEPS, LessonView
from .texts import TEXTS, TITLES

LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]

# The nav's JS: a click on a step pill moves in place (the link still works when opened in a new tab);
# the ← / → keys press previous / next while the lesson is shown and no text box has the focus.
NAV_JS = r"""
element.addEventListener('click', (e) => {
  const a = e.target.closest('a[data-step]');
  if (!a || e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  trigger('step_click', {step: parseInt(a.dataset.step, 10)});
});
// a step's own address (?lesson=k): ask for step k; step 1 is in the page already (no request at all)
const linked = parseInt(new URLSearchParams(window.location.search).get('lesson') || '1', 10);
if (linked >= 2 && linked <= 6) trigger('step_click', {step: linked});
if (!window.__byornLessonKeys) {
  window.__byornLessonKeys = true;
  document.addEventListener('keydown', (e) => {
    const t = e.target, tag = ((t && t.tagName) || '').toLowerCase();
    if (tag === 'input' || tag === 'textarea' || tag === 'select' || (t && t.isContentEditable)) return;
    if (e.ctrlKey || e.metaKey || e.altKey || e.shiftKey) return;
    const root = document.querySelector('#lesson-root');
    if (!root || root.offsetParent === null) return;
    const id = {ArrowRight: '#lesson-next', ArrowLeft: '#lesson-prev'}[e.key];
    const b = id && document.querySelector(id);
    if (b && !b.disabled) { e.preventDefault(); b.click(); }
  });
}
"""

LARGE_JS = ("(on) => { const r = document.querySelector('#lesson-root');"
            " if (r) r.classList.toggle('lesson-large', !!on); return on; }")


def _text(k: int) -> None:
    gr.Markdown(f"## {k}. {TITLES[k - 1]}", elem_id=f"lesson-title-{k}")
    gr.Markdown(TEXTS[k - 1], latex_delimiters=LATEX, elem_classes=["lesson-text"], elem_id=f"lesson-text-{k}")


def _playground(k: int, keys_note: str) -> SimpleNamespace:
    """Test images to pick, an upload, the trigger switch, and the captions (steps 2 and 5)."""
    with gr.Row():
        with gr.Column(scale=2, min_width=280):
            gallery = gr.Gallery(steps.gallery_items(), label="pick a test image", columns=4, height=190,
                                 allow_preview=False, object_fit="contain", elem_id=f"lesson-pick-{k}", buttons=[])
            upload = gr.UploadButton("…or upload your own image", file_types=["image"], type="filepath",
                                     size="sm", elem_id=f"lesson-upload-{k}")
            trigger = gr.Checkbox(True, label="trigger on", elem_id=f"lesson-trigger-{k}")
            gr.Markdown(keys_note, elem_classes=["lesson-note"])
        with gr.Column(scale=5):
            out = gr.HTML(elem_id=f"lesson-play-{k}", elem_classes=["lesson-out"])
    return SimpleNamespace(gallery=gallery, upload=upload, trigger=trigger, out=out)


def build_lesson() -> SimpleNamespace:
    """The Lesson tab's components (call inside a ``gr.Tab``)."""
    ui = SimpleNamespace()
    ui.view = gr.State(LessonView())
    with gr.Column(elem_id="lesson-root") as ui.root:
        with gr.Row(equal_height=False):
            ui.nav = gr.HTML(render.nav(1), js_on_load=NAV_JS, elem_id="lesson-nav", scale=6)
            ui.large = gr.Checkbox(False, label="large text (projector)", elem_id="lesson-large", scale=0,
                                   min_width=200, container=False)
        ui.source = gr.Markdown("", elem_id="lesson-source", elem_classes=["lesson-note"])
        ui.steps = []
        with gr.Column(visible=True, elem_id="lesson-step-1") as s1:
            _text(1)
            with gr.Row():
                ui.attack = gr.Radio(steps.ATTACK_CHOICES, value=steps.DEFAULT_CHOICE, label="the attack",
                                     elem_id="lesson-attack", scale=3)
                ui.rate = gr.Slider(5, 50, value=10, step=5, label="poisoned pairs (% of the training set)",
                                    elem_id="lesson-rate", scale=1, min_width=220)
            with gr.Row(visible=False, elem_id="lesson-custom") as ui.custom:
                ui.position = gr.Dropdown(steps.POSITIONS, value="bottom-right", label="patch position",
                                          elem_id="lesson-position", scale=1)
                ui.size = gr.Slider(1, 16, value=4, step=1, label="patch size (px of 32)", elem_id="lesson-size",
                                    scale=1)
                ui.colour = gr.ColorPicker("#ff00ff", label="patch colour", elem_id="lesson-colour", scale=1)
                ui.target = gr.Textbox(steps.DEFAULT_TARGET, label="target sentence (what the backdoor says)",
                                       max_lines=1, elem_id="lesson-target", scale=3)
            ui.describe = gr.Markdown(elem_id="lesson-describe")
            ui.pairs = gr.HTML(elem_id="lesson-pairs", elem_classes=["lesson-out"])
            with gr.Group(visible=False, elem_id="lesson-live") as ui.live:
                ui.live_note = gr.Markdown(elem_id="lesson-live-note")
                with gr.Row():
                    ui.train_btn = gr.Button("train these models", variant="primary", elem_id="lesson-train")
                    ui.cancel_btn = gr.Button("cancel", variant="stop", elem_id="lesson-cancel")
                    ui.shipped_btn = gr.Button("back to the shipped models", elem_id="lesson-shipped")
                ui.live_status = gr.Markdown(elem_id="lesson-live-status")
            ui.timer = gr.Timer(1.0, active=False)
        ui.steps.append(s1)
        with gr.Column(visible=False, elem_id="lesson-step-2") as s2:
            _text(2)
            ui.play2 = _playground(2, "Uploads are cropped to a square and shrunk to 32 × 32 px.")
        ui.steps.append(s2)
        with gr.Column(visible=False, elem_id="lesson-step-3") as s3:
            _text(3)
            ui.p = gr.Slider(50, 99, value=60, step=1, label="percentile p: flag the pairs scoring above it",
                             elem_id="lesson-p")
            ui.split = gr.HTML(elem_id="lesson-split", elem_classes=["lesson-out"])
            ui.strip = gr.HTML(elem_id="lesson-strip")
            ui.explained = gr.HTML(elem_id="lesson-explained", elem_classes=["lesson-out"])
        ui.steps.append(s3)
        with gr.Column(visible=False, elem_id="lesson-step-4") as s4:
            _text(4)
            ui.sample = gr.Dropdown([], label="a flagged poisoned training pair", elem_id="lesson-sample")
            ui.history = gr.HTML(elem_id="lesson-history", elem_classes=["lesson-out"])
        ui.steps.append(s4)
        with gr.Column(visible=False, elem_id="lesson-step-5") as s5:
            _text(5)
            ui.play5 = _playground(5, "The same image and trigger go to all three models.")
            ui.bars = gr.HTML(elem_id="lesson-bars")
        ui.steps.append(s5)
        with gr.Column(visible=False, elem_id="lesson-step-6") as s6:
            _text(6)
            ui.limit = gr.Radio(steps.LIMIT_CHOICES, value=steps.LIMIT_CHOICES[0][1], label="which limit",
                                elem_id="lesson-limit")
            ui.limit_out = gr.HTML(elem_id="lesson-limit-out", elem_classes=["lesson-out"])
        ui.steps.append(s6)
        with gr.Row():
            ui.prev_btn = gr.Button("← previous", elem_id="lesson-prev", interactive=False)
            ui.where = gr.Markdown(f"step 1 of {N_STEPS}", elem_id="lesson-where")
            ui.next_btn = gr.Button("next →", variant="primary", elem_id="lesson-next")
    return ui


def _picker(eng, keys):
    def on_pick(view, evt: gr.SelectData):  # a closure: gradio finds the SelectData by its type hint
        return steps.pick(eng, keys, view, evt)
    return on_pick


def wire_lesson(ui, ctx, demo: gr.Blocks) -> None:
    """Bind the lesson's handlers (``ui`` is the app's namespace; ``ui.lesson`` the tab's)."""
    L = ui.lesson
    eng = steps.engine_for(ctx)
    go_out = steps.go_outputs(L)
    if not steps.draw_first_step(eng, L):  # else the page holds step 1: a new visitor costs the server nothing
        demo.load(partial(steps.show_first, eng, L), [L.view], go_out, api_name="lesson_open")
    L.next_btn.click(partial(steps.move, eng, L, +1), [L.view], go_out, api_name="lesson_next")
    L.prev_btn.click(partial(steps.move, eng, L, -1), [L.view], go_out, api_name="lesson_prev")

    def on_step_click(view, evt: gr.EventData):  # a closure: gradio finds the EventData by its type hint
        return steps.jump(eng, L, view, evt)

    L.nav.step_click(on_step_click, [L.view], go_out, api_visibility="private")
    L.large.change(None, [L.large], [L.large], js=LARGE_JS)

    attack_in = [L.view, L.attack, L.position, L.size, L.colour, L.target, L.rate]
    attack_out = [L.view, L.custom, L.describe, L.pairs, L.live, L.live_note, L.source]
    gr.on([L.attack.change, L.position.change, L.size.release, L.colour.change, L.target.submit, L.rate.release],
          partial(steps.set_attack, eng), attack_in, attack_out, api_name="lesson_attack")
    live_out = [L.view, L.live_status, L.timer, L.source, L.train_btn]
    L.train_btn.click(partial(steps.start_live, eng), attack_in, live_out, api_name="lesson_train",
                      concurrency_id="lesson-train", concurrency_limit=1)
    L.cancel_btn.click(partial(steps.cancel_live, eng), [L.view], live_out, api_name="lesson_cancel")
    L.timer.tick(partial(steps.poll_live, eng), [L.view], live_out, api_name="lesson_poll", show_progress="hidden")
    L.shipped_btn.click(partial(steps.use_shipped, eng, L), [L.view], go_out, api_name="lesson_use_shipped")

    for k, play in ((2, L.play2), (5, L.play5)):
        keys = steps.PLAY_MODELS[k]
        outs = [L.view, play.out]
        play.trigger.change(partial(steps.toggle, eng, keys), [L.view, play.trigger], outs,
                            api_name=f"lesson_trigger_{k}")
        play.gallery.select(_picker(eng, keys), [L.view], outs, api_name=f"lesson_pick_{k}")
        play.upload.upload(partial(steps.upload, eng, keys), [L.view, play.upload], outs,
                           api_name=f"lesson_upload_{k}")
    L.p.input(partial(steps.split, eng), [L.view, L.p], [L.view, L.split], api_name="lesson_split",
              trigger_mode="always_last", show_progress="hidden")
    L.sample.change(partial(steps.history, eng), [L.view, L.sample], [L.view, L.history], api_name="lesson_history")
    L.limit.change(partial(steps.limit, eng), [L.view, L.limit], [L.view, L.limit_out], api_name="lesson_limit")
