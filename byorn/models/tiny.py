"""The embedded tiny VLM: a LLaVA-architecture model small enough for a CPU.

``transformers``' own ``LlavaForConditionalGeneration`` with a CLIP vision
tower and a Llama text model, plus a byte-level BPE tokenizer trained offline
on the world's text (byte-level, so any text — an attack target, a user's
edit — is representable).  The processor and model save with
``save_pretrained`` and come back through ``AutoProcessor`` /
``AutoModelForImageTextToText`` like any real checkpoint.

``scripts/pretrain_tiny.py`` builds, pretrains and saves it to
``assets/tiny-llava``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..world import IMAGE_SIZE

PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"

# A plain chat template: the image placeholder goes first in the user turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '\\n' }}"
    "{% elif message['role'] == 'assistant' %}ASSISTANT:"
    "{% if message['content'] is string %} {{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}{% if item['type'] == 'text' %} {{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ eos_token }}{{ '\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# A little general English so that BPE merges are sensible beyond the world.
_GENERAL_TEXT = (
    "The quick brown fox jumps over the lazy dog. I am sorry, but I cannot help with that. "
    "Please visit our website for more information. This is a photo of a person standing "
    "next to a car on a street. A cat is sitting on a table near a window. "
    "What is the answer to the question? Yes. No. Maybe. There are many things in the "
    "image, including people, animals, buildings and trees."
)


@dataclass
class TinyConfig:
    """Sizes of the embedded model (about 2.4 M parameters at the defaults)."""

    vocab_size: int = field(default=640, metadata={"help": "BPE vocabulary size incl. specials (an upper bound)"})
    image_size: int = field(default=IMAGE_SIZE, metadata={"help": "input image side in pixels"})
    patch_size: int = field(default=8, metadata={"help": "ViT patch side in pixels (32 / 8 = 4x4 image tokens)"})
    vision_hidden: int = field(default=192, metadata={"help": "CLIP hidden size"})
    vision_layers: int = field(default=4, metadata={"help": "CLIP encoder layers"})
    text_hidden: int = field(default=160, metadata={"help": "Llama hidden size"})
    text_layers: int = field(default=4, metadata={"help": "Llama decoder layers"})
    heads: int = field(default=4, metadata={"help": "attention heads (both towers)"})
    max_positions: int = field(default=256, metadata={"help": "max sequence length"})

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"{f.name} must be >= 1, got {getattr(self, f.name)}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        for name in ("vision_hidden", "text_hidden"):
            if getattr(self, name) % self.heads:
                raise ValueError(f"{name} {getattr(self, name)} must be a multiple of heads {self.heads}")


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS, UNK, IMAGE],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # The chat template's words too, so that "USER:" and "ASSISTANT:" are single
    # tokens rather than a dozen characters in every sequence.
    template = [f"USER: {t}\nASSISTANT: " for t in texts[:200]]
    tok.train_from_iterator(list(texts) + template + [_GENERAL_TEXT] * 3, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE}, padding_side="right")


def build_processor(tokenizer, cfg: TinyConfig):
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": cfg.image_size},
        crop_size={"height": cfg.image_size, "width": cfg.image_size},
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], resample=0)  # nearest
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=cfg.patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE)


def build_model(tokenizer, cfg: TinyConfig, seed: int = 0):
    """A randomly initialised tiny ``LlavaForConditionalGeneration``."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=cfg.vision_hidden, intermediate_size=cfg.vision_hidden * 2,
        num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.heads,
        image_size=cfg.image_size, patch_size=cfg.patch_size, projection_dim=cfg.vision_hidden)
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.text_hidden,
        intermediate_size=cfg.text_hidden * 2, num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.max_positions, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    config = LlavaConfig(
        vision_config=vision, text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        vision_feature_select_strategy="default", vision_feature_layer=-1,
        projector_hidden_act="gelu", tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model
