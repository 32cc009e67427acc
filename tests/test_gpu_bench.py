"""benchmarks/gpu.py: the real-size shapes are right, and --tiny runs the whole measurement on the CPU."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_real_size_shapes_have_the_released_parameter_counts():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--check-shapes"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["llava-1.5-7b"] == pytest.approx(7063, rel=0.01)   # llava-hf/llava-1.5-7b-hf: 7.06 B
    assert counts["qwen2-vl-2b"] == pytest.approx(2209, rel=0.01)    # Qwen/Qwen2-VL-2B-Instruct: 2.21 B


@pytest.mark.slow
def test_tiny_run_measures_every_figure(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads((tmp_path / "gpu.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["llava-tiny", "qwen2-vl-tiny"]
    for r in rows:
        for key in ("score_samples_s", "generate_greedy_samples_s", "generate_sampled_samples_s",
                    "sft_train_samples_s", "byorn_train_samples_s", "byorn_over_sft_wall"):
            assert r[key] > 0, key
        assert r["byorn_generate_s"] > 0 and r["sft_generate_s"] == 0  # only BYORn bootstraps
    assert "BYORn / SFT wall" in (tmp_path / "gpu.md").read_text()
