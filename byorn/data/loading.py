"""What every format loader shares: the options, the context and the report.

:class:`LoadConfig` holds the options of :func:`byorn.data.io.load_dataset`;
:class:`LoadContext` is one load in progress (where images live, how they are
checked, how errors are named); :func:`collect` builds the samples of a
stream of records, skipping and reporting bad ones when asked.

Images are never decoded here: a sample holds :class:`~byorn.data.ImageRef`
references, and ``check_images`` says how much is checked at load time:

* ``"none"``: nothing (fastest; a missing or corrupt image surfaces when a
  batch decodes it, as a :class:`~byorn.data.DataError` naming the sample);
* ``"exists"`` (default): one ``stat`` per distinct image file;
* ``"header"``: open each image's header (no pixel decoding) and check its
  size against ``max_pixels``.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import stat
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from io import BytesIO
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from PIL import Image

from .sample import DEFAULT_MAX_PIXELS, DataError, ImageRef, Sample

logger = logging.getLogger("byorn.data.io")

CHECK_IMAGES = ("none", "exists", "header")
MAX_META_DEPTH = 32


# ----------------------------------------------------------------- config --

@dataclass
class LoadConfig:
    """Options of :func:`byorn.data.io.load_dataset` (all formats)."""

    image_folder: str | None = field(default=None, metadata={
        "help": "folder that relative image paths are resolved against (LLaVA's --image-folder); "
                "default: the data file's folder"})
    check_images: str = field(default="exists", metadata={
        "help": "how images are checked at load time, without decoding: none (fastest), "
                "exists (one stat per image file) or header (open the header, check max_pixels)"})
    max_pixels: int = field(default=DEFAULT_MAX_PIXELS, metadata={
        "help": "images with more pixels are invalid (decompression bombs)"})
    allow_external_images: bool = field(default=True, metadata={
        "help": "allow absolute image paths and paths outside the image folder (off for uploads)"})
    skip_invalid: bool = field(default=False, metadata={
        "help": "skip invalid samples (reported) instead of failing"})
    instruction: str | None = field(default=None, metadata={
        "help": "COCO captions: the instruction of every sample (default: one of a fixed list)"})
    split: str | None = field(default=None, metadata={
        "help": "datasets folders and Parquet shards: the split to load (default: train, or the only one)"})
    fingerprint_cache: bool = field(default=True, metadata={
        "help": "cache the dataset fingerprint on disk ($BYORN_CACHE/fingerprints)"})

    def __post_init__(self) -> None:
        if isinstance(self.image_folder, os.PathLike):
            self.image_folder = os.fspath(self.image_folder)
        if self.image_folder is not None and (not isinstance(self.image_folder, str) or not self.image_folder):
            raise ValueError(f"image_folder must be a folder path, got {self.image_folder!r}")
        if self.check_images not in CHECK_IMAGES:
            raise ValueError(f"check_images must be one of {', '.join(CHECK_IMAGES)}, got {self.check_images!r}")
        if not isinstance(self.max_pixels, int) or isinstance(self.max_pixels, bool) or self.max_pixels <= 0:
            raise ValueError(f"max_pixels must be a positive integer, got {self.max_pixels!r}")
        if self.instruction is not None and (not isinstance(self.instruction, str) or not self.instruction.strip()):
            raise ValueError(f"instruction must be a non-empty string, got {self.instruction!r}")
        if self.split is not None and (not isinstance(self.split, str) or not self.split):
            raise ValueError(f"split must be a split name, got {self.split!r}")
        for name in ("allow_external_images", "skip_invalid", "fingerprint_cache"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @classmethod
    def from_options(cls, config: "LoadConfig | None", options: dict[str, Any]) -> "LoadConfig":
        """``config`` (or the defaults) with ``options`` (keyword arguments) applied."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise TypeError(f"unknown load option(s) {unknown}; options are {sorted(names)}")
        return cls(**{**(asdict(config) if config is not None else {}), **options})


# ----------------------------------------------------------------- report --

@dataclass
class SkippedSample:
    """One sample left out by ``skip_invalid=True``."""

    sample_id: str | None
    field: str | None
    message: str

    @classmethod
    def from_error(cls, err: DataError) -> "SkippedSample":
        return cls(err.sample_id, err.field, str(err))


@dataclass
class LoadReport:
    """What a load read and what it skipped (keep it with the audit: :meth:`to_dict`)."""

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoadReport":
        return cls(d["path"], d["format"], d.get("n_loaded", 0),
                   [SkippedSample(**s) for s in d.get("skipped", [])])


# ---------------------------------------------------------------- context --

class LoadContext:
    """One load in progress: the source, the options, image references and errors."""

    def __init__(self, source: Path, fmt: str, cfg: LoadConfig):
        self.source, self.format, self.cfg = source, fmt, cfg
        self.label = str(source)
        self.stem = source.stem if source.is_file() else source.name
        data_root = source if source.is_dir() else source.parent
        self.data_root = os.path.abspath(data_root)
        self.image_root = self._image_root(cfg.image_folder)
        self._real_root: str | None = None
        # raw path -> ImageRef (shared by every sample naming that file) or the error message
        self._refs: dict[str, ImageRef | str] = {}

    def _image_root(self, folder: str | None) -> str:
        if folder is None:
            return self.data_root
        root = os.path.abspath(os.path.expanduser(folder))
        if not os.path.isdir(root):
            raise DataError(f"image folder {folder} does not exist or is not a folder",
                            field="image_folder", path=self.label)
        if not self.cfg.allow_external_images and not _inside(root, self.data_root):
            raise DataError(f"image folder {folder} is outside the dataset folder",
                            field="image_folder", path=self.label)
        return root

    def error(self, message: str, sample_id: str | None = None, field: str | None = None) -> DataError:
        err = DataError(message, sample_id=sample_id, field=field, path=self.label)
        err.detail = message  # the message without the sample / field / file prefix
        return err

    def sample_id(self, raw: Any, n: int) -> str:
        """The id of record ``n`` (1-based): a string, an integer, or ``{stem}-{n}`` when absent."""
        if raw is None:
            return f"{self.stem}-{n}"
        if isinstance(raw, str) and raw:
            return raw
        if isinstance(raw, int) and not isinstance(raw, bool):
            return str(raw)
        raise self.error(f"id must be a non-empty string or an integer, got {str(raw)[:80]!r} "
                         f"({type(raw).__name__})", f"{self.stem}-{n}", "id")

    # -- images --
    def path_image(self, raw: Any, sid: str, field: str) -> ImageRef:
        """A reference to the image file ``raw`` (relative to the image folder), checked per ``check_images``."""
        if not isinstance(raw, str) or not raw:
            raise self.error(missing_or_type(raw, "an image path"), sid, field)
        got = self._refs.get(raw)
        if got is None:
            got = self._refs[raw] = self._new_path_ref(raw)
        if isinstance(got, str):
            raise self.error(got, sid, field)
        return got

    def _new_path_ref(self, raw: str) -> ImageRef | str:
        full = raw if os.path.isabs(raw) else os.path.join(self.image_root, raw)
        if not self.cfg.allow_external_images:
            if os.path.isabs(raw):
                return f"image path {raw!r} is absolute: only paths inside the dataset folder are allowed here"
            if self._real_root is None:
                self._real_root = os.path.realpath(self.image_root)
            if not _inside(os.path.realpath(full), self._real_root):
                return f"image path {raw!r} points outside the dataset folder"
        check = self.cfg.check_images
        if check == "exists":
            try:
                mode = os.stat(full).st_mode
            except OSError:
                return f"image file not found: {raw!r} (looked for {full})"
            if not stat.S_ISREG(mode):
                return f"image path {raw!r} is not a file ({full})"
        elif check == "header":
            problem = header_problem(lambda: Image.open(full), raw, self.cfg.max_pixels)
            if problem:
                return problem
        return ImageRef(full)

    def bytes_image(self, data: bytes, label: str | None, sid: str, field: str) -> ImageRef:
        """A reference to embedded image bytes (header checked when ``check_images="header"``)."""
        if not data:
            raise self.error("empty image (no bytes)", sid, field)
        if self.cfg.check_images == "header":
            problem = header_problem(lambda: Image.open(BytesIO(data)), label or "(embedded)",
                                     self.cfg.max_pixels)
            if problem:
                raise self.error(problem, sid, field)
        return ImageRef(data, label=label)


def header_problem(opener: Callable[[], Image.Image], label: str, max_pixels: int) -> str | None:
    """Why an image's header is unusable (unreadable, above ``max_pixels``), or None; no decoding."""
    try:
        with opener() as im:
            width, height = im.size
    except FileNotFoundError:
        return f"image file not found: {label!r}"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return f"cannot read image {label}: {e}"
    if width * height > max_pixels:
        return f"image {label} is {width}x{height}, above the limit of {max_pixels:,} pixels"
    return None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def missing_or_type(value: Any, expected: str) -> str:
    if value is None:
        return "missing field"
    return f"expected {expected}, got {type(value).__name__}"


def check_depth(value: Any, limit: int = MAX_META_DEPTH) -> bool:
    """True when ``value`` (JSON-like) nests at most ``limit`` levels (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            v = v.values()
        elif not isinstance(v, list):
            continue
        if depth > limit:
            return False
        stack.extend((x, depth + 1) for x in v if isinstance(x, (dict, list)))
    return True


def extra_meta(record: dict, known: frozenset[str] | set[str], sid: str, ctx: LoadContext) -> dict[str, Any]:
    """Unknown top-level keys of a record; a ``meta`` dict is merged in (its keys win)."""
    if record.keys() <= known:
        return {}
    meta = {k: v for k, v in record.items() if k not in known and k != "meta"}
    raw = record.get("meta")
    if isinstance(raw, dict):
        meta.update(raw)
    elif isinstance(raw, str) and raw.startswith("{"):  # tables keep meta as a JSON string
        meta.update(parse_meta(raw, sid, ctx))
    elif raw is not None:
        meta["meta"] = raw
    for k, v in meta.items():
        if isinstance(v, (dict, list)) and not check_depth(v):
            raise ctx.error(f"nested deeper than {MAX_META_DEPTH} levels", sid, k)
    return meta


def parse_meta(raw: str, sid: str, ctx: LoadContext) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as e:
        raise ctx.error(f"malformed JSON: {e}", sid, "meta") from None
    if not isinstance(meta, dict):
        raise ctx.error("expected a JSON object", sid, "meta")
    return meta


# ---------------------------------------------------------------- collect --

@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while millions of small objects are made.

    Building a million samples triggers a full collection again and again
    (each walks every object made so far): pausing it halves the load time.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# A record stream yields (1-based record number, record or the DataError that replaced it).
Records = Iterable[tuple[int, Any]]


class Reader(NamedTuple):
    """What a format module gives for one load."""

    records: Records                        # (number, record or DataError), lazily
    build: Callable[[Any, int], Sample]     # (record, number) -> Sample, or DataError
    data_files: list[str]                   # the files read (their stats key the fingerprint cache)


def collect(reader: Reader, ctx: LoadContext, report: LoadReport) -> list[Sample]:
    """Build every sample, enforcing unique ids; skip and report, or raise."""
    build = reader.build
    samples: list[Sample] = []
    seen: set[str] = set()
    skip = ctx.cfg.skip_invalid
    with gc_paused():
        for n, record in reader.records:
            try:
                if isinstance(record, DataError):
                    raise record
                sample = build(record, n)
                if sample.id in seen:
                    raise ctx.error("duplicate sample id", sample.id, "id")
            except DataError as err:
                if not skip:
                    raise
                logger.warning("skipping invalid sample: %s", err)
                report.skipped.append(SkippedSample.from_error(err))
                continue
            seen.add(sample.id)
            samples.append(sample)
    report.n_loaded = len(samples)
    if not samples:
        detail = f"; first error: {report.skipped[0].message}" if report.skipped else ""
        raise ctx.error(f"no valid samples ({report.n_skipped} invalid){detail}")
    return samples
