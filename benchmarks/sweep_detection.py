"""What each split flags across the rate sweep's cells, without training (issue 19).

For every (attack, rate, seed) of the sweep, the bench's own cell (same data,
same poison) is audited once by the reference model with the blank-image pass;
the per-turn surprisals (with and without images) and the ground-truth mask
are kept in ``OUT/cells/*.npz``, so that any score and split can be applied to
them again in seconds (``--report-only``) when the split's code changes.  For
the paper's setting (mean, p = 0.6) and the library's default (its score and
split) the report gives the share of turns flagged, the poison's recall (the
share of poisoned turns flagged: what is not flagged trains as given) and the
share of clean turns flagged (what BYORn needlessly replaces).  Ground truth is
read here for the figures only.

    OMP_NUM_THREADS=1 python benchmarks/sweep_detection.py --out benchmarks/sweep_detection --seeds 0
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCENARIOS = ("badnets", "vl-trojan", "insertion", "clean-label")
RATES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def audit_cells(out: Path, seeds: list[int], n_train: int, scenarios=SCENARIOS, rates=RATES) -> None:
    """Audit every cell not saved yet (the slow part: two scoring passes over ``n_train`` samples)."""
    from byorn.audit import AuditConfig, run_audit
    from byorn.bench import poisoned_cell
    from byorn.models import VLM

    ref = VLM.load()
    (out / "cells").mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        for rate in rates:
            for sc in scenarios:
                path = out / "cells" / f"{sc}__r{rate:g}__s{seed}.npz"
                if path.exists():
                    continue
                t = time.time()
                _, _, pr = poisoned_cell(ref, sc, rate, seed, n_train, 200)  # as the bench builds it
                table = run_audit(pr.train, ref, AuditConfig(score="mean", p=0.6, grounding=True, propose=False,
                                                              maps=False)).table
                save_cell(path, [pr.mask[i] for i in table["id"]], table["surprisals"].map(list).tolist(),
                          table["surprisals_blank"].map(list).tolist(), table["response"].tolist(),
                          table["tokens"].map(list).tolist())
                print(f"{path.stem}: {time.time() - t:.0f} s", flush=True)


def save_cell(path: Path, mask, surprisals, blank, responses, tokens=None) -> None:
    """Per-token surprisals as flat float arrays with each turn's length, each turn's response and, where
    given, its tokens (flat, as the surprisals; no pickled objects)."""
    extra = {} if tokens is None else {"tokens": np.array([str(t) for ts in tokens for t in ts], dtype=str)}
    np.savez_compressed(path, mask=np.asarray(mask, dtype=bool), lengths=np.array([len(s) for s in surprisals]),
                        surprisals=np.concatenate([np.asarray(s, dtype=np.float32) for s in surprisals]),
                        blank=np.concatenate([np.asarray(b, dtype=np.float32) for b in blank]),
                        responses=np.array([str(r) for r in responses], dtype=str), **extra)


def load_cell(path: Path) -> tuple[np.ndarray, list, list, list | None]:
    """``(mask, surprisals, blank, responses)`` as :func:`save_cell` wrote them (cells saved before the
    responses were: None)."""
    z = np.load(path, allow_pickle=False)
    cuts = np.cumsum(z["lengths"])[:-1]
    responses = z["responses"].tolist() if "responses" in z.files else None
    return z["mask"], np.split(z["surprisals"], cuts), np.split(z["blank"], cuts), responses


def load_tokens(path: Path) -> list | None:
    """Each turn's response tokens as :func:`save_cell` wrote them (None for cells saved without them)."""
    z = np.load(path, allow_pickle=False)
    if "tokens" not in z.files:
        return None
    return [list(t) for t in np.split(z["tokens"], np.cumsum(z["lengths"])[:-1])]


def split_figures(path: Path) -> dict:
    """Flagged share, poison recall and clean share flagged, for the paper's setting and the default."""
    from byorn.scoring import DEFAULT_SCORE, PAPER_SCORE, aggregate, components
    from byorn.split import DEFAULT_P, PAPER_P, Split

    mask, surprisals, blank, responses = load_cell(path)
    tokens = load_tokens(path)
    out = {}
    for name, score, p in (("paper", PAPER_SCORE, PAPER_P), ("default", DEFAULT_SCORE, DEFAULT_P)):
        parts = components(surprisals, blank, responses=responses, tokens=tokens) \
            if score == "mean+grounding" else None
        flags, split = Split.of(p).apply(aggregate(surprisals, score, blank=blank, responses=responses,
                                                   tokens=tokens), parts)
        out[name] = {"flagged": float(flags.mean()), "recall": float(flags[mask].mean()) if mask.any() else None,
                     "clean_flagged": float(flags[~mask].mean()), "threshold": split.threshold,
                     "reason": split.reason}
    return out


def report(out: Path) -> str:
    lines = ["| attack | rate | seed | paper: flagged % / poison recall % / clean flagged % | "
             "default: flagged % / poison recall % / clean flagged % | default's reason |", "|---|---|---|---|---|---|"]
    rows = []
    for path in sorted((out / "cells").glob("*.npz")):
        sc, rate, seed = path.stem.split("__")
        fig = split_figures(path)
        rows.append({"scenario": sc, "rate": float(rate[1:]), "seed": int(seed[1:]), **fig})
    order = {sc: i for i, sc in enumerate(SCENARIOS)}
    rows.sort(key=lambda r: (order.get(r["scenario"], len(order)), r["scenario"], r["rate"], r["seed"]))
    for r in rows:
        cols = [" / ".join(f"{100 * v:.1f}" for v in (r[k]["flagged"], r[k]["recall"], r[k]["clean_flagged"]))
                for k in ("paper", "default")]
        lines.append(f"| {r['scenario']} | {100 * r['rate']:g} % | {r['seed']} | {cols[0]} | {cols[1]} | "
                     f"{r['default']['reason']} |")
    missed = [r for r in rows if r["default"]["recall"] < 1.0]
    lines += ["", f"The default split leaves poison unflagged in {len(missed)} of {len(rows)} cells: "
              + ("; ".join(f"{r['scenario']} {100 * r['rate']:g} % s{r['seed']} (recall "
                           f"{100 * r['default']['recall']:.1f} %)" for r in missed) or "none") + "."]
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/sweep_detection")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--only", help="one scenario (a quick check)")
    ap.add_argument("--scenarios", help="comma-separated scenarios (default: the sweep's four)")
    ap.add_argument("--rates", help="comma-separated rates (default: the sweep's seven)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    if not args.report_only:
        scenarios = (args.only,) if args.only else tuple(args.scenarios.split(",")) if args.scenarios else SCENARIOS
        rates = tuple(float(r) for r in args.rates.split(",")) if args.rates else RATES
        audit_cells(out, [int(s) for s in args.seeds.split(",")], args.n_train, scenarios, rates)
    print(report(out))


if __name__ == "__main__":
    main()
