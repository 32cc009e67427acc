"""Showing one turn in the Inspector: what is shown (:class:`Shown`), its outputs, and opening a turn from any tab.

The map, the table, the gallery, the similar-samples list and the Inspector's
own keys all open turns through :func:`show_sample` / :func:`open_in_inspector`,
then fill the follow-up panels (candidates, similar samples, a cleared
trigger map) with the ``.then`` of :func:`extras_event`, so that opening a
turn stays fast.  The tabs import this module; it imports no tab.
"""
from __future__ import annotations

import datetime as _dt
import html
from functools import partial
from typing import NamedTuple

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from byorn.scoring import most_implausible_words
from byorn.split import response_key, times_as_likely

from . import candidates, similar, trigger
from .context import AppContext, Workspace
from .images import thumb_path
from .render import conversation, file_url
from .state import View
from .views import shade_tokens_html

IMAGE_PX = 384  # images are upscaled to this size with nearest-neighbour: crisp pixels
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
            f"{'**flagged**' if score > view.threshold else 'not flagged'}{truth}{_shared(ws, row)}"
            f"{_planted(ws, row)}")


def _shared(ws: Workspace, row) -> str:
    """" · one of 201 turns given this response ..." where the adaptive split found the turn's response
    shared by many turns whose images argue against it (a fixed clean-label target), or " · a few words from
    a response given word for word to 201 turns ..." for one of its variants."""
    if ws.score_method != "mean+grounding":
        return ""
    key = response_key(str(row.get("response", "")))
    for grp in ws.auto_split().fit.get("shared", ()):
        likely = (f"their images make {times_as_likely(grp['llr'])} less likely than a blank image does on the "
                  f"median turn")
        if response_key(grp["response"]) == key:
            return (f"  \none of **{grp['n']}** turns given this response word for word, which {likely}: the "
                    f"adaptive split flags them together")
        if key in grp.get("variants", ()):
            return (f"  \na few words from a response given word for word to **{grp['n']}** turns "
                    f"(\"{html.escape(grp['response'][:80])}\"), which {likely}, and its image supports it less "
                    f"than most turns' do theirs: the adaptive split flags those turns and the "
                    f"**{grp['n_variants']}** like this one together")
    for grp in ws.auto_split().fit.get("weakly_shared", ()):
        if response_key(grp["response"]) == key:
            return (f"  \none of **{grp['n']}** turns given this response word for word, which their images "
                    f"support less than they support the other turns of a like length (z {grp['z']:.1f}), though "
                    f"not clearly against it: the adaptive split flags them besides its floor")
    return ""


def _planted(ws: Workspace, row) -> str:
    """" · its most implausible word, "banana" (61 nats), ..." where the adaptive split found a gap in the
    responses' most implausible word, shared by the turns above it (a word planted in place of another)."""
    if ws.score_method != "mean+grounding":
        return ""
    fit = ws.auto_split().fit
    if fit.get("case") != "word gap":
        return ""
    toks, surpr = _as_list(row.get("tokens")), _as_list(row.get("surprisals"))
    if not toks or len(toks) != len(surpr):
        return ""
    (word, nats), = most_implausible_words([toks], [surpr])
    if not nats > fit["word_cut"]:
        return ""
    shared = {w["word"]: w["n"] for w in fit.get("words", ())}
    said = (f", one that **{shared[word]}** turns share there: a word planted in plausible responses"
            if word in shared else "")
    return (f"  \nits most implausible word, \"{html.escape(word)}\" ({nats:.1f} nats), lies above the gap at "
            f"{fit['word_cut']:.1f} nats in the responses' most implausible words{said}; the adaptive split flags "
            f"the turns above that gap")


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
    """Open ``name`` from another tab and switch to the Inspector (``walk``: the list previous / next then
    step through, with its name); the event's outputs are :func:`open_outputs`."""
    view = View.coerce(view)
    if walk is not None:
        view.walk, view.walk_label = np.asarray(walk[0], dtype=np.int64), walk[1]
    return {**to_outputs(ui, show_sample(ctx, view, name)), ui.tabs: gr.Tabs(selected="inspector")}


def open_outputs(ui) -> list:
    """The components :func:`open_in_inspector` fills: the Inspector's and the tab switch."""
    return [*outputs(ui), ui.tabs]


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
