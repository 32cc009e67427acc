"""Preparing a model for fine-tuning: LoRA targets, frozen vision tower,
gradient checkpointing, and the EMA of the trainable weights.

Family-independent: the language model is found through
``get_decoder()`` (or the usual attribute names), and everything outside it
but the output head counts as the vision side (vision tower and projector).
"""
from __future__ import annotations

import logging
import re
from contextlib import contextmanager

import torch
from torch import nn

logger = logging.getLogger(__name__)

_LORA_TYPES = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d)


def language_model_prefix(model: nn.Module) -> str:
    """Dotted name of the language-model decoder inside ``model``."""
    from ..models.families import language_model

    try:
        lm = language_model(model)
    except ValueError as e:
        raise ValueError(f"{e}; pass lora_targets explicitly") from None
    return next(name for name, module in model.named_modules() if module is lm)


def lora_target_modules(model: nn.Module, targets: str | None) -> list[str]:
    """Full names of the modules LoRA wraps.

    Default: the language model's attention and MLP projections
    (:data:`~byorn.models.families.ATTENTION_PROJECTIONS` and ``MLP_PROJECTIONS``),
    never the vision tower or the projector (their layers may share the short
    names).  ``targets``: comma-separated names, each matched as a whole dotted
    name, a trailing name component (``q_proj``) or a regular expression.
    """
    from ..models import families

    candidates = [(n, m) for n, m in model.named_modules() if n and isinstance(m, _LORA_TYPES)]
    if targets is None:
        names = families.lora_target_modules(model, families.ATTENTION_PROJECTIONS + families.MLP_PROJECTIONS)
        if not names:  # a decoder with other naming: every linear layer of the language model
            prefix = language_model_prefix(model) + "."
            names = [n for n, m in candidates if n.startswith(prefix) and isinstance(m, nn.Linear)]
        if not names:
            raise ValueError(f"no LoRA target found in the language model of {type(model).__name__}; "
                             "pass lora_targets")
        return names
    wanted = [t.strip() for t in targets.split(",") if t.strip()]
    names = [n for n, _ in candidates if any(n == t or n.endswith("." + t) or _fullmatch(t, n) for t in wanted)]
    if not names:
        some = ", ".join(sorted({n.rsplit(".", 1)[-1] for n, _ in candidates})[:12])
        raise ValueError(f"lora_targets {targets!r} match no module of {type(model).__name__} "
                         f"(layer names include: {some})")
    return names


def _fullmatch(pattern: str, name: str) -> bool:
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def apply_lora(model: nn.Module, r: int, alpha: float, targets: str | None) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters (in place); only the adapters train."""
    from peft import LoraConfig, get_peft_model

    names = lora_target_modules(model, targets)
    logger.info("LoRA on %d modules (e.g. %s)", len(names), names[0])
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=names))


def freeze_vision(model: nn.Module) -> int:
    """Freeze every parameter outside the language model and the output head; returns how many."""
    prefix = language_model_prefix(model) + "."
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    n = 0
    for name, p in model.named_parameters():
        if not name.startswith(prefix) and id(p) not in head_ids and p.requires_grad:
            p.requires_grad_(False)
            n += p.numel()
    return n


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing that works with LoRA and a frozen vision tower.

    Non-reentrant checkpointing lets gradients reach adapters even when the
    checkpointed block's inputs do not require grad (the frozen-embedding case).
    """
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    if hasattr(model, "config"):
        model.config.use_cache = False


class EMA:
    """θ_EMA ← λ·θ_EMA + (1 − λ)·θ over the *trainable* parameters only.

    With LoRA that is a copy of the adapters, not of the model.  For
    generation the EMA weights are swapped into the live model
    (:meth:`swapped_in`: tensor storage is exchanged, nothing is copied) and
    swapped back afterwards.
    """

    def __init__(self, model: nn.Module):
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.shadow = {n: p.detach().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def update(self, decay: float) -> None:
        for n, p in self.params.items():
            self.shadow[n].lerp_(p.detach(), 1.0 - decay)

    @contextmanager
    def swapped_in(self):
        """The model carries the EMA weights inside the ``with`` block."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    @torch.no_grad()
    def _swap(self) -> None:
        for n, p in self.params.items():
            live = p.data
            p.data = self.shadow[n]
            self.shadow[n] = live

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: t.detach().cpu().contiguous() for n, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise ValueError(f"EMA state lacks {len(missing)} tensors (e.g. {sorted(missing)[0]})")
        for n in self.shadow:
            self.shadow[n].copy_(state[n].to(self.shadow[n].device, self.shadow[n].dtype))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.shadow.values())


def ema_decay_at(step: int, decay: float) -> float:
    """Warm-up of the EMA decay: ``min(decay, (1 + t) / (10 + t))``.

    Early on the EMA follows the model closely, so that bootstrapped
    responses already reflect the downstream task in short runs.
    """
    return min(decay, (1.0 + step) / (10.0 + step))

