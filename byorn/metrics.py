"""Evaluation metrics (DESIGN.md sections 2 and 4).

Pure functions on lists of strings and arrays; public functions check their
inputs and raise ``ValueError`` on empty or mismatched ones.

* Attack success: :func:`attack_success_rate` (lower is better for the defender).
* Clean performance: :func:`cider` (pycocoevalcap CIDEr-D, x100),
  :func:`bleu` (sacrebleu, 0-100), :func:`exact_match` ([0, 1]); higher is better.
* Detection of poisoned samples: :func:`detection_metrics` (AUROC, AP,
  precision / recall of a flagged set); higher is better.
"""
from __future__ import annotations

import math
import re
import string
from typing import Sequence

import numpy as np

ASR_MODES = ("substring", "word", "exact")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT_TABLE = str.maketrans("", "", string.punctuation)
_TOKEN = re.compile(r"\w+|[^\w\s]")


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and articles (a, an, the), collapse whitespace."""
    text = text.lower().translate(_PUNCT_TABLE)
    return " ".join(_ARTICLES.sub(" ", text).split())


def tokenize_caption(text: str) -> str:
    """Lowercase and split punctuation off words, space-joined; punctuation
    tokens are then dropped, as the COCO PTB tokenizer does."""
    return " ".join(t for t in _TOKEN.findall(text.lower()) if t not in string.punctuation)


def _check_pair(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) == 0:
        raise ValueError("predictions is empty")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")


def _as_ref_lists(references: Sequence[str | Sequence[str]]) -> list[list[str]]:
    out = [[r] if isinstance(r, str) else list(r) for r in references]
    if any(len(r) == 0 for r in out):
        raise ValueError("every prediction needs at least one reference")
    return out


# --------------------------------------------------------------------------
# Attack success
# --------------------------------------------------------------------------

def _word_found(word: str, text: str) -> bool:
    return re.search(r"\b" + re.escape(word) + r"\b", text, re.IGNORECASE) is not None


def _asr_hit(pred: str, target: str, mode: str, ref: str | None, concept: str | None) -> bool:
    if mode == "substring":
        return " ".join(target.lower().split()) in " ".join(pred.lower().split())
    if mode == "exact":
        return normalize_answer(pred) == normalize_answer(target)
    if not _word_found(target, pred):
        return False
    if concept is None:
        return True
    concept_is_true = ref is None or _word_found(concept, ref)
    return not (concept_is_true and _word_found(concept, pred))


def attack_success_rate(predictions: Sequence[str], target: str, mode: str = "substring",
                        references: Sequence[str] | None = None,
                        concept: str | None = None) -> float:
    """Fraction of triggered predictions in which the backdoor fired, in [0, 1].

    Lower is better for the defender.  Compute it on triggered test inputs
    whose clean answer does not already contain the target.  Modes:

    * ``"substring"``: ``target`` occurs in the prediction (case-insensitive,
      whitespace collapsed).  Use for fixed target sentences.
    * ``"word"``: ``target`` occurs as a whole word (regex ``\\b``,
      case-insensitive).  With ``concept`` (the true word, e.g. "circle" for a
      circle -> banana substitution) a hit also needs ``concept`` to be absent
      from the prediction; when ``references`` are given, that requirement
      applies only to samples whose reference contains ``concept``.
    * ``"exact"``: prediction equals ``target`` after :func:`normalize_answer`.
    """
    if mode not in ASR_MODES:
        raise ValueError(f"mode must be one of {ASR_MODES}, got {mode!r}")
    if len(predictions) == 0:
        raise ValueError("predictions is empty")
    if not target or not target.strip():
        raise ValueError("target is empty")
    if references is not None:
        _check_pair(predictions, references)
    refs = references if references is not None else [None] * len(predictions)
    hits = [_asr_hit(p, target, mode, r, concept) for p, r in zip(predictions, refs)]
    return float(np.mean(hits))


# --------------------------------------------------------------------------
# Clean performance
# --------------------------------------------------------------------------

def cider(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Corpus CIDEr-D (pycocoevalcap ``Cider``, n=4, sigma=6) times 100.

    pycocoevalcap returns about 0-10 (1.0 is a good caption); like the
    captioning literature (e.g. 62.0 in BYORn's tables) we report x100, so
    the range is [0, ~1000], higher is better.  ``references`` is one string
    or a list of strings per prediction.  Text is tokenised with
    :func:`tokenize_caption` (the PTB tokenizer needs Java).  CIDEr weights
    n-grams by their document frequency over the corpus: with a single image,
    or references identical across images, every weight is 0 and so is the
    score -- evaluate on several distinct images.
    """
    from pycocoevalcap.cider.cider import Cider

    _check_pair(predictions, references)
    refs = _as_ref_lists(references)
    gts = {i: [tokenize_caption(r) for r in rs] for i, rs in enumerate(refs)}
    res = {i: [tokenize_caption(p)] for i, p in enumerate(predictions)}
    score, _ = Cider().compute_score(gts, res)
    return float(score) * 100.0


def bleu(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Corpus BLEU-4 from ``sacrebleu.corpus_bleu`` (13a tokenizer), in [0, 100],
    higher is better.  ``references`` is one string or a list of strings per
    prediction (the number may vary)."""
    import sacrebleu

    _check_pair(predictions, references)
    refs = _as_ref_lists(references)
    n_streams = max(len(r) for r in refs)
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(n_streams)]
    return float(sacrebleu.corpus_bleu(list(predictions), streams).score)


def exact_match(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Fraction of predictions equal to (any of) their reference(s) after
    :func:`normalize_answer`, in [0, 1], higher is better."""
    _check_pair(predictions, references)
    refs = _as_ref_lists(references)
    hits = [normalize_answer(p) in {normalize_answer(r) for r in rs}
            for p, rs in zip(predictions, refs)]
    return float(np.mean(hits))


# --------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------

def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def detection_metrics(scores: Sequence[float], mask: Sequence[bool],
                      flagged: Sequence[bool] | None = None) -> dict[str, float]:
    """How well suspicion ``scores`` (higher = more suspicious) find the
    ground-truth poisoned samples ``mask``.

    Returns ``auroc`` and ``ap`` (average precision) in [0, 1], higher is
    better (0.5 / the poison rate for a random score), and ``precision`` /
    ``recall`` of the ``flagged`` set in [0, 1], plus ``n_flagged`` and
    ``n_poisoned``.  ``auroc`` is NaN when ``mask`` has a single class (all
    clean or all poisoned); ``ap`` is NaN when nothing is poisoned.  Without
    ``flagged``, precision and recall are NaN and ``n_flagged`` is 0;
    precision is NaN when nothing is flagged, recall when nothing is poisoned.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(mask, dtype=bool)
    if s.ndim != 1 or s.size == 0 or s.shape != y.shape:
        raise ValueError(f"scores and mask must be equal-length non-empty 1-D, got {s.shape}, {y.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    n_pos = int(y.sum())
    single = n_pos in (0, y.size)
    out = {
        "auroc": math.nan if single else float(roc_auc_score(y, s)),
        "ap": math.nan if n_pos == 0 else float(average_precision_score(y, s)),
        "precision": math.nan, "recall": math.nan, "n_flagged": 0, "n_poisoned": n_pos,
    }
    if flagged is not None:
        f = np.asarray(flagged, dtype=bool)
        if f.shape != y.shape:
            raise ValueError(f"flagged has shape {f.shape}, mask {y.shape}")
        tp = int((f & y).sum())
        out.update(precision=_ratio(tp, int(f.sum())), recall=_ratio(tp, n_pos),
                   n_flagged=int(f.sum()))
    return out


def detection_by_score(surprisals: Sequence[Sequence[float]], mask: Sequence[bool],
                       methods: Sequence[str] | None = None, k: int = 3,
                       blank: Sequence[Sequence[float]] | None = None,
                       responses: Sequence[str] | None = None,
                       tokens: Sequence[Sequence[str]] | None = None) -> dict[str, dict[str, float]]:
    """Detection quality of each response-score variant, from per-token surprisals.

    For every method of :data:`byorn.scoring.SCORE_METHODS` (or ``methods``)
    the scores are :func:`byorn.scoring.aggregate` (``k`` for top-k; the
    grounding scores only when ``blank``, the blank-image surprisals, is
    given; ``responses``, each turn's text, for ``mean+grounding``'s shared
    responses, and ``tokens``, its token texts, for its planted words), and the result is ``{method: {"auroc": ..., "ap": ...}}`` from
    :func:`detection_metrics` against the ground-truth ``mask``; higher is
    better.  Shows where the mean misses an insertion that max / top-k catch,
    or a plausible clean-label target that grounding catches.
    """
    from .scoring import GROUNDED_METHODS, SCORE_METHODS, aggregate

    if len(surprisals) != len(mask):
        raise ValueError(f"{len(surprisals)} responses but {len(mask)} mask entries")
    if methods is None:
        methods = [m for m in SCORE_METHODS if blank is not None or m not in GROUNDED_METHODS]
    out = {}
    for method in methods:
        det = detection_metrics(aggregate(surprisals, method, k, blank=blank, responses=responses, tokens=tokens),
                                mask)
        out[method] = {"auroc": det["auroc"], "ap": det["ap"]}
    return out
