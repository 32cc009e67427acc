"""The suspicious / clean split as a value: by percentile, by score value, or adaptive (``auto``).

A :class:`Split` says how turns are flagged (``kind`` and its parameter) and,
once applied to scores, what came of it (the threshold in score units, how
many turns it flagged, and for ``auto`` what it saw).  Audits and runs record
it, so a run can be reproduced from its own folder.  Every score here is
"higher = more suspicious"; a turn is flagged when its score is strictly above
the threshold (ties count as clean).

The adaptive split (:func:`auto_threshold`) reads the threshold off the score
distribution at hand, without knowing the poison rate:

1. a kernel density estimate of the scores (Silverman's bandwidth, whose
   ``min(sd, IQR / 1.349)`` keeps a few far outliers from smoothing it flat);
2. its *significant valleys*: where the density falls to at most
   :data:`AUTO_VALLEY` of the highest density on *both* sides;
3. the bulk of clean scores is the lowest segment between valleys that holds
   at least :data:`AUTO_MIN_BULK` of the turns (poison scores high, so the
   clean bulk is the lowest large mode, not the majority: at 50 % or more
   poison the majority rule would pick the poison);
4. a valley above the bulk that separates at least :data:`AUTO_MIN_TAIL`
   turns, more than the bulk's own tail would put there, is a gap: the
   threshold is the middle of the empty interval of scores around its lowest
   point (the lowest such valley: flag more rather than less).  A valley
   counts only between modes at least as dense as :data:`AUTO_MIN_PEAK`
   turns within one bandwidth: the scattered turns of a skewed bulk's thin
   tail are no mode;
5. no gap: the distribution gives no clear answer, so the split errs toward
   flagging more: every turn beyond ``mode + AUTO_SPREAD_K x spread`` of the
   bulk (its spread measured on the side of the bulk that poison does not
   reach) and at least the top :data:`AUTO_FLOOR` of turns.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import numpy as np

AUTO = "auto"
PAPER_P = 0.6  #: the paper's split: flag the turns above the 0.6-quantile (the top 40 %)
DEFAULT_P: float | str = AUTO  #: the library's default split (the one place it is set)
SPLIT_KINDS = ("percentile", "value", AUTO)

AUTO_FLOOR = 0.10      #: without a clear gap, flag at least this fraction of the turns
AUTO_SPREAD_K = 2.0    #: without a clear gap, flag every turn beyond mode + K x the bulk's spread
AUTO_VALLEY = 0.5      #: a valley is significant where the density is at most this x the peaks on both sides
AUTO_MIN_BULK = 0.2    #: the clean bulk holds at least this fraction of the turns
AUTO_MIN_TAIL = 2      #: a gap must separate at least this many turns
AUTO_TAIL_EXCESS = 3.0  #: ... and at least this many times what the bulk's own (normal) tail puts there
AUTO_MIN_PEAK = 3.0    #: a mode is at least as dense as this many turns within one bandwidth (not a lone turn)
AUTO_MIN_N = 10        #: fewer turns than this: no density to read; the floor alone
_GRID_MAX = 20_000


def parse_p(value: Any) -> float | str:
    """A split percentile from a flag or a form: ``"auto"`` or a number in [0, 1]."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"p must be 'auto' or a number in [0, 1], got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise ValueError(f"p must be 'auto' or a number in [0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Split:
    """How turns are split into suspicious and clean, and (once applied) what came of it.

    ``kind`` is ``"percentile"`` (flag the turns above the ``p``-quantile),
    ``"value"`` (flag the turns scoring above ``value``) or ``"auto"``
    (:func:`auto_threshold`).  :meth:`apply` fills ``threshold`` (score
    units), ``n_flagged`` and ``n``; for ``auto`` also ``reason`` (a sentence:
    what it saw and chose) and ``fit`` (the numbers behind it).
    """

    kind: str
    p: float | None = None
    value: float | None = None
    threshold: float | None = None
    n_flagged: int | None = None
    n: int | None = None
    reason: str = ""
    fit: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in SPLIT_KINDS:
            raise ValueError(f"split kind must be one of {SPLIT_KINDS}, got {self.kind!r}")
        if self.kind == "percentile" and (self.p is None or parse_p(self.p) == AUTO):
            raise ValueError(f"a percentile split needs p in [0, 1], got {self.p!r}")
        if self.kind == "value" and (self.value is None or not math.isfinite(float(self.value))):
            raise ValueError(f"a value split needs a finite value, got {self.value!r}")

    @classmethod
    def of(cls, p: float | str | None = None, threshold: float | None = None) -> "Split":
        """The split that config fields ask for: ``threshold`` (a score value) wins; else ``p``
        (a percentile or ``"auto"``); neither: :data:`DEFAULT_P`."""
        if threshold is not None:
            return cls("value", value=float(threshold))
        p = parse_p(DEFAULT_P if p is None else p)
        return cls(AUTO) if p == AUTO else cls("percentile", p=p)

    @classmethod
    def from_dict(cls, d: dict) -> "Split":
        known = {"kind", "p", "value", "threshold", "n_flagged", "n", "reason", "fit"}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def spec(self) -> "Split":
        """The split without its results (what to apply to other scores)."""
        return Split(self.kind, p=self.p, value=self.value)

    @property
    def label(self) -> str:
        """``p = 0.6``, ``score > 9.8`` or ``auto``: how a person would name it."""
        if self.kind == "percentile":
            return f"p = {self.p:g}"
        if self.kind == "value":
            return f"score > {self.value:g}"
        return AUTO

    def apply(self, scores: Sequence[float]) -> tuple[np.ndarray, "Split"]:
        """``(suspicious mask, this split with threshold / n_flagged / n / reason filled in)``."""
        arr = _checked(scores)
        fit: dict = {}
        if self.kind == "percentile":
            thr = float(np.quantile(arr, self.p))
            reason = f"the top {100 * (1 - self.p):.3g} % by percentile (p = {self.p:g})"
        elif self.kind == "value":
            thr, reason = float(self.value), f"every turn scoring above {self.value:g}"
        else:
            thr, fit = auto_threshold(arr)
            reason = fit.pop("reason")
        mask = arr > thr
        return mask, replace(self, threshold=thr, n_flagged=int(mask.sum()), n=int(arr.size), reason=reason,
                             fit=fit)

    def describe(self) -> str:
        """One sentence for people: what was flagged and why."""
        if self.threshold is None:
            return f"split {self.label} (not applied yet)"
        share = 100.0 * self.n_flagged / max(self.n, 1)
        head = f"{self.label}: {self.n_flagged} of {self.n} turns ({share:.1f} %) flagged above {self.threshold:.4g}"
        return f"{head}; {self.reason}" if self.reason else head


def _checked(scores: Sequence[float]) -> np.ndarray:
    arr = np.asarray(scores, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError("no scores to split")
    if not np.all(np.isfinite(arr)):
        raise ValueError("scores contain NaN or inf")
    return arr


def percentile_threshold(scores: Sequence[float], p: float = PAPER_P) -> float:
    """The ``p``-quantile of ``scores`` (linear interpolation)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    return float(np.quantile(_checked(scores), p))


def split_by_value(scores: Sequence[float], threshold: float) -> np.ndarray:
    """Boolean mask: True (suspicious) where ``score > threshold``."""
    return np.asarray(scores, dtype=float) > threshold


def split_by_percentile(scores: Sequence[float], p: float = PAPER_P) -> tuple[np.ndarray, float]:
    """Flag the samples scoring above the ``p``-quantile (the paper's default
    p = 0.6 flags the top 40 %).  Returns ``(suspicious_mask, threshold)``.

    Ties at the threshold count as clean, so a constant score flags nothing.
    """
    threshold = percentile_threshold(scores, p)
    return split_by_value(scores, threshold), threshold


# ------------------------------------------------------------------ the adaptive split --

def auto_threshold(scores: Sequence[float]) -> tuple[float, dict]:
    """The adaptive threshold of ``scores`` (module docstring) and what it saw.

    Returns ``(threshold, fit)``; ``fit["case"]`` is ``"gap"``, ``"no gap"``,
    ``"few"`` (under :data:`AUTO_MIN_N` turns) or ``"constant"``, and
    ``fit["reason"]`` says in a sentence what was chosen and why.
    """
    x = np.sort(_checked(scores))
    n = x.size
    if x[0] == x[-1]:
        return float(x[-1]), {"case": "constant", "reason": f"all {n} scores are equal: nothing separates them"}
    if n < AUTO_MIN_N:
        thr = _floor_threshold(x)
        k = int((x > thr).sum())
        return thr, {"case": "few", "reason": f"only {n} turns, too few to read a distribution: the top "
                                              f"{100 * AUTO_FLOOR:.0f} % floor flags {k}"}
    grid, dens, h = _density(x)
    one = (grid[1] - grid[0]) / (math.sqrt(2 * math.pi) * h)  # the density peak of one lone turn
    cuts = _valleys(grid, dens, AUTO_MIN_PEAK * one)
    bulk_lo, bulk_hi = _bulk(x, cuts)
    mode, spread = _bulk_shape(x, grid, dens, bulk_lo, bulk_hi, h)
    fit: dict[str, Any] = {"bandwidth": h, "mode": mode, "spread": spread, "valleys": [float(c) for c in cuts]}
    gap = _gap(x, cuts, bulk_hi, mode, spread)
    if gap is not None:
        thr = gap
        k = int((x > thr).sum())
        fit.update(case="gap", reason=f"a gap at {thr:.4g} separates {100 * k / n:.1f} % of turns ({k} of {n}) "
                                      f"from the bulk of scores (mode {mode:.4g}, spread {spread:.3g})")
        return thr, fit
    fence = mode + AUTO_SPREAD_K * spread
    floor = _floor_threshold(x)
    thr = min(fence, floor)
    k = int((x > thr).sum())
    why = (f"beyond the bulk (mode {mode:.4g} + {AUTO_SPREAD_K:g} x spread {spread:.3g} = {fence:.4g})"
           if fence < floor else f"the top {100 * AUTO_FLOOR:.0f} % floor (few turns lie beyond mode "
                                 f"{mode:.4g} + {AUTO_SPREAD_K:g} x spread {spread:.3g})")
    fit.update(case="no gap", fence=fence, floor=floor,
               reason=f"no clear gap above the bulk of scores: flagged {100 * k / n:.1f} % of turns ({k} of {n}), "
                      f"{why}")
    return thr, fit


def _floor_threshold(x: np.ndarray) -> float:
    """A threshold flagging at least the top :data:`AUTO_FLOOR` of sorted ``x``: a group of tied scores at
    the quantile is flagged whole (unless that would flag every turn)."""
    n = x.size
    k = max(1, math.ceil(AUTO_FLOOR * n))  # turns to flag at least
    below = x[n - k - 1] if n - k - 1 >= 0 else None  # the highest score that may stay clean
    cand = x[n - k]  # the lowest score to flag
    lower = x[x < cand]
    if below is not None and below < cand:
        return float((below + cand) / 2)
    return float((lower[-1] + cand) / 2) if lower.size else float(cand)


def _density(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """A Gaussian KDE of sorted ``x`` on a grid: ``(grid, density, bandwidth)``.

    Scores beyond ``median + 60 spreads`` are drawn at that edge (they are far
    outliers either way, and would otherwise squash the grid's resolution).
    """
    from scipy.ndimage import gaussian_filter1d

    n = x.size
    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    sd = float(x.std())
    spread = min(sd, (q3 - q1) / 1.349) if q3 > q1 else sd
    h = 0.9 * spread * n ** -0.2
    top = min(float(x[-1]), med + 60 * spread)
    lo, hi = float(x[0]) - 4 * h, top + 4 * h
    step = max(h / 8, (hi - lo) / _GRID_MAX)
    edges = np.arange(lo, hi + step, step)
    counts, _ = np.histogram(np.clip(x, lo, top), bins=edges)
    dens = gaussian_filter1d(counts.astype(float), sigma=h / step, mode="constant", truncate=5.0)
    return (edges[:-1] + edges[1:]) / 2, dens, float(h)


def _valleys(grid: np.ndarray, dens: np.ndarray, min_peak: float) -> list[float]:
    """Scores at the lowest points of the significant valleys (module docstring), lowest first."""
    left = np.maximum.accumulate(dens)
    right = np.maximum.accumulate(dens[::-1])[::-1]
    peaks = np.minimum(left, right)
    deep = (dens <= AUTO_VALLEY * peaks) & (peaks >= min_peak)
    cuts = []
    idx = np.flatnonzero(deep)
    if not idx.size:
        return cuts
    runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
    for run in runs:
        seg = dens[run]
        low = run[seg <= seg.min() + 1e-12 * dens.max()]
        cuts.append(float(grid[(low[0] + low[-1]) // 2]))
    return cuts


def _bulk(x: np.ndarray, cuts: list[float]) -> tuple[float, float]:
    """The lowest segment between valleys holding at least :data:`AUTO_MIN_BULK` of the turns:
    ``(lower edge, upper edge)`` in score units (-inf / inf at the ends)."""
    edges = [-math.inf] + cuts + [math.inf]
    need = AUTO_MIN_BULK * x.size
    for lo, hi in zip(edges[:-1], edges[1:]):
        if ((x > lo) & (x <= hi)).sum() >= need:
            return lo, hi
    return -math.inf, math.inf  # every segment small (many modes): one bulk


def _bulk_shape(x, grid, dens, lo: float, hi: float, h: float) -> tuple[float, float]:
    """The bulk's mode (its densest point) and spread: the median distance below the mode, as a normal's
    sigma (the lower side: poison scores high and does not reach it)."""
    inside = (grid > lo) & (grid <= hi)
    mode = float(grid[inside][np.argmax(dens[inside])]) if inside.any() else float(np.median(x))
    part = x[(x > lo) & (x <= hi)]
    below = mode - part[part <= mode]
    spread = float(np.median(below)) / 0.6745 if below.size >= 3 else 0.0
    if not spread > 0:  # no lower side to speak of: the bulk's IQR, else the bandwidth
        q1, q3 = np.quantile(part, [0.25, 0.75]) if part.size else (0.0, 0.0)
        spread = float(q3 - q1) / 1.349 or h
    return mode, spread


def _gap(x: np.ndarray, cuts: list[float], bulk_hi: float, mode: float, spread: float) -> float | None:
    """The lowest valley at or above the bulk's upper edge that separates enough turns (module docstring),
    as the middle of the empty interval of scores around it; None when there is none."""
    from scipy.stats import norm

    n = x.size
    for c in cuts:
        if c < bulk_hi or c <= mode:
            continue
        k = int((x > c).sum())
        expected = n * float(norm.sf((c - mode) / spread))
        if k < AUTO_MIN_TAIL or k < AUTO_TAIL_EXCESS * expected:
            continue
        i = int(np.searchsorted(x, c, side="right"))  # x[i-1] <= c < x[i]
        return float((x[i - 1] + x[i]) / 2) if 0 < i < n else c
    return None
