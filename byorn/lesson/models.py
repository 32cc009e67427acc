"""The lesson's models: loaded once per process, shared read-only, captions with surprisals.

A :class:`LessonModel` wraps a :class:`byorn.models.VLM` with a lock, so
that many visitors' threads can ask for captions at once (one generation at
a time per model; the tiny model answers in tens of milliseconds).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..models import VLM

logger = logging.getLogger(__name__)

#: Display names of the lesson's models, by key.
MODEL_LABELS = {"reference": "Pretrained reference", "sft": "SFT (no defense)", "byorn-f": "BYORn-F (drops flagged)",
                "byorn": "BYORn"}
MAX_NEW_TOKENS = 32


@dataclass
class Caption:
    """A model's answer, its tokens and each token's surprisal (nats, -log p) under ``surprisal_model``."""

    text: str
    tokens: list[str]
    surprisals: list[float]
    model: str
    surprisal_model: str

    @property
    def mean_surprisal(self) -> float:
        return float(sum(self.surprisals) / len(self.surprisals)) if self.surprisals else 0.0


@dataclass
class LessonModel:
    """One model of the lesson (``key`` in :data:`MODEL_LABELS`), thread-safe for generation."""

    key: str
    vlm: VLM
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def label(self) -> str:
        return MODEL_LABELS.get(self.key, self.key)

    @classmethod
    def load(cls, key: str, folder: Path | None) -> "LessonModel":
        """Load a model folder (stored in 16 bit or 32) in float32 on CPU; None = the embedded model."""
        vlm = VLM.load(folder, device="cpu", dtype=torch.float32)
        vlm.model.requires_grad_(False)
        return cls(key, vlm)

    def generate(self, image: Image.Image, instruction: str) -> str:
        with self.lock, torch.inference_mode():
            return self.vlm.generate([image], [instruction], max_new_tokens=MAX_NEW_TOKENS, temperature=0.0)[0]

    def surprisals(self, image: Image.Image, instruction: str, text: str) -> tuple[list[str], list[float]]:
        if not text.strip():
            return [], []
        with self.lock, torch.inference_mode():
            ts = self.vlm.score([image], [instruction], [text])[0]
        return list(ts.tokens), [float(x) for x in ts.surprisals]


def caption(model: LessonModel, image: Image.Image, instruction: str, *,
            scorer: LessonModel | None = None) -> Caption:
    """``model``'s greedy caption of ``image``; each token's surprisal under ``scorer``.

    ``scorer`` defaults to ``model`` itself (how sure the model was of its own
    words); pass the reference model to see the caption as the audit sees it
    (the target sentence is very unlikely to the reference model).
    """
    scorer = scorer or model
    text = model.generate(image, instruction)
    tokens, surprisals = scorer.surprisals(image, instruction, text)
    return Caption(text, tokens, surprisals, model.key, scorer.key)
