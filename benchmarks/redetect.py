"""Recompute the detection figures of finished bench rows with the current audit, every score included.

Detection (AUROC / AP per score) depends only on the cell (scenario, rate,
seed), the reference model and the audit, never on the defense trained
afterwards.  Rows written before a score existed (the grounding scores, which
need a second scoring pass with blank images) get it here, without training
anything again.  Each cell is rebuilt by the bench's own ``poisoned_cell`` and
audited once by its ``audit_cell``; only ``detection_by_score`` changes in its
rows (the flags a finished defense trained on are not touched).

    python benchmarks/redetect.py --out benchmarks/matrix
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from byorn.bench import audit_cell, poisoned_cell
    from byorn.models import VLM

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="bench folder (rows/ and bench_config.json)")
    ap.add_argument("--n-train", type=int, help="override bench_config.json")
    ap.add_argument("--n-test", type=int, help="override bench_config.json")
    args = ap.parse_args()
    out = Path(args.out)
    cfg = json.loads((out / "bench_config.json").read_text())
    n_train, n_test = args.n_train or cfg["n_train"], args.n_test or cfg["n_test"]
    ref = VLM.load(cfg.get("model"))
    cells: dict[tuple, list[Path]] = {}
    for path in sorted((out / "rows").glob("*.json")):
        row = json.loads(path.read_text())
        cells.setdefault((row["scenario"], row["rate"], row["seed"]), []).append(path)
    for key, paths in sorted(cells.items()):
        t = time.time()
        _, _, pr = poisoned_cell(ref, *key, n_train, n_test)
        det = audit_cell(ref, pr, "mean+grounding")[2]  # a score with the blank pass: one audit, not two
        for path in paths:
            row = json.loads(path.read_text())
            old = row.get("detection_by_score", {}).get("mean", {}).get("auroc")
            if old is not None and abs(old - det["mean"]["auroc"]) > 1e-6:
                raise SystemExit(f"{path.stem}: mean AUROC {old} but now {det['mean']['auroc']}: "
                                 "not the same cell; left unchanged")
            row["detection_by_score"] = det
            path.write_text(json.dumps(row, indent=1))
        print(f"{key}: {len(paths)} rows, grounding AUROC {det['grounding']['auroc']:.3f} "
              f"({time.time() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
