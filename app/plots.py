"""Plotly figures for the app: score histogram, sample map, loss curve, trade-off.

Pure builders (table in, figure out).  The histogram and the sample map are
returned as JSON for the clickable :mod:`app.plotly_html` component, drawn by
the small plotly.js *basic* bundle (trace types ``scatter`` and ``bar`` only:
the histogram is binned here, the map is SVG ``scatter``, not ``scattergl``);
the loss curve and the trade-off go to ``gr.Plot``.
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from byorn.decisions import STATUSES

from .views import has_ground_truth

EMBEDDINGS = ("joint", "response", "image")
COLOR_BY = ("score", "flag", "decision", "ground truth")
DECISION_COLOURS = {"pending": "#9ca3af", "approved": "#16a34a", "rejected": "#2563eb",
                    "edited": "#9333ea", "dropped": "#111827"}
FLAG_COLOURS = {"flagged": "#dc2626", "not flagged": "#60a5fa"}
TRUTH_COLOURS = {"poisoned": "#dc2626", "clean": "#60a5fa"}
_LAYOUT = dict(margin=dict(l=40, r=10, t=40, b=40), template="plotly_white",
               legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0))


def histogram_figure(table: pd.DataFrame, threshold: float, bins: int = 60) -> go.Figure:
    """Score histogram, split by ground truth when known, with the threshold line."""
    fig = go.Figure()
    scores = table["score"].astype(float)
    ok = np.isfinite(scores)
    finite = scores[ok]
    edges = np.histogram_bin_edges(finite, bins=bins) if len(finite) else np.array([0.0, 1.0])
    centres, width = (edges[:-1] + edges[1:]) / 2, float(edges[1] - edges[0]) or 1.0
    # Binned here (plotly's own histogram trace is not in the basic bundle the page loads).
    if has_ground_truth(table):
        gt = table["gt_poisoned"].fillna(False).astype(bool)
        for name, mask in (("clean", ~gt), ("poisoned", gt)):
            counts, _ = np.histogram(scores[mask & ok], bins=edges)
            fig.add_bar(x=centres, y=counts, width=width, name=f"{name} (truth)",
                        marker_color=TRUTH_COLOURS[name], opacity=0.75)
        fig.update_layout(barmode="stack", bargap=0)
    else:
        counts, _ = np.histogram(finite, bins=edges)
        fig.add_bar(x=centres, y=counts, width=width, name="samples", marker_color="#6b7280")
        fig.update_layout(bargap=0)
    n_flag = int((scores > threshold).sum())
    fig.add_vline(x=float(threshold), line_color="#dc2626", line_dash="dash",
                  annotation_text=f"threshold {threshold:.3f}: {n_flag} flagged",
                  annotation_position="top right")
    fig.update_layout(**_LAYOUT, height=330, xaxis_title="misalignment score (mean NLL, nats)",
                      yaxis_title="samples", title=None)
    return fig


def map_columns(embedding: str) -> tuple[str, str]:
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
    return f"umap_{embedding}_x", f"umap_{embedding}_y"


def map_figure(table: pd.DataFrame, embedding: str = "joint", color_by: str = "score") -> go.Figure:
    """2-D map of the samples; every point carries its sample id in ``customdata``."""
    xcol, ycol = map_columns(embedding)
    if xcol not in table.columns or table[xcol].isna().all():
        fig = go.Figure()
        fig.add_annotation(text=f"no {embedding} map in this audit", showarrow=False)
        fig.update_layout(**_LAYOUT, height=560)
        return fig
    if color_by == "ground truth" and not has_ground_truth(table):
        color_by = "flag"
    hover = [f"{i}<br>score {s:.3f}<br>{d}" for i, s, d in
             zip(table["id"], table["score"].astype(float), table.get("decision", ["pending"] * len(table)))]
    # SVG scatter (the page's basic plotly.js has no WebGL traces).  Above a few thousand points,
    # smaller markers without outlines and rounded coordinates keep 10k points drawing in ~1 s.
    big = len(table) > 3000
    outline = dict(width=0 if big else 0.3, color="#444")
    size = 5 if big else 7
    table = table.assign(**{xcol: table[xcol].round(3), ycol: table[ycol].round(3)})
    base = dict(mode="markers", hoverinfo="text")
    fig = go.Figure()
    if color_by == "score":
        fig.add_trace(go.Scatter(
            x=table[xcol], y=table[ycol], customdata=table["id"], hovertext=hover, name="samples",
            marker=dict(color=table["score"].astype(float), colorscale="Reds", size=size,
                        colorbar=dict(title="score"), line=outline), **base))
    else:
        groups, colours = _groups(table, color_by)
        for name, mask in groups:
            if not mask.any():
                continue
            sub = table[mask]
            fig.add_trace(go.Scatter(
                x=sub[xcol], y=sub[ycol], customdata=sub["id"], name=f"{name} ({int(mask.sum())})",
                hovertext=[h for h, m in zip(hover, mask) if m],
                marker=dict(color=colours[name], size=size, line=outline), **base))
    fig.update_layout(**_LAYOUT, height=560, dragmode="lasso", clickmode="event",
                      xaxis=dict(showticklabels=False, title=f"UMAP of {embedding} embedding"),
                      yaxis=dict(showticklabels=False), uirevision=embedding)
    return fig


def _groups(table: pd.DataFrame, color_by: str):
    if color_by == "flag":
        flag = table["suspicious"].astype(bool).to_numpy()
        return [("not flagged", ~flag), ("flagged", flag)], FLAG_COLOURS
    if color_by == "decision":
        dec = table["decision"].to_numpy()
        return [(s, dec == s) for s in STATUSES], DECISION_COLOURS
    if color_by == "ground truth":
        gt = table["gt_poisoned"].fillna(False).astype(bool).to_numpy()
        return [("clean", ~gt), ("poisoned", gt)], TRUTH_COLOURS
    raise ValueError(f"colour must be one of {COLOR_BY}, got {color_by!r}")


def figure_json(fig: go.Figure) -> str:
    """Compact JSON ``{"data", "layout"}`` for ``Plotly.react`` in the browser."""
    return json.dumps(json.loads(fig.to_json()), separators=(",", ":"))


def loss_figure(losses: Sequence[tuple], evals: Sequence[dict]) -> go.Figure:
    """Training loss per step, and clean metric / ASR at each evaluation.

    ``losses``: ``(step, loss)`` or ``(step, loss, bootstrapped)``.  BYORn's
    bootstrapped batches train on the model's own responses, so their loss is
    far lower than on the data: they are drawn as a separate series.
    """
    fig = go.Figure()
    data = [(s, v) for s, v, *b in losses if not (b and b[0])]
    boot = [(s, v) for s, v, *b in losses if b and b[0]]
    for pts, name, style in ((data, "loss (data batches)", dict(color="#374151")),
                             (boot, "loss (bootstrapped batches)", dict(color="#9ca3af", dash="dot"))):
        if pts:
            steps, values = zip(*pts)
            fig.add_scatter(x=steps, y=values, mode="lines+markers" if len(pts) < 30 else "lines",
                            name=name, line=style, marker=dict(size=4))
    # The clean metric (CIDEr, 0-100) and ASR (shown in %) share the right-hand axis.
    palette = {"cider": "#16a34a", "asr": "#dc2626"}
    for name, scale, label in (("cider", 1.0, "CIDEr (clean)"), ("asr", 100.0, "ASR % (triggered)")):
        pts = [(e["step"], scale * e[name]) for e in evals if isinstance(e.get(name), (int, float))]
        if pts:
            xs, ys = zip(*pts)
            fig.add_scatter(x=xs, y=ys, mode="lines+markers", name=label, yaxis="y2",
                            line=dict(color=palette[name]))
    fig.update_layout(**_LAYOUT, height=320, xaxis_title="step", yaxis_title="loss",
                      yaxis2=dict(title="CIDEr · ASR %", overlaying="y", side="right", rangemode="tozero"))
    fig.update_layout(legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"))
    return fig


def tradeoff_figure(runs: pd.DataFrame) -> go.Figure:
    """ASR against the clean metric, one point per finished run, by method."""
    fig = go.Figure()
    if runs is None or runs.empty or "asr" not in runs.columns:
        fig.add_annotation(text="no finished runs yet", showarrow=False)
        fig.update_layout(**_LAYOUT, height=400)
        return fig
    metric_col = "clean_value" if "clean_value" in runs.columns else None
    metric_name = str(runs["clean_metric"].iloc[0]) if "clean_metric" in runs.columns else "clean metric"
    for method, sub in runs.groupby("method", sort=False):
        fig.add_scatter(x=sub[metric_col] if metric_col else None, y=100 * sub["asr"].astype(float),
                        mode="markers+text", name=str(method), text=sub["run_id"].astype(str),
                        textposition="top center", marker=dict(size=12))
    fig.update_layout(**_LAYOUT, height=400, xaxis_title=f"{metric_name} on clean test (higher is better)",
                      yaxis_title="attack success rate, % (lower is better)")
    fig.update_layout(yaxis=dict(range=[-5, 105]),
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"))
    return fig
