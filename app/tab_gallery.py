"""Gallery tab: thumbnails of the current filter or the map selection, most suspicious first.

Each card shows the image (text for a text-only sample), the row's key, its
score, whether it is flagged and its decision; a click (or Enter on a focused
card) opens it in the Inspector, whose previous / next then walk the
gallery's order.  Thumbnails are finished files in the app's image folder
(served as static files, made once per image), 200 to a page.
"""
from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import gradio as gr
import numpy as np

from byorn.decisions import STATUSES

from .context import AppContext
from .images import thumb_path
from .render import card, file_url, gallery
from .similar import OPEN_ITEM_JS
from .showing import extras_event, open_in_inspector, open_outputs
from .state import View
from .views import counts_of, counts_text, unit_of

PAGE = 200
SOURCES = ("current filter", "map selection")


def build_gallery() -> SimpleNamespace:
    gr.Markdown("Thumbnails of the **current filter** (set in the Table tab; flagged turns by default) or of the "
                "**map selection**, most suspicious first. Click one to review it in the Inspector "
                "(keyboard: Tab to a card, Enter to open; then the Inspector's keys).")
    with gr.Row():
        source = gr.Radio(list(SOURCES), value=SOURCES[0], label="show", scale=2, elem_id="gallery-source")
        prev_btn = gr.Button(f"◀ previous {PAGE}", size="sm", scale=1, elem_id="gallery-prev")
        next_btn = gr.Button(f"next {PAGE} ▶", size="sm", scale=1, elem_id="gallery-next")
    info = gr.Markdown(elem_id="gallery-info")
    grid = gr.HTML(elem_id="gallery", js_on_load=OPEN_ITEM_JS)
    return SimpleNamespace(**{k: v for k, v in locals().items()})


def gallery_rows(ctx: AppContext, view: View, source: str) -> np.ndarray:
    """The rows of ``source``, by score, highest first."""
    ws = ctx.workspace(view)
    if source == SOURCES[1]:
        rows = view.selection if view.has_selection else np.zeros(0, dtype=np.int64)
    elif source == SOURCES[0]:
        rows = view.order
    else:
        raise gr.Error(f"Unknown gallery source {source!r}.")
    return rows[np.argsort(-ws.index.score[rows], kind="stable")]


def render(ctx: AppContext, ui, view: View, source: str, delta: int = 0) -> dict:
    """The gallery page (``delta``: pages forward or back from the current one; 0 = first page)."""
    view = View.coerce(view)
    g = ui.gallery
    ws = ctx.workspace(view)
    ix, codes = ws.index, ctx.status_codes(ws)
    rows = gallery_rows(ctx, view, source)
    pages = max(1, -(-len(rows) // PAGE))
    view.gallery_page = 0 if delta == 0 else min(max(view.gallery_page + delta, 0), pages - 1)
    page = rows[view.gallery_page * PAGE:(view.gallery_page + 1) * PAGE]
    cards = []
    for r in page.tolist():
        sample = ws.dataset.by_id(ix.ids[r])
        url = file_url(thumb_path(ctx.images, ws.key, sample))
        cards.append(card(ix.keys[r], float(ix.score[r]), bool(ix.score[r] > view.threshold),
                          STATUSES[int(codes[r])], url, str(ix.table["response"].iat[r])))
    if source == SOURCES[1] and not view.has_selection:
        info = "Nothing selected on the map: draw a lasso or a box on the Overview map, or select a cluster."
    else:
        shown = f"{view.gallery_page * PAGE + 1}-{view.gallery_page * PAGE + len(page)}" if len(page) else "0"
        info = (counts_text(counts_of(ix, codes, view.threshold, rows), source.capitalize(), unit=unit_of(ix))
                + f"  \nshowing {shown} of {len(rows)} (page {view.gallery_page + 1} of {pages}), by score")
    return {ui.view: view, g.info: info, g.grid: gallery(cards)}


def open_card(ctx: AppContext, ui, view: View, source: str, key: str) -> dict:
    view = View.coerce(view)
    walk = (gallery_rows(ctx, view, source), "gallery")
    return open_in_inspector(ctx, ui, view, key, walk)


def wire_gallery(ui, ctx: AppContext) -> None:
    g = ui.gallery
    outs = [ui.view, g.info, g.grid]
    gr.on([ui.tab_gallery.select, g.source.input], partial(_show, ctx, ui, 0), [ui.view, g.source], outs,
          api_name="gallery", show_progress="hidden")
    g.next_btn.click(partial(_show, ctx, ui, +1), [ui.view, g.source], outs, api_name="gallery_next")
    g.prev_btn.click(partial(_show, ctx, ui, -1), [ui.view, g.source], outs, api_name="gallery_previous")

    def on_open(view: View, source: str, evt: gr.EventData):  # a closure: gradio needs the type hint
        return open_card(ctx, ui, view, source, (evt._data or {}).get("key"))

    g.grid.open_item(on_open, [ui.view, g.source], open_outputs(ui),
                     api_name="gallery_open").then(**extras_event(ui, ctx))


def _show(ctx: AppContext, ui, delta: int, view: View, source: str) -> dict:
    return render(ctx, ui, view, source, delta)
