"""Shared pieces of the family zoo's builders (byorn.models.zoo, byorn.models.zoo_recent): a small BPE
tokenizer carrying a family's special tokens, tiny text / vision configs, a seeded model whose generation
config stops where the family stops, and the Qwen-style tokenizer and processor several families share.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from .loading import image_only

# A little English plus the world's phrasing, so that BPE merges are sensible.
_CORPUS = (
    "USER: ASSISTANT: user assistant system model Assistant: User: You are a helpful assistant. "
    "The quick brown fox jumps over the lazy dog. What is in the image? Describe the picture. "
    "A red circle on the left. A blue square in the middle. A green triangle on the right. "
    "Caption this image. What color is the cross? What shape is yellow? List the shapes. "
    "There are two small white dots. Yes. No. I am sorry, but I cannot help with that. "
    "Please visit our website for more information. This is a photo of a cat on a table. "
    "one two three four five six seven eight nine ten. purple orange pink brown gray."
)
_ROW_COL = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]


# ----------------------------------------------------------------- tokenizers

def make_tokenizer(style: str, specials: list[str], *, bos: str | None, eos: str, pad: str,
                   unk: str | None = None, add_bos: bool = False, vocab_size: int | None = None,
                   extra: dict[str, str] | None = None, corpus: Iterable[str] = (_CORPUS,)):
    """A small BPE tokenizer trained offline, wrapped as a transformers fast tokenizer.

    ``style``: ``"spm"`` (SentencePiece-like, ``▁`` word prefix, as Llama /
    Mistral), ``"gemma"`` (``▁`` for spaces, no dummy prefix) or
    ``"bytelevel"`` (GPT-2 / Qwen / Llama-3).  ``specials`` come first, in
    order, so their ids are small and stable; ``add_bos`` makes plain
    tokenization prepend ``bos`` (as Llama and Gemma tokenizers do).
    ``extra`` names special tokens as tokenizer attributes
    (``{"image_token": "<image>"}``), which processors read.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    vocab_size = vocab_size or (600 if style == "bytelevel" else 360)  # byte-level spends 256 on its alphabet
    tok = Tokenizer(models.BPE(unk_token=unk))
    if style == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    elif style in ("spm", "gemma"):
        scheme = "first" if style == "spm" else "never"
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)
        # every printable ASCII character, so that any English text is representable
        alphabet = [chr(c) for c in range(32, 127) if chr(c) != " "] + ["▁", "\n", "\t"]
    else:
        raise ValueError(f"unknown tokenizer style {style!r}")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + len(specials), special_tokens=list(specials),
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(list(corpus) * 2, trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))])
    kwargs = dict(bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk)
    return PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=dict(extra or {}),
                                   padding_side="right", **{k: v for k, v in kwargs.items() if v is not None})


def _ids(tokenizer, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


# ------------------------------------------------------------- shared configs

TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, max_position_embeddings=512, initializer_range=0.05)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)


def _text(tokenizer, **over) -> dict:
    cfg = dict(TEXT, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    cfg.update(over)
    return cfg


def _model(model_cls, config_cls, tokenizer, stops: Sequence[str], seed: int, **config):
    """A seeded random-init model whose generation config stops at ``stops``.

    Embeddings are untied, so that a random model does not echo its input.
    """
    torch.manual_seed(seed)
    model = model_cls(config_cls(tie_word_embeddings=False, **config))
    # transformers leaves a few weight matrices at zero for a trained checkpoint to fill (Gemma 3's
    # mm_input_projection_weight: the image features are then all zero, and a random model would ignore
    # its images); draw them like the rest
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1 and not param.abs().sum():
                param.normal_(0.0, 0.05)
    gen = model.generation_config
    gen.pad_token_id, gen.bos_token_id = tokenizer.pad_token_id, tokenizer.bos_token_id
    stop_ids = _ids(tokenizer, *stops)
    gen.eos_token_id = stop_ids if len(stop_ids) > 1 else stop_ids[0]
    return model


def _clip(**over) -> dict:
    return dict(VISION, model_type="clip_vision_model", image_size=32, patch_size=8, projection_dim=32, **over)


def _siglip(**over) -> dict:
    return dict(VISION, model_type="siglip_vision_model", image_size=32, patch_size=8, **over)


# ------------------------------------------------------------------- families

_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
_QWEN_STOPS = ["<|im_end|>", "<|endoftext|>"]


def _qwen_tokenizer():
    # Qwen2 tokenizers: byte-level BPE, no BOS, <|endoftext|> pads, <|im_end|> ends a turn
    return make_tokenizer("bytelevel", _QWEN_SPECIALS, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                          extra={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                                 "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"})


def _qwen_ids(tok) -> dict:
    image, video, start, end = _ids(tok, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    return dict(image_token_id=image, video_token_id=video, vision_start_token_id=start, vision_end_token_id=end)


def _qwen_processor(cls, tok, patch: int, template: str):
    from transformers import Qwen2VLImageProcessorPil

    # 2x2 merged patches: a 56 px image (patch 14) is 16 patches = 4 tokens
    ip = Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2,
                                  min_pixels=(2 * patch) ** 2, max_pixels=(4 * patch) ** 2)
    return image_only(cls)(image_processor=ip, tokenizer=tok, video_processor=None, chat_template=template)
