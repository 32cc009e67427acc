"""Overview tab: score histogram with the threshold, counts, the WebGL sample map and its selection.

The map draws every row (assistant turn) of the audit table; a click opens
the row in the Inspector, a lasso or box selection becomes "the map
selection" (kept in the view), which the Table, the Gallery, the Export tab
and the bulk decision below can use.
"""
from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import gradio as gr

from byorn.split import AUTO, PAPER_P, SPLIT_KINDS

from . import bulk
from .context import AppContext
from .plotly_html import clickable_plot, selection_sink
from .plots import EMBEDDINGS, histogram_figure, map_payload, payload_json, rows_from_mask
from .selection import clear_selection, selection_outputs, selection_summary, set_selection
from .showing import extras_event, open_in_inspector, open_outputs
from .state import DEFAULT_PERCENTILE, View
from .views import counts_of, counts_text, split_text, threshold_at, unit_of


def build_overview(color_choices: list[str]) -> SimpleNamespace:
    title = gr.Markdown(elem_id="overview-title")
    with gr.Row():
        mode = gr.Radio(list(SPLIT_KINDS), value="percentile", scale=1, elem_id="threshold-mode",
                        label="set the threshold by (auto: read off the score distribution)")
        percentile = gr.Slider(0.0, 1.0, value=DEFAULT_PERCENTILE, step=0.01, scale=2, elem_id="threshold-percentile",
                               label=f"percentile p (samples above the p-quantile are flagged; paper: {PAPER_P:g})")
        value = gr.Number(label="threshold value (score)", scale=1, elem_id="threshold-value")
        apply_btn = gr.Button("apply threshold", scale=1, elem_id="apply-threshold")
    counts = gr.Markdown(elem_id="overview-counts")
    histogram = clickable_plot(330, elem_id="histogram")
    with gr.Row():
        embedding = gr.Radio(list(EMBEDDINGS), value="joint", label="map of the embedding of", scale=1)
        color_by = gr.Dropdown(color_choices, value="ground truth" if "ground truth" in color_choices else "score",
                               label="colour by (any numeric column of the audit table)", scale=1,
                               elem_id="color-by")
    gr.Markdown("Click a point to open it in the Inspector. Draw a lasso or a box to select a region "
                "(pan / zoom from the map's toolbar, scroll to zoom); the selection can be decided in bulk "
                "below, browsed in the Gallery, filtered in the Table and exported.")
    sample_map = clickable_plot(560, elem_id="sample-map", toolbar=True)
    sink = selection_sink()
    selection = gr.Markdown(elem_id="selection-counts")
    with gr.Row():
        to_gallery = gr.Button("show the selection in the Gallery", size="sm", elem_id="selection-gallery")
        clear_btn = gr.Button("clear the selection", size="sm", elem_id="selection-clear")
    sel_bulk = bulk.build_bulk("Bulk decision over the map selection", "selection")
    return SimpleNamespace(**{k: v for k, v in locals().items()})


def overview_outputs(ui) -> list:
    o = ui.overview
    return [ui.view, o.title, o.counts, o.histogram, o.sample_map, o.percentile, o.value, o.mode]


def refresh_overview(ctx: AppContext, view: View, embedding: str, color_by: str):
    """Title, counts, histogram, map and threshold widgets for this user's workspace and threshold."""
    view = View.coerce(view)
    ws = ctx.workspace(view)
    ix, codes = ws.index, ctx.status_codes(ws)
    unit = unit_of(ix)
    n_samples = len(ws.dataset)
    size = f"{n_samples} samples" + (f", {ix.n} assistant turns" if ix.multi_turn else "")
    title = (f"### {ws.name}\n{size} · dataset `{ws.fingerprint}` · "
             f"model `{ws.meta.get('model_identity', '?')}`")
    try:
        fig = map_payload(ix, codes, view.threshold, embedding or "joint", color_by or "score")
    except ValueError as e:
        raise gr.Error(str(e)) from e
    auto, paper = ws.auto_split(), threshold_at(ix.score, PAPER_P)
    score = ws.score_method
    hist = histogram_figure(ix, view.threshold, marks={"auto": auto.threshold, f"paper (p = {PAPER_P:g})": paper},
                            score=score)
    counts = counts_text(counts_of(ix, codes, view.threshold), unit=unit)
    mode = view.split_spec().kind
    return (view, title, f"{counts}\n\n{split_text(view.split_spec(), ix.score, auto, paper, score)}",
            payload_json(hist), payload_json(fig),
            view.percentile if view.percentile is not None else gr.Slider(), round(view.threshold, 4), mode)


def set_threshold(ctx: AppContext, view: View, mode: str, percentile: float, value: float | None,
                  embedding: str, color_by: str):
    """Move this user's split threshold (adaptive, by percentile or by score value)."""
    view = View.coerce(view)
    ws = ctx.workspace(view)
    if mode == AUTO:
        view.split, view.threshold = AUTO, float(ws.auto_split().threshold)
    elif mode == "value":
        if value is None:
            raise gr.Error("Type a threshold value, or set it by percentile.")
        view.threshold, view.percentile, view.split = float(value), None, "value"
    else:
        if percentile is None or not 0.0 <= float(percentile) <= 1.0:
            raise gr.Error("The percentile must be between 0 and 1.")
        view.percentile, view.split = float(percentile), "percentile"
        view.threshold = threshold_at(ws.index.score, float(percentile))
    return refresh_overview(ctx, view, embedding, color_by)


def open_point(ctx: AppContext, ui, view: View, evt: gr.EventData):
    """A map click: open that row (``{row}`` from the map; ``{sample_id}`` from API clients)."""
    data = evt._data or {}
    view = View.coerce(view)
    ws = ctx.workspace(view)
    row = data.get("row")
    if row is not None and 0 <= int(row) < ws.index.n:
        name = ws.index.keys[int(row)]
    else:
        name = data.get("sample_id") or data.get("key")
    if not name:
        raise gr.Error("The clicked point carried no row.")
    return open_in_inspector(ctx, ui, view, str(name), walk=None)


def select_points(ctx: AppContext, ui, view: View, evt: gr.EventData):
    """A lasso / box selection on the map (a bitmask over the rows; API clients may send ``ids``)."""
    data = evt._data or {}
    view = View.coerce(view)
    ws = ctx.workspace(view)
    if data.get("mask") is not None:
        rows = rows_from_mask(str(data.get("mask") or ""), ws.index.n)
    else:
        rows = ws.index.positions_of(data.get("ids") or data.get("keys") or [])
    return set_selection(ctx, ui, view, rows, str(data.get("how") or "map"), draw=False)


def wire_overview(ui, ctx: AppContext) -> None:
    o = ui.overview
    outs = overview_outputs(ui)
    o.apply_btn.click(partial(set_threshold, ctx),
                      [ui.view, o.mode, o.percentile, o.value, o.embedding, o.color_by], outs,
                      api_name="set_threshold")
    refresh = partial(refresh_overview, ctx)
    gr.on([o.embedding.input, o.color_by.input], refresh, [ui.view, o.embedding, o.color_by], outs,
          api_visibility="private")
    ui.tab_overview.select(refresh, [ui.view, o.embedding, o.color_by], outs, api_name="refresh_overview")

    # Named closures, not partials: gradio finds the EventData parameter by type hint.
    def on_point_click(view: View, evt: gr.EventData):
        return open_point(ctx, ui, view, evt)

    def on_points_selected(view: View, evt: gr.EventData):
        return select_points(ctx, ui, view, evt)

    sel_outs = selection_outputs(ui)
    o.sample_map.point_click(on_point_click, [ui.view], open_outputs(ui),
                             api_name="map_click").then(**extras_event(ui, ctx))
    o.sample_map.points_selected(on_points_selected, [ui.view], sel_outs, api_name="map_select",
                                 show_progress="hidden")
    o.clear_btn.click(partial(clear_selection, ctx, ui), [ui.view], sel_outs, api_name="clear_selection")
    bulk.wire_bulk(o.sel_bulk, ui, ctx, scope="selection", api_prefix="selection_bulk",
                   after=[(partial(_after_bulk, ctx, ui), [ui.view, o.embedding, o.color_by],
                           [o.selection, o.counts, o.sample_map])])


def _after_bulk(ctx: AppContext, ui, view: View, embedding: str, color_by: str) -> dict:
    """After a bulk decision: the selection's counts, the totals, and the map (its colours may be decisions)."""
    view = View.coerce(view)
    o = ui.overview
    _, _, counts, _, fig, *_ = refresh_overview(ctx, view, embedding, color_by)
    out = {o.selection: selection_summary(ctx, view), o.counts: counts}
    if color_by == "decision":
        out[o.sample_map] = fig
    return out
