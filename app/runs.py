"""The training runs a visitor sees: the Compare tab lists them, the Inspector proposes with their models."""
from __future__ import annotations

import pandas as pd

from .context import AppContext
from .state import View

SHOWN = {"run_id": "run", "method": "method", "epochs": "epochs", "lr": "lr", "lora": "LoRA",
         "seed": "seed", "clean_value": "clean metric", "asr": "ASR", "wall_s": "time (s)",
         "cancelled": "cancelled", "out_dir": "folder"}


def load_runs(ctx: AppContext, view: View) -> pd.DataFrame:
    """The runs this visitor sees: shared ones and their own (every run without private sessions)."""
    lister = ctx.list_runs
    if lister is None:
        from byorn.train import list_runs as lister
    tables = [lister(root) for root in ctx.run_roots(view) if root.exists()]
    tables = [t for t in tables if len(t)]
    if not tables:
        return pd.DataFrame(columns=list(SHOWN))
    return pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
