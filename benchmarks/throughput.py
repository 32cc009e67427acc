"""Scoring, generation and training throughput of the embedded model, and
BYORn's wall time against SFT's on the same data, measured in one run.

    .venv/bin/python benchmarks/throughput.py [--n 1000] [--epochs 4]

Prints a JSON record; the figures measured are written down in
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from byorn.attacks import Target, get_attack, poison
from byorn.audit import AuditConfig, run_audit
from byorn.models import VLM
from byorn.train import TrainConfig, train
from byorn.world import make_captions


def rate(n: int, fn) -> float:
    t = time.time()
    fn()
    return n / (time.time() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--epochs", type=float, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    vlm = VLM.load()
    data = make_captions(args.n, 0, "train")
    imgs, qs, rs = [s.image for s in data], [s.instruction for s in data], [s.response for s in data]
    vlm.score(imgs[:64], qs[:64], rs[:64])  # warm-up
    out = {
        "threads": torch.get_num_threads(), "torch": torch.__version__, "n": args.n,
        "score_samples_per_s": rate(args.n, lambda: vlm.score(imgs, qs, rs, batch_size=64)),
        "generate_greedy_samples_per_s": rate(args.n, lambda: vlm.generate(imgs, qs, max_new_tokens=32)),
        "generate_sampled_samples_per_s": rate(args.n, lambda: vlm.generate(
            imgs, qs, max_new_tokens=32, temperature=1.0, top_p=1.0, seed=0)),
    }
    from byorn.evaluate import evaluate
    pre = evaluate(vlm, make_captions(200, 0, "test"))
    out["pretrained_test_cider"] = pre["cider"]
    out["pretrained_test_bleu"] = pre["bleu"]
    pr = poison(data, get_attack("badnets"), rate=0.1, target=Target(), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        walls = {}
        for method in ("sft", "byorn"):
            t = time.time()
            audit = None
            if method == "byorn":  # the audit is part of BYORn's cost
                audit = run_audit(pr.train, vlm, AuditConfig(propose=False, maps=False))
            res = train(pr.train, TrainConfig(method=method, epochs=args.epochs, batch_size=args.batch_size,
                                              out_dir=f"{tmp}/{method}"), vlm=vlm, audit=audit)
            walls[method] = time.time() - t
            out[f"{method}_wall_s"] = round(walls[method], 1)
            out[f"{method}_train_samples_per_s"] = round(args.n * args.epochs / res.metrics["train_s"], 1)
            out[f"{method}_generate_s"] = res.metrics["generate_s"]
        out["byorn_over_sft_wall"] = round(walls["byorn"] / walls["sft"], 3)
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}, indent=2))


if __name__ == "__main__":
    main()
