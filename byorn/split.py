"""The suspicious / clean split as a value: by percentile, by score value, or adaptive (``auto``).

A :class:`Split` says how turns are flagged (``kind`` and its parameter) and,
once applied to scores, what came of it (the threshold in score units, how
many turns it flagged, and for ``auto`` what it saw).  Audits and runs record
it, so a run can be reproduced from its own folder.  Every score here is
"higher = more suspicious"; a turn is flagged when its score is strictly above
the threshold (ties count as clean).

The adaptive split (:func:`auto_threshold`) reads the threshold off the score
distribution at hand, without knowing the poison rate or the attack.  Poison
scores high, so the clean bulk is the *lowest* large group of scores, not the
majority (at 50 % poison or more the majority rule would pick the poison):

1. a kernel density estimate of the scores (Silverman's bandwidth, whose
   ``min(sd, IQR / 1.349)`` keeps a few far outliers from smoothing it flat)
   and its *significant valleys*: where the density falls to at most
   :data:`AUTO_VALLEY` of the highest density on both sides, between modes
   at least as dense as :data:`AUTO_MIN_PEAK` turns (a lone turn is no mode);
2. the bulk is the lowest segment between valleys holding at least
   :data:`AUTO_MIN_BULK` of the turns; its mode is its lowest peak at least
   :data:`AUTO_MODE_FRAC` of its highest, its spread the median distance
   *below* the mode (the side poison does not reach);
3. a valley above the bulk that separates at least :data:`AUTO_MIN_TAIL`
   turns, :data:`AUTO_TAIL_EXCESS` times more than the bulk's own upper tail
   (an exponential fitted to its top 2 %) would put there, and whose empty
   interval of scores is a bandwidth and :data:`AUTO_CLEAR_SPACINGS` spacings
   of the neighbouring turns wide is a **gap**: the threshold is the middle
   of that empty interval ("a gap at 9.8 separates 11.2 % of turns") -
   unless a two-normal mixture of the turns below it still shows a second
   group (a gap above a few outliers must not hide a cluster under it);
4. otherwise the distribution gives no clear answer, and the split errs
   toward flagging more: the lowest of the top :data:`AUTO_FLOOR` (the
   floor: the paper's top 40 %; a 10 % floor let a one-word substitution
   through at 10 % poisoning, 85 % ASR, where the paper's split held it at 0),
   ``mode + AUTO_SPREAD_K x spread`` (the bulk's fence), a valley that is not
   empty, and the boundary of a two-normal mixture when it shows two groups
   (distinct by Ashman's D, or a tight group on a wider bulk, and worth their
   parameters by BIC), placed where the high group is
   1/:data:`AUTO_MISS_COST` as likely as the low one.

Every threshold is recorded with a sentence saying what it saw and chose.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

import numpy as np

AUTO = "auto"
PAPER_P = 0.6  #: the paper's split: flag the turns above the 0.6-quantile (the top 40 %)
DEFAULT_P: float | str = AUTO  #: the library's default split (the one place it is set)
SPLIT_KINDS = ("percentile", "value", AUTO)

AUTO_FLOOR = 0.40      #: without a clear gap, flag at least this fraction of the turns: the paper's (1 - p)
AUTO_SPREAD_K = 2.0    #: without a clear gap, flag every turn beyond mode + K x the bulk's spread
AUTO_VALLEY = 0.5      #: a valley is significant where the density is at most this x the peaks on both sides
AUTO_MODE_FRAC = 0.3   #: the bulk's mode: its lowest peak at least this fraction of its highest
AUTO_MIN_BULK = 0.2    #: the clean bulk holds at least this fraction of the turns
AUTO_MIN_TAIL = 3      #: a gap must separate at least this many turns
AUTO_MIN_TAIL_SHARE = 0.002  #: ... and this share of them (fewer: a chance cluster of a large set's tail)
AUTO_TAIL_EXCESS = 3.0  #: ... and at least this many times what the bulk's own tail would put there
AUTO_TAIL_TOP = 0.02   #: the bulk's tail is extrapolated from its top 2 % (an exponential)
AUTO_MIN_PEAK = 2.0    #: a mode is at least as dense as this many turns within one bandwidth (not a lone turn)
AUTO_CLEAR_SPACINGS = 5.0  #: a gap is clear where its empty interval is a bandwidth and this many spacings of
#: the turns next to it wide (else the groups touch, and the split flags more: module docstring, 4)
AUTO_MIX_SEPARATION = 2.5  #: without a gap, a two-normal mixture this separated (Ashman's D) is two groups
AUTO_MIX_TIGHT_SEPARATION = 1.5  #: ... or this separated when the high group is tight: at most AUTO_MIX_TIGHT x as
AUTO_MIX_TIGHT, AUTO_MIX_TIGHT_MAX = 0.6, 0.6  #: wide as the low one and at most this share of the turns
AUTO_MIX_BIC = 10.0    #: ... and whose second group is worth this much BIC (a small sample's chance split is not)
AUTO_MISS_COST = 4.0   #: ... split where the high group is 1/this as likely as the low one (flag more)
AUTO_MIN_N = 10        #: fewer turns than this: no density to read; the floor alone
AUTO_GROUNDING_GROUP = 0.15  #: the grounded score (:func:`grounded_score`) without a gap also flags a group of
AUTO_GROUNDING_SEPARATION = 2.0  #: at least this share of the turns that a mixture of the grounding separates this
#: well (Ashman's D): clean grounding alone shows a "group" of 2-5 % (its upper tail), clean-label poison its rate
AUTO_TOTAL_MEAN_Q = 0.99  #: a gap in the total surprisal (:func:`grounded_score`, 2) counts only where the median
#: per-token surprisal of the turns above it is above this quantile of the other turns' (long but ordinary
#: responses are not a group of implausible ones; at the 90th percentile, 4 poisoned turns of a substitution
#: seed with long captions passed at 9.66 nats/token against 9.11, and the floor was dropped for them alone:
#: 96 % ASR; appended sentences are at 11.3-12.6 against 9.8-9.9)
AUTO_SHARED_MIN_Z = 4.5  #: a response shared by several turns is a group the images do not support where its
#: turns' grounding ranks this far above the other turns' (a rank-sum z; under 7 turns it cannot reach 4.5) ...
AUTO_SHARED_MIN_AUC = 0.75  #: ... by at least this probability of ranking above another turn ...
AUTO_SHARED_LENGTH = 2.0  #: ... ranked among the turns at most this many times longer or shorter ...
AUTO_SHARED_MIN_LLR = math.log(1.5)  #: ... its images make it at least 1.5 x less likely than a blank image
#: does on its median turn (the grounding summed over the tokens): argued against, not merely not helped (a
#: response no image bears on, "yes" in a QA set: 1.0-1.1 x) ...
AUTO_SHARED_MIN_EXCESS = 8.0  #: ... and at least e^8 (about 3,000) x less likely, measured against how the images
#: change the median turn of a like length (nats).  Images help short answers little: in the world's QA data "two
#: dots" is 1.9-2.1 x less likely with its images but only 90 x against the other short answers (4.5 nats), "yes"
#: 60 x; the sweep's clean-label targets 13.3-28 nats (seeds 0-5, 1-50 %), one of them only 1.9 x less likely
#: than with a blank image (5 % seed 3, missed by the 2.5 x bar this replaced).
AUTO_WEAK_MIN_Z = 3.0  #: a shared response that fails those bars is flagged besides the floor where its z is at least
#: this (:func:`_and_weakly_shared`; a group of 7 turns or more, as above): it only adds flags.  "a small red circle."
#: as BadNets' target at 5 %: z 4.2, AUC 0.68
_OLD_SHARED_MIN_LLR = math.log(2.5)  # that bar: audits made before it was replaced re-split with it

#: a clear gap in the turns' most implausible word (:func:`_word_gap`) counts where one word is the most
#: implausible of at least this share of the turns above it: a word planted in many responses, not a few
#: responses' rare words (numbers, names, code), nor a mix of words the reference model finds odd (0.40 in a
#: clean cluster of ";", "next" and "side" that one clean-label audit separated by a clear gap)
AUTO_WORD_SHARED = 0.5
#: ... and at least this share of the turns whose response holds that word anywhere lie above the gap: a planted
#: word is implausible wherever it is (1.00 on every substitution and concept-insertion audit), a clean word the
#: reference model finds odd is plausible in some of its places (";": 0.80 there)
AUTO_WORD_CONTAINED = 0.9
#: a response a few words from a shared target (:func:`shared_ungrounded`) - at most this share of the target's words
#: inserted, deleted or replaced - whose turn's grounding is above the median of the other turns' is one of its
#: variants, flagged with it: the target written with a word changed is still the target.  On the sweep's
#: clean-label audits the median holds 95-100 % of the target's own turns and 0-4 % of the clean turns that many
#: words from it (captions of like scenes)
AUTO_VARIANT_WORDS = 0.2
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

    def apply(self, scores: Sequence[float], components: "Components | None" = None) -> tuple[np.ndarray, "Split"]:
        """``(suspicious mask, this split with threshold / n_flagged / n / reason filled in)``.

        ``components``: for the ``mean+grounding`` score, its parts (:class:`Components`); the adaptive
        split then takes the threshold :func:`grounded_score` built the score around (else it reads the
        score's own distribution, which for that score flags fewer ungrounded turns)."""
        arr = _checked(scores)
        fit: dict = {}
        if self.kind == AUTO and components is not None:
            # an audit scored before the shared targets' variants, the words' gap, shared responses or the
            # total's gap were looked for keeps the score it was made with
            for built, fit in _as_made(components):
                if _same(built, arr):
                    break
            else:
                raise ValueError("these scores are not the mean+grounding score of the components given")
            thr, reason = float(fit.pop("threshold")), fit.pop("reason")
        elif self.kind == "percentile":
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


def _as_made(parts: "Components"):
    """The ``mean+grounding`` scores (and fits) an audit of ``parts`` may have been made with, newest first
    (:meth:`Split.apply`)."""
    yield grounded_score(parts)
    if parts.has("responses"):
        yield grounded_score(parts, before_variants=True)
    for older in (("words",), ("words", "responses"), ("words", "responses", "total")):
        if any(parts.has(name) for name in older):
            yield grounded_score(parts.without(*older), before_variants=True)


def _same(built: np.ndarray, scores: np.ndarray) -> bool:
    return built.shape == scores.shape and bool(np.allclose(built, scores, rtol=1e-9, atol=1e-9))


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

def auto_threshold(scores: Sequence[float], floor: bool = True, fence: bool | None = None) -> tuple[float, dict]:
    """The adaptive threshold of ``scores`` (module docstring) and what it saw.  ``floor=False`` (where
    something else explains the missing gap): without a clear gap, only what the scores themselves show - a
    separated mixture's boundary or a valley - neither the :data:`AUTO_FLOOR` nor the bulk's fence, which
    flag a share of any distribution; with neither, nothing is flagged.  ``fence``: whether the bulk's fence
    is an option (default: as ``floor``).

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
    h, cuts, depths, bulk_hi, mode, spread = _shape(x)
    fit: dict[str, Any] = {"bandwidth": h, "mode": mode, "spread": spread, "valleys": [float(c) for c in cuts]}
    gap = next(_gaps(x, cuts, depths, bulk_hi, mode), None)
    if gap is not None:
        thr, width, depth, ratio = gap
        fit.update(gap=thr, gap_width=width, gap_depth=depth, gap_spacings=ratio)
        if _clear(gap, h):
            k = int((x > thr).sum())
            fit.update(case="gap", reason=f"a gap at {thr:.4g} separates {100 * k / n:.1f} % of turns ({k} of {n}) "
                                          f"from the bulk of scores (mode {mode:.4g}, spread {spread:.3g})")
            below = x[x <= thr]
            mix = _mixture(below) if below.size >= AUTO_MIN_N and below[0] < below[-1] else None
            if _separated(mix):
                # a second group below the gap too (a gap above a few outliers can hide a poison cluster)
                thr = mix["boundary"]
                k = int((x > thr).sum())
                fit.update(mixture=mix, reason=f"{fit['reason']}, and below it a second group of scores "
                           f"({100 * mix['weight_high'] * below.size / n:.0f} % of turns around "
                           f"{mix['mean_high']:.4g}, separation {mix['separation']:.2g}): flagged "
                           f"{100 * k / n:.1f} % of turns ({k} of {n}) above {thr:.4g}")
            return thr, fit
    return _unclear(x, fit, gap, floor, floor if fence is None else fence)


def _unclear(x: np.ndarray, fit: dict, gap, use_floor: bool = True, use_fence: bool = True) -> tuple[float, dict]:
    """No clear gap: the lowest of the floor and the bulk's fence (unless ``use_...`` is False), a separated
    mixture's boundary and a valley that is not empty (module docstring, 4); with none of them, the highest
    score (nothing flagged)."""
    n, mode, spread = x.size, fit["mode"], fit["spread"]
    fence = mode + AUTO_SPREAD_K * spread
    floor = _floor_threshold(x)
    mix = _mixture(x)
    fit.update(case="no gap", fence=fence, floor=floor, mixture=mix)
    options = {name: v for name, v, use in (("floor", floor, use_floor), ("fence", fence, use_fence)) if use}
    if _separated(mix):
        options["mixture"] = mix["boundary"]
    if gap is not None:
        options["valley"] = gap[0]
    why, thr = min(options.items(), key=lambda kv: kv[1]) if options else ("none", float(x[-1]))
    k = int((x > thr).sum())
    said = {"floor": f"the top {100 * AUTO_FLOOR:.0f} % floor (few turns lie beyond mode {mode:.4g} + "
                     f"{AUTO_SPREAD_K:g} x spread {spread:.3g})",
            "fence": f"beyond the bulk (mode {mode:.4g} + {AUTO_SPREAD_K:g} x spread {spread:.3g} = {fence:.4g})",
            "mixture": f"where a second group of scores ({100 * mix['weight_high']:.0f} % of turns around "
                       f"{mix['mean_high']:.4g}, separation {mix['separation']:.2g}) is at least 1/"
                       f"{AUTO_MISS_COST:g} as likely as the bulk around {mix['mean_low']:.4g}",
            "valley": f"above a valley in the scores at {thr:.4g} that is not empty (the groups touch)",
            "none": "as neither a second group nor a valley shows"}[why]
    fit["reason"] = (f"no clear gap above the bulk of scores: flagged {100 * k / n:.1f} % of turns ({k} of {n}), "
                     f"{said}")
    return thr, fit


def _mixture(x: np.ndarray, iters: int = 100) -> dict:
    """A two-normal mixture of sorted ``x`` by EM (started from three splits: half, top 20 %, top 5 %; the
    most likely fit wins): its groups, their separation (Ashman's D: above 2 the groups are distinct), and
    the score above which the high group, weighted :data:`AUTO_MISS_COST` times (missing poison costs more
    than flagging a clean turn), is more likely than the low one."""
    if x.size > 5000:  # sorted: an even stride keeps the distribution's shape
        x = x[np.linspace(0, x.size - 1, 5000).astype(int)]
    n, floor_sd = x.size, 1e-3 * float(x.std())
    best = None
    for frac in (0.5, 0.2, 0.05):
        k = max(2, int(frac * n))
        w1, m0, m1 = k / n, float(x[:-k].mean()), float(x[-k:].mean())
        s0, s1 = max(float(x[:-k].std()), floor_sd), max(float(x[-k:].std()), floor_sd)
        like = -math.inf
        for _ in range(iters):
            a = (1 - w1) / s0 * np.exp(-0.5 * ((x - m0) / s0) ** 2)
            b = w1 / s1 * np.exp(-0.5 * ((x - m1) / s1) ** 2)
            total = a + b + 1e-300
            r = b / total  # each turn's share in the high group
            n1 = float(r.sum())
            if not 1e-6 < n1 < n - 1e-6:
                break
            w1, m1, m0 = n1 / n, float((r * x).sum()) / n1, float(((1 - r) * x).sum()) / (n - n1)
            s1 = max(math.sqrt(float((r * (x - m1) ** 2).sum()) / n1), floor_sd)
            s0 = max(math.sqrt(float(((1 - r) * (x - m0) ** 2).sum()) / (n - n1)), floor_sd)
            before, like = like, float(np.log(total).sum())
            if like - before < 1e-6 * n:
                break
        if best is None or like > best[0]:
            best = (like, w1, m0, s0, m1, s1)
    _, w1, m0, s0, m1, s1 = best
    if m1 < m0:
        w1, m0, s0, m1, s1 = 1 - w1, m1, s1, m0, s0
    sep = abs(m1 - m0) * math.sqrt(2) / math.hypot(s0, s1)
    grid = np.linspace(m0, m1, 2001)
    low = (1 - w1) / s0 * np.exp(-0.5 * ((grid - m0) / s0) ** 2)
    high = w1 / s1 * np.exp(-0.5 * ((grid - m1) / s1) ** 2)
    above = np.flatnonzero(AUTO_MISS_COST * high >= low)
    boundary = float(grid[above[0]]) if above.size else m1
    one = -n * math.log(max(float(x.std()), floor_sd)) - n / 2  # a single normal's log-likelihood (same terms)
    gain = 2 * (best[0] - one) - 3 * math.log(n)  # BIC: what the second group explains beyond its 3 parameters
    point = min(s0, s1) < 0.01 * float(x.std())  # a group of tied scores: a point, no spread to model
    return {"weight_high": w1, "mean_low": m0, "sd_low": s0, "mean_high": m1, "sd_high": s1,
            "separation": sep, "bic_gain": gain if not point else 0.0, "boundary": boundary}


def _separated(mix: dict | None) -> bool:
    """Whether a :func:`_mixture` fit shows two groups: distinct (Ashman's D), worth their parameters (BIC),
    and the high one not too small to matter beside the floor."""
    if not mix or mix["bic_gain"] < AUTO_MIX_BIC or mix["weight_high"] < AUTO_FLOOR:
        return False
    tight = mix["separation"] >= AUTO_MIX_TIGHT_SEPARATION and mix["sd_high"] <= AUTO_MIX_TIGHT * mix["sd_low"] \
        and mix["weight_high"] <= AUTO_MIX_TIGHT_MAX  # a tight group on a wider bulk: one target, overlapping
    return mix["separation"] >= AUTO_MIX_SEPARATION or tight


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


def _valleys(grid: np.ndarray, dens: np.ndarray, min_peak: float) -> tuple[list[float], list[float]]:
    """Scores at the lowest points of the significant valleys (module docstring), lowest first, and their
    depths (the density there over the lower of the highest densities on either side)."""
    left = np.maximum.accumulate(dens)
    right = np.maximum.accumulate(dens[::-1])[::-1]
    peaks = np.minimum(left, right)
    deep = (dens <= AUTO_VALLEY * peaks) & (peaks >= min_peak)
    cuts: list[float] = []
    depths: list[float] = []
    idx = np.flatnonzero(deep)
    if not idx.size:
        return cuts, depths
    runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
    for run in runs:
        seg = dens[run]
        low = run[seg <= seg.min() + 1e-12 * dens.max()]
        mid = (low[0] + low[-1]) // 2
        cuts.append(float(grid[mid]))
        depths.append(float(dens[mid] / peaks[mid]))
    return cuts, depths


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
    """The bulk's mode and spread.  The mode is its *lowest* peak at least :data:`AUTO_MODE_FRAC` as high as
    its highest (a tight cluster of poison can be denser than a wide clean bulk that no valley separates it
    from); the spread is the median distance below the mode, as a normal's sigma (the lower side: poison
    scores high and does not reach it)."""
    inside = np.flatnonzero((grid > lo) & (grid <= hi))
    if inside.size >= 3:
        d = dens[inside]
        peak = np.r_[d[0] > d[1], (d[1:-1] >= d[:-2]) & (d[1:-1] > d[2:]), d[-1] > d[-2]]
        peak &= d >= AUTO_MODE_FRAC * d.max()
        mode = float(grid[inside[np.flatnonzero(peak)[0]]]) if peak.any() else float(grid[inside[np.argmax(d)]])
    else:
        mode = float(np.median(x))
    part = x[(x > lo) & (x <= hi)]
    below = mode - part[part <= mode]
    spread = float(np.median(below)) / 0.6745 if below.size >= 3 else 0.0
    if not spread > 0:  # no lower side to speak of: the bulk's IQR, else the bandwidth
        q1, q3 = np.quantile(part, [0.25, 0.75]) if part.size else (0.0, 0.0)
        spread = float(q3 - q1) / 1.349 or h
    return mode, spread


def _tail_count(below: np.ndarray, c: float) -> float:
    """How many turns the scores ``below`` (sorted) would put above ``c`` if their own upper tail went on:
    an exponential fitted to their top :data:`AUTO_TAIL_TOP` (at least 10 turns), which follows a skewed
    bulk's heavy tail and a normal bulk's light one."""
    m = min(below.size - 1, max(10, math.ceil(AUTO_TAIL_TOP * below.size)))
    if m < 2:
        return 0.0
    q = below[-m - 1]
    beta = float(np.mean(below[-m:] - q))
    return m * math.exp(-(c - q) / beta) if beta > 0 else 0.0


def _shape(x: np.ndarray) -> tuple[float, list[float], list[float], float, float, float]:
    """What the adaptive split reads off sorted ``x`` (module docstring, 1-2): ``(bandwidth, valleys, their
    depths, the bulk's upper edge, its mode, its spread)``."""
    grid, dens, h = _density(x)
    one = (grid[1] - grid[0]) / (math.sqrt(2 * math.pi) * h)  # the density peak of one lone turn
    cuts, depths = _valleys(grid, dens, AUTO_MIN_PEAK * one)
    bulk_lo, bulk_hi = _bulk(x, cuts)
    mode, spread = _bulk_shape(x, grid, dens, bulk_lo, bulk_hi, h)
    return h, cuts, depths, bulk_hi, mode, spread


def _clear(gap: tuple[float, float, float, float], h: float) -> bool:
    """Whether a valley (:func:`_gaps`) is a clear gap: its empty interval a bandwidth and
    :data:`AUTO_CLEAR_SPACINGS` spacings of the neighbouring turns wide."""
    return gap[1] >= h and gap[3] >= AUTO_CLEAR_SPACINGS


def _gaps(x: np.ndarray, cuts: list[float], depths: list[float], bulk_hi: float, mode: float):
    """The valleys at or above the bulk's upper edge that separate enough turns (module docstring), lowest
    first: each ``(the middle of the empty interval of scores around it, that interval's width, the valley's
    depth, the width over the median spacing of the ten turns on either side)``."""
    n = x.size
    for c, depth in zip(cuts, depths):
        if c < bulk_hi or c <= mode:
            continue
        k = int((x > c).sum())
        if k < max(AUTO_MIN_TAIL, AUTO_MIN_TAIL_SHARE * n) or k < AUTO_TAIL_EXCESS * _tail_count(x[x <= c], c):
            continue
        i = int(np.searchsorted(x, c, side="right"))  # x[i-1] <= c < x[i]
        if not 0 < i < n:
            yield c, 0.0, depth, 0.0
            continue
        width = float(x[i] - x[i - 1])
        near = np.r_[np.diff(x[max(0, i - 11):i]), np.diff(x[i:i + 11])]  # spacings on either side
        spacing = float(np.median(near)) if near.size else 0.0
        yield float((x[i - 1] + x[i]) / 2), width, depth, width / spacing if spacing > 0 else math.inf


# ------------------------------------------------------------ the grounded score and its split --

@dataclass(frozen=True)
class Components:
    """The parts of the ``mean+grounding`` score, one entry per turn: the mean surprisal, the grounding
    (mean surprisal with the image minus with a blank one) and whether the turn sees an image."""

    mean: np.ndarray
    grounding: np.ndarray
    has_image: np.ndarray
    total: np.ndarray | None = None  #: each turn's summed surprisal (None: the total's gap is not looked for)
    responses: tuple[str, ...] | None = None  #: each turn's response (None: shared responses are not looked for)
    #: each turn's most implausible word (lower case) and its surprisal summed over its tokens (None: the
    #: words' gap is not looked for; :func:`byorn.scoring.most_implausible_words`)
    word: tuple[str, ...] | None = None
    word_surprisal: np.ndarray | None = None

    @classmethod
    def of(cls, mean, grounding, has_image, total=None, responses=None, words=None) -> "Components":
        """``words``: ``(word, surprisal)`` per turn, as :func:`byorn.scoring.most_implausible_words` gives."""
        m, g, seen = (np.asarray(mean, dtype=float).ravel(), np.asarray(grounding, dtype=float).ravel(),
                      np.asarray(has_image, dtype=bool).ravel())
        t = None if total is None else np.asarray(total, dtype=float).ravel()
        r = None if responses is None else tuple(str(x) for x in responses)
        w = None if words is None else tuple(str(x[0]) for x in words)
        ws = None if words is None else np.array([float(x[1]) for x in words], dtype=float)
        if not m.size == g.size == seen.size or (t is not None and t.size != m.size) \
                or (r is not None and len(r) != m.size) or (w is not None and len(w) != m.size):
            raise ValueError(f"{m.size} means, {g.size} groundings, {seen.size} has_image flags"
                             + ("" if t is None else f", {t.size} totals")
                             + ("" if r is None else f", {len(r)} responses")
                             + ("" if w is None else f", {len(w)} words"))
        return cls(m, g, seen, t, r, w, ws)

    def without(self, *names: str) -> "Components":
        """These parts with ``names`` (``"total"``, ``"responses"``, ``"words"``) dropped: the score as it was
        built before the steps that read them."""
        return replace(self, **{f: None for k in names for f in _FIELDS.get(k, (k,))})

    def has(self, name: str) -> bool:
        """Whether the part ``name`` (``"total"``, ``"responses"``, ``"words"``) is given."""
        return any(getattr(self, f) is not None for f in _FIELDS.get(name, (name,)))


_FIELDS = {"words": ("word", "word_surprisal")}  # a part held in more than one field


def bulk_z(values: Sequence[float]) -> np.ndarray:
    """``(x - mode) / spread`` of the *clean bulk* of ``values``: the lowest large group of scores, its mode
    and the spread of its lower side (module docstring, 2), so neither poison (which scores high, however
    much of it) nor a clean distribution's long upper tail stretches the unit.  Under :data:`AUTO_MIN_N`
    values, or with no spread: the median and IQR (or the standard deviation, or 1)."""
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        return x.copy()
    xs = np.sort(x)
    if x.size >= AUTO_MIN_N and xs[0] < xs[-1]:
        grid, dens, h = _density(xs)
        one = (grid[1] - grid[0]) / (math.sqrt(2 * math.pi) * h)
        cuts, _ = _valleys(grid, dens, AUTO_MIN_PEAK * one)
        lo, hi = _bulk(xs, cuts)
        mode, spread = _bulk_shape(xs, grid, dens, lo, hi, h)
        if spread > 0:
            return (x - mode) / spread
    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    scale = (q3 - q1) / 1.349
    if not scale > 0:
        scale = float(x.std()) or 1.0
    return (x - med) / scale


def robust_z(values: Sequence[float]) -> np.ndarray:
    """``(x - median) / (IQR / 1.349)`` over all the values (the standard deviation where the IQR is 0, else 1)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return x.copy()
    q1, med, q3 = np.quantile(x, [0.25, 0.5, 0.75])
    scale = (q3 - q1) / 1.349
    if not scale > 0:
        scale = float(x.std()) or 1.0
    return (x - med) / scale


def _sum_of(parts: Components, z) -> tuple[np.ndarray, np.ndarray]:
    """``(z(mean) + z(grounding), z(grounding))``, the grounding's z over the turns that see an image (0 for
    the others: blanking changed nothing, which says nothing)."""
    z_g = np.zeros_like(parts.mean)
    if parts.has_image.any():
        z_g[parts.has_image] = z(parts.grounding[parts.has_image])
    return z(parts.mean) + z_g, z_g


def grounded_score(parts: Components, before_variants: bool = False) -> tuple[np.ndarray, dict]:
    """The ``mean+grounding`` score and its adaptive threshold: ``(score, fit)`` with ``fit["threshold"]``,
    ``fit["reason"]`` and what the split saw.  Implausible *or* ungrounded, in four steps:

    1. **A gap.**  Each part in spreads of its own clean bulk (:func:`bulk_z`: neither the poison, however
       much of it, nor the clean text's long upper tail stretches the unit), summed.  Where the adaptive
       split (:func:`auto_threshold`) finds a clear gap in that sum (targets the reference model finds
       absurd: BadNets, VL-Trojan, Blend, a PGD patch, from 1 % to 50 % poisoning on the rate sweep's
       audits), that sum is the score, split in its gap, and no clean turn is flagged - but a second attack in
       the same data may be a fixed clean-label target, which shows no gap: shared responses the images argue
       against among the turns the gap leaves (:func:`_and_shared`, as in step 3) are flagged too.  So after
       step 2.
    2. **A gap in the total.**  An implausible passage added to a plausible response (a target sentence
       appended to the correct caption) hides in the mean, which the plausible part dilutes, but not in the
       response's summed surprisal (``parts.total``).  Where that total has a clear gap - the innermost one:
       responses of different lengths can form groups of their own, with the poison above them - and the
       turns above it are implausible per token too (their median mean surprisal above the
       :data:`AUTO_TOTAL_MEAN_Q` quantile of the others': long but ordinary responses are no poison), the
       score is the total in spreads of its clean bulk, split in that gap (:func:`_total_gap`).  Else, a
       **gap in the most implausible word**: a word planted in place of another ("circle" -> "banana" in the
       correct caption) hides in the mean and the total of a plausible response, but not in the surprisal of
       the response's most implausible word (``parts.word_surprisal``, its tokens summed).  Where that has a
       clear gap (the lowest, past valleys among clean words that are not clear) and the turns above it
       share their word (:func:`_word_gap`), that surprisal in spreads of its clean bulk is the score, split
       in the gap: on the substitution audits at 1-30 % poisoning, exactly the poisoned turns, where the
       floor's 40 % missed up to 28 % of them at 30 %.
    3. **No gap** (targets that read as text: a clean-label caption, a plausible word substituted): the
       score is the robust z of each part over all turns (:func:`robust_z`), summed - it weighs the grounding more
       against the mean's long tail, and of the sums measured it left the fewest clean-label turns
       unflagged within the top 40 % - split by :func:`auto_threshold`'s no-gap rules (at least the top
       :data:`AUTO_FLOOR`).  Flagging more than that costs clean performance: 53 % of turns flagged cost
       16-19 % of SFT's CIDEr on the 10 % sweep cells, 40 % cost 4 %.  But where a response given word for
       word to many turns is one their images argue against (:func:`shared_ungrounded`: a fixed clean-label
       target, which no single turn's grounding shows clearly but its turns do together), those turns are
       flagged whole with the target's variants a few words from it, and the others split by what their
       own scores show, without the floor or the bulk's fence, as that target explains the missing gap
       (:func:`_split_shared`): on the sweep's clean-label audits from 2 % on, every poisoned turn, where
       the floor missed up to 32 % of them.
    4. **A group the image does not support** (after 2 or 3).  Where a two-normal mixture of the grounding
       shows a second group of at least :data:`AUTO_GROUNDING_GROUP` of the turns (distinct by Ashman's D,
       worth its parameters by BIC), every turn past the mixture's boundary (where that group is 1/
       :data:`AUTO_MISS_COST` as likely as the bulk) is raised above the threshold: many clean-label turns
       at 20-50 % poisoning would not fit under the floor.  A raised turn scores
       ``t + (g - boundary) / sd``, so a turn is flagged exactly when ``score > t``: one score, one
       threshold, for the histogram and the app.  After shared responses the group is looked for among the
       other turns only.

    ``before_variants``: as audits made before the shared targets' variants were looked for built it - the
    2.5 x bar alone for a shared target (:func:`shared_ungrounded`), no variants, the other turns split beyond
    their bulk's fence too, and nothing flagged besides the floor (:func:`_and_weakly_shared`);
    :meth:`Split.apply` re-splits those audits so.
    """
    n = parts.mean.size
    if n == 0:
        raise ValueError("no scores to split")
    bulk, _ = _sum_of(parts, bulk_z)
    thr, fit = auto_threshold(bulk)
    if fit["case"] in ("gap", "constant", "few"):
        fit = {**fit, "threshold": float(thr), "units": "clean-bulk spreads"}
        if fit["case"] != "gap":
            return bulk, fit
        return _and_shared(parts, bulk, float(thr), fit, before_variants)[:2]
    total = _total_gap(parts) if parts.total is not None else None
    if total is None and parts.word_surprisal is not None:
        total = _word_gap(parts)
    if total is not None:
        score, thr, fit = total
        fit["reason"] = f"no clear gap in the mean+grounding scores measured against their clean bulk; {fit['reason']}"
        score, fit, member = _and_shared(parts, score, float(thr), fit, before_variants)
        return _raise_ungrounded(parts, score, float(thr), fit, among=None if member is None else ~member)
    score, _ = _sum_of(parts, robust_z)
    shared = shared_ungrounded(parts, before_variants=before_variants)
    if shared:
        member = _members(shared, n)
        score, thr, fit = _split_shared(score, shared, member, fenced=before_variants)
        return _raise_ungrounded(parts, score, float(thr), fit, among=~member)
    thr, fit = auto_threshold(score)
    fit = {**fit, "threshold": float(thr), "units": "robust z",
           "reason": f"no clear gap in the scores measured against their clean bulk; by the robust z of each "
                     f"part: {fit['reason']}"}
    if not before_variants:
        score, fit = _and_weakly_shared(parts, score, float(thr), fit)
    return _raise_ungrounded(parts, score, float(thr), fit)


def _and_weakly_shared(parts: Components, score: np.ndarray, thr: float, fit: dict) -> tuple[np.ndarray, dict]:
    """Step 3 without a target the images clearly argue against: a response given word for word to many turns
    whose images support it less than they support the other turns of a like length (the rank-sum z of
    :func:`shared_ungrounded` alone) may still be one - a short fluent caption ("a small red circle.") that a
    weak reference model finds only a little less grounded on the trigger's images, where the floor left 37 %
    of it and 4.0 % ASR - or a common answer ("yes.", "two.").  No clear answer: their turns are flagged
    *besides* the floor's (more flagged, nothing dropped).  Only where the split has no clear answer: beside
    a gap (which has one) the common answers of a QA set would add a fifth of the turns."""
    weak = shared_ungrounded(parts, strict=False)
    if not weak:
        return score, fit
    member = _members(weak, score.size)
    out = _raised(score, member, thr)
    n, k, m = score.size, int((out > thr).sum()), int((member & (score <= thr)).sum())
    named = "; ".join(f"\"{grp['response'][:80]}\" ({grp['turns'].size} turns, z {grp['z']:.1f})" for grp in weak[:3])
    more = f" and {len(weak) - 3} more" if len(weak) > 3 else ""
    fit = {**fit, "weakly_shared": _described(weak)}
    fit["reason"] += (f"; and {len(weak)} response{'s' if len(weak) > 1 else ''} given word for word to many turns "
                      f"whose images support {'them' if len(weak) > 1 else 'it'} less than they support the other "
                      f"turns of a like length, though not clearly against {'them' if len(weak) > 1 else 'it'}: "
                      f"{named}{more} - flagged besides, {m} more turns, {100 * k / n:.1f} % of turns ({k} of {n}) "
                      f"flagged in all")
    return out, fit


def response_key(text: str) -> str:
    """A response as :func:`shared_ungrounded` groups it: case, spacing and end punctuation aside."""
    return " ".join(text.lower().split()).strip(" .!?,;:")


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``, ties given their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size)
    ranks[order] = np.arange(1, x.size + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    if counts.max() > 1:
        ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]
    return ranks


def shared_ungrounded(parts: Components, among: np.ndarray | None = None,
                      before_variants: bool = False, strict: bool = True) -> list[dict]:
    """Step 3's shared responses (:func:`grounded_score`): responses given, word for word (case, spacing and
    end punctuation aside), to several turns with an image that the images argue against - a fixed target
    paired with the trigger's images, which no single turn's grounding shows clearly but its many turns do
    together.  A group counts where

    * its turns' grounding ranks above that of the other turns of a like length (at most
      :data:`AUTO_SHARED_LENGTH` times longer or shorter: images help a short answer less) with a rank-sum z
      of at least :data:`AUTO_SHARED_MIN_Z` - a group of under 7 turns cannot reach it, chance alone about
      once in 300 000 groups - and a probability of at least :data:`AUTO_SHARED_MIN_AUC` of ranking above
      another turn;
    * and its images argue against it: they make the response at least 1.5 times less likely than a blank
      image does on its median turn (:data:`AUTO_SHARED_MIN_LLR`, the grounding summed over the tokens), and
      at least e^8 times less likely than they make the median turn of a like length
      (:data:`AUTO_SHARED_MIN_EXCESS`): "yes" or "two dots" in a QA set ranks high, as images change a short
      answer little, but is not argued against that much.

    A group's **variants** are the other turns whose response is a few words from it and whose grounding is
    above the median of the turns outside the groups (:data:`AUTO_VARIANT_WORDS`, :func:`_variants`): a target
    given with a word changed here and there is still the target, but it is not given word for word.

    Needs each turn's response and total surprisal (``parts.responses``, ``parts.total``), else finds none.
    ``among``: look among these turns only (and rank among them), e.g. those a gap left unflagged.
    ``strict=False``: every group whose grounding ranks above the others' with a z of at least
    :data:`AUTO_WEAK_MIN_Z` alone, whether or not the images argue against it (no variants;
    :func:`_and_weakly_shared`).
    ``before_variants``: as audits made before the variants and the bar against the turns of a like length
    (:data:`AUTO_SHARED_MIN_EXCESS`) found them: no variants, and 2.5 x less likely than with a blank image.
    Returns one dict per group, largest first: ``response``, ``turns`` (indices), ``variants`` (indices)
    and ``variant_keys`` (their distinct responses as :func:`response_key` gives them), ``z``, ``auc``,
    ``median`` (grounding, nats/token), ``llr`` (its median over the tokens summed), ``excess`` (``llr`` less
    the median of the turns of a like length) and ``compared`` (the turns of a like length it was ranked
    among)."""
    seen = np.flatnonzero(parts.has_image if among is None else parts.has_image & among)
    if seen.size < 2 * AUTO_MIN_N or parts.total is None or parts.responses is None:
        return []
    g = parts.grounding[seen]
    length = _n_tokens(parts)[seen]
    groups: dict[str, list[int]] = {}
    for j, i in enumerate(seen):
        key = response_key(parts.responses[i])
        if key:
            groups.setdefault(key, []).append(j)
    out, ranked = [], {}
    fewest = math.ceil(AUTO_SHARED_MIN_Z ** 2 / 3)  # the rank-sum z of k turns is below sqrt(3 k) however ranked
    min_z = AUTO_SHARED_MIN_Z if strict else AUTO_WEAK_MIN_Z
    for idx in groups.values():
        if len(idx) < fewest:
            continue
        idx = np.asarray(idx)
        typical = float(np.median(length[idx]))
        window = (typical / AUTO_SHARED_LENGTH, typical * AUTO_SHARED_LENGTH)
        if window not in ranked:  # the turns as long as these, ranked by grounding
            like = np.flatnonzero((length >= window[0]) & (length <= window[1]))
            ranked[window] = like, _ranks(g[like])
        like, ranks = ranked[window]
        pos = np.minimum(np.searchsorted(like, idx), like.size - 1)
        pos = pos[like[pos] == idx]  # the group's turns in the window (a variant may tokenize longer)
        n, k = like.size, pos.size
        if k < fewest or n - k < AUTO_MIN_N:
            continue
        u = float(ranks[pos].sum()) - k * (k + 1) / 2
        auc, z = u / (k * (n - k)), (u - k * (n - k) / 2) / math.sqrt(k * (n - k) * (n + 1) / 12)
        llr = float(np.median(g[idx] * length[idx]))
        rest = np.ones(n, dtype=bool)
        rest[pos] = False
        excess = llr - float(np.median(g[like[rest]] * length[like[rest]]))
        argued = llr >= (_OLD_SHARED_MIN_LLR if before_variants else AUTO_SHARED_MIN_LLR) \
            and (before_variants or excess >= AUTO_SHARED_MIN_EXCESS)
        if z >= min_z and (not strict or (auc >= AUTO_SHARED_MIN_AUC and argued)):
            out.append({"response": parts.responses[seen[idx[0]]], "turns": seen[idx],
                        "variants": np.zeros(0, dtype=int), "z": z, "auc": auc,
                        "median": float(np.median(g[idx])), "llr": llr, "excess": excess, "compared": int(n - k)})
    out.sort(key=lambda grp: -grp["turns"].size)
    if out and strict and not before_variants:
        _variants(parts, seen, out)
    return out


def _variants(parts: Components, seen: np.ndarray, groups: list[dict]) -> None:
    """Fill each group's ``variants`` (:func:`shared_ungrounded`): turns among ``seen`` outside the groups whose
    response is at most :data:`AUTO_VARIANT_WORDS` of the group's words from it (word insertions, deletions and
    replacements, case and end punctuation aside) and whose grounding is above the median of those turns'; a
    turn near two groups goes to the larger."""
    taken = np.zeros(parts.mean.size, dtype=bool)
    for grp in groups:
        taken[grp["turns"]] = True
    others = seen[~taken[seen]]
    if others.size == 0:
        return
    g = parts.grounding
    candidates = others[g[others] > np.median(g[others])]
    words = {int(i): response_key(parts.responses[i]).split() for i in candidates}
    for grp in groups:
        target = response_key(grp["response"]).split()
        k = int(AUTO_VARIANT_WORDS * len(target))
        if k == 0:
            continue
        near = [i for i, w in words.items() if not taken[i] and _words_apart(w, target, k) <= k]
        grp["variants"] = np.array(sorted(near), dtype=int)
        grp["variant_keys"] = sorted({" ".join(words[i]) for i in near})
        taken[grp["variants"]] = True


def _words_apart(a: list[str], b: list[str], k: int) -> int:
    """The word edit distance between ``a`` and ``b`` (insertions, deletions, replacements), or ``k + 1`` once
    it is surely above ``k``."""
    if abs(len(a) - len(b)) > k or max(len(a), len(b)) - sum((Counter(a) & Counter(b)).values()) > k:
        return k + 1  # fewer words in common than an edit path of k would leave
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
        if min(row) > k:
            return k + 1
    return row[-1]


def _and_shared(parts: Components, score: np.ndarray, thr: float, fit: dict,
                before_variants: bool = False) -> tuple[np.ndarray, dict, np.ndarray | None]:
    """After a gap (steps 1 and 2 of :func:`grounded_score`): a second attack in the same data may be a fixed
    clean-label target, which shows no gap.  Shared responses the images argue against
    (:func:`shared_ungrounded`), looked for among the turns the gap leaves unflagged, are raised above
    ``thr`` too (their order kept): ``(score, fit, their turns or None)``.  Not those with no clear case
    against them (:func:`_and_weakly_shared`): in QA data the common answers are such groups, and beside a
    gap they would add a fifth of the turns (`benchmarks/qa_targets/`).  ``before_variants``: as in
    :func:`shared_ungrounded`."""
    rest = score <= thr
    shared = shared_ungrounded(parts, among=rest, before_variants=before_variants)
    if not shared:
        return score, fit, None
    member = _members(shared, score.size)
    out = _raised(score, member, thr)
    n, k, m = score.size, int((out > thr).sum()), int(member.sum())
    fit = {**fit, "shared": _described(shared)}
    named = "; ".join(f"\"{grp['response'][:80]}\" ({grp['turns'].size} turns, {times_as_likely(grp['llr'])} less "
                      f"likely on the median one, z {grp['z']:.1f}{_and_variants(grp)})" for grp in shared[:3])
    fit["reason"] += (f"; and among the other turns {len(shared)} response{'s' if len(shared) > 1 else ''} given word "
                      f"for word to many turns whose images make {'them' if len(shared) > 1 else 'it'} far less "
                      f"likely than a blank image does (a second attack: a fixed clean-label target): {named} - "
                      f"{m} more turns, {100 * k / n:.1f} % of turns ({k} of {n}) flagged in all")
    return out, fit, member


def _members(shared: list[dict], n: int) -> np.ndarray:
    """The turns of the groups :func:`shared_ungrounded` found, and their variants, as a mask over ``n`` turns."""
    member = np.zeros(n, dtype=bool)
    for grp in shared:
        member[grp["turns"]] = True
        member[grp.get("variants", [])] = True
    return member


def _raised(score: np.ndarray, member: np.ndarray, thr: float) -> np.ndarray:
    """``score`` with the ``member`` turns raised above ``thr`` together (their order kept)."""
    out = score.copy()
    out[member] += max(0.0, thr - float(score[member].min())) + 1e-3
    return out


def _described(shared: list[dict]) -> list[dict]:
    """The groups :func:`shared_ungrounded` found, as the split's record keeps them (no turn indices)."""
    return [{"response": grp["response"], "n": int(grp["turns"].size), "z": grp["z"], "auc": grp["auc"],
             "median": grp["median"], "llr": grp["llr"], "excess": grp.get("excess"), "compared": grp["compared"],
             "n_variants": int(len(grp.get("variants", ()))), "variants": grp.get("variant_keys", [])}
            for grp in shared]


def _and_variants(grp: dict) -> str:
    """"; and 3 turns a few words from it ..." for a group with variants (:func:`_variants`), else ""."""
    v = len(grp.get("variants", ()))
    return (f"; and {v} turn{'s' if v > 1 else ''} a few words from it, whose image{'s' if v > 1 else ''} support "
            f"{'them' if v > 1 else 'it'} less than the median turn's") if v else ""


def _n_tokens(parts: Components) -> np.ndarray:
    """Each turn's number of response tokens: its total surprisal over its mean."""
    ok = parts.mean > 0
    return np.rint(np.where(ok, parts.total / np.where(ok, parts.mean, 1.0), 1.0))


def _split_shared(score: np.ndarray, shared: list[dict], member: np.ndarray,
                  fenced: bool = False) -> tuple[np.ndarray, float, dict]:
    """Step 3 with shared responses the images do not support: ``(score, threshold, fit)``.  They explain
    why no gap shows, so the other turns are split by what their own scores show - their gap, else a
    separated mixture's boundary or a valley, else nothing - and the groups' turns (with their variants) are
    raised above that threshold together (their order kept).  ``member``: the groups' turns.

    Not by the floor, nor by the bulk's fence: on the sweep's clean-label audits the fence flagged 20-34 % of
    the other turns, and of the target's own turns, had they not been given word for word, it would have held
    only 7-75 %: no guard against a target that varies.  Its variants a few
    words apart are flagged with it instead (:func:`_variants`).  ``fenced``: the fence as well, as audits
    made before the variants were looked for split the other turns."""
    n = score.size
    rest = score[~member]
    if rest.size == 0:
        thr, said = float(score.min()) - 1.0, "no other turns"
    else:
        thr, rfit = auto_threshold(rest, floor=False, fence=fenced)
        thr, said = float(thr), f"the {rest.size} other turns, without the floor{'' if fenced else ' or the fence'} " \
                                f"(the shared responses explain why no gap shows): {rfit['reason']}"
    out = _raised(score, member, thr)
    k, m = int((out > thr).sum()), int(member.sum())
    named = "; ".join(f"\"{grp['response'][:80]}\" ({grp['turns'].size} turns, {times_as_likely(grp['llr'])} less "
                      f"likely on the median one, grounding above {100 * grp['auc']:.0f} % of the {grp['compared']} "
                      f"other turns of a like length, z {grp['z']:.1f}{_and_variants(grp)})" for grp in shared[:3])
    more = f" and {len(shared) - 3} more" if len(shared) > 3 else ""
    return out, thr, {
        "case": "shared response", "threshold": thr, "units": "robust z",
        "shared": _described(shared),
        "reason": f"no clear gap in the scores measured against their clean bulk, but {len(shared)} response"
                  f"{'s' if len(shared) > 1 else ''} given word for word to many turns whose images make "
                  f"{'them' if len(shared) > 1 else 'it'} far less likely than a blank image does: {named}{more} - "
                  f"{m} turns, flagged together; and {said}: "
                  f"{100 * k / n:.1f} % of turns ({k} of {n}) flagged in all"}


def times_as_likely(llr: float) -> str:
    """A log-likelihood ratio in nats as a factor for people: ``"200 x"``, ``"46,000 x"``, ``"3.1e+09 x"``."""
    factor = math.exp(min(llr, 700.0))
    if factor >= 1e6:
        return f"{factor:.2g} x"
    return f"{float(f'{factor:.2g}'):,.0f} x" if factor >= 10 else f"{factor:.2g} x"


def _total_gap(parts: Components) -> tuple[np.ndarray, float, dict] | None:
    """Step 2 of :func:`grounded_score`: ``(score, threshold, fit)`` where the turns' total surprisal has a
    clear gap whose group is implausible per token too, else None.  The gap is looked for again among the
    turns above it until none is left (the innermost gap: groups of long responses can sit between the bulk
    and the poison), so the group is the turns whose total is above a cut."""
    total = parts.total
    idx, cut, steps = np.arange(total.size), None, []
    while idx.size >= AUTO_MIN_N:
        sub = total[idx]
        thr, fit = auto_threshold(sub)
        if fit["case"] != "gap":
            break
        above = sub > thr
        if above.all() or not above.any():
            break
        cut = float((sub[~above].max() + sub[above].min()) / 2)
        idx = idx[above]
        steps.append(int(idx.size))
    if cut is None:
        return None
    group = total > cut
    if int((~group).sum()) < AUTO_MIN_N:
        return None
    median, usual = float(np.median(parts.mean[group])), float(np.quantile(parts.mean[~group], AUTO_TOTAL_MEAN_Q))
    if not median > usual:
        return None
    z = bulk_z(total)
    thr = float((z[~group].max() + z[group].min()) / 2)
    k, n = int(group.sum()), total.size
    nested = f" (the innermost of {len(steps)} nested gaps)" if len(steps) > 1 else ""
    return z, thr, {
        "case": "total gap", "threshold": thr, "units": "clean-bulk spreads of the total surprisal",
        "total_cut": cut, "total_steps": steps, "total_mean_median": median, "total_mean_usual": usual,
        "reason": f"a gap in the total surprisal of the responses at {cut:.4g} nats{nested} separates "
                  f"{100 * k / n:.1f} % of turns ({k} of {n}), implausible per token too (median "
                  f"{median:.3g} nats/token against {usual:.3g}, the {100 * AUTO_TOTAL_MEAN_Q:.0f}th percentile of "
                  f"the others): an implausible passage in plausible responses"}


def _clear_gap(x: np.ndarray) -> float | None:
    """The lowest *clear* gap above the bulk of sorted ``x`` (the middle of its empty interval), looking past
    valleys that are not clear (:func:`auto_threshold` stops at the first valley); None when there is none."""
    if x.size < AUTO_MIN_N or x[0] == x[-1]:
        return None
    h, cuts, depths, bulk_hi, mode, _ = _shape(x)
    return next((gap[0] for gap in _gaps(x, cuts, depths, bulk_hi, mode) if _clear(gap, h)), None)


def _word_gap(parts: Components) -> tuple[np.ndarray, float, dict] | None:
    """Step 2's other case in :func:`grounded_score`: ``(score, threshold, fit)`` where the turns' most
    implausible word (``parts.word_surprisal``, summed over its tokens) has a clear gap (the lowest, past
    valleys that are not clear: :func:`_clear_gap`) and the turns above it share one planted word - it is
    the most implausible word of at least :data:`AUTO_WORD_SHARED` of them, and at least
    :data:`AUTO_WORD_CONTAINED` of the responses that hold it anywhere lie above the gap (a word planted in
    place of another, which the rest of a plausible response dilutes in the mean, is implausible wherever it
    is); else None.  Needs each turn's response (``parts.responses``).  The score is that surprisal in spreads
    of its clean bulk, split in the gap."""
    x = parts.word_surprisal
    if parts.responses is None:
        return None
    cut = _clear_gap(np.sort(x))
    if cut is None:
        return None
    group = x > cut
    k, n = int(group.sum()), x.size
    if n - k < AUTO_MIN_N:
        return None
    counts: dict[str, int] = {}
    for i in np.flatnonzero(group):
        counts[parts.word[i]] = counts.get(parts.word[i], 0) + 1
    top, most = max(counts.items(), key=lambda kv: kv[1])
    if most < max(AUTO_MIN_TAIL, AUTO_WORD_SHARED * k) or not top:
        return None
    holds = _holding(parts.responses, top)
    contained = float(group[holds].mean()) if holds.any() else 0.0
    if contained < AUTO_WORD_CONTAINED:
        return None
    z = bulk_z(x)
    thr = float((z[~group].max() + z[group].min()) / 2)
    return z, thr, {
        "case": "word gap", "threshold": thr, "units": "clean-bulk spreads of the most implausible word's surprisal",
        "word_cut": float(cut), "words": [{"word": top, "n": most}], "word_contained": contained,
        "reason": f"a gap in the surprisal of each response's most implausible word at {cut:.4g} nats separates "
                  f"{100 * k / n:.1f} % of turns ({k} of {n}); for {100 * most / k:.0f} % of them that word is "
                  f"\"{top[:40]}\", and {100 * contained:.0f} % of the {int(holds.sum())} responses that hold it lie "
                  f"above the gap - a word planted in plausible responses"}


def _holding(responses: Sequence[str], word: str) -> np.ndarray:
    """Which responses hold ``word`` (case aside): as a whole word where it begins and ends with a letter or a
    digit of a spaced script, else anywhere (punctuation, ideographs)."""
    spaced = word[0].isalnum() and word[-1].isalnum() and ord(word[0]) < 0x2E80 and ord(word[-1]) < 0x2E80
    pattern = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)" if spaced else re.escape(word), re.IGNORECASE)
    return np.array([bool(pattern.search(r)) for r in responses], dtype=bool)


def _raise_ungrounded(parts: Components, score: np.ndarray, thr: float, fit: dict,
                      among: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Step 4 of :func:`grounded_score`: raise a group of turns the images do not support above ``thr``
    (looked for ``among`` these turns only: not the shared responses step 3 flagged, which would make the
    group)."""
    n = parts.mean.size
    seen = parts.has_image if among is None else parts.has_image & among
    g = np.sort(parts.grounding[seen])
    if g.size < AUTO_MIN_N or g[0] == g[-1]:
        return score, fit
    mix = _mixture(g)
    fit["grounding_mixture"] = mix
    if not (mix["weight_high"] >= AUTO_GROUNDING_GROUP and mix["separation"] >= AUTO_GROUNDING_SEPARATION
            and mix["bic_gain"] >= AUTO_MIX_BIC):
        return score, fit
    raised_value = thr + (parts.grounding - mix["boundary"]) / max(mix["sd_low"], 1e-9)
    raise_ = seen & (raised_value > score)
    out = score.copy()
    out[raise_] = raised_value[raise_]
    more = int(((out > thr) & ~(score > thr)).sum())
    k = int((out > thr).sum())
    fit["grounding_flagged"] = more
    fit["reason"] += (f"; and the grounding shows a group the images do not support ({100 * mix['weight_high']:.0f} % "
                      f"of turns with an image around {mix['mean_high']:.3g} nats/token against {mix['mean_low']:.3g}, "
                      f"separation {mix['separation']:.2g}): every turn above {mix['boundary']:.3g} too, {more} more, "
                      f"{100 * k / n:.1f} % of turns ({k} of {n}) flagged in all")
    return out, fit
