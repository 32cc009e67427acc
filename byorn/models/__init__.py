"""Models: the one adapter over ``transformers`` (:mod:`.adapter`), per-family
quirks, and the embedded tiny model (:mod:`.tiny`)."""
from .adapter import ASSETS, EMBEDDED_MODEL, IGNORE, ModelError, TokenScores, VLM, model_identity

__all__ = ["ASSETS", "EMBEDDED_MODEL", "IGNORE", "ModelError", "TokenScores", "VLM", "model_identity"]
