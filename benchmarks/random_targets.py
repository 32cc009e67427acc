"""Fixed clean-label targets the sweep does not use: what the default split flags (issue 19).

The sweep's clean-label target is the caption of another scene that the reference model finds likeliest. Here
the target is a caption drawn at random from other scenes (``--targets`` of them, seeded), given with the
BadNets patch to ``--rates`` of 1,000 world captions; for each cell the default audit's case, the poison's
recall, the clean turns flagged, and the shared groups it found (turns, variants) or flagged besides the
floor.  Ground truth is read for the figures only.

    OMP_NUM_THREADS=2 python benchmarks/random_targets.py --out benchmarks/random_targets
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
from planted_words import run_rows, save_table  # noqa: E402


def audit_target(ref, text: str, rate: float, seed: int) -> dict:
    from byorn.attacks import Target, get_attack, poison
    from byorn.audit import AuditConfig, run_audit
    from byorn.world import make_captions

    pr = poison(make_captions(1000, seed, "train"), get_attack("badnets"), rate=rate,
                target=Target(mode="replace", text=text), seed=seed)
    audit = run_audit(pr.train, ref, AuditConfig(propose=False, maps=False))
    truth = np.array([pr.mask[i] for i in audit.table["id"]])
    flags = audit.table["suspicious"].to_numpy(bool)
    fit = audit.meta["split"]["fit"]
    return {"target": text, "rate": rate, "seed": seed, "case": fit.get("case"),
            "recall": float(flags[truth].mean()), "clean_flagged": float(flags[~truth].mean()),
            "shared": [[g["n"], g.get("n_variants", 0)] for g in fit.get("shared", [])],
            "weakly_shared": [g["n"] for g in fit.get("weakly_shared", [])]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=4)
    ap.add_argument("--rates", default="0.01,0.05,0.2")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/random_targets")
    args = ap.parse_args()
    from byorn.world import make_captions

    pool = [s.response for s in make_captions(300, 77, "train")]  # captions of scenes outside the cells' data
    texts = np.random.default_rng(args.seed).choice(pool, args.targets, replace=False)
    rows = run_rows(audit_target, [(str(text), float(rate), 10 + j) for j, text in enumerate(texts)
                                   for rate in args.rates.split(",")])
    columns = ["target", "rate", "seed", "case", "poison recall %", "clean flagged %", "shared: turns (+ variants)",
               "flagged besides the floor"]
    save_table(Path(args.out), rows, columns, lambda r: [
        r["target"], f"{100 * r['rate']:g} %", str(r["seed"]), str(r["case"]), f"{100 * r['recall']:.0f}",
        f"{100 * r['clean_flagged']:.1f}", ", ".join(f"{n} (+{v})" for n, v in r["shared"]) or "-",
        ", ".join(str(n) for n in r["weakly_shared"]) or "-"])


if __name__ == "__main__":
    main()
