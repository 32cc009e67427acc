"""BYORn-F (the paper's ablation): leave the flagged turns out of the loss."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Defense, build_plan, register


@register("byorn-f")
@dataclass
class BYORnF(Defense):
    summary = "drop what the reference model flags, train on the rest"
    uses_flags = True

    def plan(self, dataset, *, flags, decisions, ctx):
        # A flagged turn is masked, not deleted: it stays as context for later turns
        # (no loss is taken on it); a sample with every turn masked is left out.
        return build_plan(dataset, "mask", flags, decisions, flag_reason="flagged (BYORn-F)")
