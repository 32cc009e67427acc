"""COCO captions: an annotation JSON plus an image folder, one sample per caption.

The file is ``{"images": [{"id", "file_name"}], "annotations": [{"id",
"image_id", "caption"}]}`` (``captions_train2017.json``); ``file_name`` is
relative to the image folder (``image_folder=``, e.g. ``train2017/``;
default: the JSON file's folder).  Each caption becomes a one-exchange
sample: id = the annotation id, the user turn an instruction (``instruction=``,
or one of :data:`COCO_INSTRUCTIONS` chosen by the id, so a sample's
instruction does not depend on the file's order), the assistant turn the
caption.  ``meta`` keeps ``image_id``; captions of one image share its
:class:`~byorn.data.ImageRef`.
"""
from __future__ import annotations

import json
import zlib
from functools import partial
from typing import Any

from .loading import LoadContext, Reader, missing_or_type
from .sample import IMAGE_TOKEN, Sample, Turn

COCO_INSTRUCTIONS = (
    "Describe this image briefly.",
    "Write a short caption for this image.",
    "What does this image show? Answer in one sentence.",
    "Give a one-sentence description of the picture.",
    "Summarize the content of the image in a sentence.",
)


def looks_like_coco(head: str) -> bool:
    """Whether the start of a JSON object's text names the COCO keys."""
    return '"annotations"' in head or '"images"' in head


def read_coco(ctx: LoadContext) -> Reader:
    """The reader of a COCO captions file (parsed whole: such files are tens of MB)."""
    try:
        with open(ctx.source, "rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ctx.error(f"malformed JSON: {e}") from None
    except RecursionError:
        raise ctx.error("malformed JSON: nested deeper than the JSON parser allows") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
            or not isinstance(data.get("images"), list):
        raise ctx.error("not a COCO captions file: expected an object with 'images' and "
                        "'annotations' lists", None, "annotations")
    build = partial(caption_sample, files=_file_names(data["images"]), ctx=ctx)
    return Reader(enumerate(data["annotations"], start=1), build, [str(ctx.source)])


def _file_names(images: list) -> dict[Any, Any]:
    """image id -> file name (whatever the entry holds: checked per caption)."""
    files = {}
    for im in images:
        if isinstance(im, dict) and _hashable(im.get("id")):
            files[im["id"]] = im.get("file_name")
    return files


def _hashable(v: Any) -> bool:
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def caption_sample(ann: Any, n: int, files: dict[Any, Any], ctx: LoadContext) -> Sample:
    """Sample of caption ``n`` (1-based)."""
    if not isinstance(ann, dict):
        raise ctx.error(f"annotation {n} is not an object", f"{ctx.stem}-{n}", None)
    sid = ctx.sample_id(ann.get("id"), n)
    image_id = ann.get("image_id")
    if not _hashable(image_id) or image_id not in files:
        raise ctx.error(f"image_id {image_id!r} is not among the file's 'images'" if image_id is not None
                        else "missing field", sid, "image_id")
    caption = ann.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        raise ctx.error("empty caption" if isinstance(caption, str) else missing_or_type(caption, "a string"),
                        sid, "caption")
    instruction = ctx.cfg.instruction or COCO_INSTRUCTIONS[zlib.crc32(sid.encode()) % len(COCO_INSTRUCTIONS)]
    ref = ctx.path_image(files[image_id], sid, "file_name")
    turns = [Turn("user", IMAGE_TOKEN + instruction), Turn("assistant", caption.strip())]
    return Sample(sid, turns, [ref], {"image_id": image_id})
