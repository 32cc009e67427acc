"""Inspector tab: one sample, large; decide on it; walk the current filter.

The map (Overview) and the table (Table) open samples here through
:func:`show_sample`.  Decisions are written to the shared decision store at
once; with "advance" on, the next sample of the current filter opens.
"""
from __future__ import annotations

import datetime as _dt
import html
import secrets
from functools import partial
from types import SimpleNamespace

import gradio as gr
from PIL import Image

from byorn.audit import propose_replacements
from byorn.decisions import Decision

from .context import AppContext, Workspace
from .views import position_in, shade_tokens_html, step_in

IMAGE_PX = 384  # images are upscaled to this size with nearest-neighbour: crisp pixels
DECISION_LABELS = {"approved": "approve replacement", "rejected": "reject (original is fine)",
                   "edited": "edit", "dropped": "drop"}


def build_inspector(can_decide: bool = True) -> SimpleNamespace:
    """The Inspector's components; ``can_decide`` False (read-only store) disables the decision buttons."""
    with gr.Row():
        goto_id = gr.Textbox(label="Sample id", placeholder="type an id and press Enter",
                             scale=3, elem_id="goto-id")
        prev_btn = gr.Button("◀ previous", scale=1, elem_id="prev-btn")
        next_btn = gr.Button("next ▶", scale=1, elem_id="next-btn")
    header = gr.Markdown("Open a sample from the Overview map or the Table.", elem_id="inspector-header")
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            image = gr.Image(label="image", type="pil", height=IMAGE_PX, interactive=False,
                             elem_classes=["byorn-pixelated"], buttons=["fullscreen"])
        with gr.Column(scale=3):
            instruction = gr.Markdown(label="instruction", elem_id="inspector-instruction")
            tokens = gr.HTML(label="response", elem_id="inspector-tokens", js_on_load=None)
            proposal = gr.Textbox(label="proposed replacement (from the reference model)",
                                  interactive=False, lines=2, elem_id="proposal")
            regen_btn = gr.Button("↻ regenerate", size="sm", elem_id="regen-btn")
    decision = gr.Markdown(elem_id="decision-md")
    with gr.Row():
        approve_btn = gr.Button("✓ approve replacement", variant="primary", elem_id="approve-btn",
                                interactive=can_decide)
        reject_btn = gr.Button("✗ reject (original is fine)", elem_id="reject-btn", interactive=can_decide)
        drop_btn = gr.Button("drop sample", variant="stop", elem_id="drop-btn", interactive=can_decide)
        reset_btn = gr.Button("reset to pending", elem_id="reset-btn", interactive=can_decide)
    advance = gr.Checkbox(value=True, label="open the next sample after a decision")
    with gr.Row():
        edit_box = gr.Textbox(label="your text (for 'save edit')", lines=2, scale=4, elem_id="edit-box")
        edit_btn = gr.Button("save edit", scale=1, elem_id="edit-btn", interactive=can_decide)
    return SimpleNamespace(**{k: v for k, v in locals().items()})


def outputs(ui) -> list:
    """The components :func:`show_sample` fills, in its return order."""
    i = ui.inspector
    return [ui.view, i.header, i.image, i.instruction, i.tokens, i.proposal, i.edit_box, i.decision]


def show_sample(ctx: AppContext, view: dict, sample_id: str | None):
    """Values for :func:`outputs` showing ``sample_id`` (raises gr.Error if unknown)."""
    ws = ctx.workspace(view)
    if sample_id is None:
        return (view, "Open a sample from the Overview map or the Table.", None, "", "", "", "", "")
    sample_id = str(sample_id).strip()
    rows = ws.table.index[ws.table["id"] == sample_id]
    if not len(rows):
        raise gr.Error(f"No sample with id {sample_id!r} in {ws.name}.")
    row = ws.table.loc[rows[0]]
    sample = ws.dataset.by_id(sample_id)
    view["current"] = sample_id
    decision = ctx.decision(ws, sample_id)
    pos, n = position_in(view.get("order") or [], sample_id)
    where = f"{pos + 1} / {n} in the current filter" if pos is not None else "not in the current filter"
    score = float(row["score"])
    flagged = score > view["threshold"]
    truth = ""
    if "gt_poisoned" in row.index and row["gt_poisoned"] is not None and row["gt_poisoned"] == row["gt_poisoned"]:
        truth = " · truth: **poisoned**" if bool(row["gt_poisoned"]) else " · truth: clean"
    header = (f"### `{html.escape(sample_id)}`  \n{where} · score **{score:.3f}** "
              f"(max token {float(row.get('score_max', float('nan'))):.2f}) · "
              f"{'**flagged**' if flagged else 'not flagged'}{truth}")
    proposal = view.get("proposals", {}).get(sample_id) or str(row.get("proposed_response") or "")
    edit = decision.text if decision is not None and decision.status == "edited" else sample.response
    return (view, header, image_file(ctx, ws, sample), f"**Instruction:** {sample.instruction}",
            shade_tokens_html(_as_list(row.get("tokens")), _as_list(row.get("surprisals"))),
            proposal, edit, decision_markdown(decision))


def _as_list(value) -> list:
    """Tokens / surprisals as a list (parquet may hand back numpy arrays; missing = [])."""
    return [] if value is None or (isinstance(value, float) and value != value) else list(value)


def decision_markdown(decision) -> str:
    if decision is None:
        return "**Decision:** pending (BYORn decides from the score during training)"
    when = _dt.datetime.fromtimestamp(decision.updated_at).strftime("%Y-%m-%d %H:%M:%S")
    text = f" → “{decision.text}”" if decision.text else ""
    return f"**Decision:** {decision.status}{text} _(saved {when})_"


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


# -- handlers ----------------------------------------------------------------
def select_sample(ctx: AppContext, view: dict, sample_id: str):
    return show_sample(ctx, view, sample_id)


def step(ctx: AppContext, delta: int, view: dict):
    order = view.get("order") or []
    if not order:
        raise gr.Error("The current filter is empty: change it in the Table tab.")
    return show_sample(ctx, view, step_in(order, view.get("current"), delta))


def decide(ctx: AppContext, status: str, view: dict, proposal: str, edit: str, advance: bool):
    """Record a decision on the open sample, then show it (or the next one)."""
    sid = view.get("current")
    if not sid:
        raise gr.Error("Open a sample first (click a point on the map or a table row).")
    ws = ctx.workspace(view)
    if status == "approved":
        text = (proposal or "").strip()
        if not text:
            raise gr.Error("There is no replacement to approve: press 'regenerate' to ask the model "
                           "for one, or write your own text and 'save edit'.")
    elif status == "edited":
        text = (edit or "").strip()
        if not text:
            raise gr.Error("Your text is empty: write the response to train on, or 'drop' the sample.")
    else:
        text = None
    if status == "pending":
        ctx.clear_many(ws, [(sid, 0)])
    else:
        source = reference_source(ws) if status == "approved" else None  # edited: "user"
        ctx.decide_many(ws, [Decision(sid, status, text, source=source)])
    order = view.get("order") or []
    nxt = step_in(order, sid, +1) if advance and status != "pending" and sid in order else sid
    return show_sample(ctx, view, nxt or sid)


def reference_source(ws: Workspace) -> str:
    """The ``source`` of a replacement proposed by this workspace's reference model."""
    return f"reference:{ws.meta.get('model_identity') or 'unknown'}"


def regenerate(ctx: AppContext, view: dict, progress=gr.Progress()):
    """Ask the reference model for a new replacement of the open sample."""
    sid = view.get("current")
    if not sid:
        raise gr.Error("Open a sample first.")
    ws = ctx.workspace(view)
    progress(0.1, desc="loading the reference model")
    try:
        vlm = ws.vlm()
    except Exception as e:
        raise gr.Error(f"Could not load the reference model: {e}") from e
    progress(0.5, desc="sampling a replacement")
    seed = _fresh_seed()  # a new sample each press (and a different one for each reviewer)
    try:
        text = propose_replacements(vlm, ws.dataset, [sid], temperature=0.7, seed=seed).get(sid, "")
    except Exception as e:  # the model failing must not take the page down
        raise gr.Error(f"The reference model could not generate a replacement: {e}") from e
    view.setdefault("proposals", {})[sid] = text
    return view, text


def _fresh_seed() -> int:
    return secrets.randbelow(2**31)


def wire_inspector(ui, ctx: AppContext) -> None:
    i = ui.inspector
    outs = outputs(ui)
    i.goto_id.submit(partial(select_sample, ctx), [ui.view, i.goto_id], outs, api_name="select_sample")
    i.prev_btn.click(partial(step, ctx, -1), [ui.view], outs, api_name="previous_sample")
    i.next_btn.click(partial(step, ctx, +1), [ui.view], outs, api_name="next_sample")
    inputs = [ui.view, i.proposal, i.edit_box, i.advance]
    for btn, status, name in ((i.approve_btn, "approved", "approve"), (i.reject_btn, "rejected", "reject"),
                              (i.drop_btn, "dropped", "drop"), (i.edit_btn, "edited", "edit"),
                              (i.reset_btn, "pending", "reset")):
        btn.click(partial(decide, ctx, status), inputs, outs, api_name=name)
    i.regen_btn.click(partial(regenerate, ctx), [ui.view], [ui.view, i.proposal], api_name="regenerate")


def show_first(ctx: AppContext, view: dict):
    """Open the first sample of the current filter (nothing when the filter is empty)."""
    order = view.get("order") or []
    current = view.get("current")
    return show_sample(ctx, view, current if current in order else (order[0] if order else None))
