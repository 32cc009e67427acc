"""BYORn Studio, the Gradio front end: one module per tab, no method logic.

:func:`build_app` lays out the tabs (``build_<tab>()`` in ``app/tab_*.py``)
and wires their handlers to the shared :class:`~app.context.AppContext`;
:func:`launch` starts the server with the app's CSS and optional password.
"""
from __future__ import annotations

import os
from functools import partial
from types import SimpleNamespace

import gradio as gr

from . import tab_compare, tab_export, tab_inspector, tab_overview, tab_start, tab_table, tab_train
from .context import AppContext, new_view

CSS = """
.byorn-pixelated img { image-rendering: pixelated; image-rendering: crisp-edges; }
.byorn-tokens { font-family: ui-monospace, monospace; font-size: 1.05rem; line-height: 2;
                white-space: pre-wrap; padding: 6px 0; }
.byorn-tokens .tok { border-radius: 3px; padding: 1px 0; }
.byorn-legend { font-size: 0.8rem; opacity: 0.75; }
"""


def build_app(ctx: AppContext) -> gr.Blocks:
    """The whole app over the shared context (the default workspace opens first)."""
    ui = SimpleNamespace()
    with gr.Blocks(title="BYORn Studio", analytics_enabled=False) as demo:
        ui.view = gr.State(new_view(ctx.workspaces.get(ctx.default_key)))
        gr.Markdown("# BYORn Studio · backdoor audit for vision-language fine-tuning data")
        with gr.Tabs(selected="overview") as ui.tabs:
            with gr.Tab("Data", id="data") as ui.tab_data:
                ui.start = tab_start.build_start()
            with gr.Tab("Overview", id="overview") as ui.tab_overview:
                ui.overview = tab_overview.build_overview()
            with gr.Tab("Table", id="table") as ui.tab_table:
                ui.table = tab_table.build_table()
            with gr.Tab("Inspector", id="inspector") as ui.tab_inspector:
                ui.inspector = tab_inspector.build_inspector()
            with gr.Tab("Train", id="train") as ui.tab_train:
                ui.train = tab_train.build_train()
            with gr.Tab("Compare", id="compare") as ui.tab_compare:
                ui.compare = tab_compare.build_compare()
            with gr.Tab("Export", id="export") as ui.tab_export:
                ui.export = tab_export.build_export()

        tab_overview.wire_overview(ui, ctx)
        tab_table.wire_table(ui, ctx)
        tab_inspector.wire_inspector(ui, ctx)
        tab_train.wire_train(ui, ctx)
        tab_compare.wire_compare(ui, ctx)
        tab_export.wire_export(ui, ctx)
        refreshers = _refreshers(ui, ctx)
        tab_start.wire_start(ui, ctx, refreshers)

        # First view: the user's data description, overview, table, and any running training job.
        load = demo.load(partial(tab_start.describe_view, ctx), [ui.view], [ui.view, ui.start.current],
                         api_name="page_load")
        for fn, inputs, outputs in refreshers:
            load = load.then(fn, inputs, outputs, api_visibility="private")
        demo.load(partial(tab_train.poll, ctx), None,
                  [ui.train.status, ui.train.curve, ui.train.evals, ui.train.timer],
                  api_visibility="private")
    demo.ui = ui  # for tests and scripts
    return demo


def _refreshers(ui, ctx: AppContext) -> list:
    """(fn, inputs, outputs) that redraw the views after the data or threshold changed."""
    o = ui.overview
    return [
        (partial(tab_overview.refresh_overview, ctx), [ui.view, o.embedding, o.color_by],
         tab_overview.overview_outputs(ui)),
        (partial(tab_table.refresh_table, ctx), [ui.view, *tab_table.filter_inputs(ui)],
         [ui.view, ui.table.table, ui.table.counts]),
        (partial(tab_inspector.show_first, ctx), [ui.view], tab_inspector.outputs(ui)),
    ]


def launch(demo: gr.Blocks, ctx: AppContext, **kwargs):
    """Start the server with the app's CSS and the password from ``BYORN_PASSWORD``.

    Server name and port come from ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``
    (Gradio reads them itself when they are not passed here).
    """
    password = os.environ.get("BYORN_PASSWORD")
    if password and "auth" not in kwargs:
        kwargs["auth"] = (os.environ.get("BYORN_USER", "byorn"), password)
        kwargs.setdefault("auth_message", "BYORn Studio: enter the password set in BYORN_PASSWORD.")
    kwargs.setdefault("css", CSS)
    kwargs.setdefault("footer_links", ["api", "gradio"])
    # Uploads above this are refused by the server with a message (zip contents are
    # checked again, uncompressed, by byorn.data.io.extract_upload).
    kwargs.setdefault("max_file_size", os.environ.get("BYORN_MAX_UPLOAD", "500mb"))
    return demo.queue(default_concurrency_limit=4).launch(**kwargs)
