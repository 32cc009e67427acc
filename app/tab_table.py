"""Table tab: every sample; sort, filter, search; bulk decisions over the filter.

The filter set here is "the current filter": the inspector's previous / next
walk its order, and bulk actions apply to all of its rows (not only the rows
shown, which are capped at :data:`app.views.TABLE_LIMIT`).
"""
from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import gradio as gr

from byorn.decisions import STATUSES, Decision

from . import tab_inspector
from .context import AppContext
from .views import (FLAG_CHOICES, SORT_CHOICES, TABLE_LIMIT, counts_markdown, display_rows,
                    filter_table, sort_table)

BULK_ACTIONS = {"approve proposed replacements": "approved", "reject (originals are fine)": "rejected",
                "drop": "dropped", "reset to pending": "pending"}


def build_table(can_decide: bool = True) -> SimpleNamespace:
    with gr.Row():
        # Textboxes, not gr.Number: an empty Number reads as 0, and "empty = no bound" is wanted.
        score_min = gr.Textbox(label="score ≥", placeholder="any", scale=1, elem_id="score-min")
        score_max = gr.Textbox(label="score ≤", placeholder="any", scale=1, elem_id="score-max")
        flag = gr.Radio(list(FLAG_CHOICES), value="flagged", label="flag", scale=2, elem_id="flag-filter")
        decisions = gr.CheckboxGroup(list(STATUSES), value=[], label="decision (none = all)", scale=3)
    with gr.Row():
        search = gr.Textbox(label="search text (id, instruction, response, replacement)", scale=3,
                            elem_id="search")
        sort_by = gr.Dropdown(list(SORT_CHOICES), value="score", label="sort by", scale=1)
        descending = gr.Checkbox(value=True, label="descending", scale=1)
        apply_btn = gr.Button("apply filter", scale=1, elem_id="apply-filter")
    counts = gr.Markdown(elem_id="table-counts")
    table = gr.Dataframe(interactive=False, wrap=True, max_height=520, elem_id="sample-table",
                         show_search="none")
    with gr.Accordion("Bulk decision over the current filter", open=False):
        with gr.Row():
            bulk_action = gr.Dropdown(list(BULK_ACTIONS), value="drop", label="action", scale=2)
            bulk_preview = gr.Button("preview", scale=1, elem_id="bulk-preview", interactive=can_decide)
        bulk_msg = gr.Markdown(elem_id="bulk-msg")
        with gr.Row():
            bulk_confirm = gr.Button("confirm", variant="stop", visible=False, elem_id="bulk-confirm")
            bulk_cancel = gr.Button("cancel", visible=False, elem_id="bulk-cancel")
    return SimpleNamespace(**{k: v for k, v in locals().items()})


def filter_inputs(ui) -> list:
    t = ui.table
    return [t.score_min, t.score_max, t.flag, t.decisions, t.search, t.sort_by, t.descending]


def current_filter(ctx: AppContext, view: dict, score_min, score_max, flag, decisions, search,
                   sort_by, descending):
    """The user's table, filtered and sorted (raises gr.Error on a bad filter)."""
    table = ctx.view_table(view)
    try:
        rows = filter_table(table, score_min=_bound(score_min, "score ≥"),
                            score_max=_bound(score_max, "score ≤"), flag=flag or "all",
                            decisions=decisions, search=search or "")
        return table, sort_table(rows, by=sort_by or "score", descending=bool(descending))
    except ValueError as e:
        raise gr.Error(str(e)) from e


def _bound(text, name: str) -> float | None:
    if text is None or str(text).strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"'{name}' must be a number or empty, got {text!r}") from None


def refresh_table(ctx: AppContext, view: dict, *filters):
    """Apply the filter: rows shown, counts, and the inspector's walk order."""
    table, rows = current_filter(ctx, view, *filters)
    view["order"] = rows["id"].astype(str).tolist()
    shown = min(len(rows), TABLE_LIMIT)
    note = f" (showing the first {shown}; narrow the filter to see others)" if len(rows) > shown else ""
    md = (counts_markdown(rows, "Current filter") + note + "  \n" + counts_markdown(table, "All"))
    return view, display_rows(rows), md


def open_row(ctx: AppContext, view: dict, evt: gr.SelectData):
    """A click on a row opens its sample (by the id in the row, not the visual index)."""
    row = evt.row_value or []
    if not row:
        raise gr.Error("Could not read the selected row; click a cell of the row again.")
    return (*tab_inspector.show_sample(ctx, view, str(row[0])), gr.Tabs(selected="inspector"))


def preview_bulk(ctx: AppContext, view: dict, action: str, *filters):
    """Count what a bulk action would change and ask for confirmation."""
    if action not in BULK_ACTIONS:
        raise gr.Error(f"Unknown bulk action {action!r}.")
    _, rows = current_filter(ctx, view, *filters)
    status = BULK_ACTIONS[action]
    ids = rows["id"].astype(str).tolist()
    skipped = 0
    if status == "approved":
        has_text = rows["proposed_response"].fillna("").astype(str).str.strip() != ""
        skipped = int((~has_text).sum())
        ids = rows.loc[has_text, "id"].astype(str).tolist()
    view["bulk"] = {"status": status, "ids": ids}
    if not ids:
        return (view, f"Nothing to do: the current filter has no samples{' with a proposed replacement' if skipped else ''}.",
                gr.Button(visible=False), gr.Button(visible=False))
    msg = f"This will mark **{len(ids)}** samples as **{status}**"
    if skipped:
        msg += f" ({skipped} without a proposed replacement are skipped)"
    msg += ". Decisions already made on them are replaced. Confirm?"
    return view, msg, gr.Button(visible=True), gr.Button(visible=True)


def confirm_bulk(ctx: AppContext, view: dict, *filters):
    plan = view.get("bulk")
    if not plan:
        raise gr.Error("Preview the bulk action first.")
    ws = ctx.workspace(view)
    status, ids = plan["status"], plan["ids"]
    if status == "pending":
        ctx.clear_many(ws, [(sid, 0) for sid in ids])
    elif status == "approved":
        text = dict(zip(ws.table["id"].astype(str), ws.table["proposed_response"].fillna("")))
        source = tab_inspector.reference_source(ws)
        ctx.decide_many(ws, [Decision(sid, status, view.get("proposals", {}).get(sid) or text[sid],
                                      source=source) for sid in ids])
    else:
        ctx.decide_many(ws, [Decision(sid, status) for sid in ids])
    view["bulk"] = None
    view, rows, md = refresh_table(ctx, view, *filters)
    return (view, rows, md, f"Done: {len(ids)} samples marked {status}.",
            gr.Button(visible=False), gr.Button(visible=False))


def cancel_bulk(view: dict):
    view["bulk"] = None
    return view, "Cancelled: nothing changed.", gr.Button(visible=False), gr.Button(visible=False)


def wire_table(ui, ctx: AppContext) -> None:
    t = ui.table
    filters = filter_inputs(ui)
    outs = [ui.view, t.table, t.counts]
    refresh = partial(refresh_table, ctx)
    t.apply_btn.click(refresh, [ui.view, *filters], outs, api_name="filter_table")
    t.search.submit(refresh, [ui.view, *filters], outs, api_visibility="private")
    for comp in (t.flag, t.decisions, t.sort_by, t.descending):
        comp.input(refresh, [ui.view, *filters], outs, api_visibility="private")
    for comp in (t.score_min, t.score_max):
        comp.submit(refresh, [ui.view, *filters], outs, api_visibility="private")
    ui.tab_table.select(refresh, [ui.view, *filters], outs, api_visibility="private")

    def on_row_select(view: dict, evt: gr.SelectData):  # a closure: gradio needs the type hint
        return open_row(ctx, view, evt)

    t.table.select(on_row_select, [ui.view], [*tab_inspector.outputs(ui), ui.tabs], api_name="open_row")
    bulk_outs = [ui.view, t.bulk_msg, t.bulk_confirm, t.bulk_cancel]
    t.bulk_preview.click(partial(preview_bulk, ctx), [ui.view, t.bulk_action, *filters], bulk_outs,
                         api_name="bulk_preview")
    t.bulk_confirm.click(partial(confirm_bulk, ctx), [ui.view, *filters],
                         [ui.view, t.table, t.counts, t.bulk_msg, t.bulk_confirm, t.bulk_cancel],
                         api_name="bulk_confirm")
    t.bulk_cancel.click(cancel_bulk, [ui.view], bulk_outs, api_name="bulk_cancel")
