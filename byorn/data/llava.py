"""LLaVA JSON: a list of ``{"id", "image": path | [paths], "conversations": [...]}``.

Turns are ``{"from": "human" | "gpt" | "system", "value"}``; image paths are
relative to the image folder (LLaVA's ``--image-folder``; default: the JSON
file's folder).  Records in the messages shape (see :mod:`.turns`) load too.
The file is read one record at a time (:mod:`.jsonstream`).
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Iterable

from .jsonstream import NESTED, iter_json_array
from .loading import LoadContext, Reader, Records
from .sample import DataError, Sample
from .saving import ImageWriter, atomic_text, check_sample, with_meta
from .turns import record_to_sample

LLAVA_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}


def read_llava_json(ctx: LoadContext) -> Reader:
    """The reader of a LLaVA JSON file (one record at a time)."""
    def records() -> Records:
        for n, item in iter_json_array(ctx.source):
            if isinstance(item, DataError):  # nested too deeply: this record alone is bad
                item = ctx.error(f"record {n} is {NESTED}", f"{ctx.stem}-{n}", None)
            yield n, item
    return Reader(records(), partial(record_to_sample, ctx=ctx), [str(ctx.source)])


def save_llava_json(dataset: Iterable[Sample], out_dir: str | Path, *, filename: str = "data.json",
                    image_dir: str = "images") -> Path:
    """Write the images (bytes as they are) and a LLaVA JSON list; returns the JSON file's path.

    Every turn is written as it is (``<image>`` placeholders included); a
    sample's images go under ``"image"`` (a path, or a list for several;
    absent for a text-only sample); JSON-serialisable ``meta`` under ``"meta"``.
    """
    out = Path(out_dir)
    writer = ImageWriter(out, image_dir)
    path = out / filename
    with atomic_text(path) as f:
        f.write("[")
        for i, s in enumerate(dataset):
            check_sample(s)
            rels = writer.write(s)
            record: dict = {"id": s.id}
            if rels:
                record["image"] = rels[0] if len(rels) == 1 else rels
            record["conversations"] = [{"from": LLAVA_ROLES[t.role], "value": t.text} for t in s.turns]
            f.write(("\n" if i == 0 else ",\n") + json.dumps(with_meta(record, s), ensure_ascii=False))
        f.write("\n]\n")
    return path
