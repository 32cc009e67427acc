"""Compare tab: every finished run, and ASR against clean quality."""
from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from .context import AppContext
from .plots import tradeoff_figure
from .runs import SHOWN, load_runs
from .state import View


def build_compare() -> SimpleNamespace:
    gr.Markdown("Each finished training run (under the runs folder) with its clean metric and attack "
                "success rate (ASR) on the triggered test set. Good runs sit bottom-right: high "
                "clean quality, low ASR. Plain SFT learns the backdoor; BYORn should not.")
    refresh_btn = gr.Button("refresh", size="sm", elem_id="compare-refresh")
    runs = gr.Dataframe(interactive=False, wrap=True, elem_id="runs-table")
    scatter = gr.Plot(label="trade-off: ASR vs clean metric", elem_id="tradeoff")
    return SimpleNamespace(**{k: v for k, v in locals().items()})


def refresh_compare(ctx: AppContext, view: View):
    view = View.coerce(view)
    try:
        runs = load_runs(ctx, view)
    except Exception as e:  # a broken run folder must not take the tab down
        raise gr.Error(f"Could not list the runs in {ctx.runs_dir}: {e}") from e
    shown = runs[[c for c in SHOWN if c in runs.columns]].copy()
    for col in ("clean_value", "asr", "wall_s"):
        if col in shown.columns:
            shown[col] = pd.to_numeric(shown[col], errors="coerce").round(3)
    names = dict(SHOWN)
    if "clean_metric" in runs.columns and len(runs):  # name the metric: "cider (clean)"
        names["clean_value"] = f"{runs['clean_metric'].iloc[0]} (clean)"
    shown = shown.rename(columns=names)
    finished = runs[~runs["cancelled"].fillna(False).astype(bool)] if "cancelled" in runs.columns else runs
    return shown, tradeoff_figure(finished)


def wire_compare(ui, ctx: AppContext) -> None:
    c = ui.compare
    fn = partial(refresh_compare, ctx)
    c.refresh_btn.click(fn, [ui.view], [c.runs, c.scatter], api_name="list_runs")
    ui.tab_compare.select(fn, [ui.view], [c.runs, c.scatter], api_visibility="private")
