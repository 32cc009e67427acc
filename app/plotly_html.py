"""A Plotly chart whose point clicks reach Python: ``gr.HTML`` + ``js_on_load``.

``gr.Plot`` has no click event, so the sample map is drawn by plotly.js inside
a custom ``gr.HTML`` component.  Its value is the figure as JSON; the
``js_on_load`` script draws it (and redraws on every value change through
``watch``) and calls ``trigger('point_click', {sample_id})`` when a point is
clicked, ``trigger('points_selected', {ids})`` after a box / lasso selection.
Python listens with ``comp.point_click(fn)`` / ``comp.points_selected(fn)``
and reads ``evt.sample_id`` / ``evt.ids`` from ``gr.EventData``.

plotly.js is the *basic* bundle (``scatter``, ``bar``, ``pie``; 1.2 MB instead
of the full 4.6 MB, which took ~3 s to parse on a busy 2-core machine),
vendored in ``assets/vendor`` from the npm package ``plotly.js-basic-dist-min``
(MIT licence, ``assets/vendor/plotly-basic.LICENSE``) and served by the Gradio
server itself (``gr.set_static_paths``), so the map works offline and on a
Space without a CDN.  The figures use only those trace types (app/plots.py).
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

PLOTLY_JS = Path(__file__).resolve().parent.parent / "assets" / "vendor" / "plotly-basic.min.js"


def plotly_head() -> str:
    """``<script>`` tag loading plotly.js from this server (relative URL: works behind a proxy)."""
    gr.set_static_paths([str(PLOTLY_JS.parent)])
    return f'<script src="gradio_api/file={PLOTLY_JS.as_posix()}"></script>'


_JS = r"""
const draw = () => {
  const el = element.querySelector('.byorn-plot');
  if (!el || !props.value) return;
  if (typeof Plotly === 'undefined') { setTimeout(draw, 50); return; }  // script still loading
  let fig;
  try { fig = JSON.parse(props.value); } catch (e) { console.error('bad figure JSON', e); return; }
  Plotly.react(el, fig.data, fig.layout, {responsive: true, displaylogo: false});
  if (!el.dataset.bound) {
    el.dataset.bound = '1';
    el.on('plotly_click', (ev) => {
      if (!ev || !ev.points || !ev.points.length) return;
      const p = ev.points[0];
      if (p.customdata !== undefined && p.customdata !== null) {
        trigger('point_click', {sample_id: String(p.customdata)});
      }
    });
    el.on('plotly_selected', (ev) => {
      const ids = (ev && ev.points) ? ev.points.map(p => String(p.customdata)) : [];
      trigger('points_selected', {ids: ids});
    });
  }
};
draw();
watch('value', draw);
"""


def clickable_plot(height: int = 560, elem_id: str | None = None) -> gr.HTML:
    """The component (value: figure JSON from :func:`app.plots.figure_json`)."""
    return gr.HTML(
        value="",
        html_template=f"<div class='byorn-plot' style='width:100%;height:{height}px'></div>",
        js_on_load=_JS,
        head=plotly_head(),
        elem_id=elem_id,
        min_height=height,
    )
