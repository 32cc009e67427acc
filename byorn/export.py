"""Export the curated dataset (review decisions applied) and the decisions alone.

How each decision shapes the exported dataset:

============  ==========================================================
``approved``  the response is replaced by the approved replacement text
``edited``    the response is replaced by the user's text
``rejected``  the original response is kept (judged fine)
``pending``   the original response is kept, **even when the sample is
              flagged**: BYORn replaces flagged responses on the fly during
              training (bootstrapped from the EMA model), which an export
              cannot do.  Approve or drop flagged samples before exporting
              if the export is meant to be clean on its own.
``dropped``   the sample is left out
============  ==========================================================

Each exported sample's ``meta`` records ``review_decision`` and, when the
response changed, ``original_response``.
"""
from __future__ import annotations

import csv
import datetime as _dt
from pathlib import Path
from typing import Mapping

from .data import VLDataset
from .decisions import Decision

FORMATS: tuple[str, ...] = ("llava", "jsonl", "hf")
"""Export formats: LLaVA JSON + images, messages JSONL + images, ``datasets`` folder."""


def apply_decisions(dataset: VLDataset, decisions: Mapping[str, Decision],
                    name: str | None = None) -> VLDataset:
    """A new dataset with the decisions applied (see the module docstring)."""
    out = []
    for s in dataset:
        d = decisions.get(s.id)
        status = d.status if d is not None else "pending"
        if status == "dropped":
            continue
        if status in ("approved", "edited") and d is not None and d.text:
            s = s.with_(response=d.text)
            s.meta["original_response"] = dataset.by_id(s.id).response
        else:
            s = s.with_()
        s.meta["review_decision"] = status
        out.append(s)
    return VLDataset(out, name=name or f"{dataset.name}-curated")


def export_dataset(dataset: VLDataset, decisions: Mapping[str, Decision],
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


CSV_COLUMNS = ("sample_id", "status", "text", "updated_at", "original_response")


def export_decisions_csv(decisions: Mapping[str, Decision], path: str | Path,
                         dataset: VLDataset | None = None) -> Path:
    """Write the decisions alone to a CSV file (one row per decided sample).

    Columns: :data:`CSV_COLUMNS`; ``updated_at`` is ISO 8601 UTC;
    ``original_response`` is filled when ``dataset`` is given.
    Rows follow the dataset order when known, else sample id order.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if dataset is not None:
        order = [i for i in dataset.ids() if i in decisions]
        order += sorted(set(decisions) - set(order))
    else:
        order = sorted(decisions)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for sid in order:
            d = decisions[sid]
            when = _dt.datetime.fromtimestamp(d.updated_at, _dt.timezone.utc).isoformat(timespec="seconds")
            original = ""
            if dataset is not None:
                try:
                    original = dataset.by_id(sid).response
                except KeyError:
                    original = ""
            w.writerow([sid, d.status, d.text or "", when, original])
    return path


def read_decisions_csv(path: str | Path) -> dict[str, Decision]:
    """Read a CSV written by :func:`export_decisions_csv` back into decisions."""
    out: dict[str, Decision] = {}
    with Path(path).open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            ts = _dt.datetime.fromisoformat(row["updated_at"]).timestamp() if row.get("updated_at") else 0.0
            out[row["sample_id"]] = Decision(row["sample_id"], row["status"], row.get("text") or None, ts)
    return out
