"""The one adapter between BYORn and a vision-language model.

Every model — the embedded tiny LLaVA or a real checkpoint of any family in
:mod:`.families` — is loaded with ``AutoModelForImageTextToText`` and its
processor (:mod:`.loading`) and used through :class:`VLM`, which works on
conversations (:class:`byorn.data.Conversation`) whose unit is the assistant
turn:

- :meth:`VLM.encode` builds a right-padded batch whose ``labels`` cover the
  trained assistant turns (each with its end-of-turn token) and nothing else;
- :meth:`VLM.score_batch` gives every assistant turn's per-token surprisal;
- :meth:`VLM.generate_conversations` answers the last user turn, left-padded
  and KV-cached.

All three read the text :mod:`.render` builds, tokenized in one pass by the
family's processor, so they agree on the token sequence; a turn's scores are
the model's own loss on it.  Family quirks live in :mod:`.families`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..data.sample import Conversation
from . import families
from .loading import (ModelError, check_architecture, check_model_folder, load_model, load_processor,
                      model_identity)
from .render import Rendered, Renderer, render_all

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent.parent / "assets"
# The embedded tiny model; BYORN_EMBEDDED_MODEL points elsewhere (e.g. a retrained copy).
EMBEDDED_MODEL = Path(os.environ.get("BYORN_EMBEDDED_MODEL", ASSETS / "tiny-llava"))
IGNORE = -100

Progress = Callable[[int, int], None]  # (done, total)


class SequenceTooLong(ValueError):
    """A conversation longer than the model's context: never cut (a cut can land inside image tokens)."""

    def __init__(self, index: int, length: int, limit: int):
        super().__init__(f"conversation {index} is {length} tokens long, above the limit of {limit}; "
                         "shorten or drop it (it is not cut: a cut could land inside image tokens or a turn)")
        self.index, self.length, self.limit = index, length, limit


@dataclass
class TokenScores:
    """Per-token surprisal (nats) of one assistant turn under the model."""

    tokens: list[str]
    surprisals: list[float]

    @property
    def mean(self) -> float:
        return float(sum(self.surprisals) / max(len(self.surprisals), 1))


@dataclass
class Batch:
    """An encoded batch: ``model(**inputs)`` works; ``turn_ids`` (B, T) is the assistant
    turn index at each of a turn's tokens, -1 elsewhere; ``lengths`` are unpadded."""

    inputs: dict
    turn_ids: torch.Tensor
    lengths: list[int]
    n_turns: list[int] = field(default_factory=list)  # assistant turns per conversation (from turn_ids if empty)

    def __post_init__(self):
        if not self.n_turns:
            self.n_turns = (self.turn_ids.max(dim=1).values + 1).clamp(min=0).tolist()


class VLM:
    """A vision-language model with its processor, in evaluation mode by default."""

    def __init__(self, model, processor, *, name: str = "model", identity: str | None = None,
                 folder: str | Path | None = None):
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.name = name
        self.identity = identity or name
        config = model.config
        self.family: str = config.model_type
        self.spec = families.family_of(self.family)
        if not self.spec.verified:
            logger.warning("%s: model type %r is not a verified family (see docs/families.md); using the generic "
                           "chat-template path", name, self.family)
        self.max_length: int | None = getattr(config.get_text_config(), "max_position_embeddings", None)
        if self.tokenizer.pad_token is None:  # e.g. Llama-3 tokenizers: pad with EOS (always masked)
            logger.info("%s: the tokenizer has no pad token; padding with %s", name, self.tokenizer.eos_token)
            self.tokenizer.pad_token = self.tokenizer.eos_token
        gen_eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        gen_eos = [gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])
        self.renderer = Renderer(processor, self.tokenizer, self.spec, str(folder or name), stop_ids=gen_eos)
        self.warnings: list[str] = list(self.renderer.warnings)  # shown by the CLI, the audit meta and the app
        for w in self.warnings:
            logger.warning(w)
        self.placeholder = getattr(processor, "image_token", None) or "<image>"
        self.image_token_ids = _image_token_ids(config)
        stop = self.tokenizer.convert_tokens_to_ids(self.renderer.stop)
        self.stop_ids = sorted({stop, self.tokenizer.eos_token_id, *gen_eos} - {None})
        probe = self.tokenizer("a")["input_ids"]
        bare = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        # add_special_tokens=True is used only where the tokenizer adds a prefix (BOS) and nothing after
        self._adds_prefix_only = len(probe) > len(bare) and probe[len(probe) - len(bare):] == bare
        self._pieces: dict[int, str] = {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path | None = None, *, device: str | torch.device | None = None,
             dtype: torch.dtype | None = None, trust_remote_code: bool = False,
             attn_implementation: str | None = None) -> "VLM":
        """Load a model folder (None = the embedded tiny model); bad folders raise :class:`ModelError`."""
        folder = Path(path) if path is not None else EMBEDDED_MODEL
        config = check_model_folder(folder)
        check_architecture(folder, config, trust_remote_code)
        processor = load_processor(folder, config, trust_remote_code)
        model = load_model(folder, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code,
                           attn_implementation=attn_implementation)
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model.eval()
        name = "embedded tiny-llava" if path is None else folder.name
        return cls(model, processor, name=name, identity=model_identity(folder), folder=folder)

    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out, safe_serialization=True)
        self.processor.save_pretrained(out)
        return out

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to_device(self, batch: dict) -> dict:
        """Tensors onto the model's device; floating ones (pixels) in the model's dtype (bf16 on GPUs)."""
        dtype = next(self.model.parameters()).dtype
        return {k: (v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device))
                if torch.is_tensor(v) else v for k, v in batch.items()}

    # --------------------------------------------------------------- encoding
    def _process(self, rendered: Sequence[Rendered], padding_side: str, *, pad: bool = True) -> dict:
        """Token ids (image placeholders expanded) and pixel inputs for rendered conversations."""
        texts = [r.text for r in rendered]
        images = [list(r.images) for r in rendered]
        add_special = self._add_special_tokens(texts)
        if not self.spec.chat_template:  # special case for PaliGemma: its processor would rewrite the text
            return families.paligemma_process(self.processor, texts, images, padding_side=padding_side, pad=pad)
        kwargs = dict(text=texts, padding=pad, padding_side=padding_side, add_special_tokens=add_special,
                      return_tensors="pt" if pad else None)
        if any(images):
            kwargs["images"] = [[im.convert("RGB") for im in ims] for ims in images]
        try:
            enc = dict(self.processor(**kwargs))
        except (ValueError, TypeError, IndexError, RuntimeError) as e:
            raise ModelError(f"{self.name}: the {self.spec.label} processor refused the batch "
                             f"({type(e).__name__}: {e})") from e
        if families.drops_processor_token_types(self.spec):
            enc.pop("token_type_ids", None)
        enc.pop("labels", None)
        # special case for Llama 4: its image processor returns bf16 pixels (rescaled in bf16 as the original
        # implementation does); the batch carries the model's dtype, so that model(**batch.inputs) works
        dtype = next(self.model.parameters()).dtype
        return {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() and v.dtype != dtype else v
                for k, v in enc.items()}

    def _add_special_tokens(self, texts: Sequence[str]) -> bool:
        """One BOS, never two: let the tokenizer add it only when the template did not write it."""
        if not self.spec.chat_template:
            return False
        starts = {bool(self.renderer.bos) and t.startswith(self.renderer.bos) for t in texts}
        return self._adds_prefix_only and not any(starts)

    def encode(self, convs: Sequence[Conversation], *, train_turns: Sequence[set[int] | None] | None = None,
               max_length: int | None = None) -> Batch:
        """A right-padded batch whose ``labels`` cover the trained assistant turns only.

        ``train_turns[i]``: the turn indices of conversation ``i`` to train
        (None = all).  Raises :class:`SequenceTooLong` above ``max_length``
        (default: the model's context).
        """
        if not len(convs):
            raise ValueError("no conversations to encode")
        if train_turns is not None and len(train_turns) != len(convs):
            raise ValueError(f"train_turns has {len(train_turns)} entries for {len(convs)} conversations")
        rendered = render_all(self.renderer, convs, generation=False)
        enc = self._process(rendered, "right")
        ids = enc["input_ids"]  # (B, T)
        lengths = enc["attention_mask"].sum(1).tolist()
        self._check_lengths(lengths, max_length)
        spans = self._token_spans(rendered, ids, lengths)
        labels = torch.full_like(ids, IGNORE)
        turn_ids = torch.full_like(ids, -1)
        for i, conv_spans in enumerate(spans):
            wanted = None if train_turns is None else train_turns[i]
            for k, (a, b) in enumerate(conv_spans):
                turn_ids[i, a:b] = k
                if wanted is None or k in wanted:
                    labels[i, a:b] = ids[i, a:b]
        self._set_token_types(enc, answer_mask=turn_ids >= 0)
        enc["labels"] = labels
        return Batch(enc, turn_ids, lengths, [len(s) for s in spans])

    def _set_token_types(self, enc: dict, *, answer_mask: torch.Tensor) -> None:
        types = families.token_type_ids(self.spec, image_mask=self.image_token_mask(enc["input_ids"]),
                                        answer_mask=answer_mask)
        if types is not None:
            enc["token_type_ids"] = types

    def _check_lengths(self, lengths: Sequence[int], max_length: int | None) -> None:
        limit = max_length or self.max_length
        if limit is None:
            return
        for i, n in enumerate(lengths):
            if n > limit:
                raise SequenceTooLong(i, int(n), int(limit))

    def _token_spans(self, rendered: Sequence[Rendered], ids: torch.Tensor,
                     lengths: Sequence[int]) -> list[list[tuple[int, int]]]:
        """Token spans of the assistant turns, from their character spans.

        Each text and each of its prefixes ending at a span boundary is
        tokenized alone (text only): the prefix's tokens must begin the
        text's tokens (else :class:`ModelError`).  A boundary with no image
        after it lies as many tokens before the end of the processed
        sequence as in the text-only one (checked on the tokens); one with
        an image after it is measured by processing the prefix.
        """
        add_special = self._add_special_tokens([r.text for r in rendered])
        flat: list[str] = []
        for r in rendered:
            flat.append(r.text)
            flat.extend(r.text[:c] for span in r.spans for c in span)
        tok = self.tokenizer(flat, add_special_tokens=add_special)["input_ids"]
        out, j = [], 0
        for i, r in enumerate(rendered):
            full, j = tok[j], j + 1
            seq = ids[i, :lengths[i]].tolist()
            tail_from = r.text.rfind(self.placeholder) + len(self.placeholder) if r.images else 0
            bounds, tail = [], 0  # tail: text-only tokens from the earliest image-free boundary to the end
            for k, span in enumerate(r.spans):
                pair = []
                for c in span:
                    prefix, j = tok[j], j + 1
                    if full[:len(prefix)] != prefix:
                        raise ModelError(f"{self.name}: conversation {i}: the tokenizer splits the text at assistant "
                                         f"turn {k}'s boundary differently with and without what follows (not "
                                         "prefix-consistent), so the turn cannot be located")
                    if c >= tail_from:
                        pair.append(len(seq) - (len(full) - len(prefix)))
                        tail = max(tail, len(full) - len(prefix))
                    else:
                        pair.append(self._prefix_length(r, c, seq))
                bounds.append((pair[0], pair[1]))
            if tail and seq[len(seq) - tail:] != full[len(full) - tail:]:
                raise ModelError(f"{self.name}: conversation {i}: the processor's tokens after the last image differ "
                                 "from the tokenizer's, so the assistant turns cannot be located")
            out.append(bounds)
        return out

    def _prefix_length(self, r: Rendered, c: int, seq: list[int]) -> int:
        """Processed length of ``r.text[:c]`` (with the images in it); it must begin ``seq``."""
        n_img = r.text[:c].count(self.placeholder)
        part = Rendered(r.text[:c], [], r.images[:n_img])
        enc = self._process([part], "right", pad=False)
        pre = list(enc["input_ids"][0])
        if seq[:len(pre)] != pre and n_img < len(r.images):
            pre = self._prefix_with_all_images(r, c)
        if seq[:len(pre)] != pre:
            raise ModelError(f"{self.name}: the processed prefix before an assistant turn does not begin the "
                             "processed conversation, so the turn cannot be located")
        return len(pre)

    def _prefix_with_all_images(self, r: Rendered, c: int) -> list[int]:
        """Processed ``r.text[:c]`` as it stands in the whole conversation, for processors whose image
        tokens depend on how many images the conversation holds (LLaVA-OneVision: one image gets any-res
        tiles, several get the base view only): the later images ride along as placeholders at the end,
        and their image tokens are cut off again."""
        rest = len(r.images) - r.text[:c].count(self.placeholder)
        part = Rendered(r.text[:c] + self.placeholder * rest, [], r.images)
        ids = list(self._process([part], "right", pad=False)["input_ids"][0])
        image = set(self.image_token_ids)
        end = len(ids)
        while end and ids[end - 1] in image:
            end -= 1
        return ids[:end]

    def image_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: positions holding image tokens (the ones image features replace)."""
        mask = torch.zeros_like(input_ids, dtype=torch.bool)
        for t in self.image_token_ids:
            mask |= input_ids == t
        return mask

    def token_lengths(self, convs: Sequence[Conversation], *, batch_size: int = 64) -> list[int]:
        """Total tokens of each conversation (images expanded), for length checks and batching."""
        out: list[int] = []
        for start in range(0, len(convs), batch_size):
            rendered = render_all(self.renderer, convs[start:start + batch_size], generation=False)
            enc = self._process(rendered, "right", pad=False)
            out.extend(len(x) for x in enc["input_ids"])
        return out

    # ----------------------------------------------------------------- scoring
    def _decode_pieces(self, ids: Sequence[int]) -> list[str]:
        """The text of each token as a person reads it (spaces kept), decoded in batch and cached per id."""
        new = sorted({t for t in ids if t not in self._pieces})
        if new:
            # decode after an anchor token and drop the anchor's text: decoders that strip a leading
            # space (SentencePiece) only strip it from the first token
            anchor = self.tokenizer("a", add_special_tokens=False)["input_ids"][:1]
            head = self.tokenizer.decode(anchor)
            for t, text in zip(new, self.tokenizer.batch_decode([anchor + [t] for t in new])):
                self._pieces[t] = text[len(head):] if text.startswith(head) else self.tokenizer.decode([t])
        return [self._pieces[t] for t in ids]

    @torch.no_grad()
    def score_batch(self, batch: Batch, *, embed: bool = False):
        """Per conversation, per assistant turn: :class:`TokenScores` (surprisal = -log p, nats).

        With ``embed=True`` returns ``(scores, emb)``: ``emb["response"]``
        (n_turns_total, H) is the mean last-layer hidden state over each
        turn's tokens, ``emb["image"]`` (n_turns_total, H) the mean over the
        conversation's image tokens (zeros without images); rows in
        conversation order then turn order.
        """
        net = self.model
        was_training = net.training
        net.eval()
        inputs = self.to_device({k: v for k, v in batch.inputs.items() if k != "labels"})
        ids = inputs["input_ids"]  # (B, T)
        turn_ids = batch.turn_ids.to(ids.device)
        target = turn_ids[:, 1:] >= 0  # (B, T-1): the next token belongs to a turn
        rows_b, rows_q = target.nonzero(as_tuple=True)
        last: dict = {}

        def select(_module, args):
            # compute logits only at the positions that predict a turn token (image tokens and
            # prompts dominate real sequences): the LM head sees those hidden states only
            last["h"] = args[0]  # (B, T, H): the last layer's hidden states, after the final norm
            return (args[0][rows_b, rows_q].unsqueeze(0),) + tuple(args[1:])

        hook = net.get_output_embeddings().register_forward_pre_hook(select)
        try:
            out = net(**inputs, use_cache=False)
        finally:
            hook.remove()
        logits = out.logits  # (1, N, V): one row per scored token
        if "h" not in last:  # a model that bypasses its LM head module: full logits, hidden states asked for
            out = net(**inputs, use_cache=False, output_hidden_states=embed)
            logits, last["h"] = out.logits[rows_b, rows_q], out.hidden_states[-1] if embed else None
        else:
            logits = logits[0]
        wanted = ids[rows_b, rows_q + 1]
        surprisal = torch.cat([  # in chunks: (N, V) log-softmax in fp32 can be large for big vocabularies
            -torch.log_softmax(chunk.float(), -1).gather(-1, w.unsqueeze(-1)).squeeze(-1)
            for chunk, w in zip(logits.split(1024), wanted.split(1024))]) if len(wanted) else logits.new_zeros(0)
        turn_of = turn_ids[rows_b, rows_q + 1]
        rows_b, turn_of, wanted, surprisal = (x.tolist() for x in (rows_b, turn_of, wanted, surprisal))
        pieces = self._decode_pieces(wanted)
        scores = [[TokenScores([], []) for _ in range(n)] for n in batch.n_turns]
        for b, k, piece, s in zip(rows_b, turn_of, pieces, surprisal):
            scores[b][k].tokens.append(piece)
            scores[b][k].surprisals.append(s)
        if was_training:
            net.train()
        if not embed:
            return scores
        return scores, self._embeddings(last["h"].float(), ids, turn_ids, batch.n_turns)

    def _embeddings(self, h: torch.Tensor, ids: torch.Tensor, turn_ids: torch.Tensor,
                    n_turns: Sequence[int]) -> dict[str, np.ndarray]:
        """Mean hidden state (h: (B, T, H)) per turn and over each conversation's image tokens."""
        img = self.image_token_mask(ids).unsqueeze(-1).float()  # (B, T, 1)
        img_mean = (h * img).sum(1) / img.sum(1).clamp(min=1)  # (B, H)
        resp, image = [], []
        for b, n in enumerate(n_turns):
            for k in range(n):
                m = (turn_ids[b] == k).unsqueeze(-1).float()  # (T, 1)
                resp.append((h[b] * m).sum(0) / m.sum().clamp(min=1))
                image.append(img_mean[b])
        if not resp:
            empty = np.zeros((0, h.shape[-1]), dtype=np.float32)
            return {"response": empty, "image": empty.copy()}
        return {"response": torch.stack(resp).cpu().numpy().astype(np.float32),
                "image": torch.stack(image).cpu().numpy().astype(np.float32)}

    def _batches(self, convs: Sequence[Conversation], batch_size: int,
                 max_batch_tokens: int | None) -> list[list[int]]:
        """Index batches: in order, or (``max_batch_tokens``) by length with B x T bounded."""
        if not max_batch_tokens:
            return [list(range(s, min(s + batch_size, len(convs)))) for s in range(0, len(convs), batch_size)]
        lengths = self.token_lengths(convs, batch_size=batch_size)
        batches, cur = [], []
        for i in sorted(range(len(convs)), key=lambda i: lengths[i]):
            if cur and ((len(cur) + 1) * lengths[i] > max_batch_tokens or len(cur) >= batch_size):
                batches.append(cur)
                cur = []
            cur.append(i)
        return batches + ([cur] if cur else [])

    def score_conversations(self, convs: Sequence[Conversation], *, batch_size: int = 64,
                            max_batch_tokens: int | None = None, embed: bool = False,
                            progress: Progress | None = None):
        """:meth:`score_batch` over all conversations, results in input order (batch-independent)."""
        results: list = [None] * len(convs)
        embs: list = [None] * len(convs)
        done = 0
        for idx in self._batches(convs, batch_size, max_batch_tokens):
            out = self.score_batch(self.encode([convs[i] for i in idx]), embed=embed)
            scores, emb = out if embed else (out, None)
            row = 0
            for i, sc in zip(idx, scores):
                results[i] = sc
                if emb is not None:
                    embs[i] = (emb["response"][row:row + len(sc)], emb["image"][row:row + len(sc)])
                row += len(sc)
            done += len(idx)
            if progress:
                progress(done, len(convs))
        if not embed:
            return results
        hidden = self.model.config.get_text_config().hidden_size
        cat = (lambda j: np.concatenate([e[j] for e in embs]) if embs else np.zeros((0, hidden), np.float32))
        return results, {"response": cat(0), "image": cat(1)}

    # -------------------------------------------------------------- generation
    @torch.no_grad()
    def generate_conversations(self, convs: Sequence[Conversation], *, max_new_tokens: int = 32,
                               temperature: float = 0.0, top_p: float = 1.0, seed: int | None = 0,
                               batch_size: int = 64, model=None, progress: Progress | None = None) -> list[str]:
        """The next assistant turn of each conversation (each ends with a user turn).

        Left-padded, KV-cached batches; stops at the family's end-of-turn
        token(s).  ``temperature`` 0 is greedy; sampling uses
        ``temperature``, ``top_p`` and top-k 50 whatever the checkpoint's
        generation config says.  ``model`` swaps in other weights with the
        same processor (the EMA copy during training).  Same ``seed``, same
        samples.
        """
        net = model if model is not None else self.model
        was_training = net.training
        net.eval()
        texts: list[str] = []
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, len(convs), batch_size):
                chunk = convs[start:start + batch_size]
                rendered = render_all(self.renderer, chunk, generation=True)
                enc = self._process(rendered, "left")
                self._check_lengths(enc["attention_mask"].sum(1).tolist(), None)
                self._set_token_types(enc, answer_mask=torch.zeros_like(enc["input_ids"], dtype=torch.bool))
                out = net.generate(**self.to_device(enc), **self._generation_kwargs(
                    max_new_tokens, temperature, top_p))
                texts.extend(self._decode_answers(out[:, enc["input_ids"].shape[1]:]))
                if progress:
                    progress(min(start + batch_size, len(convs)), len(convs))
        if was_training:
            net.train()
        return texts

    def _generation_kwargs(self, max_new_tokens: int, temperature: float, top_p: float) -> dict:
        kw = dict(max_new_tokens=max_new_tokens, do_sample=temperature > 0, num_beams=1,
                  eos_token_id=self.stop_ids, pad_token_id=self.tokenizer.pad_token_id)
        if temperature > 0:  # explicit, so that a checkpoint's own sampling defaults do not apply
            kw.update(temperature=temperature, top_p=top_p, top_k=50)
        return kw

    def _decode_answers(self, new: torch.Tensor) -> list[str]:
        """Generated ids (B, N) -> texts cut at the first stop token, stripped."""
        rows = []
        for row in new.tolist():
            cut = next((j for j, t in enumerate(row) if t in self.stop_ids), len(row))
            rows.append(row[:cut])
        return [t.strip() for t in self.tokenizer.batch_decode(rows, skip_special_tokens=True)]

    # ------------------------------------------------- single-exchange helpers
    @staticmethod
    def _singles(images, instructions, responses=None) -> list[Conversation]:
        if responses is None:
            return [Conversation.single(im, q) for im, q in zip(images, instructions)]
        if not len(images) == len(instructions) == len(responses):
            raise ValueError(f"{len(images)} images, {len(instructions)} instructions and "
                             f"{len(responses)} responses: they must be as many")
        return [Conversation.single(im, q, r) for im, q, r in zip(images, instructions, responses)]

    def collate(self, images, instructions: Sequence[str], responses: Sequence[str]) -> dict:
        """A right-padded training batch (``encode(...).inputs``) for single exchanges."""
        return self.encode(self._singles(images, instructions, responses)).inputs

    def score(self, images, instructions: Sequence[str], responses: Sequence[str], *, batch_size: int = 64,
              embed: bool = False, progress: Progress | None = None):
        """Per-token surprisal of each response given its image and instruction (one turn each)."""
        out = self.score_conversations(self._singles(images, instructions, responses), batch_size=batch_size,
                                       embed=embed, progress=progress)
        if embed:
            return [s[0] for s in out[0]], out[1]
        return [s[0] for s in out]

    def generate(self, images, instructions: Sequence[str], *, max_new_tokens: int = 32,
                 temperature: float = 0.0, top_p: float = 1.0, seed: int | None = 0, batch_size: int = 64,
                 model=None, progress: Progress | None = None) -> list[str]:
        """A response to each (image, instruction)."""
        return self.generate_conversations(self._singles(images, instructions), max_new_tokens=max_new_tokens,
                                           temperature=temperature, top_p=top_p, seed=seed,
                                           batch_size=batch_size, model=model, progress=progress)


def _image_token_ids(config) -> list[int]:
    """The token id(s) image features replace, from the config (names differ by family)."""
    ids = []
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value not in ids:
            ids.append(value)
    return ids
