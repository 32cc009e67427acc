"""Recompute the ASR of finished bench rows with the current evaluation code.

Used once: bench rows of the insertion scenario finished before the evaluation's
generation budget covered the target appended to a caption (it was cut at 32
tokens, so the ASR read 0 % for a model that emitted the target every time).
The trained models are in ``<bench>/runs/<row>/model``; the triggered test set
is rebuilt from the row's scenario, rate and seed by the bench's own ``poisoned_cell``.
The old figure is kept in the row as ``asr_before_reevaluation``.

    python benchmarks/reevaluate_asr.py --out /work/bench_matrix --scenarios insertion
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from byorn.bench import poisoned_cell, row_name
    from byorn.evaluate import EvalSuite, evaluate
    from byorn.models import VLM

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="bench folder")
    ap.add_argument("--scenarios", required=True, help="comma-separated")
    ap.add_argument("--defenses", default="sft,byorn-f,byorn", help="defenses whose test inputs are unchanged")
    args = ap.parse_args()
    out = Path(args.out)
    cfg = json.loads((out / "bench_config.json").read_text())
    ref = VLM.load(cfg.get("model"))
    built_cache: dict = {}
    for path in sorted((out / "rows").glob("*.json")):
        row = json.loads(path.read_text())
        if row["scenario"] not in args.scenarios.split(",") or row["defense"] not in args.defenses.split(","):
            continue
        key = (row["scenario"], row["rate"], row["seed"])
        if key not in built_cache:
            built_cache[key] = poisoned_cell(ref, *key, cfg["n_train"], cfg["n_test"])[1:]
        built, pr = built_cache[key]
        model_dir = out / "runs" / row_name(row["scenario"], row["rate"], row["defense"], row["seed"]) / "model"
        vlm = VLM.load(str(model_dir))
        m = evaluate(vlm, EvalSuite(None, pr.triggered_test, built.target, pr.extra_tests))
        row.setdefault("asr_before_reevaluation", row["asr"])
        row["asr"] = m["asr"]
        row.update({k: v for k, v in m.items() if k.startswith("asr_") and k != "asr_mode"})
        path.write_text(json.dumps(row, indent=1))
        print(f"{path.stem}: ASR {row['asr_before_reevaluation']:.3f} -> {row['asr']:.3f}")


if __name__ == "__main__":
    main()
