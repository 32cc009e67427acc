"""Export the curated dataset (review decisions applied); decision files out and in.

Decisions address assistant turns: they are keyed by ``(sample_id, turn)``
(:mod:`byorn.decisions`).  How each decision shapes the exported dataset:

============  ==========================================================
``approved``  that turn's response is replaced by the approved text
``edited``    that turn's response is replaced by the user's text
``rejected``  the original response is kept (judged fine)
``pending``   the original response is kept, **even when flagged**:
              BYORn replaces flagged responses on the fly during
              training (bootstrapped from the EMA model), which an export
              cannot do.  Approve or drop flagged turns before exporting
              if the export is meant to be clean on its own.
``dropped``   the whole sample is left out
============  ==========================================================

**Drop rule**: a sample is left out when *any* of its assistant turns is
dropped.  A turn cannot be cut out alone: the turns after it answer a
conversation that includes it.  (For single-turn data: the sample is left out
when its turn is dropped.)

Each exported sample's ``meta`` records the review: single-turn samples get
``review_decision`` (the status) and, when the response changed,
``original_response``; samples of several assistant turns get
``review_decisions`` (one status per turn) and ``original_responses``
(``{"<turn>": original text}`` for the changed turns).

Decision files (:func:`read_decisions_file`, used by ``byorn train
--decisions``) are a CSV written by :func:`export_decisions_csv` (or by hand)
or a decision store (SQLite).  Every problem is a :class:`DecisionFileError`
naming the file and the row; a file that applies only in part comes back
with a :class:`DecisionFileReport` of what was applied and what was not.
"""
from __future__ import annotations

import csv
import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from .data import VLDataset
from .decisions import STATUSES, Decision, DecisionStore, DecisionStoreError, normalised

FORMATS: tuple[str, ...] = ("llava", "jsonl", "hf")
"""Export formats: LLaVA JSON + images, messages JSONL + images, ``datasets`` folder."""

Key = tuple[str, int]
"""``(sample_id, turn)``: how decisions are keyed."""


def check_keys(decisions: Mapping) -> None:
    """Raise ``TypeError`` unless ``decisions`` is keyed by ``(sample_id, turn)``."""
    key = next(iter(decisions), None)  # the first key tells: all come from one reader
    if key is not None and not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], int)):
        raise TypeError(f"decisions are keyed by (sample_id, turn), got the key {key!r}; "
                        "use DecisionStore.all() or read_decisions_file()")


def apply_decisions(dataset: VLDataset, decisions: Mapping[Key, Decision],
                    name: str | None = None) -> VLDataset:
    """A new dataset with the decisions applied (see the module docstring)."""
    check_keys(decisions)
    out = []
    for s in dataset:
        statuses, originals = [], {}
        curated = s
        for k, original in enumerate(s.assistant_texts()):
            d = decisions.get((s.id, k))
            status = d.status if d is not None else "pending"
            statuses.append(status)
            if status in ("approved", "edited") and d.text:
                curated = curated.with_assistant(k, d.text)
                originals[k] = original
        if "dropped" in statuses:
            continue
        meta = dict(s.meta)
        if len(statuses) == 1:
            meta["review_decision"] = statuses[0]
            if originals:
                meta["original_response"] = originals[0]
        else:
            meta["review_decisions"] = statuses
            if originals:
                meta["original_responses"] = {str(k): v for k, v in originals.items()}
        out.append(curated.with_(meta=meta))
    return VLDataset(out, name=name or f"{dataset.name}-curated")


def export_dataset(dataset: VLDataset, decisions: Mapping[Key, Decision],
                   out_dir: str | Path, fmt: str = "llava") -> Path:
    """Write the curated dataset to ``out_dir`` in ``fmt`` (one of :data:`FORMATS`).

    Returns ``out_dir``.  Uses the savers of :mod:`byorn.data.io`, so the result
    loads back with ``byorn.data.io.load_dataset``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    from .data import io as bio  # imported here: io pulls in heavier optional deps (datasets)

    savers = {"llava": bio.save_llava_json, "jsonl": bio.save_jsonl, "hf": bio.save_hf_dataset}
    curated = apply_decisions(dataset, decisions)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    savers[fmt](curated, out)
    return out


# -------------------------------------------------------------- decision CSV --

CSV_COLUMNS = ("sample_id", "turn", "status", "text", "source", "updated_at", "fingerprint",
               "original_response")
"""Columns of a decision CSV.  Only ``sample_id`` and ``status`` are required to read one back:
no ``turn`` means turn 0, no ``fingerprint`` means "this dataset"."""
REQUIRED_COLUMNS = ("sample_id", "status")


def export_decisions_csv(decisions: Mapping[Key, Decision], path: str | Path,
                         dataset: VLDataset | None = None, fingerprint: str | None = None) -> Path:
    """Write the decisions alone to a CSV file (one row per decided turn).

    Columns: :data:`CSV_COLUMNS`; ``updated_at`` is ISO 8601 UTC;
    ``fingerprint`` is the dataset's (``fingerprint`` or ``dataset``'s), so
    the file cannot be applied to other data by mistake;
    ``original_response`` is filled when ``dataset`` is given.  Rows follow
    the dataset order when known, else sample id order; turns in order.
    """
    check_keys(decisions)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fingerprint is None and dataset is not None:
        fingerprint = dataset.fingerprint()
    rank = {sid: i for i, sid in enumerate(dataset.ids())} if dataset is not None else {}
    order = sorted(decisions, key=lambda k: (rank.get(k[0], len(rank)), k[0], k[1]))
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for sid, turn in order:
            d = decisions[(sid, turn)]
            when = _dt.datetime.fromtimestamp(d.updated_at, _dt.timezone.utc).isoformat(timespec="seconds")
            w.writerow([sid, turn, d.status, d.text or "", d.source or "", when, fingerprint or "",
                        _original(dataset, sid, turn)])
    return path


def _original(dataset: VLDataset | None, sid: str, turn: int) -> str:
    if dataset is None or sid not in dataset:
        return ""
    texts = dataset.by_id(sid).assistant_texts()
    return texts[turn] if turn < len(texts) else ""


class DecisionFileError(ValueError):
    """A decision file that cannot be used; the message names the file (and the row) and what to do."""


@dataclass
class _Row:
    line: int               # line number in the file (the header is line 1)
    decision: Decision
    fingerprint: str | None  # the dataset the row says it belongs to (None: not stated)


def _csv_rows(path: Path) -> tuple[list[_Row], list[str]]:
    """Every row of a decision CSV, checked; and the columns that were ignored."""
    csv.field_size_limit(16 * 2**20)  # long edited responses are fine; a runaway field is not
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: a BOM written by a spreadsheet
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise DecisionFileError(
                    f"{path}: not a decision CSV: the header (line 1) is {','.join(header) or '(empty)'!r}; "
                    f"it lacks {', '.join(missing)}. Expected the columns {','.join(CSV_COLUMNS)} "
                    f"(only {' and '.join(REQUIRED_COLUMNS)} are required), as the app's "
                    "'export decisions (.csv)' writes them")
            reader.fieldnames = header
            rows = [_csv_row(path, reader.line_num, raw) for raw in reader]
    except UnicodeDecodeError as e:
        raise DecisionFileError(f"{path}: not a text (UTF-8) CSV file ({e.reason} at byte {e.start}); "
                                "give a decision CSV or an SQLite decision store") from None
    except csv.Error as e:
        raise DecisionFileError(f"{path}: unreadable CSV near line {reader.line_num}: {e}") from None
    return rows, [c for c in header if c not in CSV_COLUMNS]


def _csv_row(path: Path, line: int, raw: dict) -> _Row:
    def bad(what: str) -> DecisionFileError:
        return DecisionFileError(f"{path}, line {line}: {what}")

    if None in raw:  # more cells than header columns
        raise bad(f"{len(raw) - 1 + len(raw[None])} cells but the header has {len(raw) - 1} columns")
    sid = (raw.get("sample_id") or "").strip()
    status = (raw.get("status") or "").strip()
    if not sid:
        raise bad("the sample_id is empty")
    if status not in STATUSES:
        raise bad(f"unknown status {status!r} for sample {sid!r}; expected one of {', '.join(STATUSES)}")
    turn_text = (raw.get("turn") or "").strip() or "0"
    if not turn_text.isdigit():
        raise bad(f"the turn {turn_text!r} of sample {sid!r} is not an assistant-turn index (0, 1, ...)")
    text = raw.get("text") or None
    if status in ("approved", "edited") and not (text or "").strip():
        raise bad(f"sample {sid!r} is {status!r} but its text is empty: give the text to train on, "
                  "or use status 'rejected' / 'dropped'")
    when = (raw.get("updated_at") or "").strip()
    try:
        ts = _dt.datetime.fromisoformat(when).timestamp() if when else 0.0
    except ValueError:
        raise bad(f"the updated_at {when!r} of sample {sid!r} is not an ISO 8601 time") from None
    d = normalised(sid, status, text, ts, int(turn_text), (raw.get("source") or "").strip() or None)
    return _Row(line, d, (raw.get("fingerprint") or "").strip() or None)


def read_decisions_csv(path: str | Path) -> dict[Key, Decision]:
    """Read a decision CSV (as :func:`export_decisions_csv` writes it) into ``{(sample_id, turn): Decision}``.

    Raises :class:`DecisionFileError` naming the file and line of the first
    problem (bad header, status, text, turn or time; the same turn twice).
    """
    path = Path(path)
    rows, _ = _csv_rows(path)
    return _unique(path, rows)


def _unique(path: Path, rows: list[_Row]) -> dict[Key, Decision]:
    out: dict[Key, Decision] = {}
    seen: dict[Key, int] = {}
    for r in rows:
        key = r.decision.key
        if key in seen:
            raise DecisionFileError(f"{path}, line {r.line}: sample {key[0]!r} turn {key[1]} is decided "
                                    f"twice (also on line {seen[key]}); keep one row")
        seen[key] = r.line
        out[key] = r.decision
    return out


# ------------------------------------------------------------ decision files --

SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass
class DecisionFileReport:
    """What :func:`read_decisions_file` found in a decision file and what it applied."""

    path: str
    kind: str                      # "csv" or "sqlite"
    fingerprint: str               # the dataset the decisions were read for
    n_rows: int = 0                # decisions in the file, every dataset
    applied: int = 0               # decisions returned (this dataset, known sample and turn)
    unknown: list[Key] = field(default_factory=list)  # this dataset's, but no such sample / turn
    other_datasets: dict[str, int] = field(default_factory=dict)  # fingerprint -> decisions not applied
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        out = []
        if self.unknown:
            shown = ", ".join(f"{s!r} turn {t}" for s, t in self.unknown[:5])
            out.append(f"{len(self.unknown)} decisions name samples or turns that are not in the data and "
                       f"were not applied (e.g. {shown})")
        if self.other_datasets:
            out.append(f"{sum(self.other_datasets.values())} decisions belong to other datasets and were not "
                       f"applied ({_fingerprints(self.other_datasets)})")
        if self.ignored_columns:
            out.append(f"columns ignored: {', '.join(self.ignored_columns)}")
        return out

    def summary(self) -> str:
        head = (f"{self.path}: applied {self.applied} of {self.n_rows} decisions "
                f"(dataset {self.fingerprint})")
        return "; ".join([head] + self.warnings)


def _fingerprints(counts: Mapping[str, int]) -> str:
    return ", ".join(f"dataset {fp}: {n}" for fp, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def read_decisions_file(path: str | Path, fingerprint: str,
                        known_keys: Iterable[Key]) -> tuple[dict[Key, Decision], DecisionFileReport]:
    """The decisions of one dataset from a decision CSV or an SQLite decision store.

    ``fingerprint`` is the dataset's; ``known_keys`` its ``(sample_id, turn)``
    pairs (every assistant turn of every sample).  Returns the decisions that
    apply and a report of the rest (unknown samples / turns, other datasets).
    Raises :class:`DecisionFileError` for a file that is missing, empty, not
    a decision file, has a bad row (named by line), or of which nothing
    applies to this dataset.  The file is never changed: an SQLite file is
    opened read-only.
    """
    path = Path(path)
    kind = _sniff(path)
    report = DecisionFileReport(str(path), kind, fingerprint)
    if kind == "sqlite":
        rows = _sqlite_rows(path, fingerprint, report)
    else:
        csv_rows, report.ignored_columns = _csv_rows(path)
        _unique(path, csv_rows)  # the same turn twice is an error, whatever the dataset
        report.n_rows = len(csv_rows)
        rows = []
        for r in csv_rows:
            if r.fingerprint and r.fingerprint != fingerprint:
                report.other_datasets[r.fingerprint] = report.other_datasets.get(r.fingerprint, 0) + 1
            else:
                rows.append(r.decision)
    known = set(known_keys)
    out = {}
    for d in rows:
        if d.key in known:
            out[d.key] = d
        else:
            report.unknown.append(d.key)
    report.applied = len(out)
    if not out:
        raise DecisionFileError(_nothing_applies(report))
    return out, report


def _sniff(path: Path) -> str:
    if not path.exists():
        raise DecisionFileError(f"decision file {path} does not exist")
    if not path.is_file():
        raise DecisionFileError(f"decision file {path} is not a file")
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError as e:
        raise DecisionFileError(f"cannot read the decision file {path}: {e}") from None
    if not head:
        raise DecisionFileError(f"decision file {path} is empty (0 bytes): give a decision CSV (the app's "
                                "'export decisions') or the app's decisions.sqlite")
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if path.suffix.lower() in (".sqlite", ".sqlite3", ".db") or b"\x00" in head:
        raise DecisionFileError(f"decision file {path} is neither an SQLite decision store (it lacks the "
                                "SQLite header) nor a decision CSV (it holds binary data)")
    return "csv"


def _sqlite_rows(path: Path, fingerprint: str, report: DecisionFileReport) -> list[Decision]:
    try:
        store = DecisionStore(path, mode="ro")  # read-only: never creates, migrates or changes it
        per_dataset = store.fingerprints()
        decisions = store.all(fingerprint)
    except DecisionStoreError as e:
        raise DecisionFileError(f"decision file {path}: {e}") from None
    report.n_rows = sum(per_dataset.values())
    report.other_datasets = {fp: n for fp, n in per_dataset.items() if fp != fingerprint}
    return list(decisions.values())


def _nothing_applies(r: DecisionFileReport) -> str:
    if r.n_rows == 0:
        return (f"decision file {r.path} holds no decisions; review in the app first, or leave out "
                "--decisions to train without review decisions")
    parts = []
    if r.other_datasets:
        parts.append(f"{sum(r.other_datasets.values())} are of other datasets ({_fingerprints(r.other_datasets)})")
    if r.unknown:
        shown = ", ".join(f"{s!r} turn {t}" for s, t in r.unknown[:5])
        parts.append(f"{len(r.unknown)} name samples or turns not in the data (e.g. {shown})")
    return (f"none of the {r.n_rows} decisions in {r.path} apply to this dataset (fingerprint {r.fingerprint}): "
            + "; ".join(parts) + ". Decisions are keyed by the dataset's content: check that --data is the "
            "data that was reviewed, or export the decisions of this dataset from the app (Export tab)")
