"""Load and save vision-language datasets: the public API over the format modules.

Formats (:data:`FORMATS`; :func:`detect_format` tells them apart):

=============  ==============================================================
``llava_json``  a ``.json`` list of ``{"id", "image": path | [paths],
                "conversations": [{"from", "value"}]}`` (:mod:`.llava`)
``jsonl``       a ``.jsonl`` file, one ``{"id"?, "messages", "images"}``
                per line, LLaMA-Factory / TRL / ShareGPT (:mod:`.messages`)
``coco``        a COCO captions ``.json`` + an image folder, one sample per
                caption (:mod:`.coco`)
``hf_dataset``  a ``datasets`` ``save_to_disk`` folder (:mod:`.hf`)
``parquet``     a ``.parquet`` file or a folder of shards (:mod:`.hf`)
=============  ==============================================================

Every sample is a full conversation (:class:`~byorn.data.Sample`): every
turn in order, zero or more images as lazy :class:`~byorn.data.ImageRef`
references; loading never decodes pixels.  Relative image paths are resolved
against ``image_folder`` (default: the data file's folder).  Bad input raises
:class:`~byorn.data.DataError` naming the sample, the field (with the turn,
e.g. ``conversations[3].value``) and the file; ``skip_invalid=True`` skips,
logs and reports (:class:`LoadReport`) instead.  The options are
:class:`LoadConfig`'s fields.  A loaded dataset's fingerprint is cached on
disk (:mod:`.fingerprint`).

:func:`extract_upload` unpacks a user's zip archive safely (:mod:`.upload`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .coco import COCO_INSTRUCTIONS, looks_like_coco, read_coco
from .fingerprint import LoadedDataset, cache_dir
from .hf import parquet_files, read_hf_folder, read_parquet, save_hf_dataset, save_parquet
from .llava import read_llava_json, save_llava_json
from .loading import CHECK_IMAGES, LoadConfig, LoadContext, LoadReport, Reader, SkippedSample, collect
from .messages import read_jsonl, save_jsonl
from .sample import DataError, VLDataset, strip_image_token
from .saving import safe_filename
from .upload import extract_upload

__all__ = ["CHECK_IMAGES", "COCO_INSTRUCTIONS", "FORMATS", "LoadConfig", "LoadReport", "LoadedDataset",
           "SkippedSample", "cache_dir", "detect_format", "extract_upload", "load_dataset",
           "load_dataset_with_report", "safe_filename", "save_hf_dataset", "save_jsonl", "save_llava_json",
           "save_parquet", "strip_image_token"]

_READERS = {"llava_json": read_llava_json, "jsonl": read_jsonl, "coco": read_coco,
            "hf_dataset": read_hf_folder, "parquet": read_parquet}
FORMATS: tuple[str, ...] = tuple(_READERS)
_NOT_DATA_FILES = {"dataset_info.json", "state.json", "dataset_dict.json"}
_PEEK = 1 << 20


# ----------------------------------------------------------------- detect --

def detect_format(path: str | Path) -> str:
    """The format of a data file or folder, one of :data:`FORMATS`.

    Rules: a folder with ``dataset_info.json`` + ``state.json`` (or
    ``dataset_dict.json``) is ``hf_dataset``; a folder holding ``.parquet``
    files (or a ``data/`` subfolder of them) and no JSON data file is
    ``parquet``; any other folder must hold exactly one ``.json`` /
    ``.jsonl`` data file, whose format is returned.  A ``.jsonl`` file is
    ``jsonl``, a ``.parquet`` file ``parquet``.  A ``.json`` file is read by
    content: a list is ``llava_json``; an object naming ``"images"`` or
    ``"annotations"`` near its start is ``coco``; one object per line is
    ``jsonl``.
    """
    return _resolve(Path(path))[0]


def _resolve(path: Path, fmt: str | None = None) -> tuple[str, Path]:
    """(format, the file or folder to read) for a user-given path."""
    if not path.exists():
        raise DataError("no such file or folder", path=str(path))
    if fmt is not None:
        if fmt not in _READERS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return fmt, path
    if path.is_dir():
        return _resolve_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl", path
    if suffix == ".parquet":
        return "parquet", path
    if suffix == ".json":
        return _sniff_json(path), path
    raise DataError(f"unknown format {suffix or '(no extension)'!r}: expected a .json (LLaVA or COCO), "
                    ".jsonl (messages) or .parquet file, or a datasets folder", path=str(path))


def _resolve_folder(folder: Path) -> tuple[str, Path]:
    if ((folder / "dataset_info.json").is_file() and (folder / "state.json").is_file()
            or (folder / "dataset_dict.json").is_file()):
        return "hf_dataset", folder
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in (".json", ".jsonl")
                   and not p.name.startswith(".") and p.name not in _NOT_DATA_FILES)
    if len(files) == 1:
        return _resolve(files[0])
    if files:
        names = ", ".join(p.name for p in files)
        raise DataError(f"ambiguous folder: it holds several data files ({names}); "
                        "pass the path of the one to load", path=str(folder))
    if parquet_files(folder):
        return "parquet", folder
    raise DataError("unknown format: the folder holds no .json / .jsonl / .parquet data file "
                    "and is not a datasets folder", path=str(folder))


def _sniff_json(path: Path) -> str:
    """llava_json, coco or jsonl, from the first megabyte of a .json file."""
    with open(path, "rb") as f:
        head = f.read(_PEEK).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if head.startswith("["):
        return "llava_json"
    if head.startswith("{"):
        first, _, rest = head.partition("\n")
        if rest.lstrip().startswith("{"):
            try:
                json.loads(first)
                return "jsonl"  # one object per line, named .json
            except (json.JSONDecodeError, RecursionError):
                pass
        if looks_like_coco(head):
            return "coco"
        raise DataError("unknown JSON layout: an object without 'images' / 'annotations' (COCO); "
                        "LLaVA data is a list of records", path=str(path))
    raise DataError("unknown JSON layout: expected a list of records (LLaVA) or a COCO captions object"
                    if head else "empty file", path=str(path))


# ------------------------------------------------------------------- load --

def load_dataset(path: str | Path, config: LoadConfig | None = None, *, name: str | None = None,
                 format: str | None = None, **options: Any) -> VLDataset:
    """Load a dataset, its format detected (:func:`detect_format`) or given.

    Args:
        path: a data file, a ``datasets`` folder, a folder of Parquet shards,
            or a folder holding exactly one data file.
        config: a :class:`LoadConfig`; ``options`` (its field names:
            ``image_folder``, ``check_images``, ``max_pixels``,
            ``allow_external_images``, ``skip_invalid``, ``instruction``,
            ``split``, ``fingerprint_cache``) override it.
        name: dataset name (default: the file or folder stem).
        format: one of :data:`FORMATS`, to skip detection.

    Missing ids become ``f"{stem}-{n}"``: ``n`` is the 1-based record index
    in a JSON list or COCO annotations, the line number in JSONL, the row
    number in a table.  Unknown record keys (and a ``meta`` object) go into
    ``Sample.meta``.
    """
    return load_dataset_with_report(path, config, name=name, format=format, **options)[0]


def load_dataset_with_report(path: str | Path, config: LoadConfig | None = None, *,
                             name: str | None = None, format: str | None = None,
                             **options: Any) -> tuple[VLDataset, LoadReport]:
    """Like :func:`load_dataset`, also returning the :class:`LoadReport` (what was skipped)."""
    cfg = LoadConfig.from_options(config, options)
    fmt, source = _resolve(Path(path), format)
    ctx = LoadContext(source, fmt, cfg)
    reader: Reader = _READERS[fmt](ctx)
    report = LoadReport(path=str(source), format=fmt)
    samples = collect(reader, ctx, report)
    dataset = LoadedDataset(samples, name or ctx.stem, data_files=reader.data_files,
                            options=_content_options(fmt, ctx), cache=cfg.fingerprint_cache)
    return dataset, report


def _content_options(fmt: str, ctx: LoadContext) -> dict[str, Any]:
    """The options that shape the loaded samples (part of the fingerprint cache key).

    The checks only decide which samples are skipped, so they count only with ``skip_invalid``.
    """
    cfg = ctx.cfg
    options = {"format": fmt, "source": os.path.abspath(ctx.source), "image_root": ctx.image_root,
               "instruction": cfg.instruction, "split": cfg.split, "skip_invalid": cfg.skip_invalid}
    if cfg.skip_invalid:
        options.update(check_images=cfg.check_images, max_pixels=cfg.max_pixels,
                       allow_external_images=cfg.allow_external_images)
    return options
