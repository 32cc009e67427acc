"""Zoo builders of Gemma 4, Qwen3.5, LLaVA-OneVision and GLM-4.1V / 4.6V (see :mod:`.zoo`).

Each is built offline and seeded from the family's real ``transformers``
model and processor classes, with a small tokenizer carrying the family's
special tokens (ids matching the config), the released chat template
(:mod:`.templates_recent`) and the released generation config's stop
tokens.  ``zoo.BUILDERS`` registers them.
"""
from __future__ import annotations

from typing import Callable

from . import templates_recent as templates
from .loading import image_only
from .zoo_parts import _QWEN_SPECIALS, _ids, _model, _qwen_ids, _qwen_processor, _siglip, _text, make_tokenizer


def gemma4(seed: int = 0):
    """Gemma 4: variable-resolution SigLIP-style tower pooled 3x3, ``<|turn>`` template, empty thought channel."""
    from transformers import (Gemma4AudioFeatureExtractor, Gemma4Config, Gemma4ForConditionalGeneration,
                              Gemma4ImageProcessorPil, Gemma4Processor)

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<|turn>", "<turn|>", "<|channel>", "<channel|>", "<|think|>",
                "<|image>", "<image|>", "<|image|>", "<|audio>", "<audio|>", "<|audio|>", "<|video|>"]
    tok = make_tokenizer("gemma", specials, bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", add_bos=True,
                         extra={"boi_token": "<|image>", "eoi_token": "<image|>", "image_token": "<|image|>",
                                "boa_token": "<|audio>", "eoa_token": "<audio|>", "audio_token": "<|audio|>"})
    # 4 px patches, pooled 3x3: at most 70 soft tokens (630 patches) per image
    ip = Gemma4ImageProcessorPil(patch_size=4, max_soft_tokens=70, pooling_kernel_size=3)
    proc = image_only(Gemma4Processor)(feature_extractor=Gemma4AudioFeatureExtractor(), image_processor=ip,
                                       tokenizer=tok, video_processor=None, image_seq_length=70,
                                       chat_template=templates.GEMMA4)
    text = _text(tok, head_dim=16, global_head_dim=16, sliding_window=64, hidden_size_per_layer_input=0,
                 vocab_size_per_layer_input=len(tok), layer_types=["sliding_attention", "full_attention"],
                 use_bidirectional_attention="vision", final_logit_softcapping=30.0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=2, head_dim=16, patch_size=4, pooling_kernel_size=3,
                  position_embedding_size=64)
    boi, eoi, image, video, boa, eoa, audio = _ids(tok, "<|image>", "<image|>", "<|image|>", "<|video|>",
                                                   "<|audio>", "<audio|>", "<|audio|>")
    model = _model(Gemma4ForConditionalGeneration, Gemma4Config, tok, ["<turn|>", "<eos>"], seed, text_config=text,
                   vision_config=vision, audio_config=None, boi_token_id=boi, eoi_token_id=eoi,
                   image_token_id=image, video_token_id=video, boa_token_id=boa, eoa_token_index=eoa,
                   audio_token_id=audio, vision_soft_tokens_per_image=70)
    return model, proc


def qwen3_5(seed: int = 0):
    """Qwen3.5: hybrid Gated DeltaNet / full attention decoder, Qwen3-VL vision, reasoning template."""
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration, Qwen3VLProcessor

    specials = _QWEN_SPECIALS + ["<think>", "</think>"]
    tok = make_tokenizer("bytelevel", specials, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                         extra={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                                "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"})
    proc = _qwen_processor(Qwen3VLProcessor, tok, 16, templates.QWEN3_5)
    text = _text(tok, head_dim=16, layer_types=["linear_attention", "full_attention"], linear_conv_kernel_dim=4,
                 linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=2,
                 rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1], "mrope_interleaved": True,
                                  "rope_theta": 10000.0, "partial_rotary_factor": 0.5})
    text.pop("bos_token_id")
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, spatial_merge_size=2,
                  out_hidden_size=32, num_position_embeddings=16)
    model = _model(Qwen3_5ForConditionalGeneration, Qwen3_5Config, tok, ["<|im_end|>", "<|endoftext|>"], seed,
                   text_config=text, vision_config=vision, **_qwen_ids(tok))
    return model, proc


def llava_onevision(seed: int = 0):
    """LLaVA-OneVision (llava-hf): SigLIP + Qwen2, any-res tiles, ``assistant \\n`` in answered turns."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessorPil, LlavaOnevisionProcessor)

    tok = make_tokenizer("bytelevel", _QWEN_SPECIALS[:3] + ["<image>", "<video>"], bos=None, eos="<|im_end|>",
                         pad="<|endoftext|>", extra={"image_token": "<image>", "video_token": "<video>"})
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    ip = LlavaOnevisionImageProcessorPil(size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints)
    # (32 / 8)^2 = 16 tokens per tile; "full" keeps them all (SigLIP has no class token)
    proc = image_only(LlavaOnevisionProcessor)(image_processor=ip, tokenizer=tok, video_processor=None,
                                               num_image_tokens=16, vision_feature_select_strategy="full",
                                               chat_template=templates.LLAVA_ONEVISION)
    model = _model(LlavaOnevisionForConditionalGeneration, LlavaOnevisionConfig, tok,
                   ["<|im_end|>", "<|endoftext|>"], seed, vision_config=_siglip(vision_use_head=False),
                   text_config=dict(_text(tok), model_type="qwen2"), image_token_index=_ids(tok, "<image>")[0],
                   video_token_index=_ids(tok, "<video>")[0], image_grid_pinpoints=pinpoints,
                   vision_feature_select_strategy="full", vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9")
    return model, proc


_GLM_SPECIALS = ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
                 "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>",
                 "<|begin_of_video|>", "<|end_of_video|>", "<|image|>", "<|video|>", "<think>", "</think>"]
# GLM-4.1V-9B-Thinking / GLM-4.6V generation_config.json: eos_token_id = [<|endoftext|>, <|user|>, <|observation|>]
_GLM_STOPS = ["<|endoftext|>", "<|user|>", "<|observation|>"]


def _glm(model_cls, config_cls, processor_cls, template: str, seed: int, **text_over):
    from transformers import Glm4vImageProcessorPil

    # GLM-4 tokenizers: byte-level BPE, no BOS (the template writes [gMASK]<sop>), <|endoftext|> is EOS and pad
    tok = make_tokenizer("bytelevel", _GLM_SPECIALS, bos=None, eos="<|endoftext|>", pad="<|endoftext|>",
                         extra={"image_token": "<|image|>", "video_token": "<|video|>"})
    # patch 14 merged 2x2 and two frames per patch in time, as Qwen2-VL: a 56 px image is 4 tokens
    ip = Glm4vImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2,
                                size={"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 16})
    proc = image_only(processor_cls)(image_processor=ip, tokenizer=tok, video_processor=None,
                                     chat_template=template)
    text = _text(tok, head_dim=16, partial_rotary_factor=0.5,
                 rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1], "rope_theta": 10000.0,
                                  "partial_rotary_factor": 0.5}, **text_over)
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                  out_hidden_size=32, image_size=56)
    image, video, bi, ei, bv, ev = _ids(tok, "<|image|>", "<|video|>", "<|begin_of_image|>", "<|end_of_image|>",
                                        "<|begin_of_video|>", "<|end_of_video|>")
    model = _model(model_cls, config_cls, tok, _GLM_STOPS, seed, text_config=text, vision_config=vision,
                   image_token_id=image, video_token_id=video, image_start_token_id=bi, image_end_token_id=ei,
                   video_start_token_id=bv, video_end_token_id=ev)
    return model, proc


def glm4v(seed: int = 0):
    """GLM-4.1V (and GLM-4.6V-Flash, same classes): no end-of-turn token, the next ``<|user|>`` ends a turn."""
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration, Glm4vProcessor

    return _glm(Glm4vForConditionalGeneration, Glm4vConfig, Glm4vProcessor, templates.GLM4_1V, seed)


def glm46v(seed: int = 0):
    """GLM-4.6V: GLM-4.1V's architecture, the GLM-V template (empty ``<think></think>``, ``/nothink``)."""
    from transformers import Glm46VConfig, Glm46VForConditionalGeneration, Glm46VProcessor

    return _glm(Glm46VForConditionalGeneration, Glm46VConfig, Glm46VProcessor, templates.GLM4_6V, seed)


def glm4v_moe(seed: int = 0):
    """GLM-4.5V / GLM-4.6V (106B-A12B): GLM-4.1V's vision side, a MoE text decoder (first layer dense)."""
    from transformers import Glm4vMoeConfig, Glm4vMoeForConditionalGeneration, Glm4vProcessor

    moe = dict(moe_intermediate_size=16, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
               first_k_dense_replace=1, n_group=1, topk_group=1)
    return _glm(Glm4vMoeForConditionalGeneration, Glm4vMoeConfig, Glm4vProcessor, templates.GLM4_6V, seed, **moe)


_GLM_VIDEO = dict(video_processor_type="Glm4vVideoProcessor", patch_size=14, temporal_patch_size=2, merge_size=2,
                  size={"shortest_edge": 4 * 28 * 28, "longest_edge": 16 * 28 * 28})
VIDEO = {
    "gemma4": dict(video_processor_type="Gemma4VideoProcessor", patch_size=4, max_soft_tokens=70,
                   pooling_kernel_size=3, num_frames=2),
    "qwen3_5": dict(video_processor_type="Qwen3VLVideoProcessor", patch_size=16, temporal_patch_size=2,
                    merge_size=2, size={"shortest_edge": 4 * 32 * 32, "longest_edge": 16 * 32 * 32}),
    "llava_onevision": dict(video_processor_type="LlavaOnevisionVideoProcessor", size={"height": 32, "width": 32}),
    "glm4v": _GLM_VIDEO,
    "glm46v": dict(_GLM_VIDEO, video_processor_type="Glm46VVideoProcessor"),
    "glm4v_moe": _GLM_VIDEO,
}

BUILDERS: dict[str, Callable] = {"gemma4": gemma4, "qwen3_5": qwen3_5, "llava_onevision": llava_onevision,
                                 "glm4v": glm4v, "glm46v": glm46v, "glm4v_moe": glm4v_moe}
