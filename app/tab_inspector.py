"""Inspector tab: one assistant turn, large, in its whole conversation; decide on it by mouse or keyboard.

The map, the table, the gallery and the similar-samples list open turns here
(:func:`open_in_inspector`).  Decisions are written to the shared store at
once, addressed ``(sample id, turn)``; with "advance" on, the next turn of
the list it was opened from opens.  Below the decision: candidates proposed
by a fine-tuned run (:mod:`app.candidates`), similar samples and their
cluster (:mod:`app.similar`), and the trigger heat map (:mod:`app.trigger`),
each filled by a follow-up event (:func:`extras`) so that opening a turn
stays fast.
"""
from __future__ import annotations

import datetime as _dt
import html
import secrets
from functools import partial
from types import SimpleNamespace
from typing import NamedTuple

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from byorn.decisions import Decision

from . import bulk, candidates, hosting, similar, trigger
from .context import AppContext, Workspace
from .images import thumb_path
from .render import conversation, file_url
from .state import Proposal, View
from .views import shade_tokens_html

IMAGE_PX = 384  # images are upscaled to this size with nearest-neighbour: crisp pixels
REFERENCE = "reference model"
KEYS_HELP = ("**Keys** (when no text box has the cursor; Esc leaves one): **A** approve · **R** reject · "
             "**E** edit (then Ctrl+Enter saves) · **D** drop · **N** / → next · **P** / ← previous · "
             "**1**-**9** pick a candidate")
EMPTY_HEADER = "Open a sample from the Overview map, the Gallery or the Table."


class Shown(NamedTuple):
    """What the Inspector shows for one turn (:func:`outputs` order, after the view)."""

    view: View
    header: str
    image: str | None
    instruction: str
    tokens: str
    proposal: str
    edit: str
    decision: str


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


def outputs(ui) -> list:
    """The components :func:`show_sample` fills, in its order."""
    i = ui.inspector
    return [ui.view, i.header, i.image, i.instruction, i.tokens, i.proposal, i.edit_box, i.decision]


def to_outputs(ui, shown: Shown) -> dict:
    return dict(zip(outputs(ui), shown))


# -- showing a turn ---------------------------------------------------------------------------------
def show_sample(ctx: AppContext, view: View, name: str | None) -> Shown:
    """Everything the Inspector shows for row ``name`` (key, or sample id: its most suspicious turn)."""
    view = View.coerce(view)
    ws = ctx.workspace(view)
    if name is None or not str(name).strip():
        view.current = None
        return Shown(view, EMPTY_HEADER, None, "", "", "", "", "")
    ix = ws.index
    pos = ix.position(str(name))
    if pos is None:
        raise gr.Error(f"No sample with id {str(name).strip()!r} in {ws.name}.")
    key, sid, turn = ix.keys[pos], ix.ids[pos], int(ix.turns[pos])
    row = ws.table.iloc[pos]
    sample = ws.dataset.by_id(sid)
    view.current = key
    decision = ctx.decision(ws, sid, turn)
    held = view.proposals.get(key)
    proposal = held.text if held is not None else str(row.get("proposed_response") or "")
    original = sample.assistant_texts()[turn]
    edit = decision.text if decision is not None and decision.status == "edited" else original
    return Shown(view, header_markdown(ws, view, pos), image_file(ctx, ws, sample),
                 f"**Instruction:** {sample.user_text_before(turn)}",
                 tokens_html(ctx, ws, view, pos, sample), proposal, edit, decision_markdown(decision))


def header_markdown(ws: Workspace, view: View, pos: int) -> str:
    ix = ws.index
    key = ix.keys[pos]
    hits = np.flatnonzero(view.walk == pos) if len(view.walk) else []
    where = (f"{int(hits[0]) + 1} / {len(view.walk)} in the {view.walk_label}" if len(hits)
             else f"not in the {view.walk_label}")
    score = float(ix.score[pos])
    row = ws.table.iloc[pos]
    truth = ""
    if ix.truth is not None:
        truth = " · truth: **poisoned**" if ix.truth[pos] else " · truth: clean"
    turn = ""
    if ix.n_turns[pos] > 1:
        turn = f" · assistant turn **{int(ix.turns[pos]) + 1} of {int(ix.n_turns[pos])}**"
    return (f"### `{html.escape(key)}`  \n{where}{turn} · score **{score:.3f}** "
            f"(max token {float(row.get('score_max', float('nan'))):.2f}{_grounding(row)}) · "
            f"{'**flagged**' if score > view.threshold else 'not flagged'}{truth}")


def _grounding(row) -> str:
    """", grounding -0.85" when the audit scored with blank images too (negative: the image supports it)."""
    g = row.get("grounding")
    return "" if g is None or pd.isna(g) else f", grounding {float(g):+.2f}"


def tokens_html(ctx: AppContext, ws: Workspace, view: View, pos: int, sample) -> str:
    """The shaded response; for a conversation (or several images), every turn around it."""
    row = ws.table.iloc[pos]
    toks, surpr = _as_list(row.get("tokens")), _as_list(row.get("surprisals"))
    if sample.n_turns <= 1 and len(sample.images) <= 1:
        return shade_tokens_html(toks, surpr)
    ix, codes = ws.index, ctx.status_codes(ws)
    rows = {}
    for k in range(sample.n_turns):
        p = ix.turn_pos.get((sample.id, k))
        if p is not None:
            rows[k] = {"key": ix.keys[p], "score": float(ix.score[p]), "flagged": bool(ix.score[p] > view.threshold),
                       "decision": ("pending", "approved", "rejected", "edited", "dropped")[int(codes[p])]}
    urls = [file_url(thumb_path(ctx.images, ws.key, sample, j)) for j in range(len(sample.images))]
    return conversation([(t.role, t.text) for t in sample.turns], int(ix.turns[pos]), rows, toks, surpr, urls)


def _as_list(value) -> list:
    """Tokens / surprisals as a list (parquet may hand back numpy arrays; missing = [])."""
    return [] if value is None or (isinstance(value, float) and value != value) else list(value)


def decision_markdown(decision) -> str:
    if decision is None:
        return "**Decision:** pending (BYORn decides from the score during training)"
    when = _dt.datetime.fromtimestamp(decision.updated_at).strftime("%Y-%m-%d %H:%M:%S")
    text = f" → “{decision.text}”" if decision.text else ""
    source = f" · proposed by `{decision.source}`" if decision.source and decision.status == "approved" else ""
    return f"**Decision:** {decision.status}{text}{source} _(saved {when})_"


def image_file(ctx: AppContext, ws: Workspace, sample) -> str | None:
    """A finished file of the sample's (first) image, upscaled; None for a text-only sample.

    A file path, not a PIL image: Gradio would rewrite a PIL image into its
    cache on each request, racing concurrent downloads (``app/images.py``).
    """
    if not sample.images:
        return None
    return ctx.images.path((ws.key, sample.id), lambda: upscale(sample.image))


def upscale(image: Image.Image, size: int = IMAGE_PX) -> Image.Image:
    """Nearest-neighbour upscale so small images stay crisp (never blurred)."""
    image = image.convert("RGB")
    w, h = image.size
    k = max(1, size // max(w, h))
    return image.resize((w * k, h * k), Image.NEAREST) if k > 1 else image


def open_in_inspector(ctx: AppContext, ui, view: View, name: str, walk: tuple[np.ndarray, str] | None) -> dict:
    """Open ``name`` (``walk``: the list previous / next then step through, with its name)."""
    view = View.coerce(view)
    if walk is not None:
        view.walk, view.walk_label = np.asarray(walk[0], dtype=np.int64), walk[1]
    return to_outputs(ui, show_sample(ctx, view, name))


# -- handlers -------------------------------------------------------------------------------------
def select_sample(ctx: AppContext, view: View, sample_id: str) -> Shown:
    return show_sample(ctx, view, sample_id)


def step(ctx: AppContext, delta: int, view: View) -> Shown:
    view = View.coerce(view)
    ws = ctx.workspace(view)
    walk = view.walk
    if not len(walk):
        raise gr.Error(f"The {view.walk_label} is empty: change the filter in the Table tab.")
    pos = ws.index.position(view.current) if view.current else None
    hits = np.flatnonzero(walk == pos) if pos is not None else []
    if not len(hits):
        nxt = walk[0] if delta > 0 else walk[-1]
    else:
        nxt = walk[min(max(int(hits[0]) + delta, 0), len(walk) - 1)]
    return show_sample(ctx, view, ws.index.keys[int(nxt)])


def decide(ctx: AppContext, status: str, view: View, proposal: str, edit: str, advance: bool) -> Shown:
    """Record a decision on the open turn, then show it (or the next one of the list)."""
    view = View.coerce(view)
    key = view.current
    if not key:
        raise gr.Error("Open a sample first (click a point on the map, a gallery card or a table row).")
    ws = ctx.workspace(view)
    pos = ws.index.position(key)
    if pos is None:
        raise gr.Error(f"No sample with id {key!r} in {ws.name}.")
    sid, turn = ws.index.ids[pos], int(ws.index.turns[pos])
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
    key = view.current
    if not key:
        raise gr.Error("Open a sample first.")
    ws = ctx.workspace(view)
    pos = ws.index.position(key)
    sid, turn = ws.index.ids[pos], int(ws.index.turns[pos])
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


def show_first(ctx: AppContext, view: View) -> Shown:
    """Open the current turn if it is in the list, else the list's first (nothing when it is empty)."""
    view = View.coerce(view)
    ws = ctx.workspace(view)
    pos = ws.index.position(view.current) if view.current else None
    if pos is not None and len(view.walk) and (view.walk == pos).any():
        return show_sample(ctx, view, view.current)
    return show_sample(ctx, view, ws.index.keys[int(view.walk[0])] if len(view.walk) else None)


# -- the follow-up panels ---------------------------------------------------------------------------
def extras(ctx: AppContext, ui, view: View) -> dict:
    """Candidates, similar samples and a cleared trigger map for the open turn (after it is shown)."""
    view = View.coerce(view)
    i = ui.inspector
    out = {**candidate_outputs(ctx, ui, view), **similar.similar_outputs(ctx, ui, view), **trigger.cleared(i.trig)}
    return out


def extras_event(ui, ctx: AppContext) -> dict:
    """Keyword arguments of the ``.then`` that follows every event opening a turn."""
    i = ui.inspector
    outs = [i.cands, i.cand_note, *similar.outputs(i.sim), *trigger.outputs(i.trig)]
    return dict(fn=partial(extras, ctx, ui), inputs=[ui.view], outputs=outs, api_visibility="private",
                show_progress="hidden")


def candidate_outputs(ctx: AppContext, ui, view: View) -> dict:
    i = ui.inspector
    if not view.current or not view.run:
        note = "" if not view.current else ("Choose a finished run in **propose with** to see its candidates."
                                            if _has_runs(ctx, view) else "")
        return {i.cands: gr.Radio(choices=[], value=None, visible=False), i.cand_note: note}
    ws = ctx.workspace(view)
    pos = ws.index.position(view.current)
    key = (ws.index.ids[pos], int(ws.index.turns[pos]))
    cands = candidates.book(ctx).get(ws, view.run, key)
    name = candidates.run_source(view.run)
    if not cands:
        return {i.cands: gr.Radio(choices=[], value=None, visible=False),
                i.cand_note: f"No candidates from `{name}` for this turn yet: press **propose candidates** "
                             "(below) or **regenerate**."}
    held = view.proposals.get(view.current)
    choices = [(f"{n + 1}. {c.text}   · NLL {c.nll:.2f}", n) for n, c in enumerate(cands)]
    value = next((n for n, c in enumerate(cands) if held is not None and c.text == held.text), None)
    return {i.cands: gr.Radio(choices=choices, value=value, visible=True,
                              label=f"candidates from {name} (mean NLL under its model; lower = more plausible)"),
            i.cand_note: "Pick one (or press its number key) to make it the proposed replacement; edit it below if needed."}


def _has_runs(ctx: AppContext, view: View) -> bool:
    return bool(len(candidates.runs_with_models(ctx, view)))


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
    candidates_wiring(ui, ctx)
    similar.wire_similar(ui, ctx, then)
    trigger.wire_trigger(ui, ctx)


def candidate_outputs_view(ctx: AppContext, ui, view: View) -> dict:
    return candidate_outputs(ctx, ui, View.coerce(view))


def candidates_wiring(ui, ctx: AppContext) -> None:
    from .proposing import wire_proposals

    wire_proposals(ui, ctx)
