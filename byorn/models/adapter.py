"""The one adapter between BYORn and a vision-language model.

Every model — the embedded tiny LLaVA or a real checkpoint (LLaVA,
SmolVLM/Idefics3, Qwen2-VL, PaliGemma ...) — is loaded with
``AutoModelForImageTextToText`` + ``AutoProcessor`` and used through
:class:`VLM`, which knows three things: how to build a training batch with a
response-only loss mask, how to score a response token by token, and how to
generate with left padding.

Safety: weights load from safetensors only and ``trust_remote_code`` is off
unless the caller turns it on.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent.parent.parent / "assets"
# The embedded tiny model; BYORN_EMBEDDED_MODEL points elsewhere (e.g. a retrained copy).
EMBEDDED_MODEL = Path(os.environ.get("BYORN_EMBEDDED_MODEL", ASSETS / "tiny-llava"))
IGNORE = -100


class ModelError(ValueError):
    """A model folder that cannot be loaded, with what to do about it."""


@dataclass
class TokenScores:
    """Per-token surprisal (nats) of one response under the model."""

    tokens: list[str]
    surprisals: list[float]

    @property
    def mean(self) -> float:
        return float(sum(self.surprisals) / max(len(self.surprisals), 1))


Progress = Callable[[int, int], None]  # (done, total)


def model_identity(path: Path) -> str:
    """A short stable hash of a model folder's config and weights."""
    h = hashlib.sha256()
    for f in sorted(path.glob("*.json")) + sorted(path.glob("*.safetensors")):
        h.update(f.name.encode())
        if f.suffix == ".json" or f.stat().st_size < 256 * 2**20:
            h.update(f.read_bytes())
        else:  # large shards: size plus head and tail is enough to tell them apart
            h.update(str(f.stat().st_size).encode())
            with f.open("rb") as fh:
                h.update(fh.read(2**20))
                fh.seek(-2**20, 2)
                h.update(fh.read())
    return h.hexdigest()[:16]


class VLM:
    """A vision-language model with its processor, in evaluation mode by default."""

    def __init__(self, model, processor, *, name: str = "model", identity: str | None = None):
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.name = name
        self.identity = identity or name

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path | None = None, *, device: str | None = None,
             dtype: torch.dtype | None = None, trust_remote_code: bool = False) -> "VLM":
        """Load a model folder (None = the embedded tiny model)."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        folder = Path(path) if path is not None else EMBEDDED_MODEL
        _check_model_folder(folder)
        try:
            processor = AutoProcessor.from_pretrained(
                folder, trust_remote_code=trust_remote_code, local_files_only=True)
            model = AutoModelForImageTextToText.from_pretrained(
                folder, trust_remote_code=trust_remote_code, local_files_only=True,
                use_safetensors=True, dtype=dtype or torch.float32)
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(f"{folder} could not be loaded as an image-text-to-text model: {e}") from e
        model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model.eval()
        name = "embedded tiny-llava" if path is None else folder.name
        return cls(model, processor, name=name, identity=model_identity(folder))

    def save(self, out_dir: str | Path) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out, safe_serialization=True)
        self.processor.save_pretrained(out)
        return out

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---------------------------------------------------------------- templates
    def prompt(self, instruction: str) -> str:
        """The chat-formatted prompt up to where the assistant starts."""
        messages = [{"role": "user", "content": [
            {"type": "image"}, {"type": "text", "text": instruction}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def response_text(self, instruction: str, response: str) -> str:
        """What the chat template appends after the prompt for ``response``.

        Taken from the template itself so that each model's own end-of-turn
        marker is trained and scored; falls back to `` response + eos``.
        """
        messages = [{"role": "user", "content": [
            {"type": "image"}, {"type": "text", "text": instruction}]},
            {"role": "assistant", "content": [{"type": "text", "text": response}]}]
        prompt = self.prompt(instruction)
        full = self.processor.apply_chat_template(messages, tokenize=False)
        if full.startswith(prompt) and response in full[len(prompt):]:
            return full[len(prompt):].rstrip("\n")
        return " " + response + (self.tokenizer.eos_token or "")

    # ---------------------------------------------------------------- batching
    def _encode_prompts(self, images: Sequence[Image.Image], instructions: Sequence[str],
                        padding_side: str) -> dict:
        self.tokenizer.padding_side = padding_side
        return self.processor(images=[[im.convert("RGB")] for im in images],
                              text=[self.prompt(q) for q in instructions],
                              padding=True, return_tensors="pt")

    def collate(self, images: Sequence[Image.Image], instructions: Sequence[str],
                responses: Sequence[str]) -> dict:
        """A right-padded training batch whose ``labels`` cover the response only."""
        enc = self._encode_prompts(images, instructions, "right")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        resp = [self.tokenizer(self.response_text(q, r), add_special_tokens=False)["input_ids"]
                for q, r in zip(instructions, responses)]
        lengths = mask.sum(1).tolist()
        total = max(n + len(r) for n, r in zip(lengths, resp))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out_ids = torch.full((len(resp), total), pad, dtype=torch.long)
        labels = torch.full_like(out_ids, IGNORE)
        attn = torch.zeros_like(out_ids)
        token_keys = [k for k, v in enc.items() if torch.is_tensor(v) and v.shape == ids.shape
                      and k not in ("input_ids", "attention_mask")]
        extra = {k: torch.zeros_like(out_ids) for k in token_keys}
        for i, (n, r) in enumerate(zip(lengths, resp)):
            r_t = torch.tensor(r, dtype=torch.long)
            out_ids[i, :n], out_ids[i, n:n + len(r)] = ids[i, :n], r_t
            labels[i, n:n + len(r)] = r_t
            attn[i, :n + len(r)] = 1
            for k in token_keys:  # e.g. PaliGemma token_type_ids: 0 prefix, 1 suffix
                extra[k][i, :n] = enc[k][i, :n]
                extra[k][i, n:n + len(r)] = 1 if k == "token_type_ids" else 0
        batch = {k: v for k, v in enc.items() if k not in token_keys and k not in ("input_ids", "attention_mask")}
        batch.update(extra, input_ids=out_ids, attention_mask=attn, labels=labels)
        return batch

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    # ----------------------------------------------------------------- scoring
    @torch.no_grad()
    def score(self, images: Sequence[Image.Image], instructions: Sequence[str],
              responses: Sequence[str], *, batch_size: int = 64, embed: bool = False,
              progress: Progress | None = None):
        """Per-token surprisal of each response given its image and instruction.

        Returns a list of :class:`TokenScores`; with ``embed=True`` also a dict
        of numpy arrays ``response`` and ``image`` (mean last-layer hidden state
        over the response tokens / the image tokens), shape (N, H).
        """
        was_training = self.model.training
        self.model.eval()
        scores: list[TokenScores] = []
        emb_r, emb_i = [], []
        n = len(responses)
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            batch = self.to_device(self.collate(images[sl], instructions[sl], responses[sl]))
            labels = batch.pop("labels")
            out = self.model(**batch, output_hidden_states=embed)
            logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
            target = labels[:, 1:]
            valid = target != IGNORE
            tok_lp = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
            for i in range(target.shape[0]):
                ids = target[i][valid[i]].tolist()
                scores.append(TokenScores([self.tokenizer.decode([t]) for t in ids],
                                          (-tok_lp[i][valid[i]]).tolist()))
            if embed:
                h = out.hidden_states[-1].float()  # (B, T, H)
                resp_mask = (labels != IGNORE).unsqueeze(-1).float()
                img_mask = self._image_token_mask(batch["input_ids"]).unsqueeze(-1).float()
                emb_r.append((h * resp_mask).sum(1) / resp_mask.sum(1).clamp(min=1))
                emb_i.append((h * img_mask).sum(1) / img_mask.sum(1).clamp(min=1))
            if progress:
                progress(min(start + batch_size, n), n)
        if was_training:
            self.model.train()
        if embed:
            return scores, {"response": torch.cat(emb_r).cpu().numpy(),
                            "image": torch.cat(emb_i).cpu().numpy()}
        return scores

    def _image_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        image_id = getattr(self.model.config, "image_token_id", None)
        if image_id is None:
            image_id = getattr(self.model.config, "image_token_index", -1)
        return input_ids == image_id

    # -------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, images: Sequence[Image.Image], instructions: Sequence[str], *,
                 max_new_tokens: int = 32, temperature: float = 0.0, top_p: float = 1.0,
                 seed: int | None = 0, batch_size: int = 64, model=None,
                 progress: Progress | None = None) -> list[str]:
        """Responses generated for each (image, instruction), left-padded batches.

        ``temperature`` 0 is greedy decoding.  ``model`` swaps in another set
        of weights with the same processor (the EMA copy during training).
        """
        net = model if model is not None else self.model
        was_training = net.training
        net.eval()
        texts: list[str] = []
        n = len(instructions)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            for start in range(0, n, batch_size):
                sl = slice(start, start + batch_size)
                enc = self.to_device(self._encode_prompts(images[sl], instructions[sl], "left"))
                kwargs = dict(max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                              pad_token_id=self.tokenizer.pad_token_id)
                if temperature > 0:
                    kwargs.update(temperature=temperature, top_p=top_p)
                out = net.generate(**enc, **kwargs)
                new = out[:, enc["input_ids"].shape[1]:]
                texts.extend(t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True))
                if progress:
                    progress(min(start + batch_size, n), n)
        if was_training:
            net.train()
        return texts


def _check_model_folder(folder: Path) -> None:
    if not folder.exists():
        raise ModelError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise ModelError(f"{folder} is a file; give the folder that holds config.json")
    cfg = folder / "config.json"
    if not cfg.exists():
        raise ModelError(f"{folder} is not a model folder: it has no config.json")
    if not list(folder.glob("*.safetensors")):
        raise ModelError(f"{folder} holds no .safetensors weights (pickled weights are not loaded, for safety)")
    try:
        json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{cfg} is not valid JSON: {e}") from e


# ---------------------------------------------------------------------------
# TEMPORARY single-turn shim of the conversation API (replaced by the models branch).
from dataclasses import dataclass as _dc  # noqa: E402


class SequenceTooLong(ValueError):
    def __init__(self, index: int, length: int, limit: int):
        super().__init__(f"conversation {index} has {length} tokens, above the limit of {limit}")
        self.index, self.length, self.limit = index, length, limit


@_dc
class Batch:
    inputs: dict
    turn_ids: torch.Tensor
    lengths: list


def _single(conv):
    turns = conv.turns
    if len(turns) != 2 or turns[0].role != "user" and turns[1].role != "assistant":
        raise NotImplementedError("shim: single-turn only")
    from byorn.data import strip_image_token
    return conv.images[0] if conv.images else None, strip_image_token(turns[0].text), turns[1].text


def _encode(self, convs, *, train_turns=None, max_length=None):
    parts = [_single(c) for c in convs]
    inputs = self.collate([p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts])
    labels = inputs["labels"]
    turn_ids = torch.where(labels != IGNORE, 0, -1)
    if train_turns is not None:
        for i, tt in enumerate(train_turns):
            if tt is not None and 0 not in tt:
                labels[i] = IGNORE
    lengths = inputs["attention_mask"].sum(1).tolist()
    limit = max_length or self.max_length
    for i, n in enumerate(lengths):
        if limit and n > limit:
            raise SequenceTooLong(i, n, limit)
    return Batch(inputs, turn_ids, lengths)


@torch.no_grad()
def _score_batch(self, batch, *, embed=False):
    was = self.model.training
    self.model.eval()
    inputs = self.to_device(dict(batch.inputs))
    inputs.pop("labels")
    out = self.model(**inputs, output_hidden_states=embed)
    logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
    ids = inputs["input_ids"][:, 1:]
    tid = batch.turn_ids[:, 1:].to(logp.device)
    tok_lp = logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    res = []
    for i in range(ids.shape[0]):
        m = tid[i] == 0
        t = ids[i][m].tolist()
        res.append([TokenScores([self.tokenizer.decode([x]) for x in t], (-tok_lp[i][m]).tolist())])
    if was:
        self.model.train()
    if embed:
        h = out.hidden_states[-1].float()
        rm = (batch.turn_ids.to(h.device) >= 0).unsqueeze(-1).float()
        im = self._image_token_mask(inputs["input_ids"]).unsqueeze(-1).float()
        return res, {"response": ((h * rm).sum(1) / rm.sum(1).clamp(min=1)).cpu().numpy(),
                     "image": ((h * im).sum(1) / im.sum(1).clamp(min=1)).cpu().numpy()}
    return res


def _score_conversations(self, convs, *, batch_size=64, max_batch_tokens=None, embed=False, progress=None):
    out, er, ei = [], [], []
    for s in range(0, len(convs), batch_size):
        r = self.score_batch(self.encode(convs[s:s + batch_size]), embed=embed)
        if embed:
            r, e = r
            er.append(e["response"]), ei.append(e["image"])
        out.extend(r)
        if progress:
            progress(min(s + batch_size, len(convs)), len(convs))
    if embed:
        import numpy as np
        return out, {"response": np.concatenate(er), "image": np.concatenate(ei)}
    return out


def _generate_conversations(self, convs, **kw):
    parts = [_single_prompt(c) for c in convs]
    return self.generate([p[0] for p in parts], [p[1] for p in parts], **kw)


def _single_prompt(conv):
    from byorn.data import strip_image_token
    return conv.images[0] if conv.images else None, strip_image_token(conv.turns[-1].text)


VLM.encode = _encode
VLM.score_batch = _score_batch
VLM.score_conversations = _score_conversations
VLM.generate_conversations = _generate_conversations
VLM.family = property(lambda self: self.model.config.model_type)
VLM.max_length = property(lambda self: getattr(self.model.config.get_text_config(), "max_position_embeddings", None))
VLM.image_token_mask = lambda self, ids: self._image_token_mask(ids)
VLM.token_lengths = lambda self, convs: self.encode(convs).lengths
