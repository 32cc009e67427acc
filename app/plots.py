"""Figures for the app: score histogram, sample map, loss curve, trade-off.

Pure builders (arrays in, figure out).  The histogram and the sample map go
to the :mod:`app.plotly_html` components, drawn by the vendored plotly.js
*gl2d* bundle (trace types ``scatter`` and ``scattergl`` only): the
histogram is binned here and drawn as filled steps; the map is one WebGL
``scattergl`` trace whose points travel as compact binary columns
(:func:`map_payload`).  The loss curve and the trade-off go to ``gr.Plot``.
"""
from __future__ import annotations

import base64
import json
import math
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from byorn.decisions import STATUSES

from .index import TableIndex, status_names

EMBEDDINGS = ("joint", "response", "image")
COLOR_BY = ("score", "flag", "decision", "ground truth")  # always offered; color_choices() adds columns
HOVER_MAX = 20_000  # maps up to this many points carry hover texts (beyond: ~1 MB more per map)
XY_MAX = 65534      # quantised coordinates run 0..XY_MAX; 65535 marks a missing one
DECISION_COLOURS = {"pending": "#9ca3af", "approved": "#16a34a", "rejected": "#2563eb",
                    "edited": "#9333ea", "dropped": "#111827"}
FLAG_COLOURS = {"flagged": "#dc2626", "not flagged": "#60a5fa"}
TRUTH_COLOURS = {"poisoned": "#dc2626", "clean": "#60a5fa"}
_LAYOUT = dict(margin=dict(l=40, r=10, t=40, b=40), template="plotly_white",
               legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0))
# the map and histogram are plain dicts for plotly.js (no plotly.py template: a different plotly.js)
_LAYOUT_JS = {"margin": {"l": 50, "r": 10, "t": 30, "b": 40}, "paper_bgcolor": "white", "plot_bgcolor": "white",
              "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
              "font": {"family": "system-ui, sans-serif", "size": 12}}


MARK_COLOURS = ("#059669", "#6b7280", "#d97706")  # other thresholds drawn beside the one in use
SCORE_UNITS = {"mean": "mean NLL, nats", "max": "max token NLL, nats", "topk": "top-k token NLL, nats",
               "grounding": "NLL with the image minus with a blank one, nats",
               "mean+grounding": "z of the mean NLL + of the grounding, or of the total NLL, or of the most implausible "
                                 "word's NLL (the split says which)"}


def histogram_figure(index: TableIndex, threshold: float, bins: int = 60, *, marks: dict[str, float] | None = None,
                     score: str = "mean") -> dict:
    """Score histogram (split by ground truth when known) with the threshold, as a plotly.js figure dict.

    ``marks``: other thresholds drawn beside it as labelled dotted lines (name -> score, e.g. the adaptive
    split's and the paper's); ``score``: the score method, for the axis title.

    Binned here and drawn as filled step lines (``scatter``: the page's
    plotly.js bundle has no ``bar`` / ``histogram`` traces).
    """
    scores = index.score
    ok = np.isfinite(scores)
    finite = scores[ok]
    edges = np.histogram_bin_edges(finite, bins=bins) if len(finite) else np.array([0.0, 1.0])
    traces = []
    groups = ([("clean (truth)", ~index.truth, TRUTH_COLOURS["clean"]),
               ("poisoned (truth)", index.truth, TRUTH_COLOURS["poisoned"])]
              if index.truth is not None else [(_unit_name(index), np.ones(index.n, dtype=bool), "#6b7280")])
    for name, mask, colour in groups:
        counts, _ = np.histogram(scores[mask & ok], bins=edges)
        # a step line over the bin edges: the last count repeated to close the last bin
        traces.append({"type": "scatter", "mode": "lines", "name": name, "x": _round(edges),
                       "y": np.append(counts, counts[-1:]).tolist(), "line": {"shape": "hv", "color": colour,
                                                                              "width": 1},
                       "fill": "tozeroy", "fillcolor": _rgba(colour, 0.45), "hoverinfo": "x+y+name"})
    n_flag = int((scores > threshold).sum())
    t = float(threshold)
    shapes, notes = [], []
    if math.isfinite(t):
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": t, "x1": t, "y0": 0, "y1": 1,
                       "line": {"color": "#dc2626", "dash": "dash"}})
        notes.append({"x": t, "xref": "x", "y": 1, "yref": "paper", "yanchor": "bottom", "xanchor": "left",
                      "showarrow": False, "text": f"threshold {t:.3f}: {n_flag} flagged"})
    for k, (name, value) in enumerate((marks or {}).items()):
        if value is None or not math.isfinite(float(value)) or float(value) == t:
            continue
        colour, v = MARK_COLOURS[k % len(MARK_COLOURS)], float(value)
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": v, "x1": v, "y0": 0, "y1": 1,
                       "line": {"color": colour, "dash": "dot", "width": 2}})
        notes.append({"x": v, "xref": "x", "y": 0.92 - 0.08 * k, "yref": "paper", "xanchor": "left",
                      "showarrow": False, "font": {"color": colour},
                      "text": f"{name} {v:.3f}: {int((scores > v).sum())}"})
    unit = SCORE_UNITS.get(score, score)
    layout = {**_LAYOUT_JS, "height": 330, "shapes": shapes, "annotations": notes,
              "xaxis": {"title": {"text": f"misalignment score ({unit})"}, "zeroline": False},
              "yaxis": {"title": {"text": _unit_name(index)}, "rangemode": "tozero"}}
    return {"data": traces, "layout": layout}


def _unit_name(index: TableIndex) -> str:
    return "turns" if index.multi_turn else "samples"


def _round(values) -> list:
    return [round(float(v), 4) for v in values]


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {alpha})"


def map_columns(embedding: str) -> tuple[str, str]:
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
    return f"umap_{embedding}_x", f"umap_{embedding}_y"


def color_choices(index: TableIndex) -> list[str]:
    """What the map can be coloured by: categories, then every numeric column of the audit table."""
    cats = ["flag", "decision"] + (["ground truth"] if index.truth is not None else [])
    numeric = index.numeric_columns()
    return [c for c in numeric if c == "score"] + cats + [c for c in numeric if c != "score"]


def _b64(arr: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode("ascii")


def _quantise_xy(v: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Coordinates as uint16 over their range (65535 = missing, outside the drawn range)."""
    ok = np.isfinite(v)
    lo, hi = (float(v[ok].min()), float(v[ok].max())) if ok.any() else (0.0, 1.0)
    span = (hi - lo) or 1.0
    q = np.full(len(v), 65535, dtype=np.uint16)
    q[ok] = np.rint((v[ok] - lo) / span * XY_MAX).astype(np.uint16)
    return q, lo, hi


def map_payload(index: TableIndex, codes: np.ndarray, threshold: float, embedding: str = "joint",
                color_by: str = "score") -> dict:
    """The sample map for the browser: every row's point, compact.

    Coordinates go as base64 ``uint16`` and colours as base64 ``uint8``
    (categories, or a numeric column in 255 steps with its real values on the
    colour bar): ~5 bytes a point, so 100k points are ~0.7 MB of JSON.  Point
    ``i`` is row ``i`` of the workspace's table; clicks and selections come
    back as row positions.  Up to :data:`HOVER_MAX` points also carry a hover
    text (key, score, decision).
    """
    xcol, ycol = map_columns(embedding)
    table = index.table
    if xcol not in table.columns or table[xcol].isna().all():
        return {"kind": "map", "n": 0, "note": f"no {embedding} map in this audit"}
    if color_by == "ground truth" and index.truth is None:
        color_by = "flag"
    x, _, _ = _quantise_xy(table[xcol].to_numpy(dtype=np.float64))
    y, _, _ = _quantise_xy(table[ycol].to_numpy(dtype=np.float64))
    colour = _colours(index, codes, threshold, color_by)
    n = index.n
    payload = {"kind": "map", "n": n, "x": _b64(x), "y": _b64(y), "xy_max": XY_MAX,
               "size": 7 if n <= 3000 else (4 if n <= 30000 else 3),
               "title": f"UMAP of the {embedding} embedding", "uirevision": embedding, **colour}
    if n <= HOVER_MAX:
        status = status_names(codes)
        payload["text"] = [f"{k}<br>score {s:.3f}<br>{d}" for k, s, d in zip(index.keys, index.score, status)]
    return payload


def _colours(index: TableIndex, codes: np.ndarray, threshold: float, color_by: str) -> dict:
    groups = None
    if color_by == "flag":
        groups = ((index.score > threshold).astype(np.uint8), ["not flagged", "flagged"],
                  [FLAG_COLOURS["not flagged"], FLAG_COLOURS["flagged"]])
    elif color_by == "decision":
        groups = (codes.astype(np.uint8), list(STATUSES), [DECISION_COLOURS[s] for s in STATUSES])
    elif color_by == "ground truth":
        groups = (index.truth.astype(np.uint8), ["clean", "poisoned"],
                  [TRUTH_COLOURS["clean"], TRUTH_COLOURS["poisoned"]])
    if groups is not None:
        c, names, colours = groups
        k = len(names)
        tally = np.bincount(c, minlength=k)
        scale = []
        for i, col in enumerate(colours):  # a stepped colour scale: one flat band per category
            scale += [[i / k, col], [(i + 1) / k, col]]
        return {"c": _b64(c), "colorscale": scale, "cmin": -0.5, "cmax": k - 0.5,
                "colorbar": {"title": {"text": color_by}, "tickvals": list(range(k)),
                             "ticktext": [f"{nm} ({int(t)})" for nm, t in zip(names, tally)]},
                "legend": {nm: int(t) for nm, t in zip(names, tally)}}
    if color_by not in index.table.columns:
        raise ValueError(f"colour must be one of {color_choices(index)}, got {color_by!r}")
    v = index.score if color_by == "score" else index.numeric(color_by)
    ok = np.isfinite(v)
    lo, hi = (float(v[ok].min()), float(v[ok].max())) if ok.any() else (0.0, 1.0)
    span = (hi - lo) or 1.0
    c = np.zeros(len(v), dtype=np.uint8)
    c[ok] = np.rint((v[ok] - lo) / span * 255).astype(np.uint8)
    ticks = np.linspace(0, 255, 5)
    return {"c": _b64(c), "colorscale": "Reds" if color_by in ("score", "score_max", "sample_score") else "Viridis",
            "cmin": 0, "cmax": 255,
            "colorbar": {"title": {"text": color_by}, "tickvals": ticks.tolist(),
                         "ticktext": [f"{lo + span * t / 255:.3g}" for t in ticks]}}


def selection_payload(rows: np.ndarray | None, n: int, rev: int, label: str = "") -> str:
    """The map selection for the browser: a bitmask of ``n`` rows (base64, little bit order)."""
    if rows is None or not len(rows):
        return json.dumps({"rev": rev, "n": n, "count": 0, "mask": "", "label": label})
    bits = np.zeros(n, dtype=bool)
    bits[rows] = True
    return json.dumps({"rev": rev, "n": n, "count": int(len(rows)), "label": label,
                       "mask": base64.b64encode(np.packbits(bits, bitorder="little").tobytes()).decode("ascii")})


def rows_from_mask(mask_b64: str, n: int) -> np.ndarray:
    """Row positions of a selection bitmask sent by the browser (bits beyond ``n`` ignored)."""
    if not mask_b64:
        return np.zeros(0, dtype=np.int64)
    raw = np.frombuffer(base64.b64decode(mask_b64), dtype=np.uint8)
    return np.flatnonzero(np.unpackbits(raw, bitorder="little")[:n]).astype(np.int64)


def payload_json(payload: dict) -> str:
    """Compact JSON for the browser."""
    return json.dumps(payload, separators=(",", ":"))


def figure_json(fig: go.Figure) -> str:
    """Compact JSON ``{"data", "layout"}`` of a plotly.py figure."""
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
