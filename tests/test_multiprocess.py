"""Several processes under ``accelerate launch --multi_gpu --num_processes 2``, as on a multi-GPU node.

On this CPU-only machine torchrun starts the two processes and they talk over gloo
(``accelerate launch --cpu --num_processes 2`` would start one process: it needs mpirun).

Audit: the processes share the shards and one audit table covers every sample once.
Train: the epoch is split across the processes (half the steps at the same per-process
batch size), every sample is trained on once per epoch, and one run folder is written.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def _launch(args, n=2, cwd=None):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "byorn.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _single(args):
    from byorn.cli import main

    assert main(args) == 0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from byorn.data.io import save_llava_json
    from byorn.world import make_captions

    root = tmp_path_factory.mktemp("mp")
    return save_llava_json(make_captions(64, 3, "train"), root / "data"), root


def test_audit_and_train_split_across_two_processes(world):
    data, root = world
    _launch(["audit", "--data", str(data), "--out", str(root / "audit"), "--no-maps", "--no-propose",
             "--shard-size", "16", "--batch-size", "8"])
    table = pd.read_parquet(root / "audit" / "audit.parquet")
    ids = json.loads(data.read_text())
    assert sorted(table["id"]) == sorted(r["id"] for r in ids)  # every sample exactly once
    assert not (root / "audit" / ".shards").exists()

    # Flag everything: BYORn then bootstraps every sample, and replacements.jsonl says
    # which sample was trained in which step.
    table["suspicious"] = True
    table.to_parquet(root / "audit" / "audit.parquet", index=False)
    common = ["train", "--data", str(data), "--audit", str(root / "audit"), "--method", "byorn",
              "--epochs", "1", "--batch-size", "8", "--max-new-tokens", "4"]
    _single([*common, "--out", str(root / "one")])
    _launch([*common, "--out", str(root / "two")])
    one = json.loads((root / "one" / "metrics.json").read_text())
    two = json.loads((root / "two" / "metrics.json").read_text())
    assert one["steps"] == 8 and two["steps"] == 4 and two["processes"] == 2
    reps = [json.loads(x) for x in (root / "two" / "replacements.jsonl").read_text().splitlines()]
    seen = Counter(r["id"] for r in reps)
    assert set(seen) == {r["id"] for r in ids} and set(seen.values()) == {1}  # once per epoch, not twice
    assert (root / "two" / "model" / "model.safetensors").exists()
    assert json.loads((root / "two" / "config.json").read_text())["status"] == "finished"
