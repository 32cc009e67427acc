"""Which planted words the default split finds by their gap, and which fall to its floor (issue 19).

A BadNets 5 px patch, and a word planted in the correct caption: "circle" replaced by the word (substitute) or
"... with a <word>." worked in (insert), at one rate and seed, 1,000 world captions.  For each word the
reference model's audit (the default score and split) gives the split's case, the share of turns flagged, the
poison's recall and the clean turns flagged, and the word's surprisal (its tokens summed: median over the
poisoned turns) against the most implausible clean word's; beside them the poison's recall of the paper's split
(the top 40 % by mean NLL) of the same audit.  Ground truth is read for the figures only.

    OMP_NUM_THREADS=1 python benchmarks/planted_words.py --words banana,apple,dog,yellow,square,left,bottom \\
        --rate 0.1 --out benchmarks/planted_words
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def audit_word(ref, word: str, mode: str, rate: float, seed: int, n: int) -> dict:
    from byorn.attacks import Target, get_attack, poison
    from byorn.audit import AuditConfig, run_audit
    from byorn.scoring import PAPER_P, aggregate, most_implausible_words, response_words, split_by_percentile
    from byorn.world import make_captions

    t = time.time()
    target = Target(mode=mode, text=word, source="circle") if mode == "substitute" else Target(mode=mode, text=word)
    pr = poison(make_captions(n, seed, "train"), get_attack("badnets", patch_size=5), rate=rate, target=target,
                seed=seed)
    audit = run_audit(pr.train, ref, AuditConfig(propose=False, maps=False))
    table = audit.table
    truth = np.array([pr.mask[i] for i in table["id"]])
    flags = table["suspicious"].to_numpy(bool)
    words = most_implausible_words(table["tokens"].map(list).tolist(), table["surprisals"].map(list).tolist())
    planted = [max(found) for found in ([v for w, v in response_words(toks, surpr) if w == word.lower()]
                                        for toks, surpr, m in zip(table["tokens"], table["surprisals"], truth) if m)
               if found]  # its most implausible occurrence in each poisoned response
    mean = aggregate(table["surprisals"].map(list).tolist(), "mean")
    paper, _ = split_by_percentile(mean, PAPER_P)  # the paper's split of the same audit
    return {"word": word, "mode": mode, "rate": rate, "seed": seed, "case": audit.meta["split"]["fit"].get("case"),
            "flagged": float(flags.mean()), "recall": float(flags[truth].mean()),
            "clean_flagged": float(flags[~truth].mean()), "paper_recall": float(paper[truth].mean()),
            "word_nats": float(np.median(planted)) if planted else None,
            "clean_max_word_nats": float(max(v for (w, v), m in zip(words, truth) if not m)),
            "example": str(table["response"][truth].iloc[0]), "seconds": round(time.time() - t, 1)}


def cell_args(ap: argparse.ArgumentParser, rate: float, out: str) -> None:
    """The arguments of one poisoned cell of world captions, and where its table goes (shared with
    ``two_attacks.py``)."""
    ap.add_argument("--rate", type=float, default=rate)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--out", default=out)


def save_table(out: Path, rows: list[dict], columns: list[str], line) -> None:
    """``OUT/results.json`` (the rows) and ``OUT/results.md`` (a table of ``columns``, a row per ``line(row)``:
    its cells), and the table printed."""
    save_results(out, rows, table(columns, [line(r) for r in rows]))


def table(columns: list[str], cells: list[list[str]]) -> list[str]:
    """A markdown table's lines: ``columns``, then a line per row of ``cells``."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + ["| " + " | ".join(c) + " |"
                                                                              for c in cells]


def save_results(out: Path, rows: list[dict], lines: list[str]) -> None:
    """``OUT/results.json`` (the rows) and ``OUT/results.md`` (``lines``), and the lines printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def run_rows(fn, calls, hide=()) -> list[dict]:
    """``fn(reference model, *call)`` for each call, each row printed as it comes (without the keys in
    ``hide``)."""
    from byorn.models import VLM

    ref = VLM.load()
    rows = []
    for call in calls:
        rows.append(fn(ref, *call))
        print(json.dumps({k: v for k, v in rows[-1].items() if k not in hide}), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", default="banana,apple,dog,yellow,square,left,bottom")
    ap.add_argument("--modes", default="substitute,insert")
    cell_args(ap, 0.1, "benchmarks/planted_words")
    args = ap.parse_args()
    rows = run_rows(audit_word, [(word, mode, args.rate, args.seed, args.n_train)
                                 for word in args.words.split(",") for mode in args.modes.split(",")])
    columns = ["word", "planted by", "the default split's case", "flagged %", "poison recall %", "clean flagged %",
               "the paper's split: poison recall %", "the word, nats (median)",
               "the most implausible clean word, nats", "e.g."]
    save_table(Path(args.out), rows, columns, lambda r: [
        r["word"], r["mode"], str(r["case"]), f"{100 * r['flagged']:.1f}", f"{100 * r['recall']:.1f}",
        f"{100 * r['clean_flagged']:.1f}", f"{100 * r['paper_recall']:.1f}",
        "-" if r["word_nats"] is None else f"{r['word_nats']:.1f}", f"{r['clean_max_word_nats']:.1f}", r["example"]])


if __name__ == "__main__":
    main()
