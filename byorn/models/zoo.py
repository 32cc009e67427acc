"""The family zoo: tiny, random-weight, architecture-faithful checkpoints.

No model hub is reachable from the machines this project is built on, so
each supported VLM family is proven on a checkpoint built here, offline and
seeded, from the family's REAL ``transformers`` model and processor classes:
a small tokenizer carrying the family's special tokens (ids matching the
config), the family's chat template (as its released checkpoint ships it),
and small images so that everything runs in seconds on a CPU.  Each saves
with ``save_pretrained`` (safetensors) and loads back through
:meth:`byorn.models.VLM.load`.

``scripts/make_family_zoo.py --out DIR`` writes them; tests build them once
per session.  Sizes are far below any real checkpoint (under 1 M
parameters); ``benchmarks/`` builds real sizes from configs.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable

from . import templates
from .loading import image_only
from .zoo_parts import (_CORPUS, _QWEN_SPECIALS, _QWEN_STOPS, _ROW_COL, TEXT, VISION, _clip, _ids,  # noqa: F401
                        _model, _qwen_ids, _qwen_processor, _qwen_tokenizer, _siglip, _text, make_tokenizer)

logger = logging.getLogger(__name__)


def llava(seed: int = 0):
    """LLaVA-1.5 (llava-hf): CLIP + Llama, 32 px, template without ``</s>``."""
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = make_tokenizer("spm", ["<unk>", "<s>", "</s>", "<image>", "<pad>"], bos="<s>", eos="</s>",
                         pad="<pad>", unk="<unk>", add_bos=True, extra={"image_token": "<image>"})
    ip = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=templates.LLAVA_15)
    model = _model(LlavaForConditionalGeneration, LlavaConfig, tok, ["</s>"], seed, vision_config=_clip(),
                   text_config=dict(_text(tok), model_type="llama"), image_token_index=_ids(tok, "<image>")[0],
                   image_seq_length=16, vision_feature_select_strategy="default", vision_feature_layer=-1)
    return model, proc


def llava_next(seed: int = 0):
    """LLaVA-NeXT (llava-v1.6-mistral-hf): any-res tiles, ``[INST]`` template ending ``</s> ``."""
    from transformers import (LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil,
                              LlavaNextProcessor)

    tok = make_tokenizer("spm", ["<unk>", "<s>", "</s>", "<image>", "<pad>"], bos="<s>", eos="</s>",
                         pad="<pad>", unk="<unk>", add_bos=True, extra={"image_token": "<image>"})
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]  # any-res: up to 2x2 tiles of 32 px plus the overview
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                    image_grid_pinpoints=pinpoints)
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=8,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1,
                              chat_template=templates.LLAVA_NEXT_MISTRAL)
    model = _model(LlavaNextForConditionalGeneration, LlavaNextConfig, tok, ["</s>"], seed, vision_config=_clip(),
                   text_config=dict(_text(tok), model_type="mistral", sliding_window=None),
                   image_token_index=_ids(tok, "<image>")[0], image_grid_pinpoints=pinpoints,
                   vision_feature_select_strategy="default", vision_feature_layer=-1)
    return model, proc


def qwen2_vl(seed: int = 0):
    """Qwen2-VL: dynamic resolution (``image_grid_thw``), M-RoPE, ChatML with a default system turn."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    tok = _qwen_tokenizer()
    proc = _qwen_processor(Qwen2VLProcessor, tok, 14, templates.QWEN2_VL)
    text = _text(tok, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3]})
    vision = dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                  spatial_merge_size=2)
    model = _model(Qwen2VLForConditionalGeneration, Qwen2VLConfig, tok, _QWEN_STOPS, seed, text_config=text,
                   vision_config=vision, **_qwen_ids(tok))
    return model, proc


def qwen2_5_vl(seed: int = 0):
    """Qwen2.5-VL: window attention in the vision tower; needs ``mm_token_type_ids``."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tok = _qwen_tokenizer()
    proc = _qwen_processor(Qwen2_5_VLProcessor, tok, 14, templates.QWEN2_VL)
    text = _text(tok, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3]})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                  window_size=56, out_hidden_size=32, fullatt_block_indexes=[1])
    model = _model(Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLConfig, tok, _QWEN_STOPS, seed, text_config=text,
                   vision_config=vision, **_qwen_ids(tok))
    return model, proc


def qwen3_vl(seed: int = 0):
    """Qwen3-VL: patch 16, DeepStack visual features, interleaved M-RoPE, no default system turn."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    tok = _qwen_tokenizer()
    proc = _qwen_processor(Qwen3VLProcessor, tok, 16, templates.QWEN3_VL)
    text = _text(tok, head_dim=16, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3],
                                                    "mrope_interleaved": True, "rope_theta": 10000.0})
    text.pop("bos_token_id"), text.pop("eos_token_id")  # not fields of Qwen3VLTextConfig
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, spatial_merge_size=2,
                  out_hidden_size=32, num_position_embeddings=16, deepstack_visual_indexes=[0])
    model = _model(Qwen3VLForConditionalGeneration, Qwen3VLConfig, tok, _QWEN_STOPS, seed, text_config=text,
                   vision_config=vision, **_qwen_ids(tok))
    return model, proc


def internvl(seed: int = 0):
    """InternVL (transformers' native class, InternVL3-hf style): 32 px tiles, Qwen2 text, ChatML."""
    from transformers import (GotOcr2ImageProcessorPil, InternVLConfig, InternVLForConditionalGeneration,
                              InternVLProcessor)

    specials = _QWEN_SPECIALS[:3] + ["<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    tok = make_tokenizer("bytelevel", specials, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                         extra={"start_image_token": "<img>", "end_image_token": "</img>",
                                "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})
    ip = GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=1,
                                  max_patches=2)
    # (32 / 8)^2 patches, pixel-shuffled by 0.5 -> 4 tokens per tile
    proc = image_only(InternVLProcessor)(image_processor=ip, tokenizer=tok, video_processor=None,
                                         image_seq_length=4, chat_template=templates.INTERNVL)
    model = _model(InternVLForConditionalGeneration, InternVLConfig, tok, _QWEN_STOPS, seed,
                   vision_config=dict(VISION, image_size=32, patch_size=8, use_mean_pooling=False),
                   text_config=dict(_text(tok), model_type="qwen2"), image_token_id=_ids(tok, "<IMG_CONTEXT>")[0],
                   image_seq_length=4, downsample_ratio=0.5)
    return model, proc


def _idefics_tokenizer(bos: str):
    specials = [bos, "<|end_of_text|>", "<pad>", "<fake_token_around_image>", "<image>", "<end_of_utterance>",
                "<global-img>"] + _ROW_COL
    # Llama-3 tokenizers add <|begin_of_text|> themselves (and the Idefics3 template writes it too)
    return make_tokenizer("bytelevel", specials, bos=bos, eos="<end_of_utterance>", pad="<pad>",
                          add_bos=bos == "<|begin_of_text|>", extra={"image_token": "<image>"})


def _idefics_model(model_cls, config_cls, tok, seed: int):
    # 16 px sub-images of 4 px patches, pixel-shuffled by 2 -> 4 tokens each
    return _model(model_cls, config_cls, tok, ["<end_of_utterance>"], seed,
                  vision_config=dict(VISION, image_size=16, patch_size=4),
                  text_config=dict(_text(tok), model_type="llama"), scale_factor=2,
                  image_token_id=_ids(tok, "<image>")[0])


def idefics3(seed: int = 0):
    """Idefics3 (Llama-3 text): image splitting into 16 px tiles plus a global view."""
    from transformers import (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil,
                              Idefics3Processor)

    tok = _idefics_tokenizer("<|begin_of_text|>")
    ip = Idefics3ImageProcessorPil(size={"longest_edge": 32}, max_image_size={"longest_edge": 16},
                                   do_image_splitting=True)
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=templates.IDEFICS3)
    return _idefics_model(Idefics3ForConditionalGeneration, Idefics3Config, tok, seed), proc


def smolvlm(seed: int = 0):
    """SmolVLM (SmolLM2 text): Idefics3-style image splitting, ``<|im_start|>`` opens the template."""
    from transformers import (SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessorPil,
                              SmolVLMProcessor)

    tok = _idefics_tokenizer("<|im_start|>")
    ip = SmolVLMImageProcessorPil(size={"longest_edge": 32}, max_image_size={"longest_edge": 16},
                                  do_image_splitting=True)
    proc = image_only(SmolVLMProcessor)(image_processor=ip, tokenizer=tok, video_processor=None, image_seq_len=4,
                                        chat_template=templates.SMOLVLM)
    return _idefics_model(SmolVLMForConditionalGeneration, SmolVLMConfig, tok, seed), proc


def paligemma(seed: int = 0):
    """PaliGemma as released: NO chat template; the processor builds ``<image>…<bos>prefix\n``."""
    from transformers import (PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor,
                              SiglipImageProcessorPil)

    tok = make_tokenizer("gemma", ["<pad>", "<eos>", "<bos>", "<unk>", "<image>"], bos="<bos>", eos="<eos>",
                         pad="<pad>", unk="<unk>", add_bos=True, extra={"image_token": "<image>"})
    ip = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    ip.image_seq_length = 16  # (32 / 8)^2 patches, one token each
    proc = PaliGemmaProcessor(image_processor=ip, tokenizer=tok)  # adds 1,152 <loc>/<seg> tokens
    text = _text(tok, model_type="gemma", head_dim=16, hidden_activation="gelu_pytorch_tanh")
    model = _model(PaliGemmaForConditionalGeneration, PaliGemmaConfig, tok, ["<eos>"], seed,
                   vision_config=_siglip(projection_dim=32), text_config=text,
                   image_token_index=_ids(tok, "<image>")[0], projection_dim=32, hidden_size=32, vocab_size=len(tok))
    return model, proc


def gemma3(seed: int = 0):
    """Gemma 3: SigLIP + pooled soft tokens, ``{{ bos_token }}`` template, bidirectional image blocks."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                "<end_of_image>", "<image_soft_token>"]
    tok = make_tokenizer("gemma", specials, bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", add_bos=True,
                         extra={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                "image_token": "<image_soft_token>"})
    ip = Gemma3ImageProcessorPil(size={"height": 32, "width": 32}, do_pan_and_scan=False)
    # 4x4 patches average-pooled to 2x2 = 4 soft tokens per image
    proc = Gemma3Processor(image_processor=ip, tokenizer=tok, image_seq_length=4, chat_template=templates.GEMMA3)
    text = _text(tok, head_dim=16, sliding_window=64, query_pre_attn_scalar=16,
                 layer_types=["sliding_attention", "full_attention"])
    boi, eoi, image = _ids(tok, "<start_of_image>", "<end_of_image>", "<image_soft_token>")
    model = _model(Gemma3ForConditionalGeneration, Gemma3Config, tok, ["<end_of_turn>", "<eos>"], seed,
                   text_config=text, vision_config=_siglip(vision_use_head=False), mm_tokens_per_image=4,
                   boi_token_index=boi, eoi_token_index=eoi, image_token_index=image)
    return model, proc


# ------------------------------------- Aya Vision, Mistral 3, Llama 4, LFM2-VL

def aya_vision(seed: int = 0):
    """Aya Vision: SigLIP + pixel-shuffled tiles (``<|START_OF_IMG|>`` … ``TILE_GLOBAL`` …), Cohere 2 text,
    Cohere turn tokens, the answer closed by ``<|END_OF_TURN_TOKEN|>`` (the tokenizer's EOS too)."""
    from transformers import (AyaVisionConfig, AyaVisionForConditionalGeneration, AyaVisionProcessor,
                              GotOcr2ImageProcessorPil)

    specials = ["<PAD>", "<UNK>", "<BOS_TOKEN>", "<EOS_TOKEN>", "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>",
                "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>", "<|SYSTEM_TOKEN|>", "<image>", "<|START_OF_IMG|>",
                "<|END_OF_IMG|>", "<|IMG_PATCH|>", "<|IMG_LINE_BREAK|>", "TILE", "TILE_GLOBAL"]
    # Cohere tokenizers: byte-level BPE that adds <BOS_TOKEN>; EOS is the end-of-turn token
    tok = make_tokenizer("bytelevel", specials, bos="<BOS_TOKEN>", eos="<|END_OF_TURN_TOKEN|>", pad="<PAD>",
                         unk="<UNK>", add_bos=True, extra={"image_token": "<image>"})
    ip = GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=1,
                                  max_patches=2)
    # 32 px tiles of 8 px patches (4 x 4), pixel-shuffled by 2 -> 4 <|IMG_PATCH|> per tile
    proc = AyaVisionProcessor(image_processor=ip, tokenizer=tok, patch_size=8, img_size=32, downsample_factor=2,
                              chat_template=templates.AYA_VISION)
    text = _text(tok, model_type="cohere2", head_dim=16, sliding_window=64,
                 layer_types=["sliding_attention", "full_attention"])
    model = _model(AyaVisionForConditionalGeneration, AyaVisionConfig, tok, ["<|END_OF_TURN_TOKEN|>"], seed,
                   text_config=text, vision_config=_siglip(vision_use_head=False), downsample_factor=2,
                   image_token_index=_ids(tok, "<|IMG_PATCH|>")[0], vision_feature_select_strategy="full")
    return model, proc


def mistral3(seed: int = 0):
    """Mistral 3 (Mistral Small 3.1 / Pixtral): Pixtral vision with [IMG_BREAK] rows and 2 x 2 patch merging,
    Mistral text, ``[INST]`` template writing BOS and a dated default system prompt.  Needs torchvision."""
    from transformers import (Mistral3Config, Mistral3ForConditionalGeneration, PixtralImageProcessorPil,
                              PixtralProcessor)

    specials = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]",
                "[IMG_BREAK]", "[IMG_END]", "<pad>"]
    # Tekken: byte-level BPE that adds <s>; trained on the default system prompt too, so that it stays short
    system = templates.MISTRAL3.split('default_system_message = "')[1].split('" %}')[0].replace("\\n", "\n")
    tok = make_tokenizer("bytelevel", specials, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", add_bos=True,
                         vocab_size=800, extra={"image_token": "[IMG]"}, corpus=(_CORPUS, system))
    ip = PixtralImageProcessorPil(size={"longest_edge": 64}, patch_size=8)
    proc = PixtralProcessor(image_processor=ip, tokenizer=tok, patch_size=8, spatial_merge_size=2,
                            image_token="[IMG]", image_break_token="[IMG_BREAK]", image_end_token="[IMG_END]",
                            chat_template=templates.MISTRAL3)
    vision = dict(VISION, model_type="pixtral", image_size=64, patch_size=8, head_dim=16)
    text = _text(tok, model_type="mistral", head_dim=16, sliding_window=None)
    model = _model(Mistral3ForConditionalGeneration, Mistral3Config, tok, ["</s>"], seed, text_config=text,
                   vision_config=vision, image_token_index=_ids(tok, "[IMG]")[0], spatial_merge_size=2,
                   vision_feature_layer=-1, multimodal_projector_bias=False)
    return model, proc


def llama4(seed: int = 0):
    """Llama 4 (Scout / Maverick): tiles + global view, pixel-shuffled patches, MoE text layers interleaved with
    dense ones, ``<|header_start|>`` template (transformers' Llama4Processor default) ending turns with
    ``<|eot|>``.  Needs torchvision."""
    from transformers import Llama4Config, Llama4ForConditionalGeneration, Llama4ImageProcessor, Llama4Processor

    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad|>", "<|header_start|>",
                "<|header_end|>", "<|eot|>", "<|eom|>", "<|python_start|>", "<|python_end|>", "<|image_start|>",
                "<|image_end|>", "<|image|>", "<|patch|>", "<|tile_x_separator|>", "<|tile_y_separator|>"]
    tok = make_tokenizer("bytelevel", specials, bos="<|begin_of_text|>", eos="<|eot|>",
                         pad="<|finetune_right_pad|>", add_bos=True)
    ip = Llama4ImageProcessor(size={"height": 32, "width": 32}, max_patches=2, resize_to_max_canvas=False)
    # 32 px tiles of 8 px patches (16), pixel-shuffled by 0.5 -> 4 <|patch|> per tile
    proc = Llama4Processor(image_processor=ip, tokenizer=tok, patch_size=8, pixel_shuffle_ratio=0.5)
    text = _text(tok, head_dim=16, intermediate_size_mlp=64, num_local_experts=2, num_experts_per_tok=1,
                 interleave_moe_layer_step=2, attention_chunk_size=64, no_rope_layers=[1, 0])
    # the pixel-shuffle MLP reads 4 x hidden channels: intermediate_size = 4 x hidden_size, as released
    vision = dict(VISION, intermediate_size=128, image_size=32, patch_size=8, vision_output_dim=32,
                  projector_input_dim=32, projector_output_dim=32, pixel_shuffle_ratio=0.5,
                  rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    model = _model(Llama4ForConditionalGeneration, Llama4Config, tok, ["<|eot|>", "<|eom|>", "<|end_of_text|>"],
                   seed, text_config=text, vision_config=vision, image_token_index=_ids(tok, "<|patch|>")[0],
                   boi_token_index=_ids(tok, "<|image_start|>")[0], eoi_token_index=_ids(tok, "<|image_end|>")[0])
    return model, proc


def lfm2_vl(seed: int = 0):
    """LFM2-VL: SigLIP2 NaFlex vision (variable patches), pixel-unshuffled features, LFM2 text (short
    convolutions and attention layers), ChatML after ``{{bos_token}}``.  Needs torchvision."""
    from transformers import Lfm2VlConfig, Lfm2VlForConditionalGeneration, Lfm2VlImageProcessor, Lfm2VlProcessor

    specials = ["<|pad|>", "<|startoftext|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>",
                "<|image_start|>", "<|image_end|>", "<|img_thumbnail|>"] + \
        [f"<|img_row_{i}_col_{j}|>" for i in range(1, 4) for j in range(1, 4)]
    tok = make_tokenizer("bytelevel", specials, bos="<|startoftext|>", eos="<|im_end|>", pad="<|pad|>",
                         add_bos=True, extra={"image_token": "<image>"})
    # 8 px encoder patches, 2 x 2 unshuffled: a 32 px image is 16 patches = 4 tokens; tiles of 32 px above 64 px
    ip = Lfm2VlImageProcessor(encoder_patch_size=8, downsample_factor=2, tile_size=32, min_image_tokens=4,
                              max_image_tokens=16, max_num_patches=64, do_image_splitting=True, min_tiles=2,
                              max_tiles=4, use_thumbnail=True)
    proc = Lfm2VlProcessor(image_processor=ip, tokenizer=tok, chat_template=templates.LFM2_VL)
    text = _text(tok, model_type="lfm2", head_dim=16, layer_types=["conv", "full_attention"], conv_L_cache=3,
                 block_auto_adjust_ff_dim=False)
    vision = dict(VISION, model_type="siglip2_vision_model", patch_size=8, num_patches=64)
    model = _model(Lfm2VlForConditionalGeneration, Lfm2VlConfig, tok, ["<|im_end|>"], seed, text_config=text,
                   vision_config=vision, image_token_id=_ids(tok, "<image>")[0], projector_hidden_size=32,
                   downsample_factor=2)
    return model, proc


# Families whose processors need torchvision in transformers 5.23 (their image processors are torchvision
# backends, or the processor class requires it): built and tested only where torchvision imports.
NEEDS_TORCHVISION = ("mistral3", "llama4", "lfm2_vl")


# What a real checkpoint's processor_config.json holds for its video processor
# (which needs torchvision to be built, so it is written as a dict): with
# torchvision present AutoProcessor builds it; images never use it.
_VIDEO = {
    "qwen2_vl": dict(video_processor_type="Qwen2VLVideoProcessor", patch_size=14, temporal_patch_size=2,
                     merge_size=2, size={"shortest_edge": 4 * 28 * 28, "longest_edge": 16 * 28 * 28}),
    "qwen2_5_vl": dict(video_processor_type="Qwen2VLVideoProcessor", patch_size=14, temporal_patch_size=2,
                       merge_size=2, size={"shortest_edge": 4 * 28 * 28, "longest_edge": 16 * 28 * 28}),
    "qwen3_vl": dict(video_processor_type="Qwen3VLVideoProcessor", patch_size=16, temporal_patch_size=2,
                     merge_size=2, size={"shortest_edge": 4 * 32 * 32, "longest_edge": 16 * 32 * 32}),
    "internvl": dict(video_processor_type="InternVLVideoProcessor", size={"height": 32, "width": 32}),
    "smolvlm": dict(video_processor_type="SmolVLMVideoProcessor", size={"longest_edge": 32},
                    max_image_size={"longest_edge": 16}, num_frames=4, fps=1),
}

# family name (the folder's name) -> builder
BUILDERS: dict[str, Callable] = {
    "llava": llava, "llava_next": llava_next, "qwen2_vl": qwen2_vl, "qwen2_5_vl": qwen2_5_vl,
    "qwen3_vl": qwen3_vl, "internvl": internvl, "idefics3": idefics3, "smolvlm": smolvlm,
    "paligemma": paligemma, "gemma3": gemma3,
}
BUILDERS.update({"aya_vision": aya_vision, "mistral3": mistral3, "llama4": llama4, "lfm2_vl": lfm2_vl})
# Gemma 4, Qwen3.5, LLaVA-OneVision, GLM-4.1V / 4.6V: byorn.models.zoo_recent (it reads the helpers above)
from . import zoo_recent  # noqa: E402

BUILDERS.update(zoo_recent.BUILDERS)
_VIDEO.update(zoo_recent.VIDEO)
NAMES = tuple(BUILDERS)  # the zoo's family names (not families.FAMILIES, the registry of Family specs)


def build(name: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build family ``name`` and save it (safetensors) to ``out_dir``."""
    if name not in BUILDERS:
        raise ValueError(f"unknown family {name!r}; choose from {', '.join(NAMES)}")
    model, processor = BUILDERS[name](seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if name in _VIDEO:
        processor.video_processor_config = _VIDEO[name]
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    logger.info("built %s: %.0fk parameters -> %s", name, n / 1e3, out)
    return out


def build_zoo(out: str | Path, families: Iterable[str] | None = None, seed: int = 0) -> dict[str, Path]:
    """Build every family (or ``families``) into ``out/<family>``."""
    names = list(families) if families is not None else list(NAMES)
    return {name: build(name, Path(out) / name, seed) for name in names}
