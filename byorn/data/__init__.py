"""Data: samples as conversations with lazily decoded images (:mod:`.sample`),
and the on-disk formats (:mod:`.io`)."""
from .sample import (DEFAULT_MAX_PIXELS, IMAGE_TOKEN, ROLES, Conversation, DataError, ImageRef, Sample,
                     Turn, VLDataset, as_image_ref, check_turns, content_fingerprint, image_digest,
                     png_bytes, strip_image_token, turn_key)

__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_TOKEN", "ROLES", "Conversation", "DataError", "ImageRef", "Sample",
           "Turn", "VLDataset", "as_image_ref", "check_turns", "content_fingerprint", "image_digest",
           "png_bytes", "strip_image_token", "turn_key"]
