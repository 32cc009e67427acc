"""Shared fixtures: the embedded model and small world slices, built once per session."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def vlm():
    from byorn.models import VLM

    return VLM.load()


@pytest.fixture(scope="session")
def small_world():
    """60 downstream training samples and 20 test samples of the embedded world."""
    from byorn.world import make_captions

    return make_captions(60, 0, "train"), make_captions(20, 0, "test")


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory):
    """Where the family zoo (byorn.models.zoo) is built, once per session, family by family on demand."""
    return tmp_path_factory.mktemp("zoo")
