"""Loading a model folder: checks, the processor (without video parts when
torchvision is missing), and the model, each failure a :class:`ModelError`
that names the folder and says what to do.

Safety: weights load from safetensors only, ``trust_remote_code`` is off
unless the caller turns it on.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


class ModelError(ValueError):
    """A model folder that cannot be loaded or used, with what to do about it."""


def has_torchvision() -> bool:
    """Whether torchvision imports beside this torch (the PyPI build is CUDA-only; CPU machines lack it)."""
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception:  # a build that does not match torch fails on import
        return False
    return True


def model_identity(path: Path) -> str:
    """A short stable hash of a model folder's config and weights."""
    h = hashlib.sha256()
    for f in sorted(path.glob("*.json")) + sorted(path.glob("*.safetensors")):
        h.update(f.name.encode())
        if f.suffix == ".json" or f.stat().st_size < 256 * 2**20:
            h.update(f.read_bytes())
        else:  # large shards: size plus head and tail is enough to tell them apart
            h.update(str(f.stat().st_size).encode())
            with f.open("rb") as fh:
                h.update(fh.read(2**20))
                fh.seek(-2**20, 2)
                h.update(fh.read())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------ checks

def check_model_folder(folder: Path) -> dict:
    """The folder's ``config.json`` as a dict, after checks that name what is wrong."""
    if not folder.exists():
        raise ModelError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise ModelError(f"{folder} is a file; give the folder that holds config.json")
    cfg = folder / "config.json"
    if not cfg.exists():
        raise ModelError(f"{folder} is not a model folder: it has no config.json")
    if not list(folder.glob("*.safetensors")):
        raise ModelError(f"{folder} holds no .safetensors weights (pickled weights are not loaded, for safety); "
                         "convert them with save_pretrained(..., safe_serialization=True)")
    try:
        config = json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{cfg} is not valid JSON: {e}") from e
    if not isinstance(config, dict) or "model_type" not in config:
        raise ModelError(f"{cfg} has no model_type: it is not a transformers config")
    return config


def check_architecture(folder: Path, config: dict, trust_remote_code: bool) -> None:
    """Refuse a folder whose model is not an image-text-to-text model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    model_type = config["model_type"]
    if model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return
    if trust_remote_code and "AutoModelForImageTextToText" in (config.get("auto_map") or {}):
        return
    archs = ", ".join(config.get("architectures") or []) or "unknown"
    hint = (" It ships its own code (auto_map): pass trust_remote_code=True only if you trust it."
            if config.get("auto_map") else "")
    raise ModelError(f"{folder} holds a {model_type!r} model ({archs}), which is not an image-text-to-text "
                     f"(vision-language) architecture that transformers knows; give a VLM such as LLaVA, "
                     f"Qwen2-VL, InternVL, Idefics3/SmolVLM, PaliGemma or Gemma 3.{hint}")


# --------------------------------------------------------------- processor

def _processor_dict(folder: Path) -> dict:
    for name in PROCESSOR_FILES:
        f = folder / name
        if f.exists():
            try:
                return json.loads(f.read_text())
            except json.JSONDecodeError as e:
                raise ModelError(f"{f} is not valid JSON: {e}") from e
    return {}


@functools.cache
def image_only(cls):
    """Processor class ``cls`` without its video processor.

    Qwen2/2.5/3-VL, InternVL, SmolVLM, Gemma 4, LLaVA-OneVision and GLM-4.xV
    processors take a video processor, which needs torchvision; images do
    not.  The subclass drops the ``video_processor`` attribute however the
    parent's ``__init__`` hands it on (positionally, as Qwen2-VL's does, or
    by keyword, as Gemma 4's does): a shim placed between the parent and
    ``ProcessorMixin`` in the method order names the parent's arguments after
    its own attribute list, drops the video processor and passes the rest on
    by keyword.  The saved video processor settings ride along as
    ``video_processor_config`` and are written back on save, so a folder
    saved here still loads with its video processor where torchvision is
    present.  The subclass keeps the parent's name, so saved configs name the
    real class.
    """
    from transformers.processing_utils import ProcessorMixin

    parent_attributes = list(cls.get_attributes())  # the parent's order, video_processor included

    class DropVideo(ProcessorMixin):
        def __init__(self, *args, **kwargs):
            kwargs.update(zip(parent_attributes, args))  # positional arguments by the parent's names
            kwargs.pop("video_processor", None)
            super().__init__(**kwargs)

    class ImageOnly(cls, DropVideo):
        video_processor_config: dict | None = None

        @classmethod
        def get_attributes(klass):
            return [a for a in super().get_attributes() if a != "video_processor"]

        @classmethod
        def from_args_and_dict(klass, args, processor_dict, **kwargs):
            video = processor_dict.get("video_processor")
            processor_dict = dict(processor_dict, video_processor=None)  # a saved dict is not built
            out = super().from_args_and_dict(args, processor_dict, **kwargs)
            (out[0] if isinstance(out, tuple) else out).video_processor_config = \
                video if isinstance(video, dict) else None
            return out

        def to_dict(self):
            d = super().to_dict()
            if self.video_processor_config:
                d["video_processor"] = dict(self.video_processor_config)
            return d

    ImageOnly.__name__ = ImageOnly.__qualname__ = cls.__name__
    ImageOnly.__module__ = cls.__module__
    return ImageOnly


def missing_torchvision(folder: Path, what: str) -> str:
    """The error for a processor that needs torchvision where it does not import (Mistral 3 / Pixtral,
    Llama 4 and LFM2-VL image processors in transformers 5.23)."""
    import torch

    state = ("is not installed" if importlib.util.find_spec("torchvision") is None
             else f"does not import beside torch {torch.__version__}")
    return (f"{folder}: {what} needs the package torchvision, which {state}; install the torchvision build that "
            f"matches torch {torch.__version__} (e.g. pip install torchvision with the same CUDA/CPU variant)")


def needs_video_processor(cls) -> bool:
    import inspect

    return "video_processor" in inspect.signature(cls.__init__).parameters


def load_processor(folder: Path, config: dict, trust_remote_code: bool = False):
    """The folder's processor; built without its video part when torchvision is missing."""
    import transformers
    from transformers import AutoProcessor

    pdict = _processor_dict(folder)
    cls = getattr(transformers, pdict.get("processor_class", ""), None)
    try:
        if cls is not None and needs_video_processor(cls) and not has_torchvision():
            logger.info("%s: torchvision is missing, building %s without its video processor",
                        folder, cls.__name__)
            return image_only(cls).from_pretrained(folder, local_files_only=True)
        return AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code, local_files_only=True)
    except (ImportError, OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        # Mistral 3's PixtralProcessor raises ImportError, Llama 4's and LFM2-VL's AutoProcessor a ValueError
        if "torchvision" in str(e).lower() and not has_torchvision():
            raise ModelError(missing_torchvision(folder, pdict.get("processor_class") or "its processor")) from e
        if isinstance(e, ImportError):
            raise ModelError(f"{folder}: its processor needs a package that is missing: {e}") from e
        raise ModelError(f"{folder}: the processor could not be loaded ({type(e).__name__}: {e}); the folder "
                         "needs the processor / tokenizer files save_pretrained writes") from e


# transformers builds a model under process-wide settings (the meta device, the default dtype): two
# threads loading at once (the app's warm-up beside a visitor's lesson) get a half-loaded model
# ("Cannot copy out of meta tensor"), so loads take turns.
_LOAD_LOCK = threading.Lock()


def load_model(folder: Path, *, dtype, trust_remote_code: bool, attn_implementation: str | None):
    from transformers import AutoModelForImageTextToText

    kwargs = dict(trust_remote_code=trust_remote_code, local_files_only=True, use_safetensors=True, dtype=dtype)
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        with _LOAD_LOCK:
            return AutoModelForImageTextToText.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        raise ModelError(f"{folder} could not be loaded as an image-text-to-text model "
                         f"({type(e).__name__}: {e})") from e
