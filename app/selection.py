"""The map selection: the rows this user picked on the Overview map (a lasso, a box) or as a cluster.

Kept in the view (``view.selection``); the Overview draws and decides it in
bulk, the Inspector's "select this cluster" sets it, and the Table, the
Gallery, the Export tab and proposals can be limited to it.  The tabs import
this module; it imports no tab.
"""
from __future__ import annotations

import numpy as np

from . import bulk
from .context import AppContext
from .plots import selection_payload
from .state import View
from .views import counts_of, counts_text, unit_of


def selection_outputs(ui) -> list:
    """The components :func:`set_selection` fills: the view, the counts, the map's selection sink, the bulk panel."""
    o = ui.overview
    return [ui.view, o.selection, o.sink, *bulk.outputs(o.sel_bulk)]


def selection_summary(ctx: AppContext, view: View) -> str:
    ws = ctx.workspace(view)
    if not view.has_selection:
        return ""
    ix = ws.index
    c = counts_of(ix, ctx.status_codes(ws), view.threshold, view.selection)
    how = f" · by {view.selection_label}" if view.selection_label else ""
    return counts_text(c, "Selection", unit=unit_of(ix)) + how


def set_selection(ctx: AppContext, ui, view: View, rows: np.ndarray | None, label: str, draw: bool = True) -> dict:
    """Make ``rows`` this user's map selection; ``draw``: also highlight them on the map."""
    o = ui.overview
    view.selection = None if rows is None or not len(rows) else np.asarray(rows, dtype=np.int64)
    view.selection_label = label if view.has_selection else ""
    view.bulk = None
    out = {ui.view: view, o.selection: selection_summary(ctx, view), **bulk.hidden(o.sel_bulk)}
    if draw:
        ws = ctx.workspace(view)
        out[o.sink] = selection_payload(view.selection, ws.index.n, rev=_rev(), label=view.selection_label)
    return out


_counter = iter(range(1, 1 << 62))


def _rev() -> int:
    return next(_counter)  # a fresh value each time, so the browser always redraws the selection


def clear_selection(ctx: AppContext, ui, view: View):
    return set_selection(ctx, ui, View.coerce(view), None, "")
