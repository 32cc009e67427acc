"""Review decisions: what a person decided about each suspicious sample.

A decision belongs to one sample of one dataset, keyed by
``(dataset fingerprint, sample id)``, so the same data opened from another
file or format finds its decisions again.

Statuses (see ``docs/architecture.md``):

- ``pending``: nobody decided; BYORn treats the sample by its score
  (flagged samples get a bootstrapped response during training).
- ``approved``: train on the approved replacement text (``text``).
- ``rejected``: the original response is fine; train on it as clean.
- ``edited``: train on the user's own text (``text``).
- ``dropped``: leave the sample out of training and of exports.

:class:`DecisionStore` keeps them in SQLite.  Every write is committed at
once (WAL journal, ``synchronous=FULL``) so a crash or restart loses nothing,
and every change is appended to a ``history`` table, so an overwritten or
cleared decision can still be read back.  Each call opens its own connection,
so one store may be used from several threads and processes (several browser
sessions of the app) at the same time.
"""
from __future__ import annotations

import sqlite3
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

STATUSES: tuple[str, ...] = ("pending", "approved", "rejected", "edited", "dropped")
"""Every valid status, in the order the app lists them."""

NEEDS_TEXT: frozenset[str] = frozenset({"approved", "edited"})
"""Statuses that carry the text to train on."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    fingerprint TEXT NOT NULL,
    sample_id   TEXT NOT NULL,
    status      TEXT NOT NULL,
    text        TEXT,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (fingerprint, sample_id)
);
CREATE TABLE IF NOT EXISTS history (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL,
    sample_id   TEXT NOT NULL,
    status      TEXT NOT NULL,   -- 'cleared' when a decision was removed
    text        TEXT,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_sample ON history (fingerprint, sample_id);
"""


@dataclass(frozen=True)
class Decision:
    """One review decision.  ``text`` is set for ``approved`` and ``edited`` only."""

    sample_id: str
    status: str
    text: str | None = None
    updated_at: float = 0.0  # seconds since the epoch (time.time())

    def __post_init__(self) -> None:
        check_decision(self.status, self.text)


def check_decision(status: str, text: str | None) -> None:
    """Raise ``ValueError`` for an unknown status or a missing text."""
    if status not in STATUSES:
        raise ValueError(f"unknown decision status {status!r}; expected one of {', '.join(STATUSES)}")
    if status in NEEDS_TEXT and (text is None or not str(text).strip()):
        raise ValueError(f"a decision {status!r} needs a non-empty text to train on")


def _normalise(status: str, text: str | None) -> str | None:
    """Only ``approved`` / ``edited`` keep their text; others store none."""
    check_decision(status, text)
    return str(text) if status in NEEDS_TEXT else None


class DecisionStore:
    """Review decisions in one SQLite file, keyed by (dataset fingerprint, sample id)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(_SCHEMA)

    # -- connections -----------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection per call: safe across threads and processes.

        ``with`` on the connection commits the transaction on success and
        rolls it back on error; ``closing`` then closes it.
        """
        with closing(sqlite3.connect(self.path, timeout=30.0)) as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")  # durable at commit, even on power loss
            with con:
                yield con

    # -- writes ----------------------------------------------------------
    def set(self, fingerprint: str, sample_id: str, status: str,
            text: str | None = None) -> Decision:
        """Record one decision (replacing the previous one) and return it."""
        return self.set_many(fingerprint, [(sample_id, status, text)])[0]

    def set_many(self, fingerprint: str,
                 items: Iterable[Decision | tuple[str, str] | tuple[str, str, str | None]],
                 ) -> list[Decision]:
        """Record several decisions in one transaction (all or none).

        ``items`` holds ``Decision`` objects or ``(sample_id, status[, text])``
        tuples.  Everything is validated before anything is written.
        """
        now = time.time()
        rows: list[Decision] = []
        for item in items:
            if isinstance(item, Decision):
                sample_id, status, text = item.sample_id, item.status, item.text
            else:
                sample_id, status, text = (tuple(item) + (None,))[:3]
            rows.append(Decision(str(sample_id), status, _normalise(status, text), now))
        if not rows:
            return []
        with self._connect() as con:
            con.executemany(
                "INSERT INTO decisions (fingerprint, sample_id, status, text, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (fingerprint, sample_id) DO UPDATE SET "
                "status = excluded.status, text = excluded.text, updated_at = excluded.updated_at",
                [(fingerprint, d.sample_id, d.status, d.text, d.updated_at) for d in rows])
            con.executemany(
                "INSERT INTO history (fingerprint, sample_id, status, text, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(fingerprint, d.sample_id, d.status, d.text, d.updated_at) for d in rows])
        return rows

    def clear(self, fingerprint: str, sample_id: str) -> bool:
        """Forget the decision on one sample (it becomes pending again).

        Returns whether there was one.  The history keeps a ``cleared`` entry.
        """
        with self._connect() as con:
            cur = con.execute("DELETE FROM decisions WHERE fingerprint = ? AND sample_id = ?",
                              (fingerprint, sample_id))
            if cur.rowcount:
                con.execute("INSERT INTO history (fingerprint, sample_id, status, text, updated_at) "
                            "VALUES (?, ?, 'cleared', NULL, ?)", (fingerprint, sample_id, time.time()))
            return cur.rowcount > 0

    # -- reads -----------------------------------------------------------
    def get(self, fingerprint: str, sample_id: str) -> Decision | None:
        """The current decision on one sample, or None when there is none."""
        with self._connect() as con:
            row = con.execute("SELECT sample_id, status, text, updated_at FROM decisions "
                              "WHERE fingerprint = ? AND sample_id = ?",
                              (fingerprint, sample_id)).fetchone()
        return Decision(*row) if row else None

    def all(self, fingerprint: str) -> dict[str, Decision]:
        """Every current decision of one dataset, by sample id."""
        with self._connect() as con:
            rows = con.execute("SELECT sample_id, status, text, updated_at FROM decisions "
                               "WHERE fingerprint = ?", (fingerprint,)).fetchall()
        return {r[0]: Decision(*r) for r in rows}

    def counts(self, fingerprint: str) -> dict[str, int]:
        """Number of current decisions per status (statuses with none are absent)."""
        with self._connect() as con:
            rows = con.execute("SELECT status, COUNT(*) FROM decisions WHERE fingerprint = ? "
                               "GROUP BY status", (fingerprint,)).fetchall()
        return dict(rows)

    def history(self, fingerprint: str, sample_id: str | None = None) -> list[dict]:
        """Every change ever recorded, oldest first (status ``cleared`` = removed)."""
        sql = "SELECT seq, sample_id, status, text, updated_at FROM history WHERE fingerprint = ?"
        args: tuple = (fingerprint,)
        if sample_id is not None:
            sql += " AND sample_id = ?"
            args += (sample_id,)
        with self._connect() as con:
            rows = con.execute(sql + " ORDER BY seq", args).fetchall()
        keys = ("seq", "sample_id", "status", "text", "updated_at")
        return [dict(zip(keys, r)) for r in rows]


def decisions_from_mapping(items: Mapping[str, tuple[str, str | None]]) -> dict[str, Decision]:
    """Build ``{id: Decision}`` from ``{id: (status, text)}`` (for code and tests)."""
    return {k: Decision(k, s, _normalise(s, t)) for k, (s, t) in items.items()}
