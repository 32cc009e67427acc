"""Issue 6 as a hostile or careless user tries it on the command line.

Each case builds the bad input and asserts a clear error (exit status 2, the
sample / field / file / folder named, what to do) or a reported skip.  The
app's side (store modes, public defaults, image races, uploads, the Train
form) is in tests/test_hostile_app.py; decision files in tests/test_export.py;
malformed data files in tests/test_data_*.py.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from byorn.cli import main

TARGET = "Visit evil.example now for a free prize!"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    assert main(["world", "--out", str(root / "w"), "--n-train", "40", "--n-test", "8"]) == 0
    assert main(["poison", "--data", str(root / "w" / "train" / "data.json"), "--attack", "badnets",
                 "--rate", "0.25", "--out", str(root / "p")]) == 0
    return root


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_1_audit_of_other_data_is_refused(world, tmp_path, capsys):
    """A clean set's audit reused for its poisoned copy (same ids) must stop, naming both fingerprints."""
    clean, poisoned = world / "w" / "train" / "data.json", world / "p" / "train" / "data.json"
    assert main(["audit", "--data", str(clean), "--out", str(tmp_path / "a"), "--no-maps", "--no-propose"]) == 0
    capsys.readouterr()
    code = main(["train", "--data", str(poisoned), "--audit", str(tmp_path / "a"), "--method", "byorn",
                 "--max-steps", "1", "--out", str(tmp_path / "run")])
    err = _err(capsys)
    assert code == 2 and "other data" in err and "fingerprint" in err and "byorn audit" in err
    assert not (tmp_path / "run" / "model").exists()


def test_1_resume_with_other_data_is_refused(world, tmp_path, capsys):
    clean, poisoned = world / "w" / "train" / "data.json", world / "p" / "train" / "data.json"
    run = tmp_path / "run"
    assert main(["train", "--data", str(clean), "--method", "sft", "--max-steps", "1", "--out", str(run)]) == 0
    (run / "config.json").write_text(json.dumps({**json.loads((run / "config.json").read_text()), "status": "cancelled"}))
    capsys.readouterr()
    assert main(["train", "--data", str(poisoned), "--resume", str(run)]) == 2
    assert "other data" in _err(capsys)


def test_2_an_enormous_response_is_an_invalid_sample_not_gigabytes(world, tmp_path, capsys):
    records = json.loads((world / "w" / "train" / "data.json").read_text())[:6]
    records[2]["conversations"][1]["value"] = "a red circle " * 8000  # ~100,000 characters
    for r in records:
        r["image"] = str(world / "w" / "train" / r["image"])
    data = tmp_path / "big.json"
    data.write_text(json.dumps(records))
    assert main(["audit", "--data", str(data), "--out", str(tmp_path / "a"), "--no-maps", "--no-propose"]) == 2
    err = _err(capsys)
    assert records[2]["id"] in err and "tokens, above the limit" in err and "--skip-invalid" in err
    assert main(["audit", "--data", str(data), "--out", str(tmp_path / "b"), "--no-maps", "--no-propose",
                 "--skip-invalid"]) == 0
    meta = json.loads((tmp_path / "b" / "audit.json").read_text())
    assert list(meta["skipped"]) == [records[2]["id"]]  # the skipped list is kept with the audit
    assert meta["n_turns"] == 5


def test_2_a_configurable_cap_below_the_model_limit(world, tmp_path, capsys):
    data = world / "w" / "train" / "data.json"
    assert main(["audit", "--data", str(data), "--out", str(tmp_path / "a"), "--no-maps", "--no-propose",
                 "--max-length", "20"]) == 2
    assert "above the limit of 20" in _err(capsys)


def test_4_two_runs_into_one_folder(world, tmp_path):
    """The second of two concurrent `byorn train` runs into the same --out is refused at once."""
    data = world / "w" / "train" / "data.json"
    cmd = [sys.executable, "-m", "byorn.cli", "train", "--data", str(data), "--method", "sft", "--epochs", "30",
           "--batch-size", "4", "--out", str(tmp_path / "run")]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "run" / "config.json").exists() and time.time() < deadline:
            time.sleep(0.05)
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "in use by a running training run" in second.stderr
    finally:
        first.kill()
        first.wait()
    after = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # killed: its folder is not reused
    assert after.returncode == 2 and "--resume" in after.stderr


@pytest.mark.parametrize("flag,value,field", [
    ("--max-steps", "-1", "max_steps"), ("--temperature", "-0.5", "temperature"), ("--lr", "nan", "lr"),
    ("--batch-size", "0", "batch_size"), ("--ema-decay", "1", "ema_decay"), ("--top-p", "1.5", "top_p"),
])
def test_8_invalid_training_values_name_the_field(world, tmp_path, capsys, flag, value, field):
    code = main(["train", "--data", str(world / "w" / "train" / "data.json"), "--method", "sft",
                 "--out", str(tmp_path / "run"), flag, value])
    assert code == 2 and field in _err(capsys)
    assert not (tmp_path / "run").exists()  # refused before any run folder was made


def test_9_deeply_nested_json_is_skipped_with_a_report(world, tmp_path, capsys):
    records = json.loads((world / "w" / "train" / "data.json").read_text())[:4]
    for r in records:
        r["image"] = str(world / "w" / "train" / r["image"])
    data = tmp_path / "nested.json"
    data.write_text(json.dumps(records)[:-1] + ", " + "[" * 5000 + "]" * 5000 + "]")  # far past the recursion limit
    assert main(["audit", "--data", str(data), "--out", str(tmp_path / "a"), "--no-maps", "--no-propose"]) == 2
    assert "nested" in _err(capsys)
    assert main(["audit", "--data", str(data), "--out", str(tmp_path / "b"), "--no-maps", "--no-propose",
                 "--skip-invalid"]) == 0
    meta = json.loads((tmp_path / "b" / "audit.json").read_text())
    assert meta["n"] == 4 and meta["load_report"]["skipped"]  # what was skipped at load is kept with the audit
