"""``TrainConfig``: every setting of a fine-tuning run, validated in one place.

The CLI builds its flags from these fields and the app's Train tab builds a
``TrainConfig`` in its handler, so a bad value is the same clear
``ValueError`` (naming the field) everywhere, before any run starts.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..defenses import DEFENSES
from ..scoring import SCORE_METHODS
from ..split import parse_p

PRECISIONS = ("fp32", "bf16", "fp16")
TOO_LONG = ("error", "skip", "truncate")
#: fields a resumed run may change (they do not change what is trained)
RESUMABLE_CHANGES = frozenset({"out_dir", "eval_every", "eval_max_samples", "checkpoint_every", "num_workers"})


@dataclass
class TrainConfig:
    """Settings of one fine-tuning run."""

    method: str = field(default="byorn", metadata={"help": "defense: sft, byorn-f, byorn, onion or bye"})
    defense_options: str = field(default="", metadata={"help": "defense options as key=value,key=value"})
    epochs: float = field(default=8.0, metadata={"help": "passes over the data (split across processes)"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps (overrides epochs)"})
    batch_size: int = field(default=32, metadata={"help": "samples per minibatch and process"})
    grad_accum: int = field(default=1, metadata={"help": "minibatches per optimizer step"})
    max_batch_tokens: int | None = field(default=32_768, metadata={
        "help": "split a minibatch whose padded tokens (B x T) exceed this into chunks (memory bound)"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=10, metadata={"help": "linear warm-up steps, then cosine decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0 = off)"})
    precision: str = field(default="fp32", metadata={"help": f"one of {PRECISIONS} (mixed precision via accelerate)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations (less memory)"})
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters instead of all weights"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA alpha"})
    lora_targets: str | None = field(default=None, metadata={
        "help": "comma-separated module names or regexes for LoRA (default: the language model's "
                "attention and MLP projections)"})
    freeze_vision: bool | None = field(default=None, metadata={
        "help": "freeze the vision tower and projector (default: on with LoRA, off otherwise)"})
    ema_decay: float = field(default=0.95, metadata={
        "help": "EMA decay λ; effective decay min(λ, (1+t)/(10+t)) suits short runs"})
    temperature: float = field(default=1.0, metadata={
        "help": "sampling temperature of bootstrapped responses (1 = unbiased self-training, 0 = greedy)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling of bootstrapped responses, in (0, 1]"})
    max_new_tokens: int = field(default=32, metadata={"help": "length cap of bootstrapped responses"})
    p: float | str | None = field(default=None, metadata={
        "help": "the split: 'auto' or a percentile (the paper: 0.6); unset: the given audit's own split, or "
                "byorn.split.DEFAULT_P when the run audits the data itself"})
    threshold: float | None = field(default=None, metadata={
        "help": "split at this score value instead (turns scoring above it are suspicious; overrides p)"})
    score: str | None = field(default=None, metadata={
        "help": f"score aggregate when the run audits the data itself, one of {SCORE_METHODS} (unset: "
                "byorn.scoring.DEFAULT_SCORE; the paper: mean); with an audit it must be the audit's"})
    max_length: int | None = field(default=None, metadata={
        "help": "token cap per conversation (default: the model's context length)"})
    too_long: str = field(default="error", metadata={
        "help": "over-long conversations: error, skip (reported), or truncate at a turn boundary (reported)"})
    seed: int = field(default=0, metadata={"help": "seeds data order, sampling and init"})
    eval_every: int = field(default=0, metadata={"help": "evaluate every N steps (0 = at the end only)"})
    eval_max_samples: int | None = field(default=None, metadata={"help": "cap on test samples per evaluation"})
    checkpoint_every: int = field(default=0, metadata={
        "help": "save a resumable checkpoint every N steps (0 = at the end and on cancel only)"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers decoding images"})
    out_dir: str = field(default="runs/run", metadata={"help": "run folder (must not hold a run already)"})

    def __post_init__(self) -> None:
        if self.method not in DEFENSES:
            raise ValueError(f"method must be one of {sorted(DEFENSES)}, got {self.method!r}")
        parse_options(self.defense_options)  # raises on a malformed string
        _check(self.max_steps is None or self.max_steps >= 1, "max_steps", "must be >= 1 (or unset)", self.max_steps)
        _finite(self, "epochs", "lr", "weight_decay", "max_grad_norm", "lora_alpha", "ema_decay",
                "temperature", "top_p")
        _check(self.epochs > 0 or self.max_steps, "epochs", "must be > 0 (or give max_steps)", self.epochs)
        for name in ("batch_size", "grad_accum", "lora_r", "max_new_tokens"):
            _check(getattr(self, name) >= 1, name, "must be >= 1", getattr(self, name))
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "num_workers", "seed"):
            _check(getattr(self, name) >= 0, name, "must be >= 0", getattr(self, name))
        for name in ("max_batch_tokens", "eval_max_samples"):
            value = getattr(self, name)
            _check(value is None or value >= 1, name, "must be >= 1 (or unset)", value)
        _check(self.max_length is None or self.max_length >= 8, "max_length", "must be >= 8 (or unset)",
               self.max_length)
        _check(self.lr > 0, "lr", "must be > 0", self.lr)
        _check(self.weight_decay >= 0 and self.max_grad_norm >= 0 and self.lora_alpha > 0,
               "weight_decay / max_grad_norm / lora_alpha", "must be >= 0 (alpha > 0)",
               (self.weight_decay, self.max_grad_norm, self.lora_alpha))
        _check(0.0 <= self.ema_decay < 1.0, "ema_decay", "must be in [0, 1)", self.ema_decay)
        _check(self.temperature >= 0.0, "temperature", "must be >= 0 (0 = greedy)", self.temperature)
        _check(0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]", self.top_p)
        if self.p is not None:
            self.p = parse_p(self.p)  # raises "p must be 'auto' or a number in [0, 1]"
        _check(self.threshold is None or (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold)),
               "threshold", "must be a finite number (or unset)", self.threshold)
        _check(self.score is None or self.score in SCORE_METHODS, "score", f"must be one of {SCORE_METHODS}",
               self.score)
        _check(self.precision in PRECISIONS, "precision", f"must be one of {PRECISIONS}", self.precision)
        _check(self.too_long in TOO_LONG, "too_long", f"must be one of {TOO_LONG}", self.too_long)
        if self.lora_targets is not None and not self.lora:
            raise ValueError("lora_targets is set but lora is off: pass --lora too")

    @property
    def vision_frozen(self) -> bool:
        """Whether the vision tower and projector are frozen (``freeze_vision``, default: on for LoRA)."""
        return self.lora if self.freeze_vision is None else self.freeze_vision

    @property
    def split_spec(self):
        """The split this run asks for (a :class:`byorn.split.Split`), or None: the audit's own."""
        from ..split import Split

        return None if self.p is None and self.threshold is None else Split.of(self.p, self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(ok, name: str, what: str, value) -> None:
    if not ok:
        raise ValueError(f"{name} {what}, got {value!r}")


def _finite(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")


def parse_options(text: str) -> dict[str, Any]:
    """``"a=1,b=x,c=true"`` -> ``{"a": 1, "b": "x", "c": True}`` (numbers and booleans typed)."""
    out: dict[str, Any] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"defense_options: expected key=value, got {part!r}")
        out[key.strip()] = _typed(value.strip())
    return out


def _typed(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value
