"""Find the siblings: nearest neighbours of the open turn, and its whole cluster selected on the map.

Neighbours come from ``byorn.neighbors.nearest`` over the audit's joint
embeddings (response and image side by side); an audit that kept no
embeddings falls back to the 2-D joint map.  "Select this cluster" puts the
members of the open turn's cluster (``byorn.neighbors.clusters`` /
``cluster_members``) into the map selection and opens the Overview, where the
selection can be decided in bulk (with confirmation).  This module builds and
fills the panel; the Inspector tab wires its events.
"""
from __future__ import annotations

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


