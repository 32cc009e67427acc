"""Plotly charts whose clicks and selections reach Python: ``gr.HTML`` + ``js_on_load``.

``gr.Plot`` has no click event, so the histogram and the sample map are drawn
by plotly.js inside custom ``gr.HTML`` components.  A component's value is
JSON: a plotly.js figure ``{data, layout}`` (histogram), or a map payload
(``kind: "map"``, :func:`app.plots.map_payload`) from which the script
(``assets/web/map.js``, loaded by the page next to plotly.js) builds one WebGL
``scattergl`` trace whose point ``i`` is row ``i`` of the audit table.

The map's own toolbar picks the drag mode: **lasso** and **box** selections
are drawn by this script (an SVG outline; points are tested once, on release,
against the coordinates it already holds), because plotly.js recomputes and
redraws the selection on every mouse move, which takes ~1 s a move at 100k
points on a CPU-rendered browser.  **pan** and **zoom** are plotly's own.
Python hears ``point_click`` (``{row}``) and ``points_selected`` (``{mask,
count}``: a base64 bitmask over the rows, ~17 KB for 100k rows) through
``comp.point_click(fn)`` / ``comp.points_selected(fn)`` and ``gr.EventData``.
A second component (:func:`selection_sink`) carries selections made on the
server (a cluster, a filter) to the map.

plotly.js is the *gl2d* bundle (``scatter``, ``scattergl``, ``splom``,
``parcoords``; 1.6 MB) from the npm package ``plotly.js-gl2d-dist-min``
3.7.0 (MIT licence, ``assets/vendor/plotly-gl2d.LICENSE``), served by the
Gradio server itself (``gr.set_static_paths``), so the page works offline and
on a Space without a CDN.  The newest bundles (4.x) put ``scattergl`` only in
the full 4.6 MB build; the histogram is therefore drawn with ``scatter``.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

ASSETS = Path(__file__).resolve().parent.parent / "assets"
PLOTLY_JS = ASSETS / "vendor" / "plotly-gl2d.min.js"
MAP_JS = ASSETS / "web" / "map.js"  # the charts' own script: drawing, clicks, lasso / box selection


def plotly_head() -> str:
    """``<script>`` tags loading plotly.js and the charts' script from this server (relative URLs: they work
    behind a proxy, on a Space and offline)."""
    gr.set_static_paths([str(PLOTLY_JS.parent), str(MAP_JS.parent)])
    return "".join(f'<script src="gradio_api/file={js.as_posix()}"></script>' for js in (PLOTLY_JS, MAP_JS))


_JS = r"""
// map.js triggers 'point_click' and 'points_selected' (Gradio finds a component's events by their names here)
const start = () => {  // the page loads map.js before this runs; wait for it anyway, as for plotly.js
  if (typeof window.byornPlot === 'undefined') { setTimeout(start, 50); return; }
  window.byornPlot(element, trigger, props, watch);
};
start();
"""

_TOOLBAR = """
<div class='byorn-toolbar' style='display:none'>
  <button data-mode='lasso' class='on' title='draw around points to select them'>lasso</button>
  <button data-mode='box' title='drag a rectangle to select points'>box</button>
  <button data-mode='pan' title='drag to move; scroll to zoom'>pan</button>
  <button data-mode='zoom' title='drag a rectangle to zoom in'>zoom</button>
  <button data-mode='reset' title='show every point'>reset view</button>
  <button data-mode='clear' title='clear the selection'>clear selection</button>
</div>"""

CSS = """
.byorn-toolbar { display: flex; gap: 4px; margin-bottom: 4px; }
.byorn-toolbar button { font-size: 0.8rem; padding: 2px 8px; border: 1px solid #d1d5db; border-radius: 4px;
                        background: white; cursor: pointer; }
.byorn-toolbar button.on { background: #1f2937; color: white; }
.byorn-plot-wrap { position: relative; }
.byorn-lasso { position: absolute; left: 0; top: 0; width: 100%; height: 100%; pointer-events: none;
               display: none; overflow: visible; z-index: 5; }
.byorn-sel { position: absolute; pointer-events: none; z-index: 4; }
.byorn-lasso path { fill: rgba(37, 99, 235, 0.08); stroke: #2563eb; stroke-width: 1.5; stroke-dasharray: 4 3; }
"""


def clickable_plot(height: int = 560, elem_id: str | None = None, toolbar: bool = False) -> gr.HTML:
    """The component (value: JSON from :func:`app.plots.payload_json`)."""
    bar = _TOOLBAR if toolbar else "<div class='byorn-toolbar' style='display:none'></div>"
    return gr.HTML(
        value="",
        html_template=(f"<div class='byorn-plot-wrap'>{bar}<div class='byorn-plot' "
                       f"style='width:100%;height:{height}px'></div>"
                       "<canvas class='byorn-sel'></canvas><svg class='byorn-lasso'><path d=''/></svg></div>"),
        js_on_load=_JS,
        head=plotly_head(),
        elem_id=elem_id,
        min_height=height,
    )


_SINK_JS = r"""
const apply = () => {
  if (!props.value) return;
  let s; try { s = JSON.parse(props.value); } catch (e) { return; }
  const el = document.querySelector('#sample-map .byorn-plot');
  if (!el || !el.byornSelect) { setTimeout(apply, 100); return; }
  const rows = [];
  if (s.mask) {
    const bin = atob(s.mask);
    for (let b = 0; b < bin.length; b++) { const v = bin.charCodeAt(b);
      if (v) for (let k = 0; k < 8; k++) if (v & (1 << k)) rows.push(b * 8 + k); }
  }
  el.byornSelect(rows.filter(i => i < s.n));
  el.dataset.selected = String(rows.length);
};
apply();
watch('value', apply);
"""


def selection_sink(elem_id: str = "map-selection") -> gr.HTML:
    """Hidden component whose value (:func:`app.plots.selection_payload`) highlights rows on the map."""
    return gr.HTML(value="", html_template="<span></span>", js_on_load=_SINK_JS, elem_id=elem_id,
                   visible="hidden")
