"""Bulk decisions with confirmation, over the current filter (Table) or the map selection (Overview).

Preview counts what would change and shows "confirm" / "cancel"; only
confirm writes, in one transaction, the plan made at preview time (so rows
that moved in or out of the filter meanwhile are not touched by surprise).
Approving uses, per turn, the replacement this user has in hand (picked
candidate or regenerated text), else the best candidate of the run chosen to
propose, else the audit's proposal; turns without any text are skipped and
counted.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import gradio as gr
import numpy as np

from byorn.decisions import Decision

from . import candidates
from .context import AppContext, Workspace
from .state import BulkPlan, View
from .views import unit_of

BULK_ACTIONS = {"approve proposed replacements": "approved", "reject (originals are fine)": "rejected",
                "drop": "dropped", "reset to pending": "pending"}


def build_bulk(title: str, scope: str, can_decide: bool = True, open_: bool = False) -> SimpleNamespace:
    """The accordion: action, preview, then the count and confirm / cancel."""
    with gr.Accordion(title, open=open_):
        with gr.Row():
            action = gr.Dropdown(list(BULK_ACTIONS), value="drop", label="action", scale=2,
                                 elem_id=f"{scope}-bulk-action")
            preview = gr.Button("preview", scale=1, elem_id="bulk-preview" if scope == "filter" else f"{scope}-bulk-preview",
                                interactive=can_decide)
        msg = gr.Markdown(elem_id="bulk-msg" if scope == "filter" else f"{scope}-bulk-msg")
        with gr.Row():
            confirm = gr.Button("confirm", variant="stop", visible=False,
                                elem_id="bulk-confirm" if scope == "filter" else f"{scope}-bulk-confirm")
            cancel = gr.Button("cancel", visible=False,
                               elem_id="bulk-cancel" if scope == "filter" else f"{scope}-bulk-cancel")
    return SimpleNamespace(action=action, preview=preview, msg=msg, confirm=confirm, cancel=cancel, scope=scope)


def outputs(b) -> list:
    return [b.msg, b.confirm, b.cancel]


def hidden(b, msg: str = "") -> dict:
    return {b.msg: msg, b.confirm: gr.Button(visible=False), b.cancel: gr.Button(visible=False)}


def plan(ctx: AppContext, view: View, action: str, rows: np.ndarray, scope: str) -> tuple[BulkPlan, str]:
    """The plan of ``action`` over ``rows`` and the question to confirm (or why there is nothing to do)."""
    if action not in BULK_ACTIONS:
        raise gr.Error(f"Unknown bulk action {action!r}.")
    ws = ctx.workspace(view)
    status = BULK_ACTIONS[action]
    rows = np.asarray(rows, dtype=np.int64)
    skipped = 0
    if status == "approved":
        texts = approved_texts(ctx, view, ws, rows)
        has = np.array([bool(t.strip()) for t, _ in texts], dtype=bool)
        skipped, rows = int((~has).sum()), rows[has]
    unit = unit_of(ws.index)
    where = {"filter": "the current filter", "selection": "the map selection"}[scope]
    if not len(rows):
        extra = " with a proposed replacement" if skipped else ""
        return BulkPlan(status, rows, scope, skipped), f"Nothing to do: {where} has no {unit}{extra}."
    msg = f"This will mark **{len(rows)}** {unit} of {where} as **{status}**"
    if skipped:
        msg += f" ({skipped} without a proposed replacement are skipped)"
    return BulkPlan(status, rows, scope, skipped), msg + ". Decisions already made on them are replaced. Confirm?"


def approved_texts(ctx: AppContext, view: View, ws: Workspace, rows: np.ndarray) -> list[tuple[str, str]]:
    """(text, source) to approve for each row: in-hand proposal, best run candidate, or the audit's."""
    ix = ws.index
    ref = reference_source(ws)
    book = candidates.book(ctx).for_run(ws, view.run) if view.run else {}
    out = []
    for r in rows.tolist():
        key = ix.keys[r]
        held = view.proposals.get(key)
        if held is not None:
            out.append((held.text, held.source))
            continue
        cands = book.get((ix.ids[r], int(ix.turns[r]))) if book else None
        if cands:
            best = min(cands, key=lambda c: c.nll)
            out.append((best.text, candidates.run_source(view.run)))
        else:
            out.append((str(ix.proposed[r] or ""), ref))
    return out


def reference_source(ws: Workspace) -> str:
    """The ``source`` of a replacement proposed by this workspace's reference model."""
    return f"reference:{ws.meta.get('model_identity') or 'unknown'}"


def apply(ctx: AppContext, view: View, p: BulkPlan) -> str:
    """Write the plan (one transaction); returns what was done."""
    ws = ctx.workspace(view)
    ix = ws.index
    keys = [(ix.ids[r], int(ix.turns[r])) for r in p.rows.tolist()]
    if p.status == "pending":
        ctx.clear_many(ws, keys)
    elif p.status == "approved":
        texts = approved_texts(ctx, view, ws, p.rows)
        ctx.decide_many(ws, [Decision(sid, "approved", text, turn=turn, source=src)
                             for (sid, turn), (text, src) in zip(keys, texts)])
    else:
        ctx.decide_many(ws, [Decision(sid, p.status, turn=turn) for sid, turn in keys])
    return f"Done: {len(keys)} {unit_of(ix)} marked {p.status}."


def preview_handler(ctx: AppContext, b, rows_of: Callable[..., np.ndarray]):
    """A handler ``(view, action, *inputs) -> {view, msg, confirm, cancel}``."""
    def handler(view, action, *inputs):
        view = View.coerce(view)
        p, msg = plan(ctx, view, action, rows_of(view, *inputs), b.scope)
        view.bulk = p if len(p.rows) else None
        show = view.bulk is not None
        return {b.ui_view: view, b.msg: msg, b.confirm: gr.Button(visible=show), b.cancel: gr.Button(visible=show)}
    return handler


def confirm_plan(ctx: AppContext, view: View, scope: str) -> str:
    p = view.bulk
    if p is None or p.scope != scope:
        raise gr.Error("Preview the bulk action first.")
    done = apply(ctx, view, p)
    view.bulk = None
    return done


def wire_bulk(b, ui, ctx: AppContext, *, scope: str, api_prefix: str, after: list | None = None) -> None:
    """Preview / confirm / cancel over the map selection (the Table wires its own, with its filter)."""
    b.ui_view = ui.view
    outs = [ui.view, *outputs(b)]

    def rows_of(view):
        if not view.has_selection:
            raise gr.Error("Select points on the map first (lasso or box), or a cluster from the Inspector.")
        return view.selection

    b.preview.click(preview_handler(ctx, b, rows_of), [ui.view, b.action], outs, api_name=f"{api_prefix}_preview")

    def on_confirm(view):
        view = View.coerce(view)
        return {ui.view: view, **hidden(b, confirm_plan(ctx, view, scope))}

    ev = b.confirm.click(on_confirm, [ui.view], outs, api_name=f"{api_prefix}_confirm")
    for fn, inputs, outputs_ in after or []:
        ev = ev.then(fn, inputs, outputs_, api_visibility="private")

    def on_cancel(view):
        view = View.coerce(view)
        view.bulk = None
        return {ui.view: view, **hidden(b, "Cancelled: nothing changed.")}

    b.cancel.click(on_cancel, [ui.view], outs, api_name=f"{api_prefix}_cancel")
