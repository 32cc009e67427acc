"""What the blank-image pass costs: an audit of a bench cell with and without it, timed in turn.

The grounding scores (``grounding``, ``mean+grounding``: the default since
issue 19) score every turn a second time with its images blanked.  This times
the audit of one bench cell (1,000 world captions, BadNets at 10 %, the
bench's own data) by ``mean`` (one pass) and by ``mean+grounding`` (two),
alternately, ``--repeats`` times each in one process, so that both see the
same load; it prints and writes the medians and their ratio.  A second pair
audits the same data with every other sample's image taken out (text-only
turns): a turn without an image is not scored twice, and its grounding is 0.

    OMP_NUM_THREADS=1 python benchmarks/blank_pass_cost.py --out benchmarks/blank_pass_cost.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def text_only_half(dataset):
    """Every other sample without its image (its ``<image>`` placeholder removed)."""
    from byorn.data import Sample, VLDataset

    out = []
    for i, s in enumerate(dataset):
        if i % 2:
            s = Sample.single(s.id, None, s.user_text_before(0), s.assistant_texts()[0], s.meta)
        out.append(s)
    return VLDataset(out, f"{dataset.name}-half-text")


def main() -> None:
    import torch

    from byorn.audit import AuditConfig, run_audit
    from byorn.bench import poisoned_cell
    from byorn.models import VLM

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/blank_pass_cost.json")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=1000)
    args = ap.parse_args()
    ref = VLM.load()
    _, _, pr = poisoned_cell(ref, "badnets", 0.1, 0, args.n_train, 20)
    result = {"threads": torch.get_num_threads(), "torch": torch.__version__, "n": args.n_train,
              "repeats": args.repeats, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for name, data in (("images", pr.train), ("half_text_only", text_only_half(pr.train))):
        times: dict[str, list[float]] = {"mean": [], "mean+grounding": []}
        run_audit(data, ref, AuditConfig(score="mean", p=0.6, propose=False, maps=False))  # warm-up
        for _ in range(args.repeats):
            for score in times:
                t = time.perf_counter()
                run_audit(data, ref, AuditConfig(score=score, p=0.6, propose=False, maps=False))
                times[score].append(round(time.perf_counter() - t, 2))
        med = {k: statistics.median(v) for k, v in times.items()}
        result[name] = {"seconds": times, "median_s": med, "ratio": round(med["mean+grounding"] / med["mean"], 3)}
        print(name, json.dumps(result[name]), flush=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
