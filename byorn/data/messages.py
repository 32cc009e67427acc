"""Messages JSONL (LLaMA-Factory / TRL): one ``{"id"?, "messages", "images"}`` per line.

``messages`` are ``{"role": "system" | "user" | "assistant", "content"}``, the
content a string with ``<image>`` placeholders or a list of ``{"type":
"text", "text"}`` / ``{"type": "image"}`` parts; ``images`` are paths
relative to the image folder.  ShareGPT spellings (``conversations``,
``from`` / ``value``, ``human`` / ``gpt``) load too.  A bad line is an error
for that line alone (its id ``{stem}-{line}`` when it has none).
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Iterable

from .jsonstream import iter_json_lines
from .loading import LoadContext, Reader, Records
from .sample import DataError, Sample
from .saving import ImageWriter, atomic_text, check_sample, with_meta
from .turns import record_to_sample


def read_jsonl(ctx: LoadContext) -> Reader:
    """The reader of a JSONL file (one line at a time)."""
    def records() -> Records:
        for n, item in iter_json_lines(ctx.source, ctx.stem):
            if not isinstance(item, (dict, DataError)):
                item = ctx.error(f"line {n} is not a JSON object (got {type(item).__name__})",
                                 f"{ctx.stem}-{n}", None)
            yield n, item
    return Reader(records(), partial(record_to_sample, ctx=ctx), [str(ctx.source)])


def save_jsonl(dataset: Iterable[Sample], out_dir: str | Path, filename: str = "data.jsonl", *,
               image_dir: str = "images") -> Path:
    """Write the images (bytes as they are) and a messages JSONL file; returns the file's path."""
    out = Path(out_dir)
    writer = ImageWriter(out, image_dir)
    path = out / filename
    with atomic_text(path) as f:
        for s in dataset:
            check_sample(s)
            rels = writer.write(s)
            record: dict = {"id": s.id, "messages": [{"role": t.role, "content": t.text} for t in s.turns]}
            if rels:
                record["images"] = rels
            f.write(json.dumps(with_meta(record, s), ensure_ascii=False) + "\n")
    return path
