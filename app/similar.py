"""Find the siblings: nearest neighbours of the open turn, and its whole cluster selected on the map.

Neighbours come from ``byorn.neighbors.nearest`` over the audit's joint
embeddings (response and image side by side); an audit that kept no
embeddings falls back to the 2-D joint map.  "Select this cluster" puts the
members of the open turn's cluster (``byorn.neighbors.clusters`` /
``cluster_members``) into the map selection and opens the Overview, where the
selection can be decided in bulk (with confirmation).
"""
from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import gradio as gr
import numpy as np

from byorn.decisions import STATUSES

from .context import AppContext, Workspace
from .images import thumb_path
from .render import card, file_url
from .state import View

K = 10

OPEN_ITEM_JS = r"""
const open = (t) => { if (t && t.dataset.key) trigger('open_item', {key: t.dataset.key}); };
element.addEventListener('click', (e) => open(e.target.closest('[data-key]')));
element.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' || e.key === ' ') { const t = e.target.closest('[data-key]'); if (t) { e.preventDefault(); open(t); } }
});
"""


def build_similar() -> SimpleNamespace:
    with gr.Accordion("Similar samples and their cluster", open=True):
        html = gr.HTML(elem_id="similar", js_on_load=OPEN_ITEM_JS)
        with gr.Row():
            cluster_btn = gr.Button("select this cluster on the map", size="sm", elem_id="select-cluster")
        note = gr.Markdown(elem_id="cluster-msg")
    return SimpleNamespace(html=html, cluster_btn=cluster_btn, note=note)


def outputs(sim) -> list:
    return [sim.html, sim.note]


def points(ws: Workspace) -> tuple[np.ndarray | None, str]:
    """The vectors neighbours are searched in, and what they are."""
    emb = ws.joint_embeddings()
    if emb is not None:
        return emb, "joint embedding"
    x, y = "umap_joint_x", "umap_joint_y"
    if x in ws.table.columns and ws.table[x].notna().all():
        return ws.table[[x, y]].to_numpy(dtype=np.float64), "2-D joint map (this audit kept no embeddings)"
    return None, ""


def neighbours(ws: Workspace, pos: int, k: int = K) -> tuple[list[tuple[int, float]], str]:
    from byorn.neighbors import nearest

    vectors, what = points(ws)
    if vectors is None:
        return [], ""
    return [(int(i), float(s)) for i, s in nearest(vectors, pos, k=k)], what


def similar_outputs(ctx: AppContext, ui, view: View) -> dict:
    sim = ui.inspector.sim
    if not view.current:
        return {sim.html: "", sim.note: ""}
    ws = ctx.workspace(view)
    ix = ws.index
    pos = ix.position(view.current)
    if pos is None:
        return {sim.html: "", sim.note: ""}
    try:
        found, what = neighbours(ws, pos)
    except Exception as e:  # the library failing must not break the Inspector
        return {sim.html: "", sim.note: f"Similar samples unavailable: {e}"}
    if not found:
        return {sim.html: "<em>This audit has no embeddings or map to search.</em>", sim.note: ""}
    codes = ctx.status_codes(ws)
    cards = []
    for i, s in found:
        sample = ws.dataset.by_id(ix.ids[i])
        url = file_url(thumb_path(ctx.images, ws.key, sample))
        cards.append(card(ix.keys[i], float(ix.score[i]), bool(ix.score[i] > view.threshold), STATUSES[int(codes[i])],
                          url, str(ix.table["response"].iat[i]), extra=f"<span title='similarity'>≈{s:.2f}</span>"))
    n_flag = sum(bool(ix.score[i] > view.threshold) for i, _ in found)
    head = (f"<div class='byorn-legend'>{len(found)} nearest in the {what}: {n_flag} flagged. "
            "Click one to open it.</div>")
    return {sim.html: head + "<div class='byorn-similar'>" + "".join(cards) + "</div>", sim.note: ""}


def select_cluster(ctx: AppContext, ui, view: View) -> dict:
    """The open turn's cluster becomes the map selection; the Overview opens on it."""
    from byorn.neighbors import cluster_members

    from . import tab_overview

    view = View.coerce(view)
    if not view.current:
        raise gr.Error("Open a sample first.")
    ws = ctx.workspace(view)
    pos = ws.index.position(view.current)
    try:
        labels = ws.cluster_labels()
    except Exception as e:
        raise gr.Error(f"Could not cluster this audit: {e}") from e
    rows = np.asarray(cluster_members(labels, pos), dtype=np.int64)
    out = tab_overview.set_selection(ctx, ui, view, rows, f"cluster of {view.current}")
    n_flag = int((ws.index.score[rows] > view.threshold).sum()) if len(rows) else 0
    out[ui.inspector.sim.note] = (f"Selected the cluster of `{view.current}` on the map: **{len(rows)}** rows, "
                                  f"{n_flag} flagged. Decide on them in bulk under the map (Overview).")
    out[ui.tabs] = gr.Tabs(selected="overview")
    return out


def wire_similar(ui, ctx: AppContext, then: dict) -> None:
    from . import tab_inspector, tab_overview

    sim = ui.inspector.sim
    o = ui.overview

    def on_open(view: View, evt: gr.EventData):  # a closure: gradio needs the type hint
        return tab_inspector.to_outputs(ui, tab_inspector.show_sample(ctx, view, (evt._data or {}).get("key")))

    sim.html.open_item(on_open, [ui.view], tab_inspector.outputs(ui), api_name="open_similar").then(**then)
    sel_outs = [ui.view, o.selection, o.sink, *tab_overview.bulk.outputs(o.sel_bulk)]
    sim.cluster_btn.click(partial(select_cluster, ctx, ui), [ui.view], [*sel_outs, sim.note, ui.tabs],
                          api_name="select_cluster")
