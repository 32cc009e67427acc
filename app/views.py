"""Pure functions from the audit table to what the tabs show.

No gradio here: these take and return pandas / plain Python, so they are
unit-tested directly and reused by every tab.  The audit table's columns are
documented in ``docs/architecture.md``; this module adds two:
``decision`` (review status, ``pending`` when none) and ``decision_text``.
"""
from __future__ import annotations

import html
import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from byorn.audit import apply_threshold
from byorn.decisions import STATUSES, Decision
from byorn.split import AUTO, PAPER_P, Split, percentile_threshold

from .index import TableIndex, status_names
from .state import Filter

FLAG_CHOICES = ("all", "flagged", "not flagged")
SORT_CHOICES = ("score", "score_max", "sample_score", "id", "decision")
TABLE_COLUMNS = ["id", "score", "flagged", "decision", "instruction", "response"]
TABLE_LIMIT = 500  # rows sent to the browser; filters narrow the rest
SNIPPET = 90


def threshold_at(scores: Sequence[float], percentile: float) -> float:
    """Score at the ``percentile`` quantile (0..1); samples above it are flagged.

    Delegates to :func:`byorn.scoring.percentile_threshold`, the rule training uses.
    """
    if not 0.0 <= float(percentile) <= 1.0:
        raise ValueError(f"percentile must be in [0, 1], got {percentile}")
    return float(percentile_threshold(np.asarray(scores, dtype=float), float(percentile)))


def with_threshold(table: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """A copy of the table whose ``suspicious`` flag is ``score > threshold`` (the library's split by value)."""
    return apply_threshold(table, value=float(threshold))[0]


def split_text(split: Split, scores: Sequence[float], auto: Split, paper: float, score: str = "mean") -> str:
    """What the Overview says about the split: the one in use and why, and the adaptive and paper's beside it.

    ``split``: this user's split (not applied yet); ``auto``: the adaptive split of these scores (applied);
    ``paper``: the threshold of the paper's split (p = 0.6).
    """
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    paper_n = int((scores > paper).sum())
    paper_line = f"the paper's split (p = {PAPER_P:g}) is at {paper:.4g} and flags {paper_n} of {n}"
    if split.kind == AUTO:
        return (f"**Split: adaptive (auto)**, by the {score} score: {auto.reason}. Beside it (dotted), "
                f"{paper_line}.")
    _, done = split.apply(scores)
    paper_line = "" if done.kind == "percentile" and done.p == PAPER_P else f"; {paper_line}"
    return (f"**Split: {done.label}**, by the {score} score: {done.n_flagged} of {n} flagged above "
            f"{done.threshold:.4g}. The adaptive split (dotted, *auto*) would put the threshold at "
            f"{auto.threshold:.4g} and flag {auto.n_flagged}: {auto.reason}{paper_line}.")


def join_decisions(table: pd.DataFrame, decisions: Mapping[tuple[str, int], Decision],
                   turn: int = 0) -> pd.DataFrame:
    """A copy with ``decision`` / ``decision_text`` columns (``pending`` where none).

    ``decisions`` are keyed by ``(sample_id, turn)``; each row gets its own
    turn's (a table without a ``turn`` column: turn ``turn``).
    """
    out = table.copy()
    turns = out["turn"].astype(int).tolist() if "turn" in out.columns else [turn] * len(out)
    found = [decisions.get((i, k)) for i, k in zip(out["id"], turns)]
    out["decision"] = [d.status if d is not None else "pending" for d in found]
    out["decision_text"] = [d.text if d is not None else None for d in found]
    return out


# -- fast paths over a TableIndex (100k rows): arrays of row positions, no table copies ------------
PAGE_SIZE = 50


def parse_bound(text, name: str) -> float | None:
    """A score bound typed in a box: a number, or empty for none (``ValueError`` naming the box)."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or str(text).strip() == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"'{name}' must be a number or empty, got {text!r}") from None


def filter_rows(index: TableIndex, codes: np.ndarray, threshold: float, f: Filter,
                selection: np.ndarray | None = None) -> np.ndarray:
    """Row positions matching every criterion of ``f``, in ``f``'s sort order.

    ``codes``: a status code per row (:func:`app.index.status_codes`);
    ``selection``: the map selection's rows (used when ``f.in_selection``).
    """
    if f.flag not in FLAG_CHOICES:
        raise ValueError(f"flag filter must be one of {FLAG_CHOICES}, got {f.flag!r}")
    mask = np.ones(index.n, dtype=bool)
    score = index.score
    if f.score_min is not None:
        mask &= score >= float(f.score_min)
    if f.score_max is not None:
        mask &= score <= float(f.score_max)
    if f.flag != "all":
        mask &= (score > threshold) == (f.flag == "flagged")
    if f.decisions:
        unknown = set(f.decisions) - set(STATUSES)
        if unknown:
            raise ValueError(f"unknown decision filter {sorted(unknown)}")
        mask &= np.isin(codes, [STATUSES.index(s) for s in f.decisions])
    if f.in_selection:
        inside = np.zeros(index.n, dtype=bool)
        if selection is not None:
            inside[selection] = True
        mask &= inside
    if f.search and f.search.strip():
        needle = f.search.strip().lower()
        text = index.search_text()
        cand = np.flatnonzero(mask)  # search only what the cheap masks left
        hit = text.iloc[cand].str.contains(needle, regex=False).to_numpy(dtype=bool)
        mask[:] = False
        mask[cand[hit]] = True
    return sort_rows(index, codes, np.flatnonzero(mask), f.sort_by, f.descending)


def sort_rows(index: TableIndex, codes: np.ndarray, rows: np.ndarray, by: str = "score",
              descending: bool = True) -> np.ndarray:
    """``rows`` sorted by ``by``; ties keep table order (stable)."""
    if by not in SORT_CHOICES:
        raise ValueError(f"sort key must be one of {SORT_CHOICES}, got {by!r}")
    if by == "id":
        values = index.key_rank()[rows]
    elif by == "decision":
        values = codes[rows].astype(np.int64)
    elif by == "score":
        values = index.score[rows]
    else:
        values = index.numeric(by)[rows] if by in index.table.columns else index.score[rows]
    values = np.nan_to_num(values.astype(np.float64), nan=-np.inf)
    order = np.argsort(-values if descending else values, kind="stable")
    return rows[order]


def page_of(rows: np.ndarray, page: int, size: int = PAGE_SIZE) -> tuple[np.ndarray, int, int]:
    """(rows of page ``page`` clamped into range, that page, number of pages)."""
    pages = max(1, -(-len(rows) // size))
    page = min(max(int(page), 0), pages - 1)
    return rows[page * size:(page + 1) * size], page, pages


def page_frame(index: TableIndex, codes: np.ndarray, threshold: float, rows: np.ndarray) -> pd.DataFrame:
    """The Table tab's rows for ``rows`` (one page): short snippets, decision, flag (and truth, turn)."""
    t = index.table.iloc[rows]
    score = index.score[rows]
    out = pd.DataFrame({"id": index.keys[rows].astype(str)})
    if index.multi_turn:
        out["turn"] = [f"{k + 1}/{n}" for k, n in zip(index.turns[rows], index.n_turns[rows])]
    out["score"] = np.round(score, 3)
    out["flagged"] = np.where(score > threshold, "yes", "")
    out["decision"] = status_names(codes[rows])
    out["instruction"] = [_snip(x) for x in t["instruction"]]
    out["response"] = [_snip(x) for x in t["response"]]
    if index.truth is not None:
        out["poisoned (truth)"] = np.where(index.truth[rows], "yes", "")
    return out


def counts_of(index: TableIndex, codes: np.ndarray, threshold: float, rows: np.ndarray | None = None) -> dict:
    """:func:`counts` over ``rows`` (all rows when None), from the arrays."""
    sel = slice(None) if rows is None else rows
    score, c = index.score[sel], codes[sel]
    out = {"samples": int(len(score)), "flagged": int((score > threshold).sum())}
    tally = np.bincount(c.astype(np.int64), minlength=len(STATUSES))
    for i, status in enumerate(STATUSES):
        out[status] = int(tally[i])
    if index.truth is not None:
        gt = index.truth[sel]
        out["poisoned (truth)"] = int(gt.sum())
        out["poisoned and flagged"] = int((gt & (score > threshold)).sum())
    return out


def counts_text(c: dict, title: str = "", unit: str = "samples") -> str:
    """Counts as one markdown line (``unit``: "samples", or "turns" for conversations)."""
    parts = [f"**{c['samples']}** {unit}", f"**{c['flagged']}** flagged"]
    parts += [f"{c[s]} {s}" for s in STATUSES if s != "pending" and c.get(s)]
    if "poisoned (truth)" in c:
        parts.append(f"{c['poisoned (truth)']} poisoned (truth), {c['poisoned and flagged']} of them flagged")
    prefix = f"{title}: " if title else ""
    return prefix + " · ".join(parts)


def unit_of(index: TableIndex) -> str:
    """What a row is called on the page: a sample, or for conversations an assistant turn."""
    return "turns" if index.multi_turn else "samples"


def has_ground_truth(table: pd.DataFrame) -> bool:
    return "gt_poisoned" in table.columns and table["gt_poisoned"].notna().any()


def filter_table(table: pd.DataFrame, *, score_min: float | None = None,
                 score_max: float | None = None, flag: str = "all",
                 decisions: Iterable[str] | None = None, search: str = "") -> pd.DataFrame:
    """Rows matching every given criterion (``None`` / empty = no constraint).

    ``search`` matches id, instruction, response or proposed replacement,
    case-insensitively, as plain text.
    """
    if flag not in FLAG_CHOICES:
        raise ValueError(f"flag filter must be one of {FLAG_CHOICES}, got {flag!r}")
    mask = pd.Series(True, index=table.index)
    score = table["score"].astype(float)
    if score_min is not None and not _blank(score_min):
        mask &= score >= float(score_min)
    if score_max is not None and not _blank(score_max):
        mask &= score <= float(score_max)
    if flag != "all":
        mask &= table["suspicious"].astype(bool) == (flag == "flagged")
    if decisions:
        wanted = set(decisions)
        unknown = wanted - set(STATUSES)
        if unknown:
            raise ValueError(f"unknown decision filter {sorted(unknown)}")
        mask &= table["decision"].isin(wanted)
    if search and search.strip():
        needle = search.strip().lower()
        hit = pd.Series(False, index=table.index)
        for col in ("id", "instruction", "response", "proposed_response"):
            if col in table.columns:
                hit |= table[col].fillna("").astype(str).str.lower().str.contains(needle, regex=False)
        mask &= hit
    return table[mask]


def _blank(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def sort_table(table: pd.DataFrame, by: str = "score", descending: bool = True) -> pd.DataFrame:
    """Sorted copy; ties keep dataset order (stable sort)."""
    if by not in SORT_CHOICES:
        raise ValueError(f"sort key must be one of {SORT_CHOICES}, got {by!r}")
    return table.sort_values(by, ascending=not descending, kind="stable")


def display_rows(table: pd.DataFrame, limit: int = TABLE_LIMIT) -> pd.DataFrame:
    """The rows the Table tab shows: short snippets, first ``limit`` rows."""
    head = table.head(limit)
    out = pd.DataFrame({
        "id": head["id"].astype(str),
        "score": head["score"].astype(float).round(3),
        "flagged": np.where(head["suspicious"].astype(bool), "yes", ""),
        "decision": head["decision"],
        "instruction": [_snip(t) for t in head["instruction"]],
        "response": [_snip(t) for t in head["response"]],
    })
    if has_ground_truth(table):
        out["poisoned (truth)"] = ["yes" if v is True or v == 1 else "" for v in head["gt_poisoned"]]
    return out


def _snip(text, n: int = SNIPPET) -> str:
    text = "" if text is None else str(text).replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"


def counts(table: pd.DataFrame) -> dict[str, int]:
    """Counts shown next to every view: samples, flagged, decisions, truth."""
    out = {"samples": int(len(table)), "flagged": int(table["suspicious"].astype(bool).sum())}
    for status in STATUSES:
        out[status] = int((table["decision"] == status).sum()) if "decision" in table else 0
    if has_ground_truth(table):
        gt = table["gt_poisoned"].fillna(False).astype(bool)
        flagged = table["suspicious"].astype(bool)
        out["poisoned (truth)"] = int(gt.sum())
        out["poisoned and flagged"] = int((gt & flagged).sum())
    return out


def counts_markdown(table: pd.DataFrame, title: str = "") -> str:
    return counts_text(counts(table), title)


# -- inspector ---------------------------------------------------------------
SURPRISAL_FULL = 8.0  # nats at which a token is shaded fully red


def shade_tokens_html(tokens: Sequence[str], surprisals: Sequence[float],
                      full_at: float = SURPRISAL_FULL) -> str:
    """The response as HTML spans, each token's background as red as its surprisal.

    Surprisal is in nats, 0 = fully expected (no shade); ``full_at`` nats and
    above = full shade.  Each span's tooltip gives the value.
    """
    tokens, surprisals = list(tokens or []), list(surprisals or [])
    if len(tokens) != len(surprisals):
        raise ValueError(f"{len(tokens)} tokens but {len(surprisals)} surprisals")
    if not tokens:
        return "<div class='byorn-tokens'><em>no response tokens</em></div>"
    spans = []
    for tok, s in zip(tokens, surprisals):
        s = float(s)
        alpha = 0.0 if not math.isfinite(s) else min(max(s / full_at, 0.0), 1.0)
        spans.append(
            f"<span class='tok' style='background: rgba(220, 38, 38, {alpha:.2f})' "
            f"title='{s:.2f} nats'>{html.escape(tok)}</span>")
    legend = (f"<div class='byorn-legend'>shade = surprisal under the reference model "
              f"(white 0 nats → red ≥ {full_at:g} nats); hover a token for its value</div>")
    return "<div class='byorn-tokens'>" + "".join(spans) + "</div>" + legend


def position_in(order: Sequence[str], sample_id: str | None) -> tuple[int | None, int]:
    """(0-based position of ``sample_id`` in ``order`` or None, length of order)."""
    try:
        return (list(order).index(sample_id) if sample_id is not None else None), len(order)
    except ValueError:
        return None, len(order)


def step_in(order: Sequence[str], sample_id: str | None, step: int) -> str | None:
    """The id ``step`` places after (or before) ``sample_id`` in ``order``, clamped.

    When ``sample_id`` is not in ``order`` the first (step > 0) or last id is
    returned; None when ``order`` is empty.
    """
    if not order:
        return None
    pos, n = position_in(order, sample_id)
    if pos is None:
        return order[0] if step > 0 else order[-1]
    return order[min(max(pos + step, 0), n - 1)]
