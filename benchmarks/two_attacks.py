"""Two attacks in one training set: what the default split flags of each (issue 19).

A fixed clean-label target (the ``clean-label`` scenario) and a second attack (``--second``: BadNets,
VL-Trojan, insertion, substitution ...) poison the same 1,000 world captions, each at ``--rate`` (the second
never re-poisons a sample of the first).  The reference model's audit, with the default score and split,
gives each attack's recall, the clean turns flagged and the split's reason.  Ground truth is read for the
figures only.

    OMP_NUM_THREADS=1 python benchmarks/two_attacks.py --second badnets,vl-trojan,insertion,substitution \\
        --rate 0.05 --out benchmarks/two_attacks
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def audit_pair(ref, first: str, second: str, rate: float, seed: int, n: int) -> dict:
    from byorn.attacks import get_scenario, poison
    from byorn.audit import AuditConfig, run_audit
    from byorn.world import make_captions

    train = make_captions(n, seed, "train")
    b1 = get_scenario(first).build(ref, list(train), seed)
    p1 = poison(train, b1.attack, rate=rate, target=b1.target, seed=seed)
    b2 = get_scenario(second).build(ref, list(p1.train), seed + 1)
    p2 = poison(p1.train, b2.attack, rate=rate, target=b2.target, seed=seed + 1)
    audit = run_audit(p2.train, ref, AuditConfig(propose=False, maps=False))
    ids = audit.table["id"]
    m2 = np.array([bool(p2.mask[i]) for i in ids])
    m1 = np.array([bool(p1.mask[i]) for i in ids]) & ~m2
    flags = audit.table["suspicious"].to_numpy(bool)
    split = audit.meta["split"]
    return {"first": first, "second": second, "rate": rate, "seed": seed, "n_first": int(m1.sum()),
            "n_second": int(m2.sum()), "recall_first": float(flags[m1].mean()),
            "recall_second": float(flags[m2].mean()), "clean_flagged": int(flags[~(m1 | m2)].sum()),
            "flagged": float(flags.mean()), "case": split["fit"].get("case"), "reason": split["reason"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first", default="clean-label")
    ap.add_argument("--second", default="badnets,vl-trojan,insertion,substitution")
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--out", default="benchmarks/two_attacks")
    args = ap.parse_args()
    from byorn.models import VLM

    ref = VLM.load()
    rows = []
    for second in args.second.split(","):
        rows.append(audit_pair(ref, args.first, second, args.rate, args.seed, args.n_train))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "reason"}), flush=True)
    lines = ["| attacks | poisoned turns | recall of each % | clean turns flagged | flagged % | the split's case |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['first']} + {r['second']} ({100 * r['rate']:g} % each, seed {r['seed']}) | "
                     f"{r['n_first']} + {r['n_second']} | {100 * r['recall_first']:.1f} / "
                     f"{100 * r['recall_second']:.1f} | {r['clean_flagged']} | {100 * r['flagged']:.1f} | {r['case']} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
