"""Conversations from records, shared by every format.

A record (a JSON object, a JSONL line or a table row) becomes a
:class:`~byorn.data.Sample` in one of two shapes:

* a turn list under ``conversations`` (LLaVA / ShareGPT: ``{"from":
  "human" | "gpt" | "system", "value"}``) or ``messages`` (LLaMA-Factory /
  TRL: ``{"role", "content"}``, ``content`` a string or a list of ``{"type":
  "text", "text"}`` / ``{"type": "image"}`` parts); either key takes either
  turn spelling; images under ``image`` (a path or a list) or ``images``;
* ``instruction`` / ``response`` (one exchange) with an optional ``image``.

``<image>`` placeholders in user turns say where each image goes.  A record
with images and no placeholder at all gets them at the start of its first
user turn (LLaVA's convention); any other count mismatch is an error.  Every
error names the sample, the turn and the field, e.g. ``conversations[3].value``.
"""
from __future__ import annotations

from typing import Any, Callable

from .loading import LoadContext, extra_meta, missing_or_type
from .sample import IMAGE_TOKEN, DataError, ImageRef, Sample, Turn, check_turns

ROLE_ALIASES = {"system": "system", "user": "user", "human": "user",
                "assistant": "assistant", "gpt": "assistant", "model": "assistant"}
TURN_KEYS = ("conversations", "messages")
_RECORD_KEYS = frozenset({"id", "image", "images", *TURN_KEYS})

# (turn index, "role" | "text") -> the field name to report
FieldNamer = Callable[[int, str], str]


def record_to_sample(record: Any, n: int, ctx: LoadContext) -> Sample:
    """Sample ``n`` (1-based) of a JSON / JSONL file: a turn list and image paths."""
    if not isinstance(record, dict):
        raise ctx.error(f"record {n} is not a JSON object (got {type(record).__name__})",
                        f"{ctx.stem}-{n}", None)
    sid = ctx.sample_id(record.get("id"), n)
    key = "conversations" if "conversations" in record else "messages" if "messages" in record else None
    if key is None:
        raise ctx.error("missing field: expected 'conversations' (LLaVA / ShareGPT) or 'messages' "
                        "(LLaMA-Factory / TRL)", sid, "conversations")
    sources, image_key = image_sources(record, sid, ctx)
    return conversation_sample(sid, record[key], key, sources, image_key,
                               extra_meta(record, _RECORD_KEYS, sid, ctx), ctx)


def image_sources(record: dict, sid: str, ctx: LoadContext) -> tuple[list[Any], str]:
    """(image sources, the key they came from): ``image`` (one or a list) or ``images``."""
    has_one, has_many = record.get("image") is not None, record.get("images") is not None
    if has_one and has_many:
        raise ctx.error("both 'image' and 'images' are given: use one", sid, "images")
    key = "images" if has_many else "image"
    raw = record.get(key)
    if raw is None:
        return [], key
    if isinstance(raw, (str, dict)):
        return [raw], key
    if isinstance(raw, list):
        return raw, key
    raise ctx.error(missing_or_type(raw, "an image path or a list of them"), sid, key)


def conversation_sample(sid: str, raw_turns: Any, key: str, sources: list[Any], image_key: str,
                        meta: dict[str, Any], ctx: LoadContext) -> Sample:
    """A sample from a turn list; checks the turns before touching any image file."""
    turns, inline = parse_turns(raw_turns, key, sid, ctx)
    if inline:
        if sources:
            raise ctx.error("images are given both inside the turns and under "
                            f"{image_key!r}: use one", sid, image_key)
        sources, image_key = inline, key
    turns = checked_turns(turns, len(sources), sid, ctx, _turn_namer(raw_turns, key),
                          image_key, key)
    return Sample(sid, turns, image_refs(sources, image_key, sid, ctx, turns), meta)


def pair_sample(sid: str, instruction: Any, response: Any, sources: list[Any],
                meta: dict[str, Any], ctx: LoadContext) -> Sample:
    """A one-exchange sample from ``instruction`` / ``response`` (and an optional ``image``)."""
    if not isinstance(instruction, str):
        raise ctx.error(missing_or_type(instruction, "a string"), sid, "instruction")
    if not isinstance(response, str):
        raise ctx.error(missing_or_type(response, "a string"), sid, "response")
    names = {0: "instruction", 1: "response"}
    turns = checked_turns([Turn("user", instruction), Turn("assistant", response)], len(sources),
                          sid, ctx, lambda i, what: names[i], "image", "instruction")
    return Sample(sid, turns, image_refs(sources, "image", sid, ctx, turns), meta)


# ------------------------------------------------------------------ turns --

def parse_turns(raw: Any, key: str, sid: str, ctx: LoadContext) -> tuple[list[Turn], list[Any]]:
    """(turns, images given inline in TRL content parts) of a turn list."""
    if not isinstance(raw, list):
        raise ctx.error(missing_or_type(raw, "a list of turns"), sid, key)
    turns, inline = [], []
    aliases = ROLE_ALIASES
    for i, t in enumerate(raw):
        try:  # the common case, fast: a dict with a known role and string text
            role = aliases[t["from"]] if "from" in t else aliases[t["role"]]
            text = t["value"] if "value" in t else t["content"]
            if text.__class__ is not str:
                raise TypeError
        except (KeyError, TypeError):
            role, text = _turn(t, i, key, inline, sid, ctx)
        turns.append(Turn(role, text))
    return turns, inline


def _turn(t: Any, i: int, key: str, inline: list[Any], sid: str, ctx: LoadContext) -> tuple[str, str]:
    """(role, text) of turn ``i`` off the fast path: other spellings, content parts, or the error."""
    if not isinstance(t, dict):
        raise ctx.error(f"turn {i} is not an object (got {type(t).__name__})", sid, f"{key}[{i}]")
    rk, tk = _turn_keys(t)
    who = t.get(rk)
    role = ROLE_ALIASES.get(who) or ROLE_ALIASES.get(who.lower()) if isinstance(who, str) else None
    if role is None:
        raise ctx.error(missing_or_type(who, "a role") if not isinstance(who, str) else
                        f"unknown role {who!r} in turn {i} (expected one of "
                        f"{', '.join(sorted(ROLE_ALIASES))})", sid, f"{key}[{i}].{rk}")
    text = t.get(tk)
    if not isinstance(text, str):
        text = _content_parts(text, inline, sid, f"{key}[{i}].{tk}", ctx)
    return role, text


def _turn_keys(t: dict) -> tuple[str, str]:
    """The keys of a turn's role and text: ShareGPT ``from`` / ``value`` or ``role`` / ``content``."""
    rk = "from" if "from" in t else "role"
    tk = "value" if "value" in t else "content" if "content" in t else ("value" if rk == "from" else "content")
    return rk, tk


def _content_parts(parts: Any, inline: list[Any], sid: str, fld: str, ctx: LoadContext) -> str:
    """TRL content: text parts joined, an ``<image>`` placeholder per image part."""
    if not isinstance(parts, list):
        raise ctx.error(missing_or_type(parts, "a string or a list of content parts"), sid, fld)
    texts = []
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise ctx.error(missing_or_type(text, "a string"), sid, f"{fld}[{j}].text")
            texts.append(text)
        elif kind == "image":
            texts.append(IMAGE_TOKEN)
            src = part.get("image") if part.get("image") is not None else part.get("path")
            if src is not None:
                inline.append(src)
        else:
            raise ctx.error(f"unknown content part {str(part)[:80]} (expected type 'text' or 'image')",
                            sid, f"{fld}[{j}]")
    return "".join(texts)


def _turn_namer(raw_turns: list, key: str) -> FieldNamer:
    def name(i: int, what: str) -> str:
        rk, tk = _turn_keys(raw_turns[i]) if i < len(raw_turns) else ("role", "content")
        return f"{key}[{i}].{rk if what == 'role' else tk}"
    return name


def checked_turns(turns: list[Turn], n_images: int, sid: str, ctx: LoadContext,
                  turn_field: FieldNamer, image_field: str, turns_field: str) -> list[Turn]:
    """The turns, placeholders added when there are none; raises DataError naming the turn's field."""
    if _well_formed(turns, n_images):
        return turns
    if n_images and not any(IMAGE_TOKEN in t.text for t in turns if isinstance(t.text, str)):
        first_user = next((i for i, t in enumerate(turns) if t.role == "user"), None)
        if first_user is not None:  # LLaVA's convention: images before the first question
            turns[first_user] = Turn("user", IMAGE_TOKEN * n_images + turns[first_user].text)
            if _well_formed(turns, n_images):
                return turns
    try:  # check_turns says what is wrong
        check_turns(turns, n_images)
    except DataError as e:
        message = str(e).removeprefix(f"field {e.field!r}: ")
        raise ctx.error(message, sid, _rename(e.field, turn_field, image_field, turns_field)) from None
    if turns[-1].role == "user":
        raise ctx.error(f"the conversation ends with user turn {len(turns) - 1}, which no assistant "
                        "turn answers", sid, turn_field(len(turns) - 1, "role"))
    return turns


def _well_formed(turns: list[Turn], n_images: int) -> bool:
    """A quick yes for a well-formed conversation (what check_turns accepts, ending with an answer).

    Loading a million records spends most of its time per turn: this one
    loop accepts the common case; any no goes to check_turns for the reason.
    """
    start = 1 if turns and turns[0].role == "system" else 0
    n = len(turns) - start
    if n < 2 or n % 2:
        return False
    placeholders = turns[0].text.count(IMAGE_TOKEN) if start else 0
    for j in range(start, len(turns), 2):
        user, answer = turns[j], turns[j + 1]
        if user.role != "user" or answer.role != "assistant" or IMAGE_TOKEN in answer.text \
                or not answer.text or answer.text.isspace():
            return False
        placeholders += user.text.count(IMAGE_TOKEN)
    return placeholders == n_images


def _rename(field: str | None, turn_field: FieldNamer, image_field: str, turns_field: str) -> str | None:
    """check_turns' field names (``turns[3].text``) in the record's own terms."""
    if field == "images":
        return image_field
    if field == "turns":
        return turns_field
    if field and field.startswith("turns["):
        index, _, what = field[len("turns["):].partition("].")
        return turn_field(int(index), what)
    return field


# ----------------------------------------------------------------- images --

def image_refs(sources: list[Any], key: str, sid: str, ctx: LoadContext,
               turns: list[Turn]) -> list[ImageRef]:
    """References to each image source: a path, or a ``{"bytes", "path"}`` struct (tables).

    An error names the image's field and the turn whose placeholder it fills.
    """
    refs = []
    for k, src in enumerate(sources):
        field = key if len(sources) == 1 else f"{key}[{k}]"
        try:
            refs.append(image_ref(src, sid, field, ctx))
        except DataError as e:
            raise ctx.error(f"{getattr(e, 'detail', e)} (image {k}, in turn {_turn_of_image(turns, k)})",
                            sid, field) from None
    return refs


def _turn_of_image(turns: list[Turn], k: int) -> int:
    """The index of the turn holding the placeholder of image ``k``."""
    seen = 0
    for i, t in enumerate(turns):
        seen += t.n_images
        if seen > k:
            return i
    return len(turns) - 1


def image_ref(src: Any, sid: str, field: str, ctx: LoadContext) -> ImageRef:
    if isinstance(src, dict):  # datasets / Parquet Image struct
        data, path = src.get("bytes"), src.get("path")
        if data is not None:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise ctx.error(missing_or_type(data, "image bytes"), sid, field)
            return ctx.bytes_image(bytes(data), path if isinstance(path, str) and path else None, sid, field)
        if path is None:
            raise ctx.error("missing image (neither bytes nor a path)", sid, field)
        src = path
    return ctx.path_image(src, sid, field)
