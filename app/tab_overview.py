"""Overview tab: score histogram with the threshold, counts, clickable sample map."""
from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import gradio as gr

from . import tab_inspector
from .context import AppContext
from .plotly_html import clickable_plot
from .plots import COLOR_BY, EMBEDDINGS, figure_json, histogram_figure, map_figure
from .views import counts_markdown, threshold_at


def build_overview() -> SimpleNamespace:
    title = gr.Markdown(elem_id="overview-title")
    with gr.Row():
        mode = gr.Radio(["percentile", "value"], value="percentile", label="set the threshold by",
                        scale=1, elem_id="threshold-mode")
        percentile = gr.Slider(0.0, 1.0, value=0.6, step=0.01, scale=2, elem_id="threshold-percentile",
                               label="percentile p (samples above the p-quantile are flagged; paper: 0.6)")
        value = gr.Number(label="threshold value (score)", scale=1, elem_id="threshold-value")
        apply_btn = gr.Button("apply threshold", scale=1, elem_id="apply-threshold")
    counts = gr.Markdown(elem_id="overview-counts")
    # Drawn by the same page-wide plotly.js as the map: a gr.Plot would load a second copy (~1.5 s).
    histogram = clickable_plot(330, elem_id="histogram")
    with gr.Row():
        embedding = gr.Radio(list(EMBEDDINGS), value="joint", label="map of the embedding of", scale=1)
        color_by = gr.Radio(list(COLOR_BY), value="ground truth", label="colour by", scale=2)
    gr.Markdown("Click a point to open it in the Inspector; draw a box or lasso to count a region.")
    sample_map = clickable_plot(560, elem_id="sample-map")
    selection = gr.Markdown(elem_id="selection-counts")
    return SimpleNamespace(**{k: v for k, v in locals().items()})


def overview_outputs(ui) -> list:
    o = ui.overview
    return [ui.view, o.title, o.counts, o.histogram, o.sample_map, o.percentile, o.value]


def refresh_overview(ctx: AppContext, view: dict, embedding: str, color_by: str):
    ws = ctx.workspace(view)
    table = ctx.view_table(view)
    title = (f"### {ws.name}\n{len(table)} samples · dataset `{ws.fingerprint}` · "
             f"model `{ws.meta.get('model_identity', '?')}`")
    return (view, title, counts_markdown(table), figure_json(histogram_figure(table, view["threshold"])),
            figure_json(map_figure(table, embedding, color_by)),
            view["percentile"] if view.get("percentile") is not None else gr.Slider(),
            round(view["threshold"], 4))


def set_threshold(ctx: AppContext, view: dict, mode: str, percentile: float, value: float | None,
                  embedding: str, color_by: str):
    """Move this user's split threshold (by percentile or by score value)."""
    ws = ctx.workspace(view)
    if mode == "value":
        if value is None:
            raise gr.Error("Type a threshold value, or set it by percentile.")
        view["threshold"], view["percentile"] = float(value), None
    else:
        if percentile is None or not 0.0 <= float(percentile) <= 1.0:
            raise gr.Error("The percentile must be between 0 and 1.")
        view["percentile"] = float(percentile)
        view["threshold"] = threshold_at(ws.table["score"], float(percentile))
    return refresh_overview(ctx, view, embedding, color_by)


def open_point(ctx: AppContext, view: dict, evt: gr.EventData):
    sample_id = getattr(evt, "sample_id", None) or (evt._data or {}).get("sample_id")
    if not sample_id:
        raise gr.Error("The clicked point carried no sample id.")
    return (*tab_inspector.show_sample(ctx, view, sample_id), gr.Tabs(selected="inspector"))


def count_selection(ctx: AppContext, view: dict, evt: gr.EventData):
    ids = list(getattr(evt, "ids", None) or (evt._data or {}).get("ids") or [])
    view["selection"] = ids
    if not ids:
        return view, ""
    table = ctx.view_table(view)
    return view, counts_markdown(table[table["id"].isin(set(ids))], "Selection")


def wire_overview(ui, ctx: AppContext) -> None:
    o = ui.overview
    outs = overview_outputs(ui)
    o.apply_btn.click(partial(set_threshold, ctx),
                      [ui.view, o.mode, o.percentile, o.value, o.embedding, o.color_by], outs,
                      api_name="set_threshold")
    refresh = partial(refresh_overview, ctx)
    for comp in (o.embedding, o.color_by):
        comp.input(refresh, [ui.view, o.embedding, o.color_by], outs, api_visibility="private")
    ui.tab_overview.select(refresh, [ui.view, o.embedding, o.color_by], outs, api_name="refresh_overview")

    # Named closures, not partials: gradio finds the EventData parameter by type hint.
    def on_point_click(view: dict, evt: gr.EventData):
        return open_point(ctx, view, evt)

    def on_points_selected(view: dict, evt: gr.EventData):
        return count_selection(ctx, view, evt)

    o.sample_map.point_click(on_point_click, [ui.view], [*tab_inspector.outputs(ui), ui.tabs],
                             api_name="map_click")
    o.sample_map.points_selected(on_points_selected, [ui.view], [ui.view, o.selection],
                                 api_name="map_select")
