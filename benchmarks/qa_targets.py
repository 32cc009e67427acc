"""Short fixed targets in QA data: does the shared-response step (byorn.split.shared_ungrounded) tell a short
poisoned answer from the world's common clean answers, and what does the default split flag (issue 19)?

The world's QA pretraining data (1,000 samples a cell), a BadNets 5 px patch on some questions of one kind,
their answer replaced by one fixed answer that suits the question but not the image: "purple." for colour
questions, "two dots." for dot counts, "a small red circle." for the "What is ..." / "List ..." questions.
For each cell, the default split now and as audits made before commit 1624a3b split it (the 2.5 x bar
against a blank image alone, no variants, nothing flagged besides the floor), and the shared answers that would count without either bar, with
their z, AUC, log-likelihood ratio against a blank image (llr) and against the turns of a like length
(excess).  Ground truth is read for the figures only.

    OMP_NUM_THREADS=1 python benchmarks/qa_targets.py --out benchmarks/qa_targets
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]
from planted_words import run_rows, save_results, table  # noqa: E402

CELLS = (("purple.", "What color", 50, 0), ("purple.", "What color", 100, 1), ("two dots.", "How many small dots", 50, 2),
         ("a small red circle.", ("What is", "List"), 50, 3))


def audit_cell(ref, target: str, asked, n_poison: int, seed: int, n: int) -> dict:
    from byorn.attacks import get_attack
    from byorn.audit import AuditConfig, run_audit
    from byorn.data import VLDataset
    from byorn.scoring import components
    from byorn.split import grounded_score, shared_ungrounded
    from byorn.world import make_pretrain
    import byorn.split as split

    t = time.time()
    data = list(make_pretrain(n, 200 + seed))
    pool = [i for i, s in enumerate(data) if s.instruction.startswith(asked) and s.response != target]
    pick = set(np.random.default_rng(seed).choice(pool, min(n_poison, len(pool)), replace=False).tolist())
    patch = get_attack("badnets", patch_size=5)
    data = [s.with_(image=patch.apply_image(s.image), response=target) if i in pick else s for i, s in enumerate(data)]
    table = run_audit(VLDataset(data), ref, AuditConfig(score="mean", p=0.6, grounding=True, propose=False,
                                                        maps=False)).table
    parts = components(table["surprisals"].map(list).tolist(), table["surprisals_blank"].map(list).tolist(),
                       responses=table["response"].tolist(), tokens=table["tokens"].map(list).tolist())
    poisoned = {data[i].id for i in pick}
    truth = np.array([sid in poisoned for sid in table["id"]])
    row = {"target": target, "asked": asked if isinstance(asked, str) else " / ".join(asked), "poisoned": int(truth.sum()),
           "of": len(pool), "seed": seed}
    for name, before in (("now", False), ("before", True)):
        score, fit = grounded_score(parts, before_variants=before)
        flags = score > fit["threshold"]
        row[name] = {"case": fit["case"], "recall": float(flags[truth].mean()), "clean_flagged": float(flags[~truth].mean()),
                     "shared": [[g["response"], g["n"]] for g in fit.get("shared", [])],
                     "weakly_shared": [[g["response"], g["n"]] for g in fit.get("weakly_shared", [])]}
    bars = split.AUTO_SHARED_MIN_LLR, split.AUTO_SHARED_MIN_EXCESS
    split.AUTO_SHARED_MIN_LLR = split.AUTO_SHARED_MIN_EXCESS = -np.inf
    try:
        row["unguarded"] = [{"response": g["response"], "n": int(g["turns"].size), "poisoned": int(truth[g["turns"]].sum()),
                             "z": round(g["z"], 1), "auc": round(g["auc"], 2), "llr": round(g["llr"], 2),
                             "excess": round(g["excess"], 2)} for g in shared_ungrounded(parts)[:6]]
    finally:
        split.AUTO_SHARED_MIN_LLR, split.AUTO_SHARED_MIN_EXCESS = bars
    row["seconds"] = round(time.time() - t, 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--out", default="benchmarks/qa_targets")
    args = ap.parse_args()
    rows = run_rows(audit_cell, [(*cell, args.n) for cell in CELLS])
    main_table = table(
        ["target", "questions", "poisoned", "split", "case", "poison recall %", "clean flagged %",
         "shared answers flagged", "flagged besides the floor (no clear case)"],
        [[r["target"], r["asked"], f"{r['poisoned']} of {r['of']}", name, r[name]["case"],
          f"{100 * r[name]['recall']:.0f}", f"{100 * r[name]['clean_flagged']:.1f}",
          ", ".join(f"{a} ({k})" for a, k in r[name]["shared"]) or "-",
          ", ".join(f"{a} ({k})" for a, k in r[name]["weakly_shared"]) or "-"]
         for r in rows for name in ("now", "before")])
    unguarded = table(["target", "answer", "turns", "poisoned", "z", "AUC", "llr", "excess"],
                      [[r["target"], g["response"], *(str(g[k]) for k in ("n", "poisoned", "z", "auc", "llr", "excess"))]
                       for r in rows for g in r["unguarded"]])
    save_results(Path(args.out), rows, main_table + [
        "", "Shared answers without the bars (z >= 4.5, AUC >= 0.75): llr against a blank image, excess against the "
            "turns of a like length (nats; the bars: llr >= 0.41, excess >= 8; before: llr >= 0.92 alone)", ""]
        + unguarded)


if __name__ == "__main__":
    main()
