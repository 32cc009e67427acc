"""ONION (Qi et al., EMNLP 2021) as the BYORn paper adapts it to VLM fine-tuning.

For a text ``s`` of words ``w_1 .. w_n`` (an instruction or a response), the
suspicion of word ``i`` is

    f_i = PPL(s) - PPL(s without w_i)

under a language model -- here the reference VLM's own language model, fed
text only (no image).  A trigger word ("cf", "zbw") makes a text much less
fluent, so removing it lowers the perplexity a lot: high ``f_i``.  Words
with ``f_i > bar`` are removed (ONION's default bar is 0).  ONION never looks
at the image: it is blind to image-only triggers by construction.

Pure parts: :func:`word_deletions`, :func:`suspicion_scores`, :func:`resolve_bar`,
:func:`outlier_mask`, :func:`remove_words`.  Model part:
:func:`lm_perplexities`.  The defense: :func:`onion_clean`, applied to the
training data (instructions and responses) and, with ``roles=("user",)``, to
test-time instructions.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..data import IMAGE_TOKEN, Sample, Turn, VLDataset, strip_image_token

log = logging.getLogger(__name__)

ONION_ROLES = ("user", "assistant")


# --------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------

def word_deletions(words: Sequence[str]) -> list[str]:
    """The text with each word removed in turn: ``n`` texts for ``n`` words
    (single spaces between the remaining words)."""
    return [" ".join(list(words[:i]) + list(words[i + 1:])) for i in range(len(words))]


def suspicion_scores(ppl_full: float, ppl_without: Sequence[float]) -> np.ndarray:
    """ONION suspicion ``f_i = ppl_full - ppl_without[i]`` for each word.

    Higher = removing the word makes the text more fluent = more suspicious.
    Range (-inf, inf); a NaN perplexity (an empty remainder, which cannot be
    scored) gives ``-inf``, so that word is never removed.
    """
    without = np.asarray(ppl_without, dtype=float)
    if not np.isfinite(ppl_full):
        raise ValueError(f"the full text's perplexity must be finite, got {ppl_full}")
    f = ppl_full - without
    return np.where(np.isnan(f), -np.inf, f)


def outlier_mask(suspicion: Sequence[float], bar: float = 0.0) -> np.ndarray:
    """Boolean mask of the words to remove: ``suspicion > bar``.

    Never all of them: when every word is above the bar, the least
    suspicious one is kept, so no text becomes empty.
    """
    s = np.asarray(suspicion, dtype=float)
    mask = s > bar
    if mask.size and mask.all():
        mask[int(np.argmin(s))] = False
    return mask


def resolve_bar(suspicions: Sequence[Sequence[float]], bar: float = 0.0,
                quantile: float | None = None) -> float:
    """The bar to use: ``bar`` itself, or with ``quantile`` the
    ``quantile``-quantile of every finite suspicion score across the texts
    (``bar`` when there is none)."""
    if quantile is None:
        return float(bar)
    flat = np.concatenate([np.asarray(s, dtype=float) for s in suspicions]) if len(suspicions) else np.array([])
    flat = flat[np.isfinite(flat)]
    return float(np.quantile(flat, quantile)) if flat.size else float(bar)


def remove_words(words: Sequence[str], mask: Sequence[bool]) -> str:
    """The words whose ``mask`` is False, joined by single spaces."""
    if len(words) != len(mask):
        raise ValueError(f"{len(words)} words but {len(mask)} mask entries")
    return " ".join(w for w, m in zip(words, mask) if not m)


# --------------------------------------------------------------------------
# The language model
# --------------------------------------------------------------------------

def _tokenizer(vlm):
    return getattr(vlm.processor, "tokenizer", None) or vlm.processor


def lm_perplexities(vlm, texts: Sequence[str], batch_size: int = 64, max_tokens: int = 256,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Perplexity ``exp(mean token NLL)`` of each text under ``vlm``'s
    language model, text only (no image, no chat template).

    Each text is tokenised without special tokens and prefixed with BOS (or
    EOS when the tokenizer has no BOS) so that its first token is scored;
    texts longer than ``max_tokens`` are truncated.  Works for any model
    whose forward takes ``input_ids`` / ``attention_mask`` alone (LLaVA-style
    VLMs do: without ``pixel_values`` they run the language model only).
    An empty text gives NaN.  Shape (N,), range [1, inf).
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tok = _tokenizer(vlm)
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    prefix = [start] if start is not None else []
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = [(prefix + tok(t, add_special_tokens=False)["input_ids"])[:max_tokens] for t in texts]
    out = np.full(len(texts), np.nan)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
    model = vlm.model
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in range(0, len(order), batch_size):
                rows = [i for i in order[b:b + batch_size] if len(ids[i]) >= 2]
                if rows:
                    out[rows] = _batch_ppl(model, [ids[i] for i in rows], pad, device)
                if progress:
                    progress(min(b + batch_size, len(order)), len(order))
    finally:
        model.train(was_training)
    return out


def _batch_ppl(model, seqs: list[list[int]], pad: int, device) -> np.ndarray:
    import torch

    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    attn = torch.zeros_like(input_ids)
    for r, s in enumerate(seqs):  # right padding
        input_ids[r, :len(s)] = torch.tensor(s)
        attn[r, :len(s)] = 1
    input_ids, attn = input_ids.to(device), attn.to(device)
    logits = model(input_ids=input_ids, attention_mask=attn).logits[:, :-1].float()  # (B, T-1, V)
    target, valid = input_ids[:, 1:], attn[:, 1:].bool()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, T-1)
    mean = (nll * valid).sum(1) / valid.sum(1)
    return torch.exp(mean.double()).cpu().numpy()  # float64: exp(NLL) overflows float32 above ~88


# --------------------------------------------------------------------------
# The defense
# --------------------------------------------------------------------------

@dataclass
class OnionConfig:
    """ONION's settings."""

    bar: float = field(default=0.0, metadata={
        "help": "remove words whose suspicion PPL(s) - PPL(s without w) exceeds this (ONION: 0)"})
    bar_quantile: float | None = field(default=None, metadata={
        "help": "instead of bar: the q-quantile of all scored words' suspicion in this call, in (0, 1) "
                "(e.g. 0.99 removes about the top 1 %); None = use bar"})
    roles: tuple[str, ...] = field(default=ONION_ROLES, metadata={
        "help": "which turns to clean: 'user' (instructions), 'assistant' (responses)"})
    batch_size: int = field(default=64, metadata={"help": "texts per language-model forward pass"})
    max_words: int = field(default=64, metadata={
        "help": "texts with more words are cleaned on their first max_words only (cost is quadratic)"})

    def __post_init__(self) -> None:
        self.roles = tuple(self.roles)
        if not math.isfinite(self.bar):
            raise ValueError(f"bar must be finite, got {self.bar}")
        if self.bar_quantile is not None and not 0.0 < self.bar_quantile < 1.0:
            raise ValueError(f"bar_quantile must be in (0, 1) or None, got {self.bar_quantile}")
        if not self.roles or any(r not in ONION_ROLES for r in self.roles):
            raise ValueError(f"roles must be a non-empty subset of {ONION_ROLES}, got {self.roles}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_words < 2:
            raise ValueError(f"max_words must be >= 2, got {self.max_words}")


@dataclass
class OnionReport:
    """What :func:`onion_clean` removed: one row per removed word
    (``id``, ``turn`` index in the conversation, ``role``, ``position`` of
    the word, ``word``, ``suspicion``), plus totals."""

    removed: list[dict]
    n_texts: int
    n_words: int
    config: dict

    @property
    def n_removed(self) -> int:
        return len(self.removed)

    def removed_words(self, sample_id: str) -> list[str]:
        return [r["word"] for r in self.removed if r["id"] == sample_id]


def _text_of(turn: Turn) -> str:
    return strip_image_token(turn.text) if turn.role == "user" else turn.text


def _suspicions(texts: list[list[str]], vlm, batch_size: int, progress) -> list[np.ndarray]:
    """ONION suspicion of every word of every text (lists of words), each
    distinct text scored once in one batched pass."""
    unique: dict[str, float] = {}
    for words in texts:
        for text in [" ".join(words)] + word_deletions(words):
            unique.setdefault(text, math.nan)
    keys = list(unique)
    ppl = dict(zip(keys, lm_perplexities(vlm, keys, batch_size, progress=progress)))
    return [suspicion_scores(ppl[" ".join(words)], [ppl[t] for t in word_deletions(words)]) for words in texts]


def onion_clean(samples: Sequence[Sample], vlm, cfg: OnionConfig | None = None,
                progress: Callable[[int, int], None] | None = None):
    """ONION over the chosen turns of every sample.

    Returns ``(cleaned, report)``: ``cleaned`` has the same ids and order (a
    :class:`VLDataset` when given one, else a list); in a cleaned user turn
    the image placeholders go in front of the text, as ``Sample.with_``
    puts them.  Texts of fewer than two words are left alone (removing their
    word would leave nothing), as in ONION.  Images are never touched.
    """
    cfg = cfg or OnionConfig()
    jobs = []  # (sample index, turn index, words)
    for si, s in enumerate(samples):
        for ti, t in enumerate(s.turns):
            words = _text_of(t).split() if t.role in cfg.roles else []
            if len(words) >= 2:
                jobs.append((si, ti, words))
    scores = _suspicions([words[:cfg.max_words] for _, _, words in jobs], vlm, cfg.batch_size, progress)
    bar = resolve_bar(scores, cfg.bar, cfg.bar_quantile)
    new_turns = {si: list(s.turns) for si, s in enumerate(samples)}
    removed, n_words = [], 0
    for (si, ti, words), f in zip(jobs, scores):
        head, tail = words[:cfg.max_words], words[cfg.max_words:]
        mask = outlier_mask(f, bar)
        n_words += len(head)
        turn = samples[si].turns[ti]
        removed += [{"id": samples[si].id, "turn": ti, "role": turn.role, "position": int(k), "word": head[k],
                     "suspicion": float(f[k])} for k in np.flatnonzero(mask)]
        if mask.any():
            text = " ".join([remove_words(head, mask)] + tail)
            prefix = IMAGE_TOKEN * turn.n_images if turn.role == "user" else ""
            new_turns[si][ti] = Turn(turn.role, prefix + text)
    cleaned = [s.with_(turns=new_turns[si]) for si, s in enumerate(samples)]
    log.info("ONION removed %d of %d words in %d texts (bar %g)", len(removed), n_words, len(jobs), bar)
    report = OnionReport(removed, len(jobs), n_words,
                         {"bar": bar, "bar_quantile": cfg.bar_quantile, "roles": list(cfg.roles),
                          "max_words": cfg.max_words})
    if isinstance(samples, VLDataset):
        cleaned = VLDataset(cleaned, name=f"{samples.name}+onion")
    return cleaned, report


# --------------------------------------------------------------------------
# The registered defense
# --------------------------------------------------------------------------

from .base import Defense, build_plan, register  # noqa: E402  (the pure parts above stand alone)


@register("onion")
@dataclass
class ONION(Defense):
    """ONION as a defense: clean the training turns, fine-tune, clean test instructions too."""

    summary = "remove outlier words (ONION) from instructions and responses, then fine-tune"
    bar: float = 0.0
    bar_quantile: float | None = None

    def __post_init__(self) -> None:
        self._config(("user", "assistant"))  # validates the options
        self._eval_cache: dict[str, VLDataset] = {}

    def _config(self, roles) -> OnionConfig:
        return OnionConfig(bar=self.bar, bar_quantile=self.bar_quantile, roles=roles)

    def plan(self, dataset, *, flags, decisions, ctx):
        cleaned, report = onion_clean(dataset, ctx.ref, self._config(("user", "assistant")))
        if ctx.out_dir is not None and _main_process():
            import json

            (ctx.out_dir / "onion_removed.json").write_text(json.dumps(
                {"config": report.config, "n_texts": report.n_texts, "n_words": report.n_words,
                 "removed": report.removed}, indent=1))
        by_id = {s.id: s for s in cleaned}
        return build_plan(dataset, "keep", None, decisions, edit=lambda s: by_id[s.id])

    def eval_view(self, dataset, ctx):
        """Test-time instructions cleaned the same way (computed once per test set)."""
        key = dataset.fingerprint()
        if key not in self._eval_cache:
            self._eval_cache[key] = onion_clean(dataset, ctx.ref, self._config(("user",)))[0]
        return self._eval_cache[key]


def _main_process() -> bool:
    from ..runtime import process_state

    return process_state().is_main_process
