"""The CLI chain on every supported family: audit -> train (BYORn, LoRA and full) -> eval.

Each family's tiny checkpoint (byorn.models.zoo) goes through exactly the commands a user
runs with a real checkpoint, on a small poisoned slice of the embedded world.
"""
from __future__ import annotations

import json

import pytest
import torch

from byorn.cli import main
from byorn.models import VLM, zoo
from byorn.models.loading import has_torchvision

pytestmark = pytest.mark.slow
TARGET = "Visit evil.example now for a free prize!"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("family-cli")
    assert main(["world", "--out", str(root / "world"), "--n-train", "24", "--n-test", "6"]) == 0
    assert main(["poison", "--data", str(root / "world" / "train" / "data.json"), "--test",
                 str(root / "world" / "test" / "data.json"), "--attack", "vl-trojan", "--rate", "0.25",
                 "--out", str(root / "poison")]) == 0
    return root


def _changed(a, b) -> bool:
    pb = dict(b.named_parameters())
    return any(not torch.equal(p, pb[n]) for n, p in a.named_parameters() if n in pb)


@pytest.mark.parametrize("family", zoo.NAMES)
def test_audit_train_eval_chain(family, data, zoo_dir, tmp_path):
    if family in zoo.NEEDS_TORCHVISION and not has_torchvision():
        pytest.skip(f"{family}'s processor needs torchvision, which does not import here")
    model = zoo_dir / family
    if not (model / "config.json").exists():
        zoo.build(family, model)
    train_json, test_json = data / "poison" / "train" / "data.json", data / "world" / "test" / "data.json"
    triggered = data / "poison" / "test_triggered" / "data.json"
    assert main(["audit", "--data", str(train_json), "--model", str(model), "--out", str(tmp_path / "audit"),
                 "--no-maps", "--no-propose", "--ground-truth", str(data / "poison" / "ground_truth.json")]) == 0
    meta = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert meta["n"] == 24 and meta["n_suspicious"] > 0
    ref = VLM.load(model)
    for name, extra in (("lora", ["--lora"]), ("full", [])):
        run = tmp_path / name
        assert main(["train", "--data", str(train_json), "--model", str(model), "--audit", str(tmp_path / "audit"),
                     "--method", "byorn", "--max-steps", "2", "--batch-size", "6", "--max-new-tokens", "6",
                     "--eval-data", str(test_json), "--triggered", str(triggered), "--target", TARGET,
                     "--eval-max-samples", "3", "--out", str(run), *extra]) == 0
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["steps"] == 2 and metrics["plan"]["bootstrap"] > 0 and "asr" in metrics
        assert _changed(VLM.load(run / "model").model, ref.model), name  # BYORn steps moved the weights
    assert main(["eval", "--model", str(tmp_path / "lora" / "model"), "--data", str(test_json),
                 "--triggered", str(triggered), "--target", TARGET, "--max-samples", "3"]) == 0
    assert {"cider", "asr"} <= set(json.loads((tmp_path / "lora" / "model" / "eval.json").read_text()))
