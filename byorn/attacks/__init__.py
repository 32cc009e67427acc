"""Backdoor attacks on vision-language fine-tuning data (DESIGN.md section 2).

Layers, each usable on its own:

* **Trigger functions** (:mod:`.triggers`) -- pure, deterministic functions
  on PIL images and strings: :func:`badnets_patch`, :func:`blend`,
  :func:`sig`, :func:`aligned_patch`, :func:`paste_patch`,
  :func:`insert_token`.
* **Attacks** (:mod:`.registry`) -- small dataclasses registered by name in
  :data:`ATTACKS`; :func:`get_attack` builds one from a name and keyword
  parameters.
* **Targets** (:mod:`.targets`) -- :class:`Target`: what the backdoor makes
  the model say (replace / append / insert / substitute) and which ASR
  variant measures it.
* **Poisoning** (:mod:`.poisoning`) -- :func:`poison`.
* **Adaptive attacks** (:mod:`.adaptive`) -- the model-dependent parts: a
  PGD-optimised patch and approximate clean-label targets, computed against
  the reference model (imports torch lazily).
* **Scenarios** (:mod:`.scenarios`) -- named attack + target pairs for the
  benchmark: :data:`SCENARIOS`, :func:`get_scenario`.
"""
from .poisoning import PoisonResult, n_to_poison, poison
from .registry import (ATTACKS, AlignedPatch, Attack, BadNets, Blend, DualKey, OptimisedPatch, PatchTrigger,
                       SIG, TextTrigger, TokenTrigger, VLTrojan, get_attack, register)
from .scenarios import SCENARIOS, BuiltScenario, Scenario, get_scenario, register_scenario
from .targets import (BOUNDARIES, DEFAULT_CONCEPT, DEFAULT_TARGET_SENTENCE, TARGET_MODES, Target,
                      insert_sentence, split_sentences)
from .triggers import (CORNERS, PATCH_KINDS, PATCH_SHAPES, POSITIONS, REFERENCE_SIDE, aligned_patch,
                       badnets_patch, blend, checkerboard_pattern, insert_token, noise_pattern, paste_patch,
                       patch_box, scaled_patch_size, shape_mask, sig)

__all__ = [
    "ATTACKS", "AlignedPatch", "Attack", "BOUNDARIES", "BadNets", "Blend", "BuiltScenario", "CORNERS",
    "DEFAULT_CONCEPT", "DEFAULT_TARGET_SENTENCE", "DualKey", "OptimisedPatch", "PATCH_KINDS",
    "PATCH_SHAPES", "POSITIONS", "PatchTrigger", "PoisonResult", "REFERENCE_SIDE", "SCENARIOS", "SIG",
    "Scenario", "TARGET_MODES", "Target", "TextTrigger", "TokenTrigger", "VLTrojan", "aligned_patch",
    "badnets_patch", "blend", "checkerboard_pattern", "get_attack", "get_scenario", "insert_sentence",
    "insert_token", "n_to_poison", "noise_pattern", "paste_patch", "patch_box", "poison", "register",
    "register_scenario", "scaled_patch_size", "shape_mask", "sig", "split_sentences",
]
