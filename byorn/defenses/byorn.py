"""BYORn: flagged turns train on responses the EMA model bootstraps on the fly.

The plan only marks the flagged turns; the trainer (:mod:`byorn.train`)
puts samples with a bootstrapped turn into all-suspicious minibatches,
samples each such turn from the EMA model given the conversation before it,
and trains on those responses in place of the originals.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import Defense, build_plan, register


@register("byorn")
@dataclass
class BYORn(Defense):
    summary = "keep flagged samples, train on responses the model bootstraps itself"
    uses_flags = True

    def plan(self, dataset, *, flags, decisions, ctx):
        return build_plan(dataset, "bootstrap", flags, decisions)
