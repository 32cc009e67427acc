"""Misalignment scores and the suspicious / clean split (pure functions).

A response's misalignment score summarises its per-token surprisals
``-log p_θ0(y_l | y_<l, x, q)`` under the frozen reference model.  Higher is
more suspicious everywhere in this module.

The grounding scores also take the surprisals of the same tokens with every
image replaced by a blank one (:func:`blank_image`): a response the image
makes *less* likely than no image at all (a caption of another scene, a
sentence unrelated to any image) is not grounded in its image, however fluent
it is.  That finds clean-label poison, whose targets are plausible captions
and so escape the plain NLL.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from .split import (AUTO, DEFAULT_P, PAPER_P, Components, Split, auto_threshold, bulk_z,  # noqa: F401
                    grounded_score, parse_p, percentile_threshold, robust_z, split_by_percentile, split_by_value)

GROUNDED_METHODS = ("grounding", "mean+grounding")
SCORE_METHODS = ("mean", "max", "topk") + GROUNDED_METHODS
PAPER_SCORE = "mean"  #: the paper's score (``--score mean --p 0.6`` is the paper's method)
DEFAULT_SCORE = "mean+grounding"  #: the library's default score (the one place it is set)
BLANK_RGB = (128, 128, 128)


def blank_image(image: Image.Image) -> Image.Image:
    """A uniform mid-grey RGB image of ``image``'s size (the "no image" of the grounding scores).

    The same size keeps the number of image tokens, so the response's tokens
    line up one to one with those of the real image.
    """
    return Image.new("RGB", image.size, BLANK_RGB)


def aggregate(surprisals: Sequence[Sequence[float]], method: str = "mean", k: int = 3,
              blank: Sequence[Sequence[float]] | None = None,
              has_image: Sequence[bool] | None = None, responses: Sequence[str] | None = None,
              tokens: Sequence[Sequence[str]] | None = None) -> np.ndarray:
    """One score per response from its per-token surprisals (nats, >= 0).

    * ``mean``: the paper's score, mean negative log-likelihood.
    * ``max``: the single most surprising token; catches one inserted word in
      an otherwise plausible response, which the mean dilutes.
    * ``topk``: mean of the ``k`` most surprising tokens, between the two.
    * ``grounding``: mean surprisal with the image minus mean surprisal with
      a blank image (``blank``: the same tokens' surprisals then), in nats per
      token.  Negative when the image supports the response; near 0 for text
      that ignores the image; positive when the image contradicts it.
    * ``mean+grounding``: ``mean`` and ``grounding`` each standardised,
      summed: implausible *or* ungrounded (:func:`byorn.split.grounded_score`:
      against their clean bulk where that shows a gap; else the response's
      total surprisal where that shows one (a passage appended to plausible
      text), or in its most implausible word where the turns above that gap share
      one (a word planted in place of another; given ``tokens``, each turn's token
      texts); else by their robust z, with a response many turns share that their
      images argue against flagged whole - given ``responses``, each turn's text,
      as audits pass them; with a group of ungrounded turns raised past the
      adaptive threshold).  It depends on the whole set, like the split does.  Turns that see no image (``has_image``; by
      default: blanking changed none of their surprisals) have no grounding
      to measure: they score by the mean's part alone, and the grounding's
      bulk is taken over the turns with an image.

    ``mean`` / ``max`` / ``topk`` range over [0, inf); every score is higher
    = more suspicious.  An empty response raises ``ValueError`` (it cannot be
    scored); so does a grounding score without ``blank``.
    """
    if method not in SCORE_METHODS:
        raise ValueError(f"score method must be one of {SCORE_METHODS}, got {method!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if method in GROUNDED_METHODS:
        return _grounded(surprisals, method, blank, has_image, responses, tokens)
    out = np.empty(len(surprisals), dtype=float)
    for i, s in enumerate(surprisals):
        if len(s) == 0:
            raise ValueError(f"response {i} has no tokens to score")
        out[i] = _aggregate_one(np.asarray(s, dtype=float), method, k)
    return out


def _grounded(surprisals, method: str, blank, has_image=None, responses=None, tokens=None) -> np.ndarray:
    if blank is None:
        raise ValueError(f"the {method!r} score needs the surprisals with blank images (blank=...): "
                         "audit with a grounding score, or AuditConfig(grounding=True)")
    if len(blank) != len(surprisals):
        raise ValueError(f"{len(surprisals)} responses but {len(blank)} blank-image surprisal lists")
    for i, (s, b) in enumerate(zip(surprisals, blank)):
        if len(s) != len(b):
            raise ValueError(f"response {i}: {len(s)} tokens with the image but {len(b)} with a blank one")
    if method == "grounding":
        return aggregate(surprisals, "mean") - aggregate(blank, "mean")
    return grounded_score(components(surprisals, blank, has_image, responses, tokens))[0]


def components(surprisals: Sequence[Sequence[float]], blank: Sequence[Sequence[float]],
               has_image: Sequence[bool] | None = None, responses: Sequence[str] | None = None,
               tokens: Sequence[Sequence[str]] | None = None) -> Components:
    """The parts of the ``mean+grounding`` score (what its adaptive split reads: :meth:`Split.apply`);
    ``responses``, each turn's text, lets it find shared responses the images do not support, and
    ``tokens``, each turn's response tokens as text (an audit's ``tokens``), a word planted in many of them
    (:func:`most_implausible_words`)."""
    mean = aggregate(surprisals, "mean")
    g = mean - aggregate(blank, "mean")
    seen = has_image_mask(surprisals, blank) if has_image is None else np.asarray(has_image, dtype=bool)
    if len(seen) != len(mean):
        raise ValueError(f"{len(mean)} responses but {len(seen)} has_image flags")
    total = np.array([float(np.sum(np.asarray(s, dtype=float))) for s in surprisals])
    words = None if tokens is None else most_implausible_words(tokens, surprisals)
    return Components.of(mean, g, seen, total, responses, words)


def _joins(prev: str, piece: str) -> bool:
    """Whether token text ``piece`` goes on the word that ``prev`` ends (letters or digits on both sides of
    the boundary, no space; ideographs are words of their own)."""
    return bool(prev) and bool(piece) and piece[0].isalnum() and prev[-1].isalnum() \
        and ord(piece[0]) < 0x2E80 and ord(prev[-1]) < 0x2E80


def response_words(tokens: Sequence[str], surprisals: Sequence[float]) -> list[tuple[str, float]]:
    """One response's words in order: ``(word, surprisal)``, the word in lower case and its tokens'
    surprisals summed (nats).  A word is a run of token texts with no space or punctuation between them
    ("banana" from " b" "an" "an" "a"); punctuation and symbols are words of their own; runs of spaces are
    left out."""
    runs: list[list] = []
    prev = ""
    for piece, x in zip(tokens, surprisals):
        piece = str(piece)
        if runs and _joins(prev, piece):
            runs[-1][0] += piece
            runs[-1][1] += float(x)
        else:
            runs.append([piece, float(x)])
        prev = piece if piece else prev
    return [(w.strip().lower(), v) for w, v in runs if w.strip()]


def most_implausible_words(tokens: Sequence[Sequence[str]],
                           surprisals: Sequence[Sequence[float]]) -> list[tuple[str, float]]:
    """Each response's most implausible word (:func:`response_words`): ``(word, surprisal)``, the first of
    the highest.  A response whose tokens are all spaces, or whose every word scores 0, gives ``("", 0.0)``."""
    if len(tokens) != len(surprisals):
        raise ValueError(f"{len(tokens)} token lists but {len(surprisals)} surprisal lists")
    out = []
    for i, (toks, s) in enumerate(zip(tokens, surprisals)):
        if len(toks) != len(s):
            raise ValueError(f"response {i}: {len(toks)} tokens but {len(s)} surprisals")
        best = ("", 0.0)
        for word, v in response_words(toks, s):
            if v > best[1]:
                best = (word, v)
        out.append(best)
    return out


def has_image_mask(surprisals: Sequence[Sequence[float]], blank: Sequence[Sequence[float]]) -> np.ndarray:
    """Whether each turn sees an image: blanking the images changed its surprisals at all."""
    return np.array([not np.allclose(np.asarray(s, dtype=float), np.asarray(b, dtype=float), rtol=0, atol=1e-6)
                     for s, b in zip(surprisals, blank)], dtype=bool)


def _aggregate_one(s: np.ndarray, method: str, k: int) -> float:
    if method == "mean":
        return float(s.mean())
    if method == "max":
        return float(s.max())
    return float(np.sort(s)[-k:].mean())
