"""Column arrays of an audit table, built once per workspace, for events that stay fast at 100k rows.

Every view of the app filters, sorts, counts and colours the audit table (one
row per assistant turn).  Copying a 100k-row frame with token lists on every
event costs seconds; :class:`TableIndex` holds the columns those events need
as numpy arrays (and the row of every key), so a filter is a few vectorised
masks over arrays and a page is ``table.iloc[positions]`` of 50 rows.

:class:`DecisionIndex` turns the decision store's ``{(sample id, turn):
Decision}`` into one status code per row (``STATUSES`` order, 0 = pending).
"""
from __future__ import annotations

import threading
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from byorn.decisions import STATUSES, Decision

NON_NUMERIC = {"tokens", "surprisals", "suspicious", "gt_poisoned"}
MAP_PREFIX = "umap_"


class TableIndex:
    """Read-only arrays over one workspace's audit table (rows in table order)."""

    def __init__(self, table: pd.DataFrame):
        self.table = table
        self.n = len(table)
        ids = table["id"].astype(str).to_numpy(dtype=object)
        self.ids = ids
        self.turns = (table["turn"].to_numpy(dtype=np.int64) if "turn" in table.columns
                      else np.zeros(self.n, dtype=np.int64))
        self.n_turns = (table["n_turns"].to_numpy(dtype=np.int64) if "n_turns" in table.columns
                        else np.ones(self.n, dtype=np.int64))
        self.keys = table["key"].astype(str).to_numpy(dtype=object) if "key" in table.columns else ids
        self.score = table["score"].to_numpy(dtype=np.float64)
        self.multi_turn = bool((self.n_turns > 1).any())
        self.key_pos: dict[str, int] = {k: i for i, k in enumerate(self.keys)}
        self.turn_pos: dict[tuple[str, int], int] = dict(zip(zip(ids, self.turns.tolist()), range(self.n)))
        # the row of each sample's most suspicious turn (where a bare sample id leads)
        if "sample_turn" in table.columns:
            best = table["sample_turn"].to_numpy(dtype=np.int64) == self.turns
        else:
            best = np.ones(self.n, dtype=bool)
        self.sample_pos: dict[str, int] = {}
        for i in np.flatnonzero(best).tolist() + list(range(self.n)):
            self.sample_pos.setdefault(ids[i], i)
        gt = table["gt_poisoned"] if "gt_poisoned" in table.columns else None
        self.truth = None if gt is None or not gt.notna().any() else gt.fillna(False).astype(bool).to_numpy()
        proposed = table["proposed_response"] if "proposed_response" in table.columns else pd.Series([""] * self.n)
        self.proposed = proposed.fillna("").astype(str).to_numpy(dtype=object)
        self._lock = threading.Lock()
        self._search: pd.Series | None = None
        self._key_rank: np.ndarray | None = None
        self._numeric: dict[str, np.ndarray] = {}

    # -- rows by name ---------------------------------------------------------------
    def position(self, name: str) -> int | None:
        """The row of a key (``id`` or ``id#turn``), else of a sample id's most suspicious turn."""
        name = str(name).strip()
        pos = self.key_pos.get(name)
        return pos if pos is not None else self.sample_pos.get(name)

    def positions_of(self, names: Iterable[str]) -> np.ndarray:
        """Rows of the given keys or sample ids (a sample id: all its turns); unknown names ignored."""
        out: list[int] = []
        by_sample: dict[str, list[int]] | None = None
        for name in names:
            pos = self.key_pos.get(str(name))
            if pos is not None:
                out.append(pos)
                continue
            if by_sample is None:
                by_sample = {}
                for i, sid in enumerate(self.ids):
                    by_sample.setdefault(sid, []).append(i)
            out.extend(by_sample.get(str(name), []))
        return np.unique(np.asarray(out, dtype=np.int64))

    # -- columns --------------------------------------------------------------------
    def numeric_columns(self) -> list[str]:
        """Numeric columns a map can be coloured by (coordinates and lists left out)."""
        cols = []
        for c in self.table.columns:
            if c in NON_NUMERIC or c.startswith(MAP_PREFIX):
                continue
            if pd.api.types.is_numeric_dtype(self.table[c]) and not pd.api.types.is_bool_dtype(self.table[c]):
                cols.append(c)
        return cols

    def numeric(self, column: str) -> np.ndarray:
        with self._lock:
            if column not in self._numeric:
                self._numeric[column] = pd.to_numeric(self.table[column], errors="coerce").to_numpy(dtype=np.float64)
            return self._numeric[column]

    def search_text(self) -> pd.Series:
        """One lower-case string per row: key, instruction, response and proposed replacement."""
        with self._lock:
            if self._search is None:
                parts = [pd.Series(self.keys)]
                for col in ("instruction", "response", "proposed_response"):
                    if col in self.table.columns:
                        parts.append(self.table[col].fillna("").astype(str).reset_index(drop=True))
                text = parts[0]
                for p in parts[1:]:
                    text = text + "\n" + p
                self._search = text.str.lower()
            return self._search

    def key_rank(self) -> np.ndarray:
        """Each row's rank in key order (sorting by id)."""
        with self._lock:
            if self._key_rank is None:
                order = np.argsort(self.keys.astype(str), kind="stable")
                rank = np.empty(self.n, dtype=np.int64)
                rank[order] = np.arange(self.n)
                self._key_rank = rank
            return self._key_rank


def status_codes(index: TableIndex, decisions: Mapping[tuple[str, int], Decision]) -> np.ndarray:
    """One code per row: ``STATUSES.index(status)`` of its decision, 0 (pending) where none."""
    codes = np.zeros(index.n, dtype=np.int8)
    code_of = {s: i for i, s in enumerate(STATUSES)}
    for key, d in decisions.items():
        pos = index.turn_pos.get((str(key[0]), int(key[1])))
        if pos is not None:
            codes[pos] = code_of[d.status]
    return codes


def status_names(codes: np.ndarray) -> np.ndarray:
    return np.asarray(STATUSES, dtype=object)[codes]
