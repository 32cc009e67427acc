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
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
from planted_words import cell_args, run_rows, save_table  # noqa: E402


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
    cell_args(ap, 0.05, "benchmarks/two_attacks")
    args = ap.parse_args()
    rows = run_rows(audit_pair, [(args.first, second, args.rate, args.seed, args.n_train)
                                 for second in args.second.split(",")], hide=("reason",))
    columns = ["attacks", "poisoned turns", "recall of each %", "clean turns flagged", "flagged %", "the split's case"]
    save_table(Path(args.out), rows, columns, lambda r: [
        f"{r['first']} + {r['second']} ({100 * r['rate']:g} % each, seed {r['seed']})",
        f"{r['n_first']} + {r['n_second']}",
        f"{100 * r['recall_first']:.1f} / {100 * r['recall_second']:.1f}", str(r["clean_flagged"]),
        f"{100 * r['flagged']:.1f}", str(r["case"])])


if __name__ == "__main__":
    main()
