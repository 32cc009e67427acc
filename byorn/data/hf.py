"""``datasets`` folders (``save_to_disk``) and Parquet files (e.g. Hugging Face hub exports).

Either table layout loads, images embedded as ``{"bytes", "path"}`` structs
(the ``datasets.Image`` feature) and kept as bytes references (not decoded):

* ``messages`` or ``conversations`` (a list of turns, see :mod:`.turns`) with
  ``images`` (a list of images) or ``image`` (one, or null);
* ``instruction`` / ``response`` with ``image`` (one, or null): the layout
  this project wrote before conversations.

Optional: ``id`` (default ``{stem}-{row}``), ``meta`` (a JSON object as a
string); other scalar columns (text, numbers, booleans) go into ``meta``.
Rows are read in Arrow batches, so a memory-mapped folder is never copied whole.
A ``DatasetDict`` folder or sharded Parquet (``train-00000-of-00002.parquet``)
loads its ``train`` split, or the only one, or ``split=``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterable

from .loading import LoadContext, Reader, Records, parse_meta
from .sample import Sample
from .saving import check_sample, image_bytes, serialisable_meta
from .turns import TURN_KEYS, conversation_sample, pair_sample

BATCH = 1024
_KNOWN = {"id", "image", "images", "instruction", "response", "meta", *TURN_KEYS}
_SHARD = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}\.parquet$")


@dataclass(frozen=True)
class TableLayout:
    """Which columns a table's samples come from."""

    turns: str | None          # "messages" / "conversations", or None for instruction / response
    image: str | None          # "images" / "image", or None (text only)
    extra: tuple[str, ...]     # scalar columns kept in meta
    columns: tuple[str, ...]   # every column read


def table_layout(schema: Any, ctx: LoadContext) -> TableLayout:
    """The layout of an Arrow schema; DataError naming the missing columns."""
    import pyarrow as pa

    names = list(schema.names)
    turns = next((k for k in TURN_KEYS if k in names), None)
    if turns is None:
        missing = [c for c in ("instruction", "response") if c not in names]
        if missing:
            raise ctx.error(f"missing column(s) {missing}: expected 'messages' or 'conversations' "
                            "(with 'images'), or 'instruction' and 'response' (with 'image'); "
                            f"columns are {names}", None, missing[0])
    image = next((k for k in ("images", "image") if k in names), None)
    scalar = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer,
              pa.types.is_floating, pa.types.is_boolean)
    extra = tuple(f.name for f in schema if f.name not in _KNOWN and any(t(f.type) for t in scalar))
    base = ["id", turns] if turns else ["id", "instruction", "response"]
    columns = tuple(c for c in [*base, image, "meta"] if c in names) + extra
    return TableLayout(turns, image, extra, columns)


def row_sample(row: dict, n: int, layout: TableLayout, ctx: LoadContext) -> Sample:
    """Sample of table row ``n`` (1-based)."""
    sid = ctx.sample_id(row.get("id"), n)
    meta = {k: row[k] for k in layout.extra if row[k] is not None}
    raw = row.get("meta")
    if isinstance(raw, str) and raw.strip():
        meta.update(parse_meta(raw, sid, ctx))
    elif isinstance(raw, dict):
        meta.update(raw)
    src = row.get(layout.image) if layout.image else None
    sources = [] if src is None else src if isinstance(src, list) else [src]
    if layout.turns:
        return conversation_sample(sid, row[layout.turns], layout.turns, sources,
                                   layout.image or "images", meta, ctx)
    return pair_sample(sid, row["instruction"], row["response"], sources, meta, ctx)


def _rows(batches: Iterable[Any]) -> Records:
    n = 0
    for batch in batches:
        for row in batch.to_pylist():
            n += 1
            yield n, row


# ------------------------------------------------------- datasets folders --

def read_hf_folder(ctx: LoadContext) -> Reader:
    """The reader of a ``save_to_disk`` folder (a Dataset, or a DatasetDict's split)."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(ctx.source))
    except Exception as e:  # datasets raises many kinds for a broken folder
        raise ctx.error(f"cannot read datasets folder: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[pick_split(list(ds), ctx)]
    layout = table_layout(ds.data.schema, ctx)
    batches = ds.select_columns(list(layout.columns)).with_format("arrow").iter(batch_size=BATCH)
    files = [c["filename"] for c in ds.cache_files]
    return Reader(_rows(batches), partial(row_sample, layout=layout, ctx=ctx), files)


def pick_split(splits: list[str], ctx: LoadContext) -> str:
    want = ctx.cfg.split
    if want is not None:
        if want not in splits:
            raise ctx.error(f"no split {want!r} (splits: {splits})", None, "split")
        return want
    if "train" in splits:
        return "train"
    if len(splits) == 1:
        return splits[0]
    raise ctx.error(f"several splits and none is 'train' (splits: {splits}); pass split=", None, "split")


# ---------------------------------------------------------------- Parquet --

def parquet_files(source: Path) -> list[Path]:
    """The Parquet files of a file or folder (or its ``data/`` subfolder, the hub's layout)."""
    if source.is_file():
        return [source]
    for folder in (source, source / "data"):
        files = sorted(p for p in folder.glob("*.parquet") if p.is_file() and not p.name.startswith("."))
        if files:
            return files
    return []


def read_parquet(ctx: LoadContext) -> Reader:
    """The reader of a Parquet file, or of a folder of shards (one split)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = _split_files(parquet_files(ctx.source), ctx)

    def open_file(path: Path) -> Any:
        try:
            return pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as e:
            raise ctx.error(f"cannot read Parquet file {path.name}: {e}") from None

    layout = table_layout(open_file(files[0]).schema_arrow, ctx)

    def batches() -> Iterable[Any]:
        for path in files:
            pf = open_file(path)
            missing = [c for c in layout.columns if c not in pf.schema_arrow.names]
            if missing:
                raise ctx.error(f"shard {path.name} lacks column(s) {missing}", None, missing[0])
            try:
                yield from pf.iter_batches(batch_size=BATCH, columns=list(layout.columns))
            except (OSError, pa.ArrowException) as e:
                raise ctx.error(f"cannot read Parquet file {path.name}: {e}") from None

    return Reader(_rows(batches()), partial(row_sample, layout=layout, ctx=ctx), [str(f) for f in files])


def _split_files(files: list[Path], ctx: LoadContext) -> list[Path]:
    """The shards of one split: ``{split}-00000-of-00002.parquet`` names group them."""
    if not files:
        raise ctx.error("no .parquet files")
    groups: dict[str, list[Path]] = {}
    for f in files:
        m = _SHARD.match(f.name)
        groups.setdefault(m.group("split") if m else "", []).append(f)
    if len(groups) == 1 and ctx.cfg.split is None:
        return files
    return groups[pick_split(list(groups), ctx)]


# ------------------------------------------------------------------- save --

def _to_hf(dataset: Iterable[Sample]):
    """A ``datasets.Dataset``: id, messages, images (embedded bytes, as they are), meta (JSON)."""
    import datasets

    features = datasets.Features({
        "id": datasets.Value("string"),
        "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "images": datasets.List(datasets.Image()),
        "meta": datasets.Value("string")})
    columns: dict[str, list] = {name: [] for name in features}
    for s in dataset:
        check_sample(s)
        columns["id"].append(s.id)
        columns["messages"].append([{"role": t.role, "content": t.text} for t in s.turns])
        columns["images"].append([{"bytes": image_bytes(r, s.id, k), "path": None}
                                  for k, r in enumerate(s.images)])
        columns["meta"].append(json.dumps(serialisable_meta(s), ensure_ascii=False))
    return datasets.Dataset.from_dict(columns, features=features)


def save_hf_dataset(dataset: Iterable[Sample], out_dir: str | Path) -> Path:
    """Save with ``datasets.Dataset.save_to_disk``: columns id, messages, images, meta; returns the folder."""
    out = Path(out_dir)
    _to_hf(dataset).save_to_disk(str(out))
    return out


def save_parquet(dataset: Iterable[Sample], out_dir: str | Path, filename: str = "data.parquet") -> Path:
    """Write one Parquet file (the :func:`save_hf_dataset` columns, hub-readable); returns its path."""
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / filename
    tmp = out / f".{filename}.tmp"
    pq.write_table(_to_hf(dataset).data.table, tmp)
    tmp.replace(path)
    return path
