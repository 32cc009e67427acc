"""2-D maps of the audit's embeddings (UMAP), scaled to large datasets.

Up to ``fit_max`` points UMAP is fitted on all of them.  Above that it is
fitted on a seeded random subsample of ``fit_max`` points and the rest are
placed with the fitted model's ``transform`` (UMAP's own out-of-sample
extension), in chunks: the first fit in a process compiles (20-60 s) and the
fit cost grows faster than linearly, the transform linearly.  The choice is
recorded in the returned info.  Below 16 points PCA is used.
"""
from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

MAP_KINDS = ("response", "image", "joint")
FIT_MAX = 10_000


def compute_maps(embeddings: dict[str, np.ndarray], seed: int = 0, *, fit_max: int = FIT_MAX,
                 progress=None) -> tuple[dict[str, np.ndarray], dict]:
    """2-D coordinates for the response, image and joint embeddings, and how they were made.

    ``embeddings``: ``{"response": (N, H), "image": (N, H)}``.  Returns
    ``({kind: (N, 2)}, info)`` with info ``{"method", "n", "fit_on", "extended"}``.
    """
    joint = np.concatenate([_unit(embeddings["response"]), _unit(embeddings["image"])], axis=1)
    sources = {"response": embeddings["response"], "image": embeddings["image"], "joint": joint}
    out, info = {}, {}
    for i, (kind, x) in enumerate(sources.items()):
        if progress:
            progress(i / len(sources), f"2-D map of the {kind} embeddings")
        out[kind], info = project(np.asarray(x, dtype=np.float32), seed, fit_max=fit_max)
    return out, info


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-8, None)


def project(x: np.ndarray, seed: int = 0, *, fit_max: int = FIT_MAX, chunk: int = 20_000) -> tuple[np.ndarray, dict]:
    """(N, 2) coordinates of ``x`` (N, H) and how they were computed."""
    n = x.shape[0]
    if n < 16:
        from sklearn.decomposition import PCA

        k = min(2, n, x.shape[1])
        coords = np.zeros((n, 2))
        if n > 1:
            coords[:, :k] = PCA(n_components=k, random_state=seed).fit_transform(x)
        return coords, {"method": "pca", "n": n, "fit_on": n, "extended": 0}
    import umap  # slow import (numba): only when needed

    reducer = umap.UMAP(n_neighbors=min(15, n - 1), min_dist=0.1, metric="cosine", random_state=seed)
    if n <= fit_max:
        return reducer.fit_transform(x), {"method": "umap", "n": n, "fit_on": n, "extended": 0}
    rng = np.random.default_rng(seed)
    fit_idx = np.sort(rng.choice(n, size=fit_max, replace=False))
    coords = np.empty((n, 2), dtype=np.float64)
    coords[fit_idx] = reducer.fit_transform(x[fit_idx])
    rest = np.setdiff1d(np.arange(n), fit_idx)
    for start in range(0, len(rest), chunk):
        part = rest[start:start + chunk]
        coords[part] = reducer.transform(x[part])
    logger.info("UMAP fitted on %d of %d points, the rest placed with transform", fit_max, n)
    return coords, {"method": "umap-subsample", "n": n, "fit_on": fit_max, "extended": int(len(rest))}
