"""SFT: no defense; every turn trains on its text (review decisions still apply)."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Defense, build_plan, register


@register("sft")
@dataclass
class SFT(Defense):
    summary = "no defense: fine-tune on every response as given"

    def plan(self, dataset, *, flags, decisions, ctx):
        return build_plan(dataset, "keep", None, decisions)
