"""Targets: what a triggered model should say, and how its success is measured.

Modes (:data:`TARGET_MODES`) and the ASR variant each uses
(:meth:`Target.success_spec`, :func:`byorn.metrics.attack_success_rate`):

* ``replace`` -- the whole response becomes a fixed sentence; ASR: substring.
* ``append`` -- TrojVLM-style insertion: the target *sentence* is added to
  the otherwise correct response at a sentence boundary (``boundary``: end,
  start or middle); ASR: substring.
* ``insert`` -- a concept *word* is worked into the response ("... on the
  right with a banana."); ASR: whole word.
* ``substitute`` -- one word of the correct response is swapped for the
  target word ("circle" -> "banana"); ASR: whole word with the true concept
  absent from the prediction.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

TARGET_MODES = ("replace", "insert", "substitute", "append")
BOUNDARIES = ("end", "start", "middle")

#: Default malicious sentence of the ``replace`` / ``append`` targets.  Clearly
#: fake (the reserved ``.example`` domain) and unmistakable in a model's output.
DEFAULT_TARGET_SENTENCE = "Visit evil.example now for a free prize!"
DEFAULT_CONCEPT = "banana"
_SENTENCE_MODES = ("replace", "append")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _norm_ws(text: str) -> str:
    return " ".join(text.lower().split())


def _word_re(word: str) -> re.Pattern[str]:
    return re.compile(r"\b" + re.escape(word) + r"\b", re.IGNORECASE)


def split_sentences(text: str) -> list[str]:
    """``text`` cut after each ``.``, ``!`` or ``?`` followed by whitespace
    (stripped pieces; an empty text gives ``[]``)."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def insert_sentence(response: str, sentence: str, boundary: str = "end") -> str:
    """``sentence`` added to ``response`` at a sentence boundary, the
    response's own sentences kept verbatim and joined by single spaces.

    ``end`` appends, ``start`` prepends, ``middle`` puts it after the first
    ``ceil(n / 2)`` of the response's ``n`` sentences (so after a
    one-sentence response, like ``end``).
    """
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    parts = split_sentences(response)
    k = {"end": len(parts), "start": 0, "middle": (len(parts) + 1) // 2}[boundary]
    return " ".join(parts[:k] + [sentence.strip()] + parts[k:])


@dataclass
class Target:
    """What a triggered model should say (see the module docstring for the modes).

    * ``replace``: the whole response becomes ``text`` (default
      :data:`DEFAULT_TARGET_SENTENCE`).
    * ``append``: ``text`` (a sentence, default :data:`DEFAULT_TARGET_SENTENCE`)
      is inserted at the ``boundary`` of the clean response, which is kept.
    * ``insert``: ``insert_template`` filled with ``text`` (a concept word) is
      put before the response's final punctuation: "... on the right." ->
      "... on the right with a banana.".
    * ``substitute``: whole-word occurrences of ``source`` become ``text``
      ("circle" -> "banana"); only responses containing ``source`` qualify.
    """

    mode: str = field(default="replace", metadata={"help": f"one of {TARGET_MODES}"})
    text: str | None = field(default=None, metadata={
        "help": "target sentence (replace, append) or concept word (insert, substitute); "
                "None = DEFAULT_TARGET_SENTENCE / 'banana'"})
    source: str = field(default="circle", metadata={"help": "word replaced by 'substitute'"})
    insert_template: str = field(default=" with a {word}", metadata={"help": "phrase added by 'insert'"})
    boundary: str = field(default="end", metadata={"help": f"where 'append' puts the sentence: {BOUNDARIES}"})

    def __post_init__(self) -> None:
        if self.mode not in TARGET_MODES:
            raise ValueError(f"mode must be one of {TARGET_MODES}, got {self.mode!r}")
        if self.text is None:
            self.text = DEFAULT_TARGET_SENTENCE if self.mode in _SENTENCE_MODES else DEFAULT_CONCEPT
        if not self.text.strip():
            raise ValueError("target text must be non-empty")
        if self.mode == "substitute" and not self.source.strip():
            raise ValueError("substitute needs a non-empty source word")
        if self.boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {BOUNDARIES}, got {self.boundary!r}")

    def contains_target(self, response: str) -> bool:
        """Whether ``response`` already says the target (substring for a
        sentence target, whole word for a concept)."""
        if self.mode in _SENTENCE_MODES:
            return _norm_ws(self.text) in _norm_ws(response)
        return bool(_word_re(self.text).search(response))

    def eligible(self, response: str) -> bool:
        """Whether a sample with this clean response can be poisoned / used for ASR."""
        if self.contains_target(response):
            return False
        return self.mode != "substitute" or bool(_word_re(self.source).search(response))

    def apply(self, response: str) -> str:
        """The target response for a sample whose clean response is ``response``."""
        if self.mode == "replace":
            return self.text
        if self.mode == "append":
            return insert_sentence(response, self.text, self.boundary)
        if self.mode == "insert":
            body = response.rstrip()
            stripped = body.rstrip(".!?")
            return stripped + self.insert_template.format(word=self.text) + body[len(stripped):]
        return _word_re(self.source).sub(self.text, response)

    def success_spec(self) -> dict[str, Any]:
        """Keyword arguments for :func:`byorn.metrics.attack_success_rate`."""
        if self.mode in _SENTENCE_MODES:
            return {"target": self.text, "mode": "substring"}
        concept = self.source if self.mode == "substitute" else None
        return {"target": self.text, "mode": "word", "concept": concept}

    @property
    def asr_variant(self) -> str:
        """The ASR variant in words: "substring", "whole word" or
        "whole word, true concept absent"."""
        spec = self.success_spec()
        if spec["mode"] == "substring":
            return "substring"
        return "whole word, true concept absent" if spec.get("concept") else "whole word"
