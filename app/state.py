"""Per-session view state: what one browser tab looks at (kept in ``gr.State``).

Everything shared between visitors lives in :class:`app.context.AppContext`;
everything that belongs to one page is a field of :class:`View`.  Rows of the
audit table (one per assistant turn) are addressed by their position in the
workspace's table (``int``) inside arrays, and by their ``key`` (the sample id
for one-turn samples, ``id#turn`` otherwise) where a person or an API client
names them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from byorn.split import PAPER_P, SPLIT_KINDS, Split

DEFAULT_PERCENTILE = PAPER_P  # what the percentile slider shows until a person moves it (the paper's)


def _no_rows() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass
class Filter:
    """The Table tab's filter; rows matching all of it form "the current filter"."""

    score_min: float | None = None
    score_max: float | None = None
    flag: str = "flagged"                # all / flagged / not flagged
    decisions: tuple[str, ...] = ()      # empty = any decision
    search: str = ""                     # plain text in id, instruction, response, replacement
    in_selection: bool = False           # only rows inside the map selection
    sort_by: str = "score"
    descending: bool = True


@dataclass
class Proposal:
    """The replacement text offered for one turn, and who proposed it (a decision's ``source``)."""

    text: str
    source: str                          # "reference:<identity>" or "run:<name>"


@dataclass
class BulkPlan:
    """A previewed bulk decision, waiting for confirmation."""

    status: str
    rows: np.ndarray                     # row positions it applies to
    scope: str                           # "filter" or "selection"
    skipped: int = 0                     # rows left out (approve: no replacement text)


@dataclass
class View:
    """One page's state.  Handlers read and update it, and return it to ``gr.State``."""

    ws: str | None = None                # workspace key
    threshold: float = math.inf
    percentile: float | None = DEFAULT_PERCENTILE
    split: str = "percentile"            # how the threshold was set: auto, percentile or value (SPLIT_KINDS)
    owner: str | None = None             # visitor token (private sessions)
    filter: Filter = field(default_factory=Filter)
    order: np.ndarray = field(default_factory=_no_rows)   # the current filter's rows, sorted
    page: int = 0                        # Table page (0-based)
    walk: np.ndarray = field(default_factory=_no_rows)    # what previous / next step through
    walk_label: str = "current filter"   # where ``walk`` came from (the filter, the gallery)
    current: str | None = None           # key of the row open in the Inspector
    proposals: dict[str, Proposal] = field(default_factory=dict)  # by row key, not yet decided
    run: str | None = None               # run folder proposing replacements (None: reference model)
    selection: np.ndarray | None = None  # map selection (row positions); None = nothing selected
    selection_label: str = ""            # how it was made ("lasso", "cluster of s00012", ...)
    bulk: BulkPlan | None = None
    gallery_page: int = 0

    @classmethod
    def coerce(cls, value: Any) -> "View":
        """A View from a View, or from the plain dict older callers and scripts pass."""
        if isinstance(value, View):
            return value
        if value is None:
            return cls()
        if isinstance(value, dict):
            known = {f.name for f in fields(cls)}
            # arrays and nested state are not taken from a dict (older dicts held ids there)
            view = cls(**{k: v for k, v in value.items()
                          if k in known and k not in ("order", "walk", "selection", "filter", "proposals", "bulk")})
            if "split" not in value and "threshold" in value and "percentile" not in value:
                view.split = "value"  # a dict that sets a threshold alone means that threshold
            return view
        raise TypeError(f"not a view state: {type(value).__name__}")

    @property
    def has_selection(self) -> bool:
        return self.selection is not None and len(self.selection) > 0

    def reset_for(self, ws_key: str | None, threshold: float, percentile: float | None,
                  split: str = "percentile") -> "View":
        """A fresh view of another workspace; who the visitor is stays."""
        return View(ws=ws_key, threshold=threshold, percentile=percentile, split=split, owner=self.owner)

    def split_spec(self) -> Split:
        """This user's split as the library's value (what a run started from this page trains by)."""
        kind = self.split if self.split in SPLIT_KINDS else "percentile"
        if kind == "percentile" and self.percentile is None:
            kind = "value"  # older views: no percentile means the threshold was typed
        if kind == "percentile":
            return Split("percentile", p=float(self.percentile))
        if kind == "value":
            return Split("value", value=float(self.threshold))
        return Split(kind)
