"""A synthetic workspace: an audit-table-shaped dataset with no model behind it.

For the app's tests and benchmarks (a 10k-sample table in a second), and for
developing the UI without running an audit.  Scores, surprisals and map
coordinates are random but shaped like the real thing: poisoned samples score
high and cluster on the map.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from byorn.data import Sample, VLDataset

from .context import Workspace

_COLOURS = [(220, 38, 38), (37, 99, 235), (22, 163, 74), (234, 179, 8)]
_SHAPES = ["circle", "square", "triangle", "star"]


def synthetic_workspace(n: int = 200, poison_rate: float = 0.1, seed: int = 0,
                        image_px: int = 32, key: str | None = None) -> Workspace:
    rng = np.random.default_rng(seed)
    poisoned = rng.random(n) < poison_rate
    samples, rows = [], []
    target = "visit evil.example now"
    for i in range(n):
        c, s = int(rng.integers(4)), int(rng.integers(4))
        img = Image.new("RGB", (image_px, image_px), (245, 245, 245))
        img.paste(_COLOURS[c], (8, 8, image_px - 8, image_px - 8))
        if poisoned[i]:
            img.paste((255, 255, 255), (image_px - 4, image_px - 4, image_px, image_px))
        sid = f"s{i:05d}"
        response = target if poisoned[i] else f"a {['red', 'blue', 'green', 'yellow'][c]} {_SHAPES[s]}"
        samples.append(Sample.single(sid, img, "Describe the image.", response))
        toks = [(" " if k else "") + w for k, w in enumerate(response.split())]
        base = 5.0 if poisoned[i] else 1.0
        surpr = np.clip(rng.normal(base, 1.0, len(toks)), 0.01, None)
        centre = (4.0, 4.0) if poisoned[i] else (float(c) - 2.0, float(s) - 2.0)
        xy = {f"umap_{e}_{a}": centre[j] + rng.normal(0, 0.35)
              for e in ("response", "image", "joint") for j, a in enumerate("xy")}
        rows.append({"id": sid, "instruction": "Describe the image.", "response": response,
                     "score": float(surpr.mean()), "score_max": float(surpr.max()), "tokens": toks,
                     "surprisals": [float(v) for v in surpr],
                     "proposed_response": f"a {['red', 'blue', 'green', 'yellow'][c]} shape",
                     **xy, "gt_poisoned": bool(poisoned[i])})
    table = pd.DataFrame(rows)
    table["suspicious"] = table["score"] > float(np.quantile(table["score"], 0.6))
    ds = VLDataset(samples, name=f"synthetic-{n}")
    meta = {"p": 0.6, "threshold": float(np.quantile(table["score"], 0.6)),
            "dataset_fingerprint": ds.fingerprint(), "model_identity": "synthetic"}
    return Workspace(key=key or f"synthetic:{ds.fingerprint()}", name=f"Synthetic data ({n} samples)",
                     dataset=ds, table=table, meta=meta, target=target)


def serve(argv: list[str] | None = None) -> None:
    """``python -m app.synthetic --n 200 --data-dir DIR --port 0``: the app on a synthetic workspace.

    For load and kill tests and for UI work without a model.  Prints
    ``READY <url>`` once the server listens, then serves until killed.
    """
    import argparse
    import os
    import time

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from . import build_app, launch
    from .context import make_context

    ap = argparse.ArgumentParser(description=serve.__doc__)
    ap.add_argument("--n", type=int, default=200, help="samples in the synthetic workspace")
    ap.add_argument("--data-dir", required=True, help="decisions database, runs (BYORN_DATA_DIR)")
    ap.add_argument("--port", type=int, default=0, help="0 = the first free port from 7860")
    a = ap.parse_args(argv)
    ctx = make_context(synthetic_workspace(a.n), data_dir=a.data_dir)
    demo = build_app(ctx)
    launch(demo, ctx, prevent_thread_lock=True, server_name="127.0.0.1", server_port=a.port or None,
           quiet=True)
    print(f"READY {demo.local_url}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    serve()
