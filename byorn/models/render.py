"""Rendering a conversation into the text a model reads, with assistant-turn spans.

One function, :meth:`Renderer.render`, turns a :class:`~byorn.data.Conversation`
into the sequence text (image placeholders not yet expanded) and the
character span of every assistant turn, each span ending with the family's
end-of-turn token.  Training, scoring and generation all tokenize this same
text, so they agree on the token sequence.

How spans are found, for any chat template: render the generation prompt
before each assistant turn and the conversation up to and including it; the
turn is what the second adds to the first.  Every rendering must extend the
previous one (the template is *prefix-consistent*); a template that rewrites
earlier turns when later ones are added raises :class:`ModelError`.

The turn's trained text ends at its stop token: what a template writes after
it (``"\\n"`` after Qwen's ``<|im_end|>``, the stray space after LLaVA-NeXT's
``</s>``) goes to the next prompt, untrained; a template that writes no stop
token (llava-hf 1.5 ends the turn with a space) gets the tokenizer's EOS in
place of its trailing whitespace, so that the model learns to stop.
"""
from __future__ import annotations

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


def to_messages(conv: Conversation) -> list[dict]:
    return [{"role": t.role, "content": content_parts(t.text)} for t in conv.turns]


class Renderer:
    """Renders conversations for one model: its chat template, stop token and BOS rule."""

    def __init__(self, processor, tokenizer, family: Family, folder: str = "the model"):
        self.tokenizer = tokenizer
        self.family = family
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
        self.stop = self._detect_stop() if family.chat_template else self.eos
        self.bos = tokenizer.bos_token

    # ------------------------------------------------------------- template
    def _apply(self, messages: list[dict], generation: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, chat_template=self.template, tokenize=False,
                                                  add_generation_prompt=generation)

    def _detect_stop(self) -> str:
        """The token the template writes right after an assistant turn's text, else EOS."""
        probe = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                 {"role": "assistant", "content": [{"type": "text", "text": "XYZZY"}]}]
        full = self._apply(probe, False)
        after = full[full.rfind("XYZZY") + len("XYZZY"):]
        specials = sorted(set(self.tokenizer.all_special_tokens) | {str(t) for t in
                          getattr(self.tokenizer, "added_tokens_decoder", {}).values()}, key=len, reverse=True)
        for tok in specials:
            if tok and after.startswith(tok):
                return tok
        return self.eos

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
        messages = to_messages(conv)
        positions = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        text, carry, prev_full = "", "", ""
        spans: list[tuple[int, int]] = []
        for k, pos in enumerate(positions):
            prompt_k = self._apply(messages[:pos], True)
            full_k = self._apply(messages[:pos + 1], False)
            self._check_prefix(prev_full, prompt_k, k, "the prompt of")
            self._check_prefix(prompt_k, full_k, k, "")
            turn, rest = self._cut_at_stop(full_k[len(prompt_k):])
            text += carry + prompt_k[len(prev_full):]
            spans.append((len(text), len(text) + len(turn)))
            text += turn
            carry, prev_full = rest, full_k
        if generation:
            prompt = self._apply(messages, True)
            self._check_prefix(prev_full, prompt, len(positions), "the prompt of")
            text += carry + prompt[len(prev_full):]
        return Rendered(text, spans, list(conv.images))

    def _check_prefix(self, prefix: str, text: str, k: int, what: str) -> None:
        if not text.startswith(prefix):
            raise ModelError(f"the chat template is not prefix-consistent: {what} assistant turn {k} does not "
                             "extend the conversation rendered before it (the template rewrites earlier turns), "
                             "so turns cannot be located; use a template that renders turns independently")

    def _cut_at_stop(self, turn: str) -> tuple[str, str]:
        """(trained text ending with the stop token, what the template writes after it)."""
        at = turn.rfind(self.stop)
        if at >= 0:
            return turn[:at + len(self.stop)], turn[at + len(self.stop):]
        # special case for templates without a stop token (llava-hf 1.5 ends the turn with a space):
        # EOS in place of the trailing whitespace, or the model never learns to stop
        return turn.rstrip() + self.eos, ""


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
