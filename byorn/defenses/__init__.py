"""Defenses as peers: one module per defense, one registry (:mod:`.base`).

``sft`` (none), ``byorn-f`` (drop flagged turns), ``byorn`` (bootstrap flagged
turns), ``onion`` (remove outlier words) and ``bye`` (attention-entropy
filtering) share one interface: :meth:`Defense.plan` says which samples and
turns train on what.
"""
from . import bye, byorn, byorn_f, onion, sft  # noqa: F401  (registration)
from .base import (DEFENSES, Defense, DefenseContext, Plan, PlannedSample, build_plan, get_defense,
                   register)

__all__ = ["DEFENSES", "Defense", "DefenseContext", "Plan", "PlannedSample", "build_plan", "get_defense",
           "register"]
