"""Find the siblings of a sample: nearest neighbours and clusters of the audit's embeddings.

Poisoned samples share a trigger and a target, so they sit together in the
joint (response ‖ image) embedding and on its 2-D map.  Two tools:

* :func:`nearest`: exact cosine nearest neighbours of one row, by a chunked
  matrix-vector product (100k x 512 float32 in tens of milliseconds; no
  index to build or keep in sync).
* :func:`clusters`: density clusters (HDBSCAN) of the **2-D map
  coordinates**, so that "the whole cluster" is the blob the reviewer sees on
  the map.  Why the map and not the joint embedding: the selection must match
  what is shown; density in 2-D is well defined where distances in hundreds
  of dimensions concentrate; and it is fast.  Above ``fit_max`` points
  HDBSCAN is fitted on a seeded subsample and every other point takes the
  label of its nearest fitted point (a k-d tree query), so 100k points cost
  about as much as ``fit_max``.

Labels are integers, ``-1`` for noise (a point in no cluster).
"""
from __future__ import annotations

import logging
import time

import numpy as np

logger = logging.getLogger(__name__)

FIT_MAX = 10_000
NOISE = -1


def _as_matrix(x, name: str = "embeddings") -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (rows x dimensions), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-8, None)


def joint_embeddings(response: np.ndarray, image: np.ndarray) -> np.ndarray:
    """(N, Dr + Di) unit response embedding next to unit image embedding, as the joint map uses."""
    r, i = _as_matrix(response, "response"), _as_matrix(image, "image")
    if len(r) != len(i):
        raise ValueError(f"response has {len(r)} rows but image has {len(i)}")
    return np.concatenate([unit_rows(r), unit_rows(i)], axis=1)


def cosine_to(embeddings: np.ndarray, query: np.ndarray, *, chunk: int = 16_384) -> np.ndarray:
    """(N,) cosine similarity of every row to ``query`` (D,), in [-1, 1]; zero rows give 0.

    Chunked so that a float64 or memory-mapped matrix is never copied whole.
    Raises ``ValueError`` naming the first row that is not finite.
    """
    x = _as_matrix(embeddings)
    q = np.asarray(query, dtype=np.float32).ravel()
    if q.shape[0] != x.shape[1]:
        raise ValueError(f"query has {q.shape[0]} dimensions, embeddings have {x.shape[1]}")
    q = q / max(float(np.linalg.norm(q)), 1e-8)
    out = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), chunk):
        block = np.asarray(x[start:start + chunk], dtype=np.float32)  # (C, D)
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            raise ValueError(f"embedding row {start + int(np.argmax(bad))} is not finite (NaN or inf)")
        norms = np.clip(np.linalg.norm(block, axis=1), 1e-8, None)
        out[start:start + len(block)] = (block @ q) / norms
    return out


def nearest(embeddings: np.ndarray, index: int, k: int = 10, *, exclude=()) -> list[tuple[int, float]]:
    """The ``k`` rows most cosine-similar to row ``index`` (itself and ``exclude`` left out).

    Returns ``[(row, similarity), ...]`` most similar first (ties: lower row
    first); fewer than ``k`` when the matrix has fewer other rows.
    """
    x = _as_matrix(embeddings)
    n = len(x)
    if not isinstance(index, (int, np.integer)) or not 0 <= index < n:
        raise ValueError(f"index must be a row number in [0, {n}), got {index!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    sims = cosine_to(x, x[index])
    sims[index] = -np.inf
    skip = np.asarray(list(exclude), dtype=np.int64)
    if skip.size:
        sims[skip[(skip >= 0) & (skip < n)]] = -np.inf
    available = int(np.isfinite(sims).sum())
    k = min(k, available)
    if k == 0:
        return []
    top = np.argpartition(-sims, k - 1)[:k] if k < n else np.arange(n)
    top = top[np.isfinite(sims[top])]
    order = np.lexsort((top, -sims[top]))  # by similarity, then row
    return [(int(top[j]), float(sims[top[j]])) for j in order][:k]


def default_min_cluster_size(n_fit: int) -> int:
    """0.5 % of the fitted points, at least 10.

    At least 10: smaller settings split one group of poisoned samples on the
    demo's map into many fragments (mcs 5: 7 clusters, 10: one cluster of 67
    of its 80 poisoned samples, all poisoned).  0.5 %: a group of 1 % of the
    data still forms a cluster in a subsample.
    """
    return max(10, round(0.005 * n_fit))


def clusters(embeddings_or_coords: np.ndarray, *, min_cluster_size: int | None = None,
             min_samples: int | None = None, fit_max: int = FIT_MAX, seed: int = 0) -> np.ndarray:
    """(N,) HDBSCAN cluster labels of the points (``-1`` = noise); meant for 2-D map coordinates.

    Points are taken as Euclidean (unit-normalise embeddings first for a
    cosine reading).  ``min_cluster_size`` defaults to
    :func:`default_min_cluster_size` of the fitted points, ``min_samples``
    to ``min(min_cluster_size, 10)`` (less noise at cluster edges).  Above
    ``fit_max`` points HDBSCAN is fitted on a seeded random subsample and each
    other point takes the label of its nearest fitted point.  Labels are
    numbered by decreasing cluster size (0 = largest), so they do not depend
    on HDBSCAN's internal order.
    """
    from scipy.spatial import cKDTree
    from sklearn.cluster import HDBSCAN

    x = _as_matrix(embeddings_or_coords, "embeddings_or_coords").astype(np.float64)
    if not np.isfinite(x).all():
        row = int(np.argmax(~np.isfinite(x).all(axis=1)))
        raise ValueError(f"row {row} of the points is not finite (NaN or inf)")
    if fit_max < 2:
        raise ValueError(f"fit_max must be >= 2, got {fit_max}")
    n = len(x)
    t0 = time.time()
    fit = np.sort(np.random.default_rng(seed).choice(n, size=fit_max, replace=False)) if n > fit_max \
        else np.arange(n)
    mcs = min_cluster_size if min_cluster_size is not None else default_min_cluster_size(len(fit))
    if mcs < 2:
        raise ValueError(f"min_cluster_size must be >= 2, got {mcs}")
    if len(fit) < mcs:  # too few points for any cluster
        return np.full(n, NOISE, dtype=np.int64)
    ms = min_samples if min_samples is not None else min(mcs, 10)
    fitted = HDBSCAN(min_cluster_size=mcs, min_samples=ms, copy=True).fit_predict(x[fit])
    labels = np.empty(n, dtype=np.int64)
    labels[fit] = fitted
    if len(fit) < n:
        rest = np.setdiff1d(np.arange(n), fit)
        _, nearest_fit = cKDTree(x[fit]).query(x[rest], k=1)
        labels[rest] = fitted[nearest_fit]
    labels = _by_size(labels)
    logger.info("clustered %d points (fitted on %d) into %d clusters in %.2fs", n, len(fit),
                int(labels.max()) + 1, time.time() - t0)
    return labels


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0, 1, ... by decreasing size (ties: first appearance); noise stays -1."""
    ids, first, counts = np.unique(labels[labels != NOISE], return_index=True, return_counts=True)
    order = sorted(range(len(ids)), key=lambda j: (-counts[j], first[j]))
    lut = np.full(int(labels.max()) + 2, NOISE, dtype=np.int64)  # label + 1 -> new label (noise at 0)
    for rank, j in enumerate(order):
        lut[int(ids[j]) + 1] = rank
    out = lut[labels + 1]
    return out


def cluster_members(labels: np.ndarray, index: int) -> np.ndarray:
    """Rows in the same cluster as row ``index`` (sorted, itself included).

    A noise point (label ``-1``) belongs to no cluster: the result is just
    ``[index]``, so a bulk decision never sweeps up unrelated noise.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if not isinstance(index, (int, np.integer)) or not 0 <= index < len(labels):
        raise ValueError(f"index must be a row number in [0, {len(labels)}), got {index!r}")
    if labels[index] == NOISE:
        return np.array([index], dtype=np.int64)
    return np.flatnonzero(labels == labels[index]).astype(np.int64)
