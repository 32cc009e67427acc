"""Reviewer-workflow timings: candidate proposals, the trigger map, neighbours and clusters.

    python benchmarks/review_bench.py [--out benchmarks/review_results.json] [--threads N]

Targets (issue 10): proposals for 320 flagged samples with the tiny model
<= 10 s on 2 cores; a trigger map for one sample <= 2 s on 2 cores.  Also:
nearest neighbours of one row among 100k x 512, clusters of 100k map points.
The 320 flagged samples are the shipped demo's (800 samples, top 40 %).
Each timing is the median of ``--repeat`` runs after one warm-up.  The load
average is recorded: on a shared machine figures are pessimistic.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np


def timed(fn, repeat: int) -> tuple[float, list[float], object, float]:
    """(median wall s, wall times, last result, median CPU s of this process).

    On a shared machine the CPU time is the better estimate of the wall time
    on an idle one with one thread (with N threads it sums them).
    """
    fn()  # warm-up (first-call costs: allocator, tokenizer caches)
    times, cpu, out = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), times, out, statistics.median(cpu)


def bench_proposals(vlm, demo, repeat: int) -> dict:
    from byorn.propose import propose_candidates

    flagged = demo.audit.table.loc[demo.audit.table["suspicious"], ["id", "turn"]]
    keys = list(zip(flagged["id"], flagged["turn"].astype(int)))
    out = {"n_keys": len(keys)}
    for k in (1, 4):
        kw = dict(k=k, temperature=0.8, max_new_tokens=32, batch_size=256 if k > 1 else 64)
        med, times, got, cpu = timed(lambda: propose_candidates(vlm, demo.dataset, keys, **kw), repeat)
        n_cands = sum(len(c) for c in got.values())
        out[f"k{k}"] = {"median_s": round(med, 2), "runs_s": [round(t, 2) for t in times],
                        "median_cpu_s": round(cpu, 2), "settings": kw,
                        "distinct_candidates": n_cands, "per_key": round(n_cands / len(keys), 2)}
    return out


def bench_trigger_map(vlm, demo, repeat: int) -> dict:
    from byorn.explain import trigger_map

    flagged = demo.audit.table.loc[demo.audit.table["suspicious"], "id"].tolist()
    samples = [demo.dataset.by_id(i) for i in flagged[:repeat]]
    out = {}
    for both in (True, False):
        trigger_map(vlm, samples[0], 0, both_keys=both)  # warm-up
        times, cpu = [], []
        for s in samples:
            t0, c0 = time.perf_counter(), time.process_time()
            tm = trigger_map(vlm, s, 0, both_keys=both)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        out["both_keys" if both else "one_round"] = {
            "median_s": round(statistics.median(times), 3), "runs_s": [round(t, 3) for t in times],
            "median_cpu_s": round(statistics.median(cpu), 3),
            "patch": tm.patch, "stride": tm.stride, "grid": list(tm.grid.shape), "n_words": len(tm.words)}
    return out


def bench_neighbors(repeat: int) -> dict:
    from byorn.neighbors import clusters, nearest

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(100_000, 512)).astype(np.float32)
    med_nn, _, _, _ = timed(lambda: nearest(emb, 123, k=10), repeat)
    centers = rng.uniform(-20, 20, size=(30, 2))
    pts = np.concatenate([c + rng.normal(size=(100_000 // 30 + 1, 2)) for c in centers])[:100_000]
    med_cl, _, labels, _ = timed(lambda: clusters(pts), max(1, repeat // 2))
    return {"nearest_100k_x_512_s": round(med_nn, 4), "clusters_100k_2d_s": round(med_cl, 2),
            "clusters_found": int(labels.max()) + 1, "noise_fraction": round(float((labels == -1).mean()), 4)}


def bench_overlay(demo, repeat: int) -> dict:
    from byorn.explain import overlay

    image = demo.dataset[0].image
    grid = np.random.default_rng(0).random((16, 16))
    med, _, out, _ = timed(lambda: overlay(image, grid, size=512), repeat)
    return {"overlay_512px_s": round(med, 4), "size": list(out.size)}


def demo_trigger_check(vlm, demo, n: int, out_dir: str) -> dict:
    """Train SFT on the demo's poisoned data (the Train tab's defaults), then map its poisoned samples.

    Ground truth picks which samples to look at (evaluation only).  Reports
    how often the map's maximum falls on the VL-Trojan patch (bottom-right)
    and how often "cf" is the top word.
    """
    from byorn.explain import trigger_map
    from byorn.models import VLM
    from byorn.train import TrainConfig, train

    t0 = time.perf_counter()
    run = train(demo.dataset, TrainConfig(method="sft", out_dir=out_dir), vlm=vlm)
    train_s = time.perf_counter() - t0
    tuned = VLM.load(Path(run.out_dir) / "model")
    poisoned = [demo.dataset.by_id(i) for i, p in demo.ground_truth.items() if p][:n]
    side = poisoned[0].image.size[0]
    patch = max(1, round(3 * side / 32))  # the demo's trigger: 3 px at 32 px
    rows = []
    for s in poisoned:
        tm = trigger_map(tuned, s, 0)
        left, top, right, bottom = tm.peak_box()
        rows.append({"id": s.id, "peak_on_patch": right > side - patch and bottom > side - patch,
                     "top_word": tm.top_word(), "grid_max": round(float(tm.grid.max()), 3),
                     "cf": round(dict(tm.words).get("cf", float("nan")), 3)})
    said = tuned.generate([s.image for s in poisoned], [s.instruction for s in poisoned])
    return {"train_s": round(train_s, 1), "n": len(rows), "emits_target": sum(t == demo.target for t in said),
            "peak_on_patch": sum(r["peak_on_patch"] for r in rows),
            "top_word_cf": sum(r["top_word"] == "cf" for r in rows), "samples": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/review_results.json")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--demo-check", type=int, default=0, metavar="N",
                    help="also train SFT on the demo and map N of its poisoned samples (minutes)")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from byorn.demo import load_demo
    from byorn.models import VLM

    load_before = os.getloadavg()
    vlm = VLM.load()
    demo = load_demo(vlm=vlm)
    results = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version(), "load_avg_before": [round(x, 2) for x in load_before]},
        "model": {"name": vlm.name, "identity": vlm.identity,
                  "params": sum(p.numel() for p in vlm.model.parameters())},
        "proposals_320_flagged": bench_proposals(vlm, demo, args.repeat),
        "trigger_map_one_sample": bench_trigger_map(vlm, demo, max(args.repeat, 5)),
        "neighbors": bench_neighbors(args.repeat),
        "overlay": bench_overlay(demo, args.repeat),
    }
    if args.demo_check:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            results["demo_sft_trigger_maps"] = demo_trigger_check(vlm, demo, args.demo_check, f"{tmp}/sft")
    results["machine"]["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
