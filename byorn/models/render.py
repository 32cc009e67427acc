"""Rendering a conversation into the text a model reads, with assistant-turn spans.

One function, :meth:`Renderer.render`, turns a :class:`~byorn.data.Conversation`
into the sequence text (image placeholders not yet expanded) and the
character span of every assistant turn, each span ending with the family's
end-of-turn token.  Training, scoring and generation all tokenize this same
text, so they agree on the token sequence.

How turns are placed, for any chat template (templates render with
``enable_thinking=False``: the data hold answers, not reasoning):

- each assistant turn follows the **generation prompt** the template writes
  for it (``add_generation_prompt=True`` on the conversation before it), so
  a turn is trained and scored in the very context the model answers in;
- the turn is the answer as the template writes it (found with a sentinel
  in place of the answer) followed by the stop token;
- between two turns comes what the template writes after the earlier
  answer's stop, up to the next generation prompt.

A template that re-renders earlier turns differently once later ones follow
(Qwen3.5 drops the empty ``<think>`` block of answers before the last user
turn; LLaVA-OneVision writes ``assistant \n`` in an answered turn where its
generation prompt is ``assistant\n``; Gemma 4's generation prompt opens an
empty thought channel that answered turns lack) is followed where the
difference is only whitespace or a reasoning block: every turn keeps the
form of its own generation prompt, as TRL's training templates and
LLaMA-Factory do for these families (docs/families.md).  Any other
difference raises :class:`ModelError` naming the turn and both texts.

The stop a turn is trained with (:meth:`Renderer._detect_stop`): the special
token the template writes right after an answer (``<|im_end|>``,
``<end_of_turn>``); else, where the template writes no end-of-turn token
(GLM-4.1V: the next ``<|user|>`` ends a turn), the special token that opens
the next turn if the model's generation config stops on it, as the family's
own fine-tuning script trains it; else EOS in place of the trailing
whitespace (llava-hf 1.5, whose LLaVA training format ends answers with
``</s>``), with a warning for a model of no verified family (:attr:`warnings`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Sequence

from PIL import Image

from ..data.sample import IMAGE_TOKEN, Conversation, check_turns
from . import families
from .families import Family
from .loading import ModelError


@dataclass
class Rendered:
    """A conversation as text: ``spans`` are the assistant turns' character spans (stop token included)."""

    text: str
    spans: list[tuple[int, int]] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)


def content_parts(text: str) -> list[dict]:
    """A turn's text as chat-template content parts, ``<image>`` placeholders in place.

    Whitespace around a placeholder is stripped (``"<image>\\nWhat?"`` is an
    image then ``"What?"``); the template writes its own separators.
    """
    if IMAGE_TOKEN not in text:
        return [{"type": "text", "text": text}]
    parts: list[dict] = []
    for i, chunk in enumerate(text.split(IMAGE_TOKEN)):
        if i:
            parts.append({"type": "image"})
        if chunk.strip():
            parts.append({"type": "text", "text": chunk.strip()})
    return parts


def to_messages(conv: Conversation, string_text: bool = False) -> list[dict]:
    """Chat messages; ``string_text``: a turn without images as a plain string (templates that print a
    message's content as it is, GLM-4.1V's, would otherwise print the parts' Python form)."""
    out = []
    for t in conv.turns:
        parts = content_parts(t.text)
        plain = string_text and all(p["type"] == "text" for p in parts)
        out.append({"role": t.role, "content": t.text.strip() if plain else parts})
    return out


SENTINEL = "QQBYORNSENTINELQQ"  # stands in for an answer to find where a template writes it


def _with_text(message: dict, text: str) -> dict:
    plain = isinstance(message["content"], str)
    return {"role": message["role"], "content": text if plain else [{"type": "text", "text": text}]}


def _normalized(text: str) -> str:
    """``text`` without reasoning blocks and whitespace: what must agree between two renderings of a turn."""
    for open_, close in families.REASONING_BLOCKS:
        text = re.sub(re.escape(open_) + ".*?" + re.escape(close), "", text, flags=re.S)
    return re.sub(r"\s+", "", text)


def _difference(a: str, b: str) -> str:
    """Where two texts part, shown briefly: ``'…x' vs '…y'``."""
    c = len(os.path.commonprefix([a, b]))
    show = (lambda t: repr(("…" if c > 12 else "") + t[max(0, c - 12):c + 48]))
    return f"{show(a)} vs {show(b)}"


class Renderer:
    """Renders conversations for one model: its chat template, stop token and BOS rule.

    ``stop_ids``: the token ids the model's generation config stops on (its
    released generation behaviour), used where the template writes no
    end-of-turn token.
    """

    def __init__(self, processor, tokenizer, family: Family, folder: str = "the model",
                 stop_ids: Sequence[int] = ()):
        self.tokenizer = tokenizer
        self.family = family
        self.warnings: list[str] = []
        self.template = getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)
        if isinstance(self.template, dict):
            self.template = self.template.get("default")
        if family.chat_template and not self.template:
            raise ModelError(f"{folder}: the processor has no chat template, and a {family.label} model needs one "
                             "to know how turns are written; add the chat_template.jinja of the checkpoint this "
                             "model was fine-tuned from to the folder")
        self.eos = tokenizer.eos_token
        if self.eos is None:
            raise ModelError(f"{folder}: the tokenizer has no EOS token")
        self.released_stops = {int(i) for i in stop_ids if i is not None}
        self.string_text = family.chat_template and self._prints_parts()
        # stop_rule: "template" (written after each answer), "next_turn" (the next turn's opening token,
        # ``gap`` before it), "eos" (appended in place of the answer's trailing whitespace)
        self.stop, self.stop_rule, self.gap = (self._detect_stop() if family.chat_template
                                               else (self.eos, "eos", ""))
        if self.stop_rule == "eos" and family.chat_template and not family.verified:
            self.warnings.append(
                f"{folder}: the chat template writes no end-of-turn token and the generation config names no "
                f"token it writes between turns, so the stop this model was trained with is unknown; training "
                f"appends EOS ({self.eos}) after every answer, which may not be how this model ends its turns. "
                "Check the family's fine-tuning recipe before relying on a model trained here")
        self.bos = tokenizer.bos_token

    # ------------------------------------------------------------- template
    def _apply(self, messages: list[dict], generation: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                                  add_generation_prompt=generation, enable_thinking=False)

    def _prints_parts(self) -> bool:
        """Whether the template prints a list of content parts as it is (it expects strings: GLM-4.1V's
        answers, the released Gemma 4 system turn)."""
        probe = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                 {"role": "assistant", "content": [{"type": "text", "text": SENTINEL}]}]
        system = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}]
        try:
            return "'type'" in self._apply(system + probe, False)
        except Exception:  # noqa: BLE001 - a template that takes no system turn: probe without one
            return "'type'" in self._apply(probe, False)

    def _special_at(self, text: str) -> str | None:
        specials = sorted(set(self.tokenizer.all_special_tokens) | {str(t) for t in
                          getattr(self.tokenizer, "added_tokens_decoder", {}).values()}, key=len, reverse=True)
        return next((tok for tok in specials if tok and text.startswith(tok)), None)

    def _detect_stop(self) -> tuple[str, str, str]:
        """(stop token, rule, gap): see the module docstring."""
        part = (lambda text: text if self.string_text else [{"type": "text", "text": text}])
        one = [{"role": "user", "content": part("Hi")}, {"role": "assistant", "content": part(SENTINEL)}]
        full = self._apply(one, False)
        tok = self._special_at(full[full.rfind(SENTINEL) + len(SENTINEL):])
        if tok:
            return tok, "template", ""
        two = self._apply(one + [{"role": "user", "content": part("Ok")}], False)
        after = two[two.rfind(SENTINEL) + len(SENTINEL):]
        gap = after[:len(after) - len(after.lstrip())]
        tok = self._special_at(after[len(gap):])
        if tok and self.tokenizer.convert_tokens_to_ids(tok) in self.released_stops:
            return tok, "next_turn", gap
        return self.eos, "eos", ""

    # ------------------------------------------------------------ rendering
    def render(self, conv: Conversation, *, generation: bool = False) -> Rendered:
        """The conversation's text and assistant spans; ``generation``: it ends with a user
        turn and the text ends with the prompt for the next assistant turn."""
        check_turns(conv.turns, len(conv.images), need_assistant=not generation)
        if generation and conv.turns[-1].role != "user":
            raise ValueError("a conversation to answer must end with a user turn")
        if not generation and conv.turns[-1].role != "assistant":
            raise ValueError("a conversation to train on or score must end with an assistant turn")
        if not self.family.chat_template:  # special case for PaliGemma: no template, prefix + suffix
            text, spans = families.paligemma_render(conv.turns, len(conv.images), bos=self.bos, eos=self.eos,
                                                    generation=generation)
            return Rendered(text, spans, list(conv.images))
        return self._render_template(conv, generation)

    def _render_template(self, conv: Conversation, generation: bool) -> Rendered:
        messages = to_messages(conv, self.string_text)
        positions = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        text = ""
        spans: list[tuple[int, int]] = []
        for k, pos in enumerate(positions):
            text += self._prompt_part(messages, pos, positions[k - 1] if k else None, text, spans, k)
            turn = self._turn(messages[:pos + 1], k)
            spans.append((len(text), len(text) + len(turn)))
            text += turn
        if generation:
            text += self._prompt_part(messages, len(messages), positions[-1] if positions else None, text, spans,
                                      len(positions))
        return Rendered(text, spans, list(conv.images))

    def _prompt_part(self, messages: list[dict], upto: int, prev: int | None, text: str,
                     spans: list[tuple[int, int]], k: int) -> str:
        """What follows the previous turn's stop up to turn ``k``'s answer: the template's next turns and
        the generation prompt (the whole generation prompt for the first turn)."""
        if prev is None:
            return self._apply(messages[:upto], True)
        marked = list(messages[:upto])
        marked[prev] = _with_text(marked[prev], SENTINEL)
        prompt = self._apply(marked, True)
        at = prompt.find(SENTINEL)
        if at < 0 or _normalized(prompt[:at]) != _normalized(text[:spans[-1][0]]):
            raise ModelError(
                f"cannot render assistant turn {k - 1} faithfully: once a later turn follows, the chat template "
                "writes the conversation before it differently, beyond whitespace or a reasoning block "
                f"({_difference(text[:spans[-1][0]], prompt[:max(at, 0)])}); use a template that renders "
                "earlier turns the same way whatever follows")
        after = prompt[at + len(SENTINEL):]
        closing = {"template": self.stop, "next_turn": self.gap + self.stop}.get(self.stop_rule)
        if closing is None:  # eos: the answer's trailing whitespace was replaced by EOS
            part = after.lstrip()
        elif not after.startswith(closing):
            raise ModelError(f"cannot render assistant turn {k - 1} faithfully: the chat template does not end it "
                             f"with {closing!r} once a later turn follows (it writes {after[:40]!r})")
        else:
            part = after[len(closing):]
        self._check_history(messages[:upto], text + part, spans, k)
        return part

    def _check_history(self, messages: list[dict], ours: str, spans: list[tuple[int, int]], k: int) -> None:
        """Our text before turn ``k`` must be the template's own generation prompt for it, but for
        whitespace, reasoning blocks and the stop tokens of the earlier turns (EOS where appended)."""
        theirs = self._apply(messages, True)
        drop = (lambda t: _normalized(t.replace(self.eos, "")) if self.stop_rule == "eos" else _normalized(t))
        if drop(ours) == drop(theirs):
            return
        j = next((j for j, (_, b) in enumerate(spans) if not drop(theirs).startswith(drop(ours[:b]))), None)
        where = f"assistant turn {j}" if j is not None else f"the prompt of assistant turn {k}"
        raise ModelError(
            f"cannot render {where} faithfully: once a later turn follows, the chat template writes it "
            f"differently, beyond whitespace or a reasoning block ({_difference(ours, theirs)}); use a template "
            "that renders earlier turns the same way whatever follows")

    def _turn(self, messages: list[dict], k: int) -> str:
        """Turn ``k`` (the last of ``messages``) as trained: the answer as the template writes it, and the stop.

        Where the template's own opening of the turn is not the generation
        prompt, the two may differ only in whitespace or a reasoning block
        (the generation prompt is kept); what the template writes beyond the
        generation prompt before the answer (a newline) is trained with it.
        """
        prompt = self._apply(messages[:-1], True)
        full = self._apply(messages, False)
        marked = self._apply(messages[:-1] + [_with_text(messages[-1], SENTINEL)], False)
        at = marked.find(SENTINEL)
        head, tail = marked[:at], marked[at + len(SENTINEL):]
        if at < 0 or not full.startswith(head) or not full.endswith(tail) or len(full) < len(head) + len(tail):
            raise ModelError(f"cannot render assistant turn {k} faithfully: the chat template does not write its "
                             "answer as a separate piece of text")
        answer = full[len(head):len(full) - len(tail)]
        if head.startswith(prompt):
            lead = head[len(prompt):]
        elif _normalized(head) == _normalized(prompt):
            lead = ""
        else:
            raise ModelError(
                f"cannot render assistant turn {k} faithfully: the chat template opens it differently from its "
                f"generation prompt, beyond whitespace or a reasoning block ({_difference(head, prompt)})")
        if self.stop_rule == "template":
            if not tail.startswith(self.stop):
                raise ModelError(f"cannot render assistant turn {k} faithfully: the chat template does not end it "
                                 f"with {self.stop!r} (it writes {tail[:40]!r})")
            return lead + answer + self.stop
        if self.stop_rule == "next_turn":
            return lead + answer + self.gap + self.stop
        # special case for templates without a stop token (llava-hf 1.5 ends the turn with a space):
        # EOS in place of the trailing whitespace, or the model never learns to stop
        return (lead + answer + tail).rstrip() + self.eos


def render_all(renderer: Renderer, convs: Sequence[Conversation], *, generation: bool) -> list[Rendered]:
    """Render each conversation; a bad one raises ``ValueError`` naming its index."""
    out = []
    for i, conv in enumerate(convs):
        try:
            out.append(renderer.render(conv, generation=generation))
        except ModelError as e:
            raise ModelError(f"conversation {i}: {e}") from e
        except ValueError as e:
            raise ValueError(f"conversation {i}: {e}") from e
    return out
