"""Per-family quirks of vision-language models, in one place.

The adapter (:mod:`.adapter`) is written once for every family; what differs
between families lives here as a small registry keyed by
``config.model_type`` plus named, commented special cases (in the manner of
TRL's ``sft_trainer.py``: "special case for Gemma").  What is *not* here is
detected from the checkpoint itself: the end-of-turn token from the chat
template (:mod:`.render`), image token ids from the config, padding from the
tokenizer.

An unknown image-text-to-text ``model_type`` gets :data:`GENERIC`: the chat
template path with no token-type inputs, which is right for most
LLaVA-style models; it is reported as unverified.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..data.sample import IMAGE_TOKEN, Turn, strip_image_token
from .loading import ModelError


@dataclass(frozen=True)
class Family:
    """What the adapter must know about one family beyond its checkpoint files."""

    model_type: str
    label: str
    chat_template: bool = True   # False: the adapter builds the prompt itself (PaliGemma)
    multi_turn: bool = True      # several assistant turns in one sequence
    text_only: bool = True       # conversations without any image
    multi_image: bool = True     # several images in one conversation
    verified: bool = True        # proven on a zoo checkpoint by tests/test_families.py
    why_not: str = ""            # the reason behind a False above, for error messages


FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family("llava", "LLaVA-1.5"),
    Family("llava_next", "LLaVA-NeXT"),
    Family("qwen2_vl", "Qwen2-VL"),
    Family("qwen2_5_vl", "Qwen2.5-VL"),
    Family("qwen3_vl", "Qwen3-VL"),
    Family("internvl", "InternVL"),
    Family("idefics3", "Idefics3"),
    Family("smolvlm", "SmolVLM"),
    # special case for PaliGemma: not a chat model; its processor builds one
    # bidirectional prefix (images, <bos>, the prompt, "\n") and one causal
    # suffix (the answer, <eos>), and refuses text without an image
    Family("paligemma", "PaliGemma", chat_template=False, multi_turn=False, text_only=False,
           why_not="PaliGemma is a single-exchange model (one prefix, one answer) that always takes an image"),
    Family("gemma3", "Gemma 3"),
)}

# Aya Vision, Mistral 3 (Pixtral), Llama 4 and LFM2-VL: chat templates that write their own stop
# (<|END_OF_TURN_TOKEN|>, </s>, <|eot|>, <|im_end|>), no token-type inputs; what differs is handled by the
# adapter's generic path (tests/test_families.py proves each on its zoo checkpoint).  Mistral 3, Llama 4 and
# LFM2-VL processors need torchvision in transformers 5.23 (the loader says so when it is missing).
FAMILIES.update({f.model_type: f for f in (
    Family("aya_vision", "Aya Vision"),
    Family("mistral3", "Mistral 3 (Pixtral)"),
    Family("llama4", "Llama 4"),
    Family("lfm2_vl", "LFM2-VL"),
)})

# Families whose released templates need the renderer's general rules (byorn.models.render): a
# generation prompt that differs from an answered turn in whitespace or a reasoning block, or no
# end-of-turn token at all.  Nothing family-specific beyond these rules is needed for them.
FAMILIES.update({f.model_type: f for f in (
    # Gemma 4: the 26B / 31B template opens an empty thought channel in its generation prompt only;
    # the processor takes its video processor by keyword (built without it when torchvision is missing)
    Family("gemma4", "Gemma 4"),
    # Qwen3.5: the empty <think> block is written only for answers after the last user turn
    Family("qwen3_5", "Qwen3.5"),
    # LLaVA-OneVision (llava-hf): an answered turn opens "assistant \n", the generation prompt "assistant\n"
    Family("llava_onevision", "LLaVA-OneVision"),
    # GLM-4.1V / GLM-4.6V(-Flash): no end-of-turn token; the next <|user|> ends a turn (generation config)
    Family("glm4v", "GLM-4.1V / GLM-4.6V-Flash"),
    Family("glm46v", "GLM-4.6V"),
    Family("glm4v_moe", "GLM-4.5V / GLM-4.6V (MoE)"),
)})

# Reasoning blocks a template may write around (empty) thoughts; two renderings of a turn may differ by
# these and by whitespace only (byorn.models.render).
REASONING_BLOCKS = (("<think>", "</think>"), ("<|channel>", "<channel|>"))

GENERIC = Family("other", "other image-text-to-text model", verified=False)


def family_of(model_type: str) -> Family:
    return FAMILIES.get(model_type, GENERIC)


def token_type_ids(family: Family, *, image_mask: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor | None:
    """The ``token_type_ids`` input a family's model reads, or None if it reads none.

    They mean different things per family, so they are never set by name:

    - special case for PaliGemma: 0 = prefix (bidirectional attention), 1 =
      suffix (causal, the trained answer).  ``answer_mask`` marks the suffix;
      in generation it is all False and generated tokens become 1 inside
      ``generate``.
    - special case for Gemma 3: 1 = image token (bidirectional inside its
      image block), 0 = text.  The answer must be 0, or its tokens would
      attend to later answer tokens.

    ``image_mask`` / ``answer_mask``: (B, T) bool.
    """
    if family.model_type == "paligemma":
        return answer_mask.long()
    if family.model_type == "gemma3":
        return image_mask.long()
    return None


def paligemma_render(turns: Sequence[Turn], n_images: int, *, bos: str | None, eos: str,
                     generation: bool) -> tuple[str, list[tuple[int, int]]]:
    """Special case for PaliGemma: the text its processor builds, and the answer's character span.

    ``<image>`` x n, ``<bos>``, the prompt, ``"\n"`` (the bidirectional prefix),
    then the answer and ``<eos>`` (the causal suffix), as
    ``PaliGemmaProcessor(text=..., suffix=...)`` does.  A system turn goes
    before the prompt, on its own line.
    """
    spec = FAMILIES["paligemma"]
    users = [t for t in turns if t.role == "user"]
    if len(users) > 1:
        raise ModelError(f"{spec.why_not}: a conversation of {len(users)} exchanges cannot be rendered; "
                         "split it into single exchanges")
    if not n_images:
        raise ModelError(f"{spec.why_not}: a text-only conversation cannot be rendered")
    system = [t.text.strip() for t in turns if t.role == "system"]
    text = IMAGE_TOKEN * n_images + (bos or "") + "\n".join(system + [strip_image_token(users[0].text)]) + "\n"
    if generation:
        return text, []
    answer = next(t.text for t in turns if t.role == "assistant") + eos
    return text + answer, [(len(text), len(text) + len(answer))]


def paligemma_process(processor, texts: Sequence[str], images: Sequence[Sequence], *, padding_side: str,
                      pad: bool = True) -> dict:
    """Special case for PaliGemma: expand ``<image>`` and tokenize as its processor does, without
    letting it insert another ``<bos>`` and a trailing ``"\n"`` into a text that already has them."""
    token = processor.image_token
    expanded = [t.replace(token, token * processor.image_seq_length) for t in texts]
    enc = dict(processor.tokenizer(expanded, add_special_tokens=False, padding=pad, padding_side=padding_side,
                                   return_tensors="pt" if pad else None))
    enc.update(processor.image_processor([im.convert("RGB") for ims in images for im in ims], return_tensors="pt"))
    return enc


def drops_processor_token_types(family: Family) -> bool:
    """Whether ``token_type_ids`` a processor returns must be dropped (all but the two families above).

    Tokenizers of BERT heritage return all-zero ``token_type_ids``; a model
    that does not read them rejects or misreads them.
    """
    return family.model_type not in ("paligemma", "gemma3")


# Projection layer names of the text decoders of every family above, as LoRA targets: the default
# (byorn.train.setup) is the attention and MLP ones together, so that every decoder layer of every family
# gets adapters on both (tests/test_families.py checks it layer by layer).
ATTENTION_PROJECTIONS = (
    "q_proj", "k_proj", "v_proj", "o_proj",  # Llama, Mistral, Qwen, Gemma, Cohere, GLM
    "qkv_proj",  # fused query/key/value (Phi-3 style decoders)
    "out_proj",  # LFM2's attention output; Qwen3.5's linear attention output; LFM2's short-conv output
    "in_proj",  # LFM2's short-conv input projection (its conv layers stand where attention stands)
    "in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a",  # Qwen3.5's Gated DeltaNet (linear attention)
)
MLP_PROJECTIONS = (
    "gate_proj", "up_proj", "down_proj",  # SwiGLU MLPs, and the shared experts of MoE layers (Llama 4)
    "gate_up_proj",  # GLM-4.1V / 4.6V: gate and up fused in one linear layer
    "w1", "w2", "w3",  # LFM2's feed-forward
)
# Not targeted: MoE routers (``router``, ``gate``, ``shared_expert_gate``: a few outputs, one per expert)
# and routed experts stored as fused 3-D parameters rather than linear layers (Llama 4's ``experts``),
# which module-level LoRA cannot wrap; the shared expert carries the MoE layer's adapters.


def lora_target_modules(model, names: tuple[str, ...] = ATTENTION_PROJECTIONS) -> list[str]:
    """Full names of the language model's linear layers called ``names`` (never the vision tower's).

    Returned as explicit module names so that ``peft`` cannot match a vision
    tower layer of the same short name (SigLIP and CLIP towers also have
    ``q_proj`` / ``k_proj`` / ``v_proj`` / ``out_proj``).  Pass
    ``ATTENTION_PROJECTIONS + MLP_PROJECTIONS`` for the MLP too.
    """
    lm = language_model(model)
    prefix = next(name for name, mod in model.named_modules() if mod is lm)
    return [f"{prefix}.{name}" if prefix else name for name, mod in lm.named_modules()
            if name.rsplit(".", 1)[-1] in names and isinstance(mod, torch.nn.Linear)]


def language_model(model):
    """The text decoder inside a VLM (``get_decoder()``: ``language_model`` in most families,
    ``text_model`` in Idefics3 / SmolVLM)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or decoder is model:
        raise ValueError(f"{type(model).__name__} exposes no text decoder (get_decoder)")
    return decoder
