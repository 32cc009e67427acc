"""Show the trigger: a heat map over the image and word importances over the instruction, on demand.

``byorn.explain.trigger_map`` occludes image patches and leaves out words,
one at a time, and measures the response's mean NLL.  Under a model that
learned the backdoor (a finished run on the same data, e.g. SFT) hiding the
trigger makes the target response implausible: mode ``"rise"``.  Without
such a run, the reference model is used with mode ``"fall"`` (hiding what
contradicts the response makes it more plausible).  Maps are cached on disk
(``byorn.explain.TriggerMapCache`` under the data folder), so a second look is
instant and shared by every visitor.
"""
from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import gradio as gr

from . import candidates
from .context import AppContext
from . import hosting
from .render import word_importances
from .state import View

REFERENCE = "reference model"
OVERLAY_PX = 384


def build_trigger() -> SimpleNamespace:
    with gr.Accordion("Show the trigger (heat map over the image, word importances)", open=False,
                      elem_id="trigger-panel"):
        gr.Markdown("Hides each image patch and each instruction word in turn and measures how the response's "
                    "NLL moves. With a run that learned the backdoor (SFT on this data) the trigger lights up "
                    "(NLL **rises** when it is hidden); with the reference model, what contradicts the response "
                    "lights up (NLL **falls**). Computed on demand, then cached.")
        with gr.Row():
            model = gr.Dropdown([(f"{REFERENCE} (fall)", REFERENCE)], value=REFERENCE, label="explain with",
                                scale=3, elem_id="explain-with")
            button = gr.Button("show the trigger", scale=1, elem_id="trigger-btn")
        image = gr.Image(label="heat map over the image", type="filepath", interactive=False, height=OVERLAY_PX,
                         elem_classes=["byorn-pixelated"], elem_id="trigger-image", buttons=["fullscreen"])
        words = gr.HTML(elem_id="trigger-words")
        note = gr.Markdown(elem_id="trigger-note")
    return SimpleNamespace(model=model, button=button, image=image, words=words, note=note)


def outputs(t) -> list:
    return [t.image, t.words, t.note]


def choice_outputs(t) -> list:
    return [t.model]


def cleared(t) -> dict:
    return {t.image: None, t.words: "", t.note: ""}


def model_choices(t, runs) -> dict:
    """Runs first (mode rise), the reference model last; the default: an SFT run on this data if any."""
    choices = [(f"{label} (rise)", out) for label, out in zip(runs["label"], runs["out_dir"])]
    choices.append((f"{REFERENCE} (fall)", REFERENCE))
    learned = runs[(runs["method"] == "sft") & runs["same_data"]] if len(runs) else runs
    default = str(learned["out_dir"].iloc[0]) if len(learned) else REFERENCE
    return {t.model: gr.Dropdown(choices=choices, value=default)}


def explain(ctx: AppContext, ui, view: View, choice: str, progress=gr.Progress()) -> dict:
    """Compute (or fetch) the trigger map of the open turn under the chosen model and show it."""
    from byorn.explain import overlay

    view = View.coerce(view)
    t = ui.inspector.trig
    if not view.current:
        raise gr.Error("Open a sample first.")
    ws = ctx.workspace(view)
    pos = ws.index.position(view.current)
    sid, turn = ws.index.ids[pos], int(ws.index.turns[pos])
    progress(0.1, desc="loading the model")
    try:
        if not choice or choice == REFERENCE:
            vlm, mode, who, folder = ws.vlm(), "fall", "the reference model", ws.model_path
        else:
            vlm, source, folder = candidates.models(ctx).entry(candidates.check_run(ctx, view, choice))
            mode, who = "rise", f"`{source}`"
        progress(0.3, desc="occluding patches and words")
        tm = hosting.trigger_map(vlm, folder, ws.dataset, sid, turn, ctx.data_dir / "trigger_maps", mode=mode)
    except Exception as e:  # the model or the sample failing must not take the page down
        raise gr.Error(f"Could not compute the trigger map: {e}") from e
    sample = ws.dataset.by_id(sid)
    image = None
    if tm.grid is not None and sample.images:
        base = sample.images[0].load()
        key = ("trigger", ws.key, view.current, tm.model_identity, mode)
        image = ctx.images.path(key, lambda: overlay(base, tm.grid, alpha=0.6, size=OVERLAY_PX))
    box = tm.peak_box()
    where = f"hottest region: pixels {box[0]}-{box[2]} × {box[1]}-{box[3]}" if box else "no image"
    top = tm.top_word()
    note = (f"Mode **{mode}** under {who}: the response's NLL is {tm.base_nll:.2f} nats/token with nothing "
            f"hidden; {where}" + (f"; most telling word “{top}”." if top else "."))
    return {t.image: image, t.words: word_importances(tm.words, mode), t.note: note}


def wire_trigger(ui, ctx: AppContext) -> None:
    t = ui.inspector.trig
    t.button.click(partial(explain, ctx, ui), [ui.view, t.model], outputs(t), api_name="trigger_map",
                   concurrency_id="model", concurrency_limit=1)
