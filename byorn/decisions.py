"""Review decisions: what a person decided about each suspicious assistant turn.

A decision belongs to one **assistant turn** of one sample of one dataset,
keyed by ``(dataset fingerprint, sample id, turn)``; turn ``k`` is the
sample's ``k``-th assistant turn, from 0 (single-turn data has turn 0 only).
The same data opened from another file or format finds its decisions again.

Statuses (see ``docs/architecture.md``):

- ``pending``: nobody decided; BYORn treats the turn by its score
  (flagged turns get a bootstrapped response during training).
- ``approved``: train on the approved replacement text (``text``).
- ``rejected``: the original response is fine; train on it as clean.
- ``edited``: train on the user's own text (``text``).
- ``dropped``: leave the sample out of training and of exports.

``source`` says where an approved or edited text came from:
``"reference:<model identity>"`` (the audit's reference model),
``"run:<run folder name>"`` (a fine-tuned run's model), or ``"user"`` (typed
by a person; the default for ``edited``).

:class:`DecisionStore` keeps them in SQLite.  Every write is one transaction
(WAL journal, ``synchronous=FULL``): a crash or kill loses nothing that was
acknowledged and never leaves a write half done.  Every change is appended to
a ``history`` table, so an overwritten or cleared decision can still be read
back.  Each call opens its own connection, so one store may be used from
several threads and processes (several browser sessions of the app) at once.

A store of the first schema (no ``turn`` / ``source`` columns) is migrated in
place when opened for writing, in one transaction.  A store that cannot be
written (read-only file or folder) opens read-only with ``mode="auto"``; a
file that is not a decision store raises :class:`DecisionStoreError` with the
path and what to do.
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

SCHEMA_VERSION = 2
"""``PRAGMA user_version`` of the current schema (the first schema had 0)."""

MODES = ("rw", "ro", "auto")

_DECISIONS_TABLE = """
CREATE TABLE decisions (
    fingerprint TEXT NOT NULL,
    sample_id   TEXT NOT NULL,
    turn        INTEGER NOT NULL DEFAULT 0,
    status      TEXT NOT NULL,
    text        TEXT,
    source      TEXT,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (fingerprint, sample_id, turn)
)"""
_HISTORY_TABLE = """
CREATE TABLE history (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL,
    sample_id   TEXT NOT NULL,
    status      TEXT NOT NULL,   -- 'cleared' when a decision was removed
    text        TEXT,
    updated_at  REAL NOT NULL,
    turn        INTEGER NOT NULL DEFAULT 0,
    source      TEXT
)"""
_HISTORY_INDEX = "CREATE INDEX history_by_sample ON history (fingerprint, sample_id, turn)"
_DECISION_COLUMNS = {"fingerprint", "sample_id", "status", "text", "updated_at"}  # in every schema

# SQLite errors that mean "cannot write here" (permissions, read-only media), not "broken file".
_READ_ONLY_ERRORS = {"SQLITE_READONLY", "SQLITE_READONLY_DIRECTORY", "SQLITE_READONLY_RECOVERY",
                     "SQLITE_READONLY_CANTLOCK", "SQLITE_READONLY_ROLLBACK", "SQLITE_READONLY_DBMOVED",
                     "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH"}
_BROKEN_ERRORS = {"SQLITE_NOTADB", "SQLITE_CORRUPT", "SQLITE_CORRUPT_VTAB", "SQLITE_CORRUPT_SEQUENCE"}


class DecisionStoreError(RuntimeError):
    """The decision store cannot be opened, read or written; the message names the path and what to do.

    ``kind`` is ``"read-only"`` (the file or its folder cannot be written),
    ``"corrupt"`` (not a readable SQLite file, or not a decision store) or
    ``"error"`` (anything else SQLite reported).
    """

    def __init__(self, message: str, *, path: str | Path | None = None, kind: str = "error"):
        super().__init__(message)
        self.path, self.kind = (str(path) if path is not None else None), kind


@dataclass(frozen=True)
class Decision:
    """One review decision on assistant turn ``turn`` of a sample.

    ``text`` is set for ``approved`` and ``edited`` only; ``source`` says who
    proposed it (module docstring).
    """

    sample_id: str
    status: str
    text: str | None = None
    updated_at: float = 0.0  # seconds since the epoch (time.time())
    turn: int = 0
    source: str | None = None

    def __post_init__(self) -> None:
        check_decision(self.status, self.text)
        if isinstance(self.turn, bool) or not isinstance(self.turn, int) or self.turn < 0:
            raise ValueError(f"a decision's turn is an assistant-turn index >= 0, got {self.turn!r}")

    @property
    def key(self) -> tuple[str, int]:
        """``(sample_id, turn)``: how :meth:`DecisionStore.all` keys it."""
        return (self.sample_id, self.turn)


def check_decision(status: str, text: str | None) -> None:
    """Raise ``ValueError`` for an unknown status or a missing text."""
    if status not in STATUSES:
        raise ValueError(f"unknown decision status {status!r}; expected one of {', '.join(STATUSES)}")
    if status in NEEDS_TEXT and (text is None or not str(text).strip()):
        raise ValueError(f"a decision {status!r} needs a non-empty text to train on")


def normalised(sample_id: str, status: str, text: str | None = None, updated_at: float = 0.0,
               turn: int = 0, source: str | None = None) -> Decision:
    """A :class:`Decision` as the store keeps it: text and source only where a text is trained on
    (``edited`` defaults to source ``"user"``)."""
    check_decision(status, text)
    if status not in NEEDS_TEXT:
        text, source = None, None
    elif status == "edited" and not source:
        source = "user"
    return Decision(str(sample_id), status, None if text is None else str(text), float(updated_at),
                    int(turn), None if source is None else str(source))


def _as_decision(item, now: float) -> Decision:
    """A Decision from a Decision or a ``(sample_id, status[, text[, turn[, source]]])`` tuple."""
    if isinstance(item, Decision):
        return normalised(item.sample_id, item.status, item.text, now, item.turn, item.source)
    fields = list(item)
    if not 2 <= len(fields) <= 5:
        raise ValueError(f"a decision tuple is (sample_id, status[, text[, turn[, source]]]), got {item!r}")
    sample_id, status, text, turn, source = fields + [None, None, None, 0, None][len(fields):]
    return normalised(sample_id, status, text, now, turn, source)


class DecisionStore:
    """Review decisions in one SQLite file, keyed by (dataset fingerprint, sample id, turn).

    ``mode``: ``"rw"`` (default) opens for reading and writing, creating the
    file (and its folder) when missing, and raises :class:`DecisionStoreError`
    when it cannot; ``"ro"`` opens an existing file read-only and never creates
    or changes anything; ``"auto"`` is ``"rw"`` when possible and falls back to
    read-only (``readonly`` True, the reason in ``readonly_reason``) when the
    file or folder cannot be written.  Writes to a read-only store raise
    :class:`DecisionStoreError` (kind ``"read-only"``).  A file that is not a
    decision store raises :class:`DecisionStoreError` (kind ``"corrupt"``) in
    every mode.
    """

    def __init__(self, path: str | Path, mode: str = "rw"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.path = Path(path)
        self.readonly = mode == "ro"
        self.readonly_reason: str | None = "opened read-only" if self.readonly else None
        self._ro_uri: str | None = None
        self._exists = True  # False: a read-only store whose file does not exist (reads are empty)
        self._v1 = False  # a read-only store of the first schema (no turn / source columns)
        if mode != "ro":
            try:
                self._open_for_writing()
                return
            except DecisionStoreError as e:
                if mode == "rw" or e.kind != "read-only":
                    raise
                self.readonly, self.readonly_reason = True, str(e)
        self._open_read_only()

    # -- opening -----------------------------------------------------------
    def _open_for_writing(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DecisionStoreError(f"cannot create the folder of the decision store {self.path}: {e}",
                                     path=self.path, kind="read-only") from None
        if self.path.is_dir():
            raise DecisionStoreError(f"the decision store {self.path} is a folder, not a file",
                                     path=self.path, kind="corrupt")
        with self._errors("open"), closing(self._connect_rw()) as con:
            con.execute("PRAGMA journal_mode=WAL")  # persistent: readers never block the writer
            con.execute("BEGIN IMMEDIATE")  # one writer at a time creates or migrates the schema
            try:
                self._ensure_schema(con)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def _open_read_only(self) -> None:
        if not self.path.exists():
            self._exists = False
            return
        if self.path.is_dir():
            raise DecisionStoreError(f"the decision store {self.path} is a folder, not a file",
                                     path=self.path, kind="corrupt")
        uri = self.path.resolve().as_uri()
        # A WAL database in a folder we cannot write needs immutable=1 (no -shm file can be made);
        # nobody can write there either, so treating the file as unchanging is safe.
        for self._ro_uri in (f"{uri}?mode=ro", f"{uri}?mode=ro&immutable=1"):
            try:
                with closing(self._connect_ro()) as con:
                    self._check_schema(con)
                    self._v1 = "turn" not in _columns(con, "decisions")
                return
            except sqlite3.OperationalError as e:
                if getattr(e, "sqlite_errorname", "") not in _READ_ONLY_ERRORS:
                    raise self._wrap(e, "open") from None
            except sqlite3.Error as e:
                raise self._wrap(e, "open") from None
        raise DecisionStoreError(f"cannot read the decision store {self.path} (permission denied?)",
                                 path=self.path, kind="read-only")

    def _connect_rw(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)  # we manage transactions
        con.execute("PRAGMA synchronous=FULL")  # durable at commit, even on power loss
        return con

    def _connect_ro(self) -> sqlite3.Connection:
        return sqlite3.connect(self._ro_uri, uri=True, timeout=30.0, isolation_level=None)

    def _ensure_schema(self, con: sqlite3.Connection) -> None:
        """Create the tables, or migrate the first schema, inside the caller's transaction."""
        tables = _tables(con)
        if "decisions" not in tables:
            if tables - {"sqlite_sequence"}:
                raise DecisionStoreError(
                    f"{self.path} is an SQLite database but not a BYORn decision store (tables: "
                    f"{', '.join(sorted(tables))}); point BYORN_DATA_DIR (or the path) elsewhere",
                    path=self.path, kind="corrupt")
            con.execute(_DECISIONS_TABLE)
            con.execute(_HISTORY_TABLE)
            con.execute(_HISTORY_INDEX)
            con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
        self._check_schema(con)
        if "turn" not in _columns(con, "decisions"):
            _migrate_v1(con)
        # A real write, so a file that opened but cannot be written (SQLite falls back to
        # read-only silently) fails here, at open, and not at the first decision.
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _check_schema(self, con: sqlite3.Connection) -> None:
        """Raise unless the file is a decision store (either schema); reads the whole schema."""
        tables = _tables(con)
        if "decisions" not in tables or "history" not in tables \
                or not _DECISION_COLUMNS <= _columns(con, "decisions") \
                or not _DECISION_COLUMNS <= _columns(con, "history"):
            raise DecisionStoreError(
                f"{self.path} is an SQLite database but not a BYORn decision store (tables: "
                f"{', '.join(sorted(tables)) or 'none'})", path=self.path, kind="corrupt")

    # -- connections -------------------------------------------------------
    @contextmanager
    def _transaction(self, write: bool, what: str) -> Iterator[sqlite3.Connection]:
        """One transaction on a fresh connection (safe across threads and processes).

        Commits when the block ends normally, rolls back on any error (nothing
        is ever half written); SQLite errors become :class:`DecisionStoreError`.
        """
        if write and self.readonly:
            raise DecisionStoreError(f"the decision store {self.path} is read-only ({self.readonly_reason}); "
                                     "decisions cannot be saved", path=self.path, kind="read-only")
        with self._errors(what):
            con = self._connect_rw() if not self.readonly else self._connect_ro()
            try:
                con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield con
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            finally:
                con.close()

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            raise self._wrap(e, what) from None

    def _wrap(self, e: sqlite3.Error, what: str) -> DecisionStoreError:
        name = getattr(e, "sqlite_errorname", "")
        if name in _READ_ONLY_ERRORS:
            return DecisionStoreError(f"cannot {what} the decision store {self.path}: {e} (is the file or its "
                                      "folder read-only?)", path=self.path, kind="read-only")
        if name in _BROKEN_ERRORS or isinstance(e, sqlite3.DatabaseError) and "not a database" in str(e):
            return DecisionStoreError(
                f"the decision store {self.path} is damaged or not an SQLite file ({e}). Move it aside "
                f"(e.g. rename it to {self.path.name}.broken) and restart: a fresh store is made, and the "
                "moved file can be inspected or restored later", path=self.path, kind="corrupt")
        return DecisionStoreError(f"cannot {what} the decision store {self.path}: {e}", path=self.path)

    # -- writes ------------------------------------------------------------
    def set(self, fingerprint: str, sample_id: str, status: str, text: str | None = None, *,
            turn: int = 0, source: str | None = None) -> Decision:
        """Record one decision (replacing the previous one on that turn) and return it."""
        return self.set_many(fingerprint, [Decision(str(sample_id), status, text, 0.0, turn, source)])[0]

    def set_many(self, fingerprint: str, items: Iterable[Decision | tuple]) -> list[Decision]:
        """Record several decisions in one transaction (all or none).

        ``items`` holds ``Decision`` objects or ``(sample_id, status[, text[,
        turn[, source]]])`` tuples.  Everything is validated before anything
        is written; ``updated_at`` is set to now.
        """
        now = time.time()
        rows = [_as_decision(item, now) for item in items]
        if not rows:
            return []
        values = [(fingerprint, d.sample_id, d.turn, d.status, d.text, d.source, d.updated_at) for d in rows]
        with self._transaction(True, "write") as con:
            con.executemany(
                "INSERT INTO decisions (fingerprint, sample_id, turn, status, text, source, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (fingerprint, sample_id, turn) DO UPDATE SET "
                "status = excluded.status, text = excluded.text, source = excluded.source, "
                "updated_at = excluded.updated_at", values)
            con.executemany(
                "INSERT INTO history (fingerprint, sample_id, turn, status, text, source, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", values)
        return rows

    def clear(self, fingerprint: str, sample_id: str, turn: int = 0) -> bool:
        """Forget the decision on one turn (it becomes pending again).

        Returns whether there was one.  The history keeps a ``cleared`` entry.
        """
        return self.clear_many(fingerprint, [(sample_id, turn)]) > 0

    def clear_many(self, fingerprint: str, keys: Iterable[tuple[str, int]]) -> int:
        """Forget the decisions on several ``(sample_id, turn)`` in one transaction; returns how many."""
        keys = [(str(s), int(t)) for s, t in keys]
        now, n = time.time(), 0
        with self._transaction(True, "write") as con:
            for sid, turn in keys:
                cur = con.execute("DELETE FROM decisions WHERE fingerprint = ? AND sample_id = ? AND turn = ?",
                                  (fingerprint, sid, turn))
                if cur.rowcount:
                    n += 1
                    con.execute("INSERT INTO history (fingerprint, sample_id, turn, status, text, source, "
                                "updated_at) VALUES (?, ?, ?, 'cleared', NULL, NULL, ?)",
                                (fingerprint, sid, turn, now))
        return n

    # -- reads -------------------------------------------------------------
    def _select(self, sql: str, args: tuple) -> list[tuple]:
        if not self._exists:
            return []
        with self._transaction(False, "read") as con:
            return con.execute(sql, args).fetchall()

    def _turn_source(self) -> str:
        return "0, NULL" if self._v1 else "turn, source"

    def _decision_sql(self) -> str:
        return (f"SELECT sample_id, status, text, updated_at, {self._turn_source()} FROM decisions "
                "WHERE fingerprint = ?")

    def get(self, fingerprint: str, sample_id: str, turn: int = 0) -> Decision | None:
        """The current decision on one turn, or None when there is none."""
        rows = self._select(self._decision_sql() + " AND sample_id = ?", (fingerprint, sample_id))
        rows = [r for r in rows if r[4] == int(turn)]
        return Decision(*rows[0]) if rows else None

    def all(self, fingerprint: str) -> dict[tuple[str, int], Decision]:
        """Every current decision of one dataset, by ``(sample_id, turn)``."""
        return {(r[0], r[4]): Decision(*r) for r in self._select(self._decision_sql(), (fingerprint,))}

    def counts(self, fingerprint: str) -> dict[str, int]:
        """Number of current decisions per status (statuses with none are absent)."""
        return dict(self._select("SELECT status, COUNT(*) FROM decisions WHERE fingerprint = ? "
                                 "GROUP BY status", (fingerprint,)))

    def fingerprints(self) -> dict[str, int]:
        """Number of current decisions per dataset fingerprint."""
        return dict(self._select("SELECT fingerprint, COUNT(*) FROM decisions GROUP BY fingerprint", ()))

    def history(self, fingerprint: str, sample_id: str | None = None,
                turn: int | None = None) -> list[dict]:
        """Every change ever recorded, oldest first (status ``cleared`` = removed)."""
        sql = (f"SELECT seq, sample_id, {self._turn_source()}, status, text, updated_at FROM history "
               "WHERE fingerprint = ?")
        args: tuple = (fingerprint,)
        if sample_id is not None:
            sql += " AND sample_id = ?"
            args += (sample_id,)
        keys = ("seq", "sample_id", "turn", "source", "status", "text", "updated_at")
        rows = [dict(zip(keys, r)) for r in self._select(sql + " ORDER BY seq", args)]
        return [r for r in rows if turn is None or r["turn"] == int(turn)]

    def check(self) -> str | None:
        """Run SQLite's ``quick_check`` over the whole file: None when sound, else what is wrong."""
        if not self._exists:
            return None
        try:
            problems = [r[0] for r in self._select("PRAGMA quick_check", ())]
        except DecisionStoreError as e:
            return str(e)
        return None if problems == ["ok"] else "; ".join(problems[:5])


def _tables(con: sqlite3.Connection) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in con.execute(f"PRAGMA table_info({table})")}


def _migrate_v1(con: sqlite3.Connection) -> None:
    """First schema -> current, inside the caller's transaction (all or nothing).

    ``decisions`` gets ``turn`` in its primary key (so it is rebuilt: SQLite
    cannot change a primary key in place); every existing row becomes turn 0
    with no source.  ``history`` gains the two columns (old rows: turn 0).
    """
    con.execute("ALTER TABLE decisions RENAME TO decisions_v1")
    con.execute(_DECISIONS_TABLE)
    con.execute("INSERT INTO decisions (fingerprint, sample_id, turn, status, text, source, updated_at) "
                "SELECT fingerprint, sample_id, 0, status, text, NULL, updated_at FROM decisions_v1")
    con.execute("DROP TABLE decisions_v1")
    have = _columns(con, "history")
    if "turn" not in have:
        con.execute("ALTER TABLE history ADD COLUMN turn INTEGER NOT NULL DEFAULT 0")
    if "source" not in have:
        con.execute("ALTER TABLE history ADD COLUMN source TEXT")
    con.execute("DROP INDEX IF EXISTS history_by_sample")
    con.execute(_HISTORY_INDEX)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def read_store(path: str | Path) -> DecisionStore:
    """An existing store opened read-only (``mode=ro``: never created, migrated or changed)."""
    return DecisionStore(path, mode="ro")


def decisions_from_mapping(items: Mapping[str, tuple[str, str | None]]) -> dict[tuple[str, int], Decision]:
    """Build ``{(id, 0): Decision}`` from ``{id: (status, text)}`` (single-turn data; for code and tests)."""
    return {(k, 0): normalised(k, s, t) for k, (s, t) in items.items()}
