"""Two attacks in one training set: what the default split flags of each (issue 19).

A fixed clean-label target (the ``clean-label`` scenario) and a second attack (``--second``: BadNets,
VL-Trojan, insertion, substitution ...) poison the same 1,000 world captions, each at ``--rate`` (the second
never re-poisons a sample of the first).  The reference model's audit, with the default score and split,
gives each attack's recall, the clean turns flagged and the split's reason.  Ground truth is read for the
figures only.

    OMP_NUM_THREADS=1 python benchmarks/two_attacks.py --second badnets,vl-trojan,insertion,substitution \\
        --rate 0.05 --out benchmarks/two_attacks

``--train``: SFT and the default BYORn are trained on each set as ``byorn bench`` trains (8 epochs, 200 test
captions), and each attack's ASR is measured on its own triggered test set, with the clean CIDEr.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
from planted_words import cell_args, run_rows, save_table  # noqa: E402


def audit_pair(ref, first: str, second: str, rate: float, seed: int, n: int, train_out: Path | None = None) -> dict:
    from byorn.attacks import get_scenario, poison
    from byorn.audit import AuditConfig, run_audit
    from byorn.world import make_captions

    train = make_captions(n, seed, "train")
    test = make_captions(200, seed, "test")
    b1 = get_scenario(first).build(ref, list(train), seed)
    p1 = poison(train, b1.attack, rate=rate, target=b1.target, seed=seed, test=test)
    b2 = get_scenario(second).build(ref, list(p1.train), seed + 1)
    p2 = poison(p1.train, b2.attack, rate=rate, target=b2.target, seed=seed + 1, test=test)
    audit = run_audit(p2.train, ref, AuditConfig(propose=False, maps=False))
    ids = audit.table["id"]
    m2 = np.array([bool(p2.mask[i]) for i in ids])
    m1 = np.array([bool(p1.mask[i]) for i in ids]) & ~m2
    flags = audit.table["suspicious"].to_numpy(bool)
    split = audit.meta["split"]
    row = {"first": first, "second": second, "rate": rate, "seed": seed, "n_first": int(m1.sum()),
           "n_second": int(m2.sum()), "recall_first": float(flags[m1].mean()),
           "recall_second": float(flags[m2].mean()), "clean_flagged": int(flags[~(m1 | m2)].sum()),
           "flagged": float(flags.mean()), "case": split["fit"].get("case"), "reason": split["reason"]}
    if train_out is not None:
        for defense in ("sft", "byorn"):
            row[defense] = train_and_measure(ref, p2.train, audit if defense == "byorn" else None, defense, seed,
                                             test, [(p1.triggered_test, b1.target), (p2.triggered_test, b2.target)],
                                             train_out / f"{first}+{second}__r{rate:g}__s{seed}__{defense}")
    return row


def train_and_measure(ref, data, audit, defense: str, seed: int, test, attacks, out: Path) -> dict:
    """Train ``defense`` as the bench does; ``{"asr": [one per attack], "cider": clean CIDEr, "wall_s"}``."""
    from byorn.bench import BenchConfig
    from byorn.evaluate import EvalSuite, evaluate
    from byorn.models import VLM
    from byorn.scoring import DEFAULT_SCORE
    from byorn.train import TrainConfig, train

    cfg = BenchConfig()
    tcfg = TrainConfig(method=defense, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed,
                       score=DEFAULT_SCORE if audit is not None else None, out_dir=str(out))
    res = train(data, tcfg, vlm=ref, audit=audit, evals=EvalSuite(test, attacks[-1][0], attacks[-1][1]))
    tuned = VLM.load(out / "model")
    asr = [float(evaluate(tuned, EvalSuite(None, triggered, target))["asr"]) for triggered, target in attacks[:-1]]
    return {"asr": asr + [float(res.metrics["asr"])], "cider": float(res.metrics["cider"]),
            "wall_s": float(res.metrics["wall_s"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first", default="clean-label")
    ap.add_argument("--second", default="badnets,vl-trojan,insertion,substitution")
    cell_args(ap, 0.05, "benchmarks/two_attacks")
    ap.add_argument("--train", action="store_true", help="train SFT and the default BYORn on each set too")
    args = ap.parse_args()
    runs = Path(args.out) / "runs" if args.train else None
    rows = run_rows(audit_pair, [(args.first, second, args.rate, args.seed, args.n_train, runs)
                                 for second in args.second.split(",")], hide=("reason",))
    columns = ["attacks", "poisoned turns", "recall of each %", "clean turns flagged", "flagged %", "the split's case"]
    if args.train:
        columns += ["SFT: ASR of each %", "default BYORn: ASR of each %", "default CIDEr / SFT's"]
    save_table(Path(args.out), rows, columns, lambda r: [
        f"{r['first']} + {r['second']} ({100 * r['rate']:g} % each, seed {r['seed']})",
        f"{r['n_first']} + {r['n_second']}",
        f"{100 * r['recall_first']:.1f} / {100 * r['recall_second']:.1f}", str(r["clean_flagged"]),
        f"{100 * r['flagged']:.1f}", str(r["case"])] + ([
            " / ".join(f"{100 * a:.1f}" for a in r["sft"]["asr"]),
            " / ".join(f"{100 * a:.1f}" for a in r["byorn"]["asr"]),
            f"{100 * r['byorn']['cider'] / r['sft']['cider']:.1f} %"] if "sft" in r else []))


if __name__ == "__main__":
    main()
