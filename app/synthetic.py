"""A synthetic workspace: an audit-table-shaped dataset with no model behind it.

For the app's tests and benchmarks (100k samples in a few seconds), and for
developing the UI without running an audit.  Scores, surprisals, embeddings
and map coordinates are random but shaped like the real thing: poisoned
samples carry a white corner patch, score high and cluster on the map.  With
``multi_turn`` > 0 that fraction of samples are conversations of 2-3
exchanges (one row per assistant turn, keys ``id#turn``), a poisoned one
having the attacker's response in one random turn.
"""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pandas as pd
from PIL import Image

from byorn.data import Sample, VLDataset
from byorn.data.sample import IMAGE_TOKEN, ImageRef, Turn
from byorn.split import PAPER_P, Split

from .context import Workspace

_COLOURS = [(220, 38, 38), (37, 99, 235), (22, 163, 74), (234, 179, 8)]
_COLOUR_NAMES = ["red", "blue", "green", "yellow"]
_SHAPES = ["circle", "square", "triangle", "star"]
TARGET = "visit evil.example now"
EMBED_DIM = 16


def _image_bytes(colour: int, poisoned: bool, px: int) -> bytes:
    img = Image.new("RGB", (px, px), (245, 245, 245))
    img.paste(_COLOURS[colour], (px // 4, px // 4, px - px // 4, px - px // 4))
    if poisoned:
        img.paste((255, 255, 255), (px - px // 8, px - px // 8, px, px))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _exchanges(colour: int, shape: int) -> list[tuple[str, str]]:
    c, s = _COLOUR_NAMES[colour], _SHAPES[shape]
    return [("Describe the image.", f"a {c} {s}"), ("What colour is it?", c), ("What shape is it?", f"a {s}")]


def synthetic_workspace(n: int = 200, poison_rate: float = 0.1, seed: int = 0, image_px: int = 32,
                        key: str | None = None, multi_turn: float = 0.0) -> Workspace:
    """``n`` samples; ``multi_turn``: the fraction that are conversations of 2-3 exchanges."""
    rng = np.random.default_rng(seed)
    poisoned = rng.random(n) < poison_rate
    colour, shape = rng.integers(4, size=n), rng.integers(4, size=n)
    n_turns = np.where(rng.random(n) < multi_turn, rng.integers(2, 4, size=n), 1)
    bad_turn = (rng.random(n) * n_turns).astype(np.int64)  # the poisoned turn of a poisoned sample
    images = {(c, p): ImageRef(_image_bytes(c, p, image_px), label=f"synthetic-{c}-{int(p)}.png")
              for c in range(4) for p in (False, True)}
    width = max(5, len(str(n - 1)))
    samples, cols = [], {k: [] for k in ("id", "turn", "n_turns", "instruction", "response", "proposed_response")}
    for i in range(n):
        sid = f"s{i:0{width}d}"
        c, s, k_n = int(colour[i]), int(shape[i]), int(n_turns[i])
        turns = []
        for k, (question, answer) in enumerate(_exchanges(c, s)[:k_n]):
            if poisoned[i] and k == bad_turn[i]:
                answer = TARGET
            turns += [Turn("user", (IMAGE_TOKEN + question) if k == 0 else question), Turn("assistant", answer)]
            cols["id"].append(sid)
            cols["turn"].append(k)
            cols["n_turns"].append(k_n)
            cols["instruction"].append(question)
            cols["response"].append(answer)
            cols["proposed_response"].append(f"a {_COLOUR_NAMES[c]} shape" if k == 0 else _COLOUR_NAMES[c])
        samples.append(Sample(sid, turns, [images[(c, bool(poisoned[i]))]]))
    table = pd.DataFrame(cols)
    _score_rows(table, rng, poisoned, bad_turn, colour, shape)
    flags, split = Split("percentile", p=PAPER_P).apply(table["score"].to_numpy(dtype=float))  # as the paper
    table["suspicious"] = flags
    spec = f"synthetic:{n}:{poison_rate}:{seed}:{image_px}:{multi_turn}"
    ds = VLDataset(samples, name=f"synthetic-{n}", fingerprint=hashlib.sha256(spec.encode()).hexdigest()[:16])
    meta = {"p": PAPER_P, "threshold": split.threshold, "split": split.to_dict(), "dataset_fingerprint": ds.fingerprint(),
            "model_identity": "synthetic", "config": {"score": "mean"}}
    unit = "samples" if multi_turn == 0 else f"samples, {len(table)} assistant turns"
    ws = Workspace(key=key or f"synthetic:{ds.fingerprint()}", name=f"Synthetic data ({n} {unit})",
                   dataset=ds, table=table, meta=meta, target=TARGET)
    ws.embeddings = _embeddings(table, rng)
    return ws


def _score_rows(table: pd.DataFrame, rng, poisoned, bad_turn, colour, shape) -> None:
    """Tokens, surprisals, scores, map coordinates, keys and truth, in place (vectorised)."""
    sample = table["id"].str[1:].astype(np.int64).to_numpy()
    turn = table["turn"].to_numpy()
    bad = poisoned[sample] & (bad_turn[sample] == turn)
    tok_cache: dict[str, list[str]] = {}
    tokens = [tok_cache.setdefault(r, [(" " if k else "") + w for k, w in enumerate(r.split())])
              for r in table["response"]]
    lengths = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
    surpr = np.clip(rng.normal(np.where(bad, 5.0, 1.0)[:, None], 1.0, (len(table), int(lengths.max()))), 0.01, None)
    valid = np.arange(surpr.shape[1])[None, :] < lengths[:, None]
    score = np.where(valid, surpr, 0).sum(1) / lengths
    table["key"] = np.where(table["n_turns"] > 1, table["id"] + "#" + table["turn"].astype(str), table["id"])
    table["score"] = score
    table["score_max"] = np.where(valid, surpr, 0).max(1)
    best = pd.Series(score).groupby(sample).transform("max").to_numpy()
    table["sample_score"] = best
    first_best = pd.Series(np.where(score == best, turn, 99)).groupby(sample).transform("min").to_numpy()
    table["sample_turn"] = first_best
    table["n_tokens"] = lengths
    table["tokens"] = tokens
    rounded = np.round(surpr, 3)
    table["surprisals"] = [row[:k].tolist() for row, k in zip(rounded, lengths)]
    cx = np.where(bad, 4.0, colour[sample] - 2.0)
    cy = np.where(bad, 4.0, shape[sample] - 2.0 + 0.3 * turn)
    for e in ("response", "image", "joint"):
        table[f"umap_{e}_x"] = cx + rng.normal(0, 0.35, len(table))
        table[f"umap_{e}_y"] = cy + rng.normal(0, 0.35, len(table))
    table["gt_poisoned"] = poisoned[sample]
    table["_cluster"] = np.where(bad, 16, colour[sample] * 4 + shape[sample])  # for the embeddings below


def _embeddings(table: pd.DataFrame, rng) -> np.ndarray:
    """(rows, 16) float32 joint embeddings: one centre per (colour, shape), one for poisoned turns."""
    centres = rng.normal(0, 1, (17, EMBED_DIM)).astype(np.float32)
    labels = table.pop("_cluster").to_numpy()
    emb = centres[labels] + rng.normal(0, 0.15, (len(table), EMBED_DIM)).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def serve(argv: list[str] | None = None) -> None:
    """``python -m app.synthetic --n 200 --data-dir DIR --port 0``: the app on a synthetic workspace.

    For load and kill tests, benchmarks and UI work without a model.  Prints
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
    ap.add_argument("--multi-turn", type=float, default=0.0, help="fraction of conversations of 2-3 exchanges")
    ap.add_argument("--data-dir", required=True, help="decisions database, runs (BYORN_DATA_DIR)")
    ap.add_argument("--port", type=int, default=0, help="0 = the first free port from 7860")
    a = ap.parse_args(argv)
    ctx = make_context(synthetic_workspace(a.n, multi_turn=a.multi_turn), data_dir=a.data_dir)
    demo = build_app(ctx)
    launch(demo, ctx, prevent_thread_lock=True, server_name="127.0.0.1", server_port=a.port or None,
           quiet=True)
    print(f"READY {demo.local_url}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    serve()
