"""Misalignment scores and the suspicious / clean split (pure functions).

A response's misalignment score summarises its per-token surprisals
``-log p_θ0(y_l | y_<l, x, q)`` under the frozen reference model.  Higher is
more suspicious everywhere in this module.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

SCORE_METHODS = ("mean", "max", "topk")


def aggregate(surprisals: Sequence[Sequence[float]], method: str = "mean", k: int = 3) -> np.ndarray:
    """One score per response from its per-token surprisals (nats, >= 0).

    * ``mean``: the paper's score, mean negative log-likelihood.
    * ``max``: the single most surprising token; catches one inserted word in
      an otherwise plausible response, which the mean dilutes.
    * ``topk``: mean of the ``k`` most surprising tokens, between the two.

    Range [0, inf); higher = more implausible = more suspicious.  An empty
    response raises ``ValueError`` (it cannot be scored).
    """
    if method not in SCORE_METHODS:
        raise ValueError(f"score method must be one of {SCORE_METHODS}, got {method!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    out = np.empty(len(surprisals), dtype=float)
    for i, s in enumerate(surprisals):
        if len(s) == 0:
            raise ValueError(f"response {i} has no tokens to score")
        out[i] = _aggregate_one(np.asarray(s, dtype=float), method, k)
    return out


def _aggregate_one(s: np.ndarray, method: str, k: int) -> float:
    if method == "mean":
        return float(s.mean())
    if method == "max":
        return float(s.max())
    return float(np.sort(s)[-k:].mean())


def percentile_threshold(scores: Sequence[float], p: float = 0.6) -> float:
    """The ``p``-quantile of ``scores`` (linear interpolation)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    arr = np.asarray(scores, dtype=float)
    if arr.size == 0:
        raise ValueError("no scores to split")
    if not np.all(np.isfinite(arr)):
        raise ValueError("scores contain NaN or inf")
    return float(np.quantile(arr, p))


def split_by_value(scores: Sequence[float], threshold: float) -> np.ndarray:
    """Boolean mask: True (suspicious) where ``score > threshold``."""
    return np.asarray(scores, dtype=float) > threshold


def split_by_percentile(scores: Sequence[float], p: float = 0.6) -> tuple[np.ndarray, float]:
    """Flag the samples scoring above the ``p``-quantile (the paper's default
    p = 0.6 flags the top 40 %).  Returns ``(suspicious_mask, threshold)``.

    Ties at the threshold count as clean, so a constant score flags nothing.
    """
    threshold = percentile_threshold(scores, p)
    return split_by_value(scores, threshold), threshold
