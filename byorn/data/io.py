"""Load and save vision-language datasets in the common on-disk formats.

Formats (see :func:`detect_format`): ``llava_json``, a JSON list of ``{"id",
"image", "conversations": [{"from": "human", ...}, {"from": "gpt", ...}]}``;
``jsonl``, one ``{"id"?, "messages": [{"role": "user", ...}, {"role":
"assistant", ...}], "images": [path]}`` per line (LLaMA-Factory / TRL,
structured ``content`` lists too); ``hf_dataset``, a ``save_to_disk`` folder
with columns ``id``, ``image`` (Image), ``instruction``, ``response`` and an
optional ``meta`` JSON string.  Both JSON formats accept either record shape.
Image paths are relative to the data file's folder and, because uploads are
untrusted, must stay inside it.
Every problem raises :class:`~byorn.data.DataError` naming the sample, the field
and the file; with ``skip_invalid=True`` bad samples are skipped, logged and
listed in a :class:`LoadReport` instead.  Images are decoded eagerly to RGB,
and images above ``max_pixels`` are refused (decompression bombs).

:func:`extract_upload` unpacks a user's zip archive safely.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from PIL import Image

from .sample import IMAGE_TOKEN, DataError, Sample, VLDataset, png_bytes, strip_image_token

logger = logging.getLogger(__name__)

from .sample import DEFAULT_MAX_PIXELS
_HF_COLUMNS = ("id", "image", "instruction", "response")
_NOT_DATA_FILES = {"dataset_info.json", "state.json", "dataset_dict.json"}


# ----------------------------------------------------------------- report --

@dataclass
class SkippedSample:
    """One sample left out by ``skip_invalid=True``."""

    sample_id: str | None
    field: str | None
    message: str


@dataclass
class LoadReport:
    """What :func:`load_dataset_with_report` read and what it skipped."""

    path: str
    format: str
    n_loaded: int = 0
    skipped: list[SkippedSample] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    @property
    def n_total(self) -> int:
        return self.n_loaded + self.n_skipped

    def summary(self) -> str:
        return (f"{self.n_loaded} of {self.n_total} samples loaded from {self.path} "
                f"({self.format}); {self.n_skipped} skipped")


# ---------------------------------------------------------------- detect --

def detect_format(path: str | Path) -> str:
    """The format of a data file or folder: "llava_json", "jsonl" or "hf_dataset".

    A folder is a ``datasets`` folder when it holds ``dataset_info.json`` and
    ``state.json`` (or ``dataset_dict.json``); otherwise it must hold exactly
    one ``*.json`` / ``*.jsonl`` data file, whose format is returned.
    """
    return _resolve(Path(path))[0]


def _resolve(path: Path) -> tuple[str, Path]:
    """(format, the file or folder to read) for a user-given path."""
    if not path.exists():
        raise DataError("no such file or folder", path=str(path))
    if path.is_dir():
        if ((path / "dataset_info.json").is_file() and (path / "state.json").is_file()
                or (path / "dataset_dict.json").is_file()):
            return "hf_dataset", path
        return _resolve(_single_data_file(path))
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "llava_json", path
    if suffix == ".jsonl":
        return "jsonl", path
    raise DataError(f"unknown format {suffix or '(no extension)'!r}: expected a .json "
                    "(LLaVA) or .jsonl (messages+images) file or a datasets folder",
                    path=str(path))


def _single_data_file(folder: Path) -> Path:
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in (".json", ".jsonl")
                   and not p.name.startswith(".") and p.name not in _NOT_DATA_FILES)
    if len(files) == 1:
        return files[0]
    if not files:
        raise DataError("unknown format: the folder holds no .json / .jsonl data file "
                        "and is not a datasets folder", path=str(folder))
    names = ", ".join(p.name for p in files)
    raise DataError(f"ambiguous folder: it holds several data files ({names}); "
                    "pass the path of the one to load", path=str(folder))


# ------------------------------------------------------------------ load --

def load_dataset(path: str | Path, *, skip_invalid: bool = False, name: str | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS,
                 allow_external_images: bool = False) -> VLDataset:
    """Load a dataset, auto-detecting its format (see the module docstring).

    Args:
        path: a ``.json`` / ``.jsonl`` file, a ``datasets`` folder, or a folder
            holding exactly one data file.
        skip_invalid: skip (and log and report) bad samples instead of raising.
        name: dataset name (default: the file or folder stem).
        max_pixels: images with more pixels than this are invalid.
        allow_external_images: allow image paths that are absolute or point
            outside the data file's folder (off for untrusted uploads).

    Missing ids are generated as ``f"{stem}-{n}"``: ``n`` is the 1-based line
    number in JSONL, the 1-based record index in a JSON list and the row index
    plus one in a ``datasets`` folder.  ``meta["image_path"]`` holds the image
    path as written in a JSON file.
    """
    return load_dataset_with_report(path, skip_invalid=skip_invalid, name=name,
                                    max_pixels=max_pixels,
                                    allow_external_images=allow_external_images)[0]


def load_dataset_with_report(path: str | Path, *, skip_invalid: bool = False,
                             name: str | None = None,
                             max_pixels: int = DEFAULT_MAX_PIXELS,
                             allow_external_images: bool = False,
                             ) -> tuple[VLDataset, LoadReport]:
    """Like :func:`load_dataset`, also returning the :class:`LoadReport`."""
    fmt, source = _resolve(Path(path))
    ctx = _Context(source=source, max_pixels=max_pixels,
                   allow_external=allow_external_images)
    if fmt == "hf_dataset":
        items = _iter_hf(ctx)
    else:
        items = _iter_json(ctx, jsonl=fmt == "jsonl")
    report = LoadReport(path=str(source), format=fmt)
    samples = _collect(items, ctx, report, skip_invalid)
    return VLDataset(samples, name=name or source.stem), report


@dataclass
class _Context:
    source: Path
    max_pixels: int
    allow_external: bool

    @property
    def root(self) -> Path:
        return self.source if self.source.is_dir() else self.source.parent

    def error(self, message: str, sample_id: str | None, field: str | None) -> DataError:
        return DataError(message, sample_id=sample_id, field=field, path=str(self.source))


# An item is (sample id, build function); build raises DataError for bad data.
_Item = tuple[str, Callable[[], Sample]]


def _collect(items: Iterable[_Item], ctx: _Context, report: LoadReport,
             skip_invalid: bool) -> list[Sample]:
    """Build every sample, enforcing unique ids; skip and report or raise."""
    samples: list[Sample] = []
    seen: set[str] = set()
    for sample_id, build in items:
        try:
            if sample_id in seen:
                raise ctx.error("duplicate sample id", sample_id, "id")
            sample = build()
        except DataError as err:
            if not skip_invalid:
                raise
            logger.warning("skipping invalid sample: %s", err)
            report.skipped.append(SkippedSample(err.sample_id, err.field, str(err)))
            continue
        seen.add(sample_id)
        samples.append(sample)
    report.n_loaded = len(samples)
    if not samples:
        detail = f"; first error: {report.skipped[0].message}" if report.skipped else ""
        raise ctx.error(f"no valid samples ({report.n_skipped} invalid){detail}", None, None)
    return samples


# ----------------------------------------------------------- JSON formats --

def _iter_json(ctx: _Context, *, jsonl: bool) -> Iterator[_Item]:
    """Items of a JSON list or JSONL file; JSON syntax errors are items too."""
    stem = ctx.source.stem
    for n, record in (_jsonl_records(ctx) if jsonl else _json_records(ctx)):
        default_id = f"{stem}-{n}"
        if isinstance(record, DataError):
            yield default_id, partial(_raise, record)
        elif not isinstance(record, dict):
            where = f"line {n}" if jsonl else f"record {n}"
            yield default_id, partial(_raise, ctx.error(f"{where} is not a JSON object",
                                                default_id, None))
        else:
            sample_id = record.get("id", default_id)
            yield str(sample_id), partial(_record_to_sample, record, sample_id, ctx)


def _raise(err: DataError) -> Sample:
    raise err


def _json_records(ctx: _Context) -> Iterator[tuple[int, Any]]:
    try:
        data = json.loads(ctx.source.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ctx.error(f"malformed JSON: {e}", None, None) from None
    if not isinstance(data, list):
        raise ctx.error("expected a JSON list of records", None, None)
    yield from enumerate(data, start=1)


def _jsonl_records(ctx: _Context) -> Iterator[tuple[int, Any]]:
    stem = ctx.source.stem
    try:
        with ctx.source.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as e:
                    yield lineno, ctx.error(f"malformed JSON on line {lineno}: {e.msg}",
                                            f"{stem}-{lineno}", None)
    except UnicodeDecodeError as e:
        raise ctx.error(f"file is not UTF-8 text: {e}", None, None) from None


def _record_to_sample(record: dict, sample_id: Any, ctx: _Context) -> Sample:
    """A sample from a LLaVA ``conversations`` or a ``messages`` + ``images`` record."""
    sid = str(sample_id)
    if not isinstance(sample_id, str):
        raise ctx.error(f"id must be a string, got {type(sample_id).__name__}", sid, "id")
    if "conversations" in record:
        instruction, response = _llava_turns(record["conversations"], sid, ctx)
        image_key, image_ref = "image", record.get("image")
        known = {"id", "image", "conversations"}
    elif "messages" in record:
        instruction, response = _message_turns(record["messages"], sid, ctx)
        image_key, image_ref = "images", _single_image(record, sid, ctx)
        known = {"id", "images", "messages"}
    else:
        raise ctx.error("missing field: expected 'conversations' (LLaVA) or 'messages'",
                        sid, "conversations")
    if not isinstance(image_ref, str) or not image_ref:
        raise ctx.error(_missing_or_type(image_ref, "an image path"), sid, image_key)
    path = _image_path(image_ref, sid, image_key, ctx)
    image = _decode_image(partial(Image.open, path), path.name, sid, image_key, ctx)
    meta = _extra_meta(record, known)
    meta["image_path"] = image_ref
    return Sample.single(sid, image, instruction, response, meta)


def _missing_or_type(value: Any, expected: str) -> str:
    if value is None:
        return "missing field"
    return f"expected {expected}, got {type(value).__name__}"


def _extra_meta(record: dict, known: set[str]) -> dict[str, Any]:
    """Unknown top-level keys; a ``meta`` dict is merged in (its keys win)."""
    meta = {k: v for k, v in record.items() if k not in known and k != "meta"}
    if isinstance(record.get("meta"), dict):
        meta.update(record["meta"])
    elif "meta" in record:
        meta["meta"] = record["meta"]
    return meta


def _llava_turns(turns: Any, sid: str, ctx: _Context) -> tuple[str, str]:
    pairs = [(t.get("from"), t.get("value")) for t in _turn_list(turns, sid, "conversations", ctx)]
    return _first_exchange(pairs, ("human", "user"), ("gpt", "assistant"), sid,
                           "conversations", ctx)


def _message_turns(turns: Any, sid: str, ctx: _Context) -> tuple[str, str]:
    pairs = []
    for t in _turn_list(turns, sid, "messages", ctx):
        content = t.get("content")
        if isinstance(content, list):  # TRL: [{"type": "image"}, {"type": "text", ...}]
            content = _join_content(content, sid, ctx)
        pairs.append((t.get("role"), content))
    return _first_exchange(pairs, ("user", "human"), ("assistant", "gpt"), sid,
                           "messages", ctx)


def _turn_list(turns: Any, sid: str, name: str, ctx: _Context) -> list[dict]:
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise ctx.error(_missing_or_type(turns, "a list of turn objects"), sid, name)
    return turns


def _join_content(parts: list, sid: str, ctx: _Context) -> str:
    texts = []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(part.get("text"))
        elif kind == "image":
            texts.append(IMAGE_TOKEN)
        else:
            raise ctx.error(f"unknown content part {part!r}", sid, "messages")
    if not all(isinstance(t, str) for t in texts):
        raise ctx.error("text content part without a string 'text'", sid, "messages")
    return "".join(texts)


def _first_exchange(pairs: list[tuple[Any, Any]], asker: tuple[str, ...],
                    answerer: tuple[str, ...], sid: str, name: str,
                    ctx: _Context) -> tuple[str, str]:
    """(instruction, response): the first asker turn and the first answer after it."""
    ask = next((i for i, (who, _) in enumerate(pairs) if who in asker), None)
    if ask is None:
        raise ctx.error(f"missing field: no {asker[0]!r} turn", sid, f"{name}.instruction")
    answer = next((i for i in range(ask + 1, len(pairs)) if pairs[i][0] in answerer), None)
    if answer is None:
        raise ctx.error(f"missing field: no {answerer[0]!r} turn after the {asker[0]!r} turn",
                        sid, f"{name}.response")
    instruction, response = pairs[ask][1], pairs[answer][1]
    _check_text(instruction, sid, f"{name}.instruction", ctx)
    _check_text(response, sid, f"{name}.response", ctx)
    return strip_image_token(instruction), response


def _check_text(value: Any, sid: str, name: str, ctx: _Context) -> None:
    """Text fields must be strings; a response must not be blank."""
    if not isinstance(value, str):
        raise ctx.error(_missing_or_type(value, "a string"), sid, name)
    if name.endswith("response") and not value.strip():
        raise ctx.error("empty response", sid, name)


def _single_image(record: dict, sid: str, ctx: _Context) -> Any:
    images = record.get("images")
    if isinstance(images, str):
        return images
    if isinstance(images, list):
        if len(images) != 1:
            raise ctx.error(f"expected exactly one image, got {len(images)}", sid, "images")
        return images[0]
    return images  # missing or wrong type: reported by the caller


# ---------------------------------------------------------------- images --

def _image_path(ref: str, sid: str, key: str, ctx: _Context) -> Path:
    path = Path(ref)
    full = path if path.is_absolute() else ctx.root / path
    if not ctx.allow_external:
        inside = full.resolve().is_relative_to(ctx.root.resolve())
        if path.is_absolute() or not inside:
            raise ctx.error(f"image path {ref!r} points outside the dataset folder", sid, key)
    if not full.is_file():
        raise ctx.error(f"image file not found: {ref}", sid, key)
    return full


def _decode_image(opener: Callable[[], Image.Image], label: str, sid: str, key: str,
                  ctx: _Context) -> Image.Image:
    """Decode fully into RGB, refusing images above ``ctx.max_pixels``."""
    try:
        with opener() as im:
            width, height = im.size
            if width * height > ctx.max_pixels:
                raise ctx.error(f"image {label} is {width}x{height}, above the limit of "
                                f"{ctx.max_pixels:,} pixels", sid, key)
            im.load()
            return im.convert("RGB")
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ctx.error(f"cannot read image {label}: {e}", sid, key) from None


# ------------------------------------------------------ datasets folders --

def _iter_hf(ctx: _Context) -> Iterator[_Item]:
    """Items of a ``save_to_disk`` folder (images decoded by us, not by datasets)."""
    import datasets  # slow import: only when needed

    ds = _load_hf(ctx)
    missing = [c for c in _HF_COLUMNS if c not in ds.column_names]
    if missing:
        raise ctx.error(f"missing column(s) {missing}; columns are {ds.column_names}",
                        None, missing[0])
    if not isinstance(ds.features["image"], datasets.Image):
        raise ctx.error("the image column is not an Image feature", None, "image")
    ds = ds.cast_column("image", datasets.Image(decode=False))
    for n, row in enumerate(ds, start=1):
        sample_id = row["id"] if row["id"] is not None else f"{ctx.source.stem}-{n}"
        yield str(sample_id), partial(_row_to_sample, row, sample_id, ctx)


def _load_hf(ctx: _Context):
    import datasets

    try:
        ds = datasets.load_from_disk(str(ctx.source))
    except Exception as e:  # datasets raises many kinds for a broken folder
        raise ctx.error(f"cannot read datasets folder: {e}", None, None) from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" in ds:
            return ds["train"]
        if len(ds) == 1:
            return next(iter(ds.values()))
        raise ctx.error(f"DatasetDict without a 'train' split (splits: {list(ds)})",
                        None, None)
    return ds


def _row_to_sample(row: dict, sample_id: Any, ctx: _Context) -> Sample:
    sid = str(sample_id)
    if not isinstance(sample_id, str):
        raise ctx.error(f"id must be a string, got {type(sample_id).__name__}", sid, "id")
    _check_text(row["instruction"], sid, "instruction", ctx)
    _check_text(row["response"], sid, "response", ctx)
    image = row["image"] or {}
    if not image.get("bytes"):
        raise ctx.error("missing image (no embedded image bytes)", sid, "image")
    decoded = _decode_image(lambda: Image.open(BytesIO(image["bytes"])),
                            image.get("path") or "(embedded)", sid, "image", ctx)
    meta = _parse_meta(row.get("meta"), sid, ctx)
    return Sample.single(sid, decoded, strip_image_token(row["instruction"]), row["response"], meta)


def _parse_meta(raw: Any, sid: str, ctx: _Context) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, str):
        raise ctx.error(f"expected a JSON string, got {type(raw).__name__}", sid, "meta")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ctx.error(f"malformed JSON: {e}", sid, "meta") from None
    if not isinstance(meta, dict):
        raise ctx.error("expected a JSON object", sid, "meta")
    return meta


# ------------------------------------------------------------------ save --

def save_llava_json(dataset: VLDataset, out_dir: str | Path, *, filename: str = "data.json",
                    image_dir: str = "images") -> Path:
    """Write PNG images and a LLaVA JSON list; returns the JSON file's path.

    ``meta`` (less ``image_path``, which is rewritten) goes under a "meta" key
    when it holds JSON-serialisable values.
    """
    out = Path(out_dir)
    records = []
    for sample, rel in zip(dataset, _write_images(dataset, out, image_dir)):
        record: dict[str, Any] = {"id": sample.id, "image": rel, "conversations": [
            {"from": "human", "value": f"{IMAGE_TOKEN}\n{sample.instruction}"},
            {"from": "gpt", "value": sample.response}]}
        records.append(_with_meta(record, sample))
    path = out / filename
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def save_jsonl(dataset: VLDataset, out_dir: str | Path, filename: str = "data.jsonl", *,
               image_dir: str = "images") -> Path:
    """Write PNG images and a messages+images JSONL file; returns the file's path."""
    out = Path(out_dir)
    path = out / filename
    rels = _write_images(dataset, out, image_dir)
    with path.open("w", encoding="utf-8") as f:
        for sample, rel in zip(dataset, rels):
            record: dict[str, Any] = {"id": sample.id, "messages": [
                {"role": "user", "content": f"{IMAGE_TOKEN}{sample.instruction}"},
                {"role": "assistant", "content": sample.response}], "images": [rel]}
            f.write(json.dumps(_with_meta(record, sample), ensure_ascii=False) + "\n")
    return path


def save_hf_dataset(dataset: VLDataset, out_dir: str | Path) -> Path:
    """Save with ``datasets.Dataset.save_to_disk`` (PNG images, meta as JSON)."""
    import datasets

    features = datasets.Features({
        "id": datasets.Value("string"), "image": datasets.Image(),
        "instruction": datasets.Value("string"), "response": datasets.Value("string"),
        "meta": datasets.Value("string")})
    columns: dict[str, list] = {name: [] for name in features}
    for s in dataset:
        columns["id"].append(s.id)
        columns["image"].append({"bytes": png_bytes(s.image.convert("RGB")), "path": None})
        columns["instruction"].append(s.instruction)
        columns["response"].append(s.response)
        columns["meta"].append(json.dumps(_serialisable_meta(s), ensure_ascii=False))
    out = Path(out_dir)
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(out))
    return out


def _write_images(dataset: VLDataset, out: Path, image_dir: str) -> list[str]:
    """Save each image as PNG under ``out/image_dir``; relative POSIX paths."""
    folder = out / image_dir
    folder.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    rels = []
    for s in dataset:
        name = _unique_name(safe_filename(s.id), used)
        s.image.convert("RGB").save(folder / f"{name}.png", format="PNG")
        rels.append(f"{Path(image_dir).as_posix()}/{name}.png")
    return rels


def safe_filename(text: str, max_len: int = 100) -> str:
    """A filesystem-safe stem for ``text`` (not unique on its own)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:max_len]
    return stem or "sample"


def _unique_name(stem: str, used: set[str]) -> str:
    name, k = stem, 1
    while name.lower() in used:  # case-insensitive filesystems
        k += 1
        name = f"{stem}-{k}"
    used.add(name.lower())
    return name


def _serialisable_meta(sample: Sample) -> dict[str, Any]:
    meta = {}
    for key, value in sample.meta.items():
        if key == "image_path":
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            logger.debug("sample %r: meta key %r is not JSON-serialisable; dropped",
                         sample.id, key)
            continue
        meta[key] = value
    return meta


def _with_meta(record: dict[str, Any], sample: Sample) -> dict[str, Any]:
    meta = _serialisable_meta(sample)
    return {**record, "meta": meta} if meta else record


# ---------------------------------------------------------------- upload --

def extract_upload(zip_path: str | Path, dest_dir: str | Path, *,
                   max_bytes: int = 500 * 2**20, max_files: int = 200_000) -> Path:
    """Safely extract an uploaded zip; returns the folder to give :func:`load_dataset`.

    Refuses absolute paths, ``..`` components, symlinks, more than
    ``max_files`` members and more than ``max_bytes`` uncompressed (counted
    while extracting, so lying headers do not help).  ``dest_dir`` must be new
    or empty.  When the archive holds a single top-level folder, that folder
    is returned.  ``__MACOSX`` entries are ignored.
    """
    src, dest = Path(zip_path), Path(dest_dir)
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"extraction folder {dest} is not empty")
    try:
        with zipfile.ZipFile(src) as zf:
            members = _checked_members(zf, src.name, max_bytes, max_files)
            dest.mkdir(parents=True, exist_ok=True)
            _extract_members(zf, members, dest, max_bytes, src.name)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError,
            RuntimeError) as e:
        shutil.rmtree(dest, ignore_errors=True)
        raise DataError(f"not a readable zip archive: {e}", path=src.name) from None
    except DataError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return _upload_root(dest)


def _checked_members(zf: zipfile.ZipFile, label: str, max_bytes: int,
                     max_files: int) -> list[tuple[zipfile.ZipInfo, list[str]]]:
    """(member, path parts) for every member to extract; raises on anything unsafe."""
    infos = zf.infolist()
    if len(infos) > max_files:
        raise DataError(f"archive has {len(infos):,} members, above the limit of "
                        f"{max_files:,}", path=label)
    declared = sum(i.file_size for i in infos)
    if declared > max_bytes:
        raise DataError(f"archive unpacks to {declared:,} bytes, above the limit of "
                        f"{max_bytes:,}", path=label)
    members = []
    for info in infos:
        parts = _safe_parts(info.filename, label)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(f"archive member {info.filename!r} is a symbolic link",
                            path=label)
        if parts and parts[0] != "__MACOSX":
            members.append((info, parts))
    return members


def _safe_parts(name: str, label: str) -> list[str]:
    posix = name.replace("\\", "/")
    if "\x00" in posix or posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise DataError(f"archive member {name!r} has an absolute path", path=label)
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"archive member {name!r} escapes the archive folder ('..')",
                        path=label)
    return parts


def _extract_members(zf: zipfile.ZipFile, members: list[tuple[zipfile.ZipInfo, list[str]]],
                     dest: Path, max_bytes: int, label: str) -> None:
    total = 0
    for info, parts in members:
        target = dest.joinpath(*parts)
        try:
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as fin, target.open("xb") as fout:
                while chunk := fin.read(1 << 20):
                    total += len(chunk)
                    if total > max_bytes:
                        raise DataError(f"archive unpacks to more than {max_bytes:,} bytes",
                                        path=label)
                    fout.write(chunk)
        except (FileExistsError, NotADirectoryError):
            raise DataError(f"archive member {info.filename!r} clashes with another "
                            "member of the same name", path=label) from None


def _upload_root(dest: Path) -> Path:
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest
