"""Models: the one adapter over ``transformers`` (:mod:`.adapter`), per-family
quirks (:mod:`.families`), conversation rendering (:mod:`.render`), loading
(:mod:`.loading`), the family zoo (:mod:`.zoo`) and the embedded tiny model
(:mod:`.tiny`)."""
from .adapter import ASSETS, EMBEDDED_MODEL, IGNORE, Batch, SequenceTooLong, TokenScores, VLM
from .loading import ModelError, model_identity

__all__ = ["ASSETS", "EMBEDDED_MODEL", "IGNORE", "Batch", "ModelError", "SequenceTooLong", "TokenScores", "VLM",
           "model_identity"]
