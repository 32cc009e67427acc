"""Inspector tab: one assistant turn, large, in its whole conversation; decide on it by mouse or keyboard.

The map, the table, the gallery and the similar-samples list open turns here
through :mod:`app.showing` (what a turn shows, and the follow-up event that
fills the panels).  Decisions are written to the shared store at once,
addressed ``(sample id, turn)``; with "advance" on, the next turn of the list
it was opened from opens.  Below the decision: candidates proposed by a
fine-tuned run (:mod:`app.candidates`, :mod:`app.proposing`), similar samples
and their cluster (:mod:`app.similar`), and the trigger heat map
(:mod:`app.trigger`), each wired here.
"""
from __future__ import annotations

import secrets
from functools import partial
from types import SimpleNamespace

import gradio as gr
import numpy as np

from byorn.decisions import Decision
from byorn.neighbors import cluster_members

from . import bulk, candidates, hosting, similar, trigger
from .context import AppContext, Workspace
from .proposing import wire_proposals
from .selection import selection_outputs, set_selection
from .showing import (EMPTY_HEADER, IMAGE_PX, Shown, candidate_outputs, extras_event, outputs, show_sample, step,
                      to_outputs)
from .state import Proposal, View

REFERENCE = "reference model"
KEYS_HELP = ("**Keys** (when no text box has the cursor; Esc leaves one): **A** approve · **R** reject · "
             "**E** edit (then Ctrl+Enter saves) · **D** drop · **N** / → next · **P** / ← previous · "
             "**1**-**9** pick a candidate")


def build_inspector(can_decide: bool = True) -> SimpleNamespace:
    """The Inspector's components; ``can_decide`` False (read-only store) disables the decision buttons."""
    with gr.Column(elem_id="inspector-panel"):
        with gr.Row():
            goto_id = gr.Textbox(label="Sample id (or id#turn)", placeholder="type an id and press Enter",
                                 scale=3, elem_id="goto-id")
            prev_btn = gr.Button("◀ previous (P)", scale=1, elem_id="prev-btn")
            next_btn = gr.Button("next ▶ (N)", scale=1, elem_id="next-btn")
        header = gr.Markdown(EMPTY_HEADER, elem_id="inspector-header")
        keys_help = gr.Markdown(KEYS_HELP, elem_id="keys-help", elem_classes=["byorn-legend"])
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                image = gr.Image(label="image", type="filepath", height=IMAGE_PX, interactive=False,
                                 elem_classes=["byorn-pixelated"], buttons=["fullscreen"], elem_id="inspector-image")
                trig = trigger.build_trigger()
            with gr.Column(scale=3):
                instruction = gr.Markdown(label="instruction", elem_id="inspector-instruction")
                tokens = gr.HTML(label="response", elem_id="inspector-tokens", js_on_load=_OPEN_TURN_JS)
                proposal = gr.Textbox(label="proposed replacement", interactive=False, lines=2, elem_id="proposal")
                with gr.Row():
                    propose_with = gr.Dropdown([REFERENCE], value=REFERENCE, label="propose with",
                                               scale=3, elem_id="propose-with")
                    regen_btn = gr.Button("↻ regenerate", size="sm", scale=1, elem_id="regen-btn")
                cands = gr.Radio([], label="candidates (mean NLL under the proposing model; lower = more "
                                           "plausible to it)", visible=False, elem_id="candidates")
                cand_note = gr.Markdown(elem_id="candidates-note")
        decision = gr.Markdown(elem_id="decision-md")
        with gr.Row():
            approve_btn = gr.Button("✓ approve replacement (A)", variant="primary", elem_id="approve-btn",
                                    interactive=can_decide)
            reject_btn = gr.Button("✗ reject, original is fine (R)", elem_id="reject-btn", interactive=can_decide)
            drop_btn = gr.Button("drop sample (D)", variant="stop", elem_id="drop-btn", interactive=can_decide)
            reset_btn = gr.Button("reset to pending", elem_id="reset-btn", interactive=can_decide)
        advance = gr.Checkbox(value=True, label="open the next sample after a decision", elem_id="advance")
        with gr.Row():
            edit_box = gr.Textbox(label="your text (for 'save edit'; Ctrl+Enter saves)", lines=2, scale=4,
                                  elem_id="edit-box")
            edit_btn = gr.Button("save edit", scale=1, elem_id="edit-btn", interactive=can_decide)
        prop = candidates_panel(can_decide)
        sim = similar.build_similar()
    return SimpleNamespace(**{k: v for k, v in locals().items()})


def candidates_panel(can_decide: bool) -> SimpleNamespace:
    with gr.Accordion("Replacements from a fine-tuned run (propose with run X)", open=False):
        gr.Markdown("Pick a finished run in **propose with** above, then propose candidates for the flagged "
                    "turns with its model (runs trained on this data know the task; the reference model does "
                    "not). The open turn shows its candidates; approving one records the run as its source.")
        with gr.Row():
            k = gr.Slider(1, 8, value=4, step=1, label="candidates per turn (k)", scale=2, elem_id="propose-k")
            scope = gr.Radio(["flagged turns", "flagged turns in the current filter", "flagged turns in the map selection"],
                             value="flagged turns", label="for", scale=3, elem_id="propose-scope")
        with gr.Row():
            start = gr.Button("propose candidates", variant="primary", elem_id="propose-start", interactive=can_decide)
            cancel = gr.Button("cancel", elem_id="propose-cancel")
        status = gr.Markdown(elem_id="propose-status")
        timer = gr.Timer(1.0, active=False)
    return SimpleNamespace(k=k, scope=scope, start=start, cancel=cancel, status=status, timer=timer)


_OPEN_TURN_JS = r"""
element.addEventListener('click', (e) => {
  const t = e.target.closest('[data-key]');
  if (t && t.dataset.key) trigger('open_turn', {key: t.dataset.key});
});
"""


# -- showing a turn ---------------------------------------------------------------------------------


# -- handlers -------------------------------------------------------------------------------------
def select_sample(ctx: AppContext, view: View, sample_id: str) -> Shown:
    return show_sample(ctx, view, sample_id)


def open_turn(ctx: AppContext, view: View, hint: str = "") -> tuple[Workspace, str, int, tuple[str, int]]:
    """The open turn: its workspace, key, row and ``(sample id, turn)``; a clear error when there is none."""
    key = view.current
    if not key:
        raise gr.Error(f"Open a sample first{hint}.")
    ws = ctx.workspace(view)
    pos = ws.index.position(key)
    if pos is None:
        raise gr.Error(f"No sample with id {key!r} in {ws.name}.")
    return ws, key, pos, (ws.index.ids[pos], int(ws.index.turns[pos]))


def decide(ctx: AppContext, status: str, view: View, proposal: str, edit: str, advance: bool) -> Shown:
    """Record a decision on the open turn, then show it (or the next one of the list)."""
    view = View.coerce(view)
    ws, key, pos, (sid, turn) = open_turn(ctx, view, " (click a point on the map, a gallery card or a table row)")
    source = None
    if status == "approved":
        text = (proposal or "").strip()
        if not text:
            raise gr.Error("There is no replacement to approve: press 'regenerate' to ask the model "
                           "for one, pick a candidate, or write your own text and 'save edit'.")
        held = view.proposals.get(key)
        source = held.source if held is not None and held.text.strip() == text else bulk.reference_source(ws)
    elif status == "edited":
        text = (edit or "").strip()
        if not text:
            raise gr.Error("Your text is empty: write the response to train on, or 'drop' the sample.")
    else:
        text = None
    if status == "pending":
        ctx.clear_many(ws, [(sid, turn)])
    else:
        ctx.decide_many(ws, [Decision(sid, status, text, turn=turn, source=source)])
    view.proposals.pop(key, None) if status != "pending" else None
    nxt = key
    if advance and status != "pending":
        hits = np.flatnonzero(view.walk == pos)
        if len(hits) and int(hits[0]) + 1 < len(view.walk):
            nxt = ws.index.keys[int(view.walk[int(hits[0]) + 1])]
    return show_sample(ctx, view, nxt)


def regenerate(ctx: AppContext, view: View, progress=gr.Progress()):
    """A new replacement for the open turn: from the reference model, or k candidates from the chosen run."""
    view = View.coerce(view)
    ws, key, _, (sid, turn) = open_turn(ctx, view)
    seed = secrets.randbelow(2**31)  # a new sample each press (and a different one for each reviewer)
    if view.run:
        progress(0.1, desc="loading the run's model")
        try:
            source = candidates.run_source(view.run)
            progress(0.5, desc="sampling candidates")
            cands = candidates.propose_for_turn(ctx, view.run, ws.dataset, (sid, turn), 4, seed)
        except Exception as e:  # the model failing must not take the page down
            raise gr.Error(f"The run's model could not propose replacements: {e}") from e
        if not cands:
            raise gr.Error("The run's model proposed nothing for this turn.")
        candidates.book(ctx).put(ws, view.run, {(sid, turn): cands})
        best = min(cands, key=lambda c: c.nll)
        view.proposals[key] = Proposal(best.text, source)
        return view, best.text
    progress(0.1, desc="loading the reference model")
    try:
        vlm = ws.vlm()
    except Exception as e:
        raise gr.Error(f"Could not load the reference model: {e}") from e
    progress(0.5, desc="sampling a replacement")
    try:
        text = hosting.generate(vlm, ws.model_path, ws.dataset, [(sid, turn)], temperature=0.7,
                                seed=seed).get((sid, turn), "")
    except Exception as e:  # the model failing must not take the page down
        raise gr.Error(f"The reference model could not generate a replacement: {e}") from e
    view.proposals[key] = Proposal(text, bulk.reference_source(ws))
    return view, text


# -- the follow-up panels ---------------------------------------------------------------------------


def pick_candidate(ctx: AppContext, ui, view: View, choice) -> dict:
    """A candidate picked: it becomes the proposal (source: the run) and the starting text of an edit."""
    view = View.coerce(view)
    i = ui.inspector
    if choice is None or not view.current or not view.run:
        return {ui.view: view}
    ws = ctx.workspace(view)
    pos = ws.index.position(view.current)
    cands = candidates.book(ctx).get(ws, view.run, (ws.index.ids[pos], int(ws.index.turns[pos])))
    n = int(choice)
    if not 0 <= n < len(cands):
        raise gr.Error("That candidate is gone: regenerate or propose again.")
    text = cands[n].text
    view.proposals[view.current] = Proposal(text, candidates.run_source(view.run))
    return {ui.view: view, i.proposal: text, i.edit_box: text}


def choose_proposer(ctx: AppContext, ui, view: View, choice: str) -> dict:
    """"propose with": the reference model, or a run folder."""
    view = View.coerce(view)
    try:
        view.run = None if not choice or choice == REFERENCE else candidates.check_run(ctx, view, choice)
    except ValueError as e:
        raise gr.Error(str(e)) from e
    return {ui.view: view, **candidate_outputs(ctx, ui, view)}


def refresh_runs(ctx: AppContext, ui, view: View, explain_with: str | None = None) -> dict:
    """The runs in the "propose with" and "explain with" lists (runs finish while the page is open)."""
    view = View.coerce(view)
    i = ui.inspector
    runs = candidates.runs_with_models(ctx, view)
    choices = [(REFERENCE, REFERENCE)] + list(zip(runs["label"], runs["out_dir"]))
    values = [v for _, v in choices]
    current = view.run if view.run in values else REFERENCE
    view.run = None if current == REFERENCE else current
    explain = trigger.model_choices(i.trig, runs)
    if explain_with and explain_with != trigger.REFERENCE and explain_with in values:  # a run still listed
        explain[i.trig.model] = gr.Dropdown(choices=explain[i.trig.model].choices, value=explain_with)
    return {ui.view: view, i.propose_with: gr.Dropdown(choices=choices, value=current), **explain}


# -- wiring ---------------------------------------------------------------------------------------
def wire_inspector(ui, ctx: AppContext) -> None:
    i = ui.inspector
    outs = outputs(ui)
    then = extras_event(ui, ctx)

    def shown(fn):
        """A handler returning a :class:`Shown` as ``{component: value}``."""
        return lambda *args: to_outputs(ui, fn(*args))

    i.goto_id.submit(shown(partial(select_sample, ctx)), [ui.view, i.goto_id], outs,
                     api_name="select_sample").then(**then)
    i.prev_btn.click(shown(partial(step, ctx, -1)), [ui.view], outs, api_name="previous_sample").then(**then)
    i.next_btn.click(shown(partial(step, ctx, +1)), [ui.view], outs, api_name="next_sample").then(**then)
    inputs = [ui.view, i.proposal, i.edit_box, i.advance]
    for btn, status, name in ((i.approve_btn, "approved", "approve"), (i.reject_btn, "rejected", "reject"),
                              (i.drop_btn, "dropped", "drop"), (i.edit_btn, "edited", "edit"),
                              (i.reset_btn, "pending", "reset")):
        btn.click(shown(partial(decide, ctx, status)), inputs, outs, api_name=name).then(**then)
    i.regen_btn.click(partial(regenerate, ctx), [ui.view], [ui.view, i.proposal], api_name="regenerate").then(
        partial(candidate_outputs_view, ctx, ui), [ui.view], [i.cands, i.cand_note], api_visibility="private")

    def on_open_turn(view: View, evt: gr.EventData):  # a closure: gradio needs the type hint
        return to_outputs(ui, show_sample(ctx, view, (evt._data or {}).get("key")))

    i.tokens.open_turn(on_open_turn, [ui.view], outs, api_name="open_turn").then(**then)
    i.cands.input(partial(pick_candidate, ctx, ui), [ui.view, i.cands], [ui.view, i.proposal, i.edit_box],
                  api_name="pick_candidate")
    i.propose_with.input(partial(choose_proposer, ctx, ui), [ui.view, i.propose_with],
                         [ui.view, i.cands, i.cand_note], api_name="propose_with")
    ui.tab_inspector.select(partial(refresh_runs, ctx, ui), [ui.view, i.trig.model],
                            [ui.view, i.propose_with, *trigger.choice_outputs(i.trig)], api_name="list_proposers")
    wire_proposals(ui, ctx)
    wire_similar(ui, ctx, then)
    trigger.wire_trigger(ui, ctx)


def candidate_outputs_view(ctx: AppContext, ui, view: View) -> dict:
    return candidate_outputs(ctx, ui, View.coerce(view))


# -- similar samples and their cluster (the panel: app/similar.py) --------------------------------
def select_cluster(ctx: AppContext, ui, view: View) -> dict:
    """The open turn's cluster becomes the map selection; the Overview opens on it."""
    view = View.coerce(view)
    ws, _, pos, _ = open_turn(ctx, view)
    try:
        labels = ws.cluster_labels()
    except Exception as e:
        raise gr.Error(f"Could not cluster this audit: {e}") from e
    rows = np.asarray(cluster_members(labels, pos), dtype=np.int64)
    out = set_selection(ctx, ui, view, rows, f"cluster of {view.current}")
    n_flag = int((ws.index.score[rows] > view.threshold).sum()) if len(rows) else 0
    out[ui.inspector.sim.note] = (f"Selected the cluster of `{view.current}` on the map: **{len(rows)}** rows, "
                                  f"{n_flag} flagged. Decide on them in bulk under the map (Overview).")
    out[ui.tabs] = gr.Tabs(selected="overview")
    return out


def wire_similar(ui, ctx: AppContext, then: dict) -> None:
    sim = ui.inspector.sim

    def on_open(view: View, evt: gr.EventData):  # a closure: gradio needs the type hint
        return to_outputs(ui, show_sample(ctx, view, (evt._data or {}).get("key")))

    sim.html.open_item(on_open, [ui.view], outputs(ui), api_name="open_similar").then(**then)
    sim.cluster_btn.click(partial(select_cluster, ctx, ui), [ui.view], [*selection_outputs(ui), sim.note, ui.tabs],
                          api_name="select_cluster")
