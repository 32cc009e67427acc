"""Table tab: every assistant turn, filtered, sorted and paged on the server; bulk decisions over the filter.

The filter set here is "the current filter": the Gallery shows it, the
Inspector's previous / next walk its order, and bulk actions apply to all of
its rows.  Filtering runs over the workspace's column arrays
(:mod:`app.index`) and only the page shown (50 rows) is sent to the browser,
so it stays fast at 100k rows.  "Only the map selection" narrows the filter
to the points selected on the Overview map.
"""
from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import gradio as gr

from byorn.decisions import STATUSES

from . import bulk
from .context import AppContext
from .showing import extras_event, open_in_inspector, open_outputs
from .state import Filter, View
from .views import (FLAG_CHOICES, PAGE_SIZE, SORT_CHOICES, counts_of, counts_text, filter_rows, page_frame,
                    page_of, parse_bound, unit_of)

BULK_ACTIONS = bulk.BULK_ACTIONS


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
        in_selection = gr.Checkbox(value=False, label="only the map selection", scale=1, elem_id="in-selection")
        apply_btn = gr.Button("apply filter", scale=1, elem_id="apply-filter")
    counts = gr.Markdown(elem_id="table-counts")
    table = gr.Dataframe(interactive=False, wrap=True, max_height=560, elem_id="sample-table",
                         show_search="none")
    with gr.Row():
        prev_page = gr.Button("◀ previous page", size="sm", elem_id="page-prev")
        page = gr.Number(value=1, precision=0, minimum=1, label="page", scale=0, min_width=90, elem_id="page-number")
        next_page = gr.Button("next page ▶", size="sm", elem_id="page-next")
    fb = bulk.build_bulk("Bulk decision over the current filter", "filter", can_decide)
    # the names the tests and other tabs use
    bulk_action, bulk_preview, bulk_msg, bulk_confirm, bulk_cancel = fb.action, fb.preview, fb.msg, fb.confirm, fb.cancel
    return SimpleNamespace(**{k: v for k, v in locals().items()})


def filter_inputs(ui) -> list:
    t = ui.table
    return [t.score_min, t.score_max, t.flag, t.decisions, t.search, t.sort_by, t.descending, t.in_selection]


def make_filter(score_min, score_max, flag, decisions, search, sort_by, descending, in_selection=False) -> Filter:
    """The form as a :class:`Filter` (raises gr.Error naming a bad box)."""
    try:
        return Filter(score_min=parse_bound(score_min, "score ≥"), score_max=parse_bound(score_max, "score ≤"),
                      flag=flag or "all", decisions=tuple(decisions or ()), search=search or "",
                      in_selection=bool(in_selection), sort_by=sort_by or "score", descending=bool(descending))
    except ValueError as e:
        raise gr.Error(str(e)) from e


def current_rows(ctx: AppContext, view: View, *filters):
    """Rows of the filter in the form, in its order (raises gr.Error on a bad filter)."""
    f = make_filter(*filters)
    ws = ctx.workspace(view)
    if f.in_selection and not view.has_selection:
        raise gr.Error("Nothing is selected on the map: draw a lasso or a box there first, or untick "
                       "'only the map selection'.")
    try:
        return f, filter_rows(ws.index, ctx.status_codes(ws), view.threshold, f, view.selection)
    except ValueError as e:
        raise gr.Error(str(e)) from e


def refresh_table(ctx: AppContext, view: View, *filters):
    """Apply the filter: the first page, counts, and the order the Inspector and Gallery follow."""
    view = View.coerce(view)
    f, rows = current_rows(ctx, view, *filters)
    view.filter, view.order, view.page = f, rows, 0
    view.walk, view.walk_label = rows, "current filter"
    return show_page(ctx, view)


def show_page(ctx: AppContext, view: View):
    """(view, rows of the current page, counts markdown)."""
    ws = ctx.workspace(view)
    ix, codes = ws.index, ctx.status_codes(ws)
    rows, view.page, pages = page_of(view.order, view.page)
    unit = unit_of(ix)
    first = view.page * PAGE_SIZE
    where = (f"  \nrows {first + 1}-{first + len(rows)} of {len(view.order)} · page **{view.page + 1}** of {pages}"
             if len(view.order) else "")
    md = (counts_text(counts_of(ix, codes, view.threshold, view.order), "Current filter", unit) + where
          + "  \n" + counts_text(counts_of(ix, codes, view.threshold), "All", unit))
    return view, page_frame(ix, codes, view.threshold, rows), md


def go_page(ctx: AppContext, ui, how: str, view: View, number=None) -> dict:
    """Previous / next page, or page ``number`` (1-based)."""
    view = View.coerce(view)
    if how == "next":
        view.page += 1
    elif how == "previous":
        view.page -= 1
    else:
        view.page = int(number or 1) - 1
    view, frame, md = show_page(ctx, view)
    t = ui.table
    return {ui.view: view, t.table: frame, t.counts: md, t.page: view.page + 1}


def open_row(ctx: AppContext, ui, view: View, evt: gr.SelectData) -> dict:
    """A click on a row opens it (by the key in the row, not the visual index)."""
    row = evt.row_value or []
    if not row:
        raise gr.Error("Could not read the selected row; click a cell of the row again.")
    view = View.coerce(view)
    walk = (view.order, "current filter")
    return open_in_inspector(ctx, ui, view, str(row[0]), walk)


def wire_table(ui, ctx: AppContext) -> None:
    t = ui.table
    filters = filter_inputs(ui)
    outs = [ui.view, t.table, t.counts]
    refresh = partial(refresh_table, ctx)
    t.apply_btn.click(refresh, [ui.view, *filters], outs, api_name="filter_table")
    gr.on([t.search.submit, t.score_min.submit, t.score_max.submit, t.flag.input, t.decisions.input,
           t.sort_by.input, t.descending.input, t.in_selection.input, ui.tab_table.select],
          refresh, [ui.view, *filters], outs, api_visibility="private")
    page_outs = [ui.view, t.table, t.counts, t.page]
    t.next_page.click(partial(go_page, ctx, ui, "next"), [ui.view], page_outs, api_name="next_page")
    t.prev_page.click(partial(go_page, ctx, ui, "previous"), [ui.view], page_outs, api_name="previous_page")
    t.page.submit(partial(go_page, ctx, ui, "number"), [ui.view, t.page], page_outs, api_name="table_page")

    def on_row_select(view: View, evt: gr.SelectData):  # a closure: gradio needs the type hint
        return open_row(ctx, ui, view, evt)

    t.table.select(on_row_select, [ui.view], open_outputs(ui),
                   api_name="open_row").then(**extras_event(ui, ctx))
    wire_bulk(ui, ctx, filters)


def wire_bulk(ui, ctx: AppContext, filters: list) -> None:
    fb = ui.table.fb
    fb.ui_view = ui.view
    t = ui.table

    def rows_of(view, *form):
        return current_rows(ctx, view, *form)[1]

    fb.preview.click(bulk.preview_handler(ctx, fb, rows_of), [ui.view, fb.action, *filters],
                     [ui.view, *bulk.outputs(fb)], api_name="bulk_preview")

    def on_confirm(view, *form):
        view = View.coerce(view)
        done = bulk.confirm_plan(ctx, view, "filter")
        view, frame, md = refresh_table(ctx, view, *form)
        return {ui.view: view, t.table: frame, t.counts: md, **bulk.hidden(fb, done)}

    fb.confirm.click(on_confirm, [ui.view, *filters], [ui.view, t.table, t.counts, *bulk.outputs(fb)],
                     api_name="bulk_confirm")

    def on_cancel(view):
        view = View.coerce(view)
        view.bulk = None
        return {ui.view: view, **bulk.hidden(fb, "Cancelled: nothing changed.")}

    fb.cancel.click(on_cancel, [ui.view], [ui.view, *bulk.outputs(fb)], api_name="bulk_cancel")
