"""Hosting helpers: ZeroGPU through a fake ``spaces`` module, hosting modes, persistent storage, training support."""
from __future__ import annotations

import functools
import importlib
import logging
import pickle
import sys
import types

import numpy as np
import pytest

import app.zerogpu as zerogpu


class FakeSpaces(types.ModuleType):
    """Stands in for the ``spaces`` package: ``GPU(duration=...)`` records each call and, like
    ZeroGPU's forked worker, sends arguments and results through pickle."""

    def __init__(self):
        super().__init__("spaces")
        self.decorated: list[str] = []
        self.calls: list[tuple[str, float]] = []

    def GPU(self, task=None, *, duration=None, size=None):  # noqa: N802 (the real name)
        def deco(fn):
            self.decorated.append(fn.__name__)

            @functools.wraps(fn)
            def on_gpu(*args, **kwargs):
                seconds = duration(*args, **kwargs) if callable(duration) else duration
                self.calls.append((fn.__name__, seconds))
                args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))  # into the worker
                return pickle.loads(pickle.dumps(fn(*args, **kwargs)))  # and back

            on_gpu.zerogpu = None
            return on_gpu
        return deco if task is None else deco(task)


@pytest.fixture
def fake_zerogpu(monkeypatch):
    """app.zerogpu re-imported on a ZeroGPU Space with the fake ``spaces``; restored afterwards."""
    fake = FakeSpaces()
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setenv("SPACE_ID", "someone/byorn-studio")
    module = importlib.reload(zerogpu)
    yield module, fake
    monkeypatch.undo()
    importlib.reload(zerogpu)
    zerogpu.forget()


def test_gpu_is_a_no_op_off_zerogpu(monkeypatch):
    fake = FakeSpaces()
    monkeypatch.setitem(sys.modules, "spaces", fake)  # installed, but this is not a ZeroGPU Space
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def fn(x):
        return x + 1

    assert zerogpu.gpu(duration=30)(fn) is fn
    assert fake.decorated == []


def test_gpu_wraps_with_spaces_on_zerogpu(fake_zerogpu):
    module, fake = fake_zerogpu

    @module.gpu(duration=45)
    def double(x):
        return 2 * x

    assert double(21) == 42
    assert fake.calls == [("double", 45)]
    # the module's own GPU entry points were decorated at import
    assert {"score_on_gpu", "generate_on_gpu", "trigger_map_on_gpu", "_propose_call"} <= set(fake.decorated)


def test_missing_spaces_on_zerogpu_runs_plain_and_warns(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "spaces", None)  # `import spaces` raises ImportError
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")

    def fn():
        return "ran"

    with caplog.at_level(logging.WARNING, logger="app.zerogpu"):
        assert zerogpu.gpu(duration=10)(fn) is fn
    assert "spaces" in caplog.text


def test_hosting_mode_from_the_environment():
    assert zerogpu.hosting_mode({}, cuda=False) == "cpu"
    assert zerogpu.hosting_mode({}, cuda=True) == "gpu"
    assert zerogpu.hosting_mode({"SPACE_ID": "a/b"}, cuda=False) == "cpu"  # CPU basic Space
    # ZeroGPU first: there CUDA looks available in the main process (emulated)
    assert zerogpu.hosting_mode({"SPACE_ID": "a/b", "SPACES_ZERO_GPU": "true"}, cuda=True) == "zerogpu"
    assert zerogpu.hosting_mode({"SPACES_ZERO_GPU": "0"}, cuda=False) == "cpu"


def test_default_data_dir_uses_persistent_storage_on_a_space(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mount = tmp_path / "data"
    mount.mkdir()
    space = {"SPACE_ID": "a/b"}
    assert zerogpu.default_data_dir(space, mount) == mount / "byorn"
    assert zerogpu.default_data_dir({}, mount) == (tmp_path / "byorn_data")  # not a Space: /data is not ours
    assert zerogpu.default_data_dir(space, tmp_path / "absent") == tmp_path / "byorn_data"
    explicit = {"SPACE_ID": "a/b", "BYORN_DATA_DIR": str(tmp_path / "mine")}
    assert zerogpu.default_data_dir(explicit, mount) == tmp_path / "mine"  # the variable wins
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert zerogpu.persistent_storage(space, not_a_dir) is None


def test_storage_defaults_and_ephemeral_warning(tmp_path, monkeypatch):
    mount = tmp_path / "data"
    mount.mkdir()
    space = {"SPACE_ID": "a/b"}
    defaults = zerogpu.storage_defaults(space, mount)
    assert defaults["BYORN_DATA_DIR"] == str(mount / "byorn")
    assert defaults["HF_HOME"].startswith(str(mount)) and defaults["BYORN_CACHE"].startswith(str(mount))
    assert zerogpu.storage_defaults({}, mount) == {}
    assert zerogpu.ephemeral_storage_warning(space, mount) is None
    assert "wiped" in zerogpu.ephemeral_storage_warning(space, tmp_path / "absent")
    assert zerogpu.ephemeral_storage_warning({}, tmp_path / "absent") is None
    monkeypatch.setenv("SPACE_ID", "a/b")
    monkeypatch.setenv("HF_HOME", "/keep/me")
    monkeypatch.delenv("BYORN_DATA_DIR", raising=False)
    monkeypatch.delenv("BYORN_CACHE", raising=False)
    applied = zerogpu.apply_storage_defaults(mount)
    assert "HF_HOME" not in applied and applied["BYORN_DATA_DIR"] == str(mount / "byorn")
    import os

    assert os.environ["HF_HOME"] == "/keep/me"


def test_training_support_says_what_to_do():
    ok, why = zerogpu.training_supported({"SPACES_ZERO_GPU": "true"}, cuda=True)
    assert not ok and "dedicated GPU Space" in why
    ok, why = zerogpu.training_supported({}, cuda=False)
    assert ok and "CPU" in why
    ok, why = zerogpu.training_supported({}, cuda=True)
    assert ok and "GPU" in why


def test_model_refs_cross_into_the_worker_and_models_load_once(vlm):
    ref = zerogpu.ModelRef.of(None)
    assert pickle.loads(pickle.dumps(ref)) == ref
    try:
        zerogpu.remember(ref, vlm)
        assert zerogpu.model_for(ref) is vlm
        with pytest.raises(TypeError, match="ModelRef"):
            zerogpu.model_for(vlm)
    finally:
        zerogpu.forget(ref)


def test_scoring_generation_and_trigger_map_run_through_gpu_calls(fake_zerogpu, vlm):
    """Every helper's arguments and results survive pickling (the forked worker), with the durations given."""
    from byorn.data import Conversation
    from byorn.world import make_captions

    module, fake = fake_zerogpu
    ref = module.ModelRef.of(None)
    module.remember(ref, vlm)  # as if loaded at startup, before the worker forked
    samples = list(make_captions(3, 0, "test"))
    convs = [s.conversation() for s in samples]
    scores = module.score_on_gpu(ref, convs)
    assert [round(s[0].mean, 5) for s in scores] == [round(s[0].mean, 5) for s in vlm.score_conversations(convs)]
    prompts = [Conversation(c.turns[:1], c.images) for c in convs]
    texts = module.generate_on_gpu(ref, prompts, max_new_tokens=8)
    assert texts == vlm.generate_conversations(prompts, max_new_tokens=8)
    tm = module.trigger_map_on_gpu(ref, samples[0], 0, stride=8, patch=8)
    assert tm.grid.shape == (4, 4) and np.isfinite(tm.grid).all()
    names = [name for name, _ in fake.calls]
    assert names == ["score_on_gpu", "generate_on_gpu", "trigger_map_on_gpu"]
    assert all(0 < seconds <= 300 for _, seconds in fake.calls)
