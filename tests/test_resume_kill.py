"""A training run killed with SIGKILL resumes from its last checkpoint to the same result."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    from byorn.data.io import save_llava_json
    from byorn.models import VLM
    from byorn.world import make_captions

    data = save_llava_json(make_captions(48, 4, "train"), tmp_path / "data")
    args = ["--data", str(data), "--method", "sft", "--epochs", "4", "--batch-size", "8", "--checkpoint-every", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    cli = [sys.executable, "-m", "byorn.cli", "train"]
    whole = subprocess.run([*cli, *args, "--out", str(tmp_path / "whole")], env=env, capture_output=True, text=True,
                           timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]

    run = tmp_path / "killed"
    proc = subprocess.Popen([*cli, *args, "--out", str(run)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = run / "checkpoint" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["step"] >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists()

    # a second run into the same folder is refused; --resume continues it
    again = subprocess.run([*cli, *args, "--out", str(run)], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = subprocess.run([*cli, "--data", str(data), "--resume", str(run)], env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((run / "metrics.json").read_text())
    assert b["steps"] == a["steps"] and b["final_loss"] == a["final_loss"]
    assert [h["loss"] for h in b["history"]["loss"]] == [h["loss"] for h in a["history"]["loss"]]
    ma, mb = VLM.load(tmp_path / "whole" / "model").model, VLM.load(run / "model").model
    pb = dict(mb.named_parameters())
    assert all((p == pb[n]).all() for n, p in ma.named_parameters())
