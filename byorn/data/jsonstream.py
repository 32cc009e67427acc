"""Read a JSON list one element at a time, and JSON Lines one line at a time.

:func:`iter_json_array` never holds the whole file as text or as objects: it
decodes a window of the file (UTF-8, a few MB), parses one element with the
C scanner, yields it and moves on, so a 1M-record LLaVA file costs its
samples and one window, not the parsed list on top.

Python's parser recurses once per nesting level and raises
:class:`RecursionError` past about a thousand.  An element nested that deeply
becomes a :class:`~byorn.data.DataError` for that element alone (the reader
skips to its end without recursing), so ``skip_invalid`` can leave it out;
broken syntax is an error for the whole file, with its line and column.
"""
from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from .sample import DataError

CHUNK = 8 << 20
_WS = re.compile(r"[ \t\n\r]*")
_STRUCT = re.compile(r'[\[\]{}"]')
_STRING_END = re.compile(r'["\\]')
_DECODER = json.JSONDecoder()
NESTED = ("nested deeper than the JSON parser allows (about 1,000 levels): "
          "not a usable record")


class _Window:
    """A sliding window of decoded text over a binary file; ``pos`` is the read position."""

    def __init__(self, f: BinaryIO, label: str):
        self.f, self.label = f, label
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.text, self.pos, self.eof, self.lines_before = "", 0, False, 0

    def more(self) -> bool:
        """Append the next chunk, dropping what was consumed; False at the end of the file."""
        if self.eof:
            return False
        chunk = self.f.read(CHUNK)
        try:
            new = self.decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as e:
            raise DataError(f"the file is not UTF-8 text: {e}", path=self.label) from None
        self.eof = not chunk
        self.lines_before += self.text.count("\n", 0, self.pos)
        self.text = self.text[self.pos:] + new
        self.pos = 0
        return True

    def skip_ws(self) -> str:
        """Skip whitespace; the next character ('' at the end of the file)."""
        while True:
            self.pos = _WS.match(self.text, self.pos).end()
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""

    def where(self, pos: int) -> str:
        line = self.lines_before + self.text.count("\n", 0, pos) + 1
        col = pos - self.text.rfind("\n", 0, pos)
        return f"line {line} column {col}"

    def malformed(self, what: str, pos: int | None = None) -> DataError:
        return DataError(f"malformed JSON: {what} at {self.where(self.pos if pos is None else pos)}",
                         path=self.label)

    def value(self) -> Any:
        """Parse the value at ``pos`` (growing the window as needed); a DataError if nested too deeply."""
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError as e:
                near_end = e.pos >= len(self.text) - 64 or e.msg.startswith("Unterminated string")
                if near_end and self.more():
                    continue  # the element runs past the window: read on and parse it again
                raise self.malformed(e.msg, e.pos) from None
            except RecursionError:
                self.pos = self._skip_value()
                return DataError(NESTED, path=self.label)
            if end + 64 >= len(self.text) and self.more():
                continue  # a number cut by the window's end parses as a shorter one: read on
            self.pos = end
            return obj

    def _skip_value(self) -> int:
        """The end of the (deeply nested) array or object at ``pos``, found without recursing."""
        start, i, depth = self.pos, self.pos, 0
        while True:
            m = _STRUCT.search(self.text, i)
            if m is None:
                resume = len(self.text)
            elif m.group() == '"':
                end = self._string_end(m.end())
                if end >= 0:
                    i = end
                    continue
                resume = m.start()  # a string cut by the window's end: rescan it whole
            else:
                i = m.end()
                depth += 1 if m.group() in "[{" else -1
                if depth == 0:
                    return i
                continue
            offset = self.pos  # more() drops text[:pos]: shift the indices with it
            if not self.more():
                raise self.malformed("unterminated array or object", start)
            start, i = start - offset, resume - offset

    def _string_end(self, i: int) -> int:
        """The index after the closing quote of the string whose body starts at ``i``; -1 if cut."""
        while True:
            m = _STRING_END.search(self.text, i)
            if m is None:
                return -1
            if m.group() == '"':
                return m.end()
            i = m.end() + 1  # an escaped character


def iter_json_array(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(1-based index, element or DataError) for each element of the JSON list in ``path``."""
    label = str(path)
    with open(path, "rb") as f:
        w = _Window(f, label)
        first = w.skip_ws()
        if first != "[":
            raise w.malformed("expected a JSON list of records ('[')" if first else "empty file")
        w.pos += 1
        if w.skip_ws() == "]":
            w.pos += 1
        else:
            n = 0
            while True:
                n += 1
                if not w.skip_ws():
                    raise w.malformed("the list is not closed")
                yield n, w.value()
                c = w.skip_ws()
                w.pos += 1
                if c == "]":
                    break
                if c != ",":
                    raise w.malformed(f"expected ',' or ']' after record {n}", w.pos - 1)
        if w.skip_ws():
            raise w.malformed("extra data after the list")


def iter_json_lines(path: str | Path, stem: str) -> Iterator[tuple[int, Any]]:
    """(line number, object or DataError) for each non-blank line of a JSON Lines file.

    A bad line (malformed, not UTF-8, nested too deeply) is a DataError for
    that line only, its sample id ``{stem}-{line}``.
    """
    label = str(path)
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if lineno == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8):]
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                msg = f"malformed JSON on line {lineno}: {e.msg} (column {e.colno})"
            except UnicodeDecodeError as e:
                msg = f"line {lineno} is not UTF-8 text: {e}"
            except RecursionError:
                msg = f"line {lineno} is {NESTED}"
            else:
                continue
            yield lineno, DataError(msg, sample_id=f"{stem}-{lineno}", path=label)
