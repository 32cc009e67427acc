"""The rate sweep's table, figures and target check (issue 19) from its bench rows.

Three methods per (attack, rate, seed): SFT, BYORn as in the paper (rows
``byorn``: mean NLL, p = 0.6) and BYORn by default (rows named by
``byorn.bench.default_label()``: the library's default score and split).
Writes, next to the rows folder:

* ``results.md``: per attack and rate, the seeds each method has, ASR per
  seed, clean CIDEr as a fraction of SFT's (seed by seed, then the mean), the
  share of turns the default split flagged; then every miss of issue 19's
  targets for the default BYORn;
* ``asr_vs_rate.png`` and ``cider_vs_rate.png`` (one panel per attack, the
  mean over seeds as a line, each seed as a dot);
* ``summary.json``: the same figures as numbers.

    python benchmarks/sweep_report.py --rows benchmarks/sweep/rows
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from byorn.bench import default_label  # noqa: E402

SFT, PAPER = "sft", "byorn"
DEFAULT = default_label()
METHODS = {SFT: "SFT", PAPER: "BYORn, paper (mean, p = 0.6)", DEFAULT: f"BYORn by default ({DEFAULT})"}
SHORT = {SFT: "SFT", PAPER: "paper", DEFAULT: "default"}
COLOURS = {SFT: "#6b7280", PAPER: "#d97706", DEFAULT: "#16a34a"}
ASR_MAX, LEARNED = 0.02, 0.5               # the default's ASR bound where SFT learned the backdoor
CIDER_LOW, CIDER_MID = 0.98, 0.95          # the default's CIDEr floor at <= 5 % and at 10-20 % poisoning
SCENARIOS = ("badnets", "vl-trojan", "insertion", "clean-label")   # the sweep's grid (issue 19, item 3)
RATES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)


def load(rows_dir: Path) -> dict[tuple, dict]:
    """Rows of the three methods keyed (scenario, rate, method, seed)."""
    rows = {}
    for path in sorted(Path(rows_dir).glob("*.json")):
        r = json.loads(path.read_text())
        if r.get("defense") in METHODS:  # (bench_meta.json and other files are not rows)
            rows[(r["scenario"], r["rate"], r["defense"], r["seed"])] = r
    return rows


def cells(rows: dict, grid: bool = True) -> list[dict]:
    """One entry per (scenario, rate): per method its seeds, ASR and CIDEr per seed, CIDEr / SFT per seed.
    ``grid``: every cell of the sweep's grid too, rows or not (else only the cells with rows)."""
    keys = sorted({(sc, rate) for sc, rate, _, _ in rows}
                  | ({(sc, rate) for sc in SCENARIOS for rate in RATES} if grid else set()))
    out = []
    for sc, rate in keys:
        e = {"scenario": sc, "rate": rate}
        sft = {s: r for (a, b, m, s), r in rows.items() if (a, b, m) == (sc, rate, SFT)}
        for m in METHODS:
            mine = {s: r for (a, b, mm, s), r in sorted(rows.items()) if (a, b, mm) == (sc, rate, m)}
            e[m] = {"seeds": sorted(mine), "asr": {s: r["asr"] for s, r in mine.items()},
                    "cider": {s: r["clean_value"] for s, r in mine.items()},
                    "cider_vs_sft": {s: r["clean_value"] / sft[s]["clean_value"] for s, r in mine.items()
                                     if s in sft and sft[s]["clean_value"]},
                    "flagged": {s: r["split"]["n_flagged"] / r["split"]["n"] for s, r in mine.items()
                                if r.get("split") and r["split"].get("n")}}
        out.append(e)
    return out


def _mean(d: dict) -> float:
    return float(np.mean(list(d.values()))) if d else math.nan


def _seeds(d: dict, scale: float = 100.0, digits: int = 1) -> str:
    return " / ".join(f"{scale * v:.{digits}f}" for _, v in sorted(d.items())) or "–"


def misses(table: list[dict]) -> list[str]:
    """Every scenario-seed (or cell) where the default BYORn misses a target of issue 19."""
    out = []
    for e in table:
        sc, rate, d = e["scenario"], e["rate"], e[DEFAULT]
        where = f"{sc} at {100 * rate:g} %"
        for s, asr in sorted(d["asr"].items()):
            sft = e[SFT]["asr"].get(s)
            if sft is None:
                out.append(f"{where}, seed {s}: no SFT row, the ASR target cannot be checked")
            elif sft >= LEARNED and asr > ASR_MAX:
                out.append(f"{where}, seed {s}: ASR {100 * asr:.1f} % > {100 * ASR_MAX:g} % (SFT {100 * sft:.1f} %)")
            paper = e[PAPER]["asr"].get(s)
            if abs(rate - 0.1) < 1e-9 and paper is not None and asr > paper:
                out.append(f"{where}, seed {s}: ASR {100 * asr:.1f} % above the paper split's {100 * paper:.1f} %")
        floor = CIDER_LOW if rate <= 0.05 + 1e-9 else CIDER_MID if rate <= 0.2 + 1e-9 else None
        ratio = _mean(d["cider_vs_sft"])
        if floor is not None and math.isfinite(ratio) and ratio < floor:
            out.append(f"{where}: CIDEr {100 * ratio:.1f} % of SFT's < {100 * floor:g} % "
                       f"(seeds {_seeds(d['cider_vs_sft'])} %)")
    return out


def markdown(table: list[dict]) -> str:
    head = ("| attack | rate | seeds (SFT / paper / default) | SFT ASR % | paper ASR % | default ASR % | "
            "paper CIDEr / SFT | default CIDEr / SFT | default flagged % |")
    lines = [head, "|" + "---|" * 9]
    for e in table:
        n = " / ".join(str(len(e[m]["seeds"])) for m in METHODS)
        lines.append(
            f"| {e['scenario']} | {100 * e['rate']:g} % | {n} | {_seeds(e[SFT]['asr'])} | {_seeds(e[PAPER]['asr'])} "
            f"| {_seeds(e[DEFAULT]['asr'])} | {_ratio(e[PAPER])} | {_ratio(e[DEFAULT])} | "
            f"{_seeds(e[DEFAULT]['flagged'])} |")
    short = []
    for e in table:
        few = [f"{SHORT[m]} {len(e[m]['seeds'])}" for m in METHODS if len(e[m]["seeds"]) < 3]
        if few:
            short.append(f"{e['scenario']} {100 * e['rate']:g} % ({', '.join(few)})")
    found = misses(table)
    missed = [m for m in found if "cannot be checked" not in m]
    unchecked = [m for m in found if "cannot be checked" in m]
    checked = sum(len(e[DEFAULT]["seeds"]) for e in table)
    text = ["ASR per seed (seed order 0 / 1 / 2 of the seeds present); CIDEr / SFT: the mean over seeds of each "
            "seed's ratio to SFT's run on the same data.", "", *lines, "",
            f"Cells with fewer than 3 seeds for a method: {'; '.join(short) if short else 'none'}.", "",
            f"Issue 19's targets for the default BYORn, checked on its {checked} scenario-seeds here (cells it has "
            "no row in are not checked): " + ("all met." if not missed else f"{len(missed)} misses:"),
            *[f"- {m}" for m in missed], *([""] + [f"Not checked: {m}" for m in unchecked] if unchecked else [])]
    return "\n".join(text) + "\n"


def _ratio(d: dict) -> str:
    r = d["cider_vs_sft"]
    return f"{100 * _mean(r):.1f} %" if r else "–"


def cost(rows: dict) -> str:
    """BYORn's own extra work, from each run's timings (one process, so one load): bootstrapping (generation)
    and the audit, as fractions of the run's wall time; the conservative same-load ratio wall / (wall -
    generation - audit) (the rest trains the same batches as SFT); the bootstrap cap and how often it bit."""
    lines = ["| method | runs | flagged % (median) | generation / wall | audit / wall | wall / (wall - generation - "
             "audit) | bootstrap cap, tokens | responses at the cap |", "|---|---|---|---|---|---|---|---|"]
    for m in (PAPER, DEFAULT):
        rs = [r for (_, _, mm, _), r in rows.items() if mm == m and r.get("generate_s") is not None]
        if not rs:
            continue
        wall = np.array([r["wall_s"] for r in rs])
        gen, aud = np.array([r["generate_s"] for r in rs]), np.array([r["audit_s"] for r in rs])
        flagged = [r["split"]["n_flagged"] / r["split"]["n"] for r in rs if r.get("split")]
        boot = [r["bootstrap"] for r in rs if r.get("bootstrap") and r["bootstrap"].get("responses")]
        caps = sorted({b["max_new_tokens"] for b in boot})
        at_cap = sum(b["at_cap"] for b in boot) / max(1, sum(b["responses"] for b in boot))
        lines.append(f"| {SHORT[m]} | {len(rs)} | {100 * np.median(flagged):.1f} |" if flagged else
                     f"| {SHORT[m]} | {len(rs)} | 40.0 (p = 0.6) |")
        lines[-1] += (f" {np.median(gen / wall):.3f} | {np.median(aud / wall):.3f} | "
                      f"{np.median(wall / (wall - gen - aud)):.2f}x | {', '.join(map(str, caps)) or '32 (fixed)'} | "
                      + (f"{100 * at_cap:.1f} % |" if boot else "not recorded |"))
    return "\n".join(lines) + "\n"


def figures(table: list[dict], out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = {e["scenario"] for e in table}
    scenarios = [sc for sc in SCENARIOS if sc in present]  # the swept attacks (the rest ran at 10 % only)
    if not scenarios:  # a folder beside the sweep: its own scenarios, at whatever rates it has
        scenarios = sorted(sc for sc in present if len({e["rate"] for e in table if e["scenario"] == sc}) > 1)
    if not scenarios:
        return []
    paths = []
    for kind, methods, ylabel in (("asr", list(METHODS), "attack success rate, %"),
                                  ("cider_vs_sft", [PAPER, DEFAULT], "clean CIDEr / SFT's, %")):
        fig, axes = plt.subplots(1, len(scenarios), figsize=(3.4 * len(scenarios), 3.4), dpi=120, sharey=True,
                                 squeeze=False)
        for ax, sc in zip(axes[0], scenarios):
            es = [e for e in table if e["scenario"] == sc]
            for m in methods:
                pts = [(e["rate"], v) for e in es for v in e[m][kind].values()]
                line = [(e["rate"], _mean(e[m][kind])) for e in es if e[m][kind]]
                if pts:
                    x, y = zip(*pts)
                    ax.scatter([100 * v for v in x], [100 * v for v in y], s=10, alpha=0.5, color=COLOURS[m])
                    x, y = zip(*line)
                    ax.plot([100 * v for v in x], [100 * v for v in y], marker="o", ms=3, color=COLOURS[m],
                            label=METHODS[m])
            if kind == "cider_vs_sft":
                for level in (CIDER_LOW, CIDER_MID):
                    ax.axhline(100 * level, color="#9ca3af", lw=0.8, ls="--")
            ax.set_xscale("log")
            ax.set_xlim(0.8, 62)
            ax.set_xticks([1, 2, 5, 10, 20, 50], ["1", "2", "5", "10", "20", "50"])
            ax.set_title(sc)
            ax.set_xlabel("poison rate, %")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(ylabel)
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        path = out / ("asr_vs_rate.png" if kind == "asr" else "cider_vs_rate.png")
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="benchmarks/sweep/rows", help="folder of bench rows (JSON)")
    ap.add_argument("--present-only", action="store_true",
                    help="only the cells with rows (not the sweep's whole grid): scenarios beside the sweep")
    args = ap.parse_args()
    rows_dir = Path(args.rows)
    out = rows_dir.parent
    rows = load(rows_dir)
    table = cells(rows, grid=not args.present_only)
    md = markdown(table) + "\nCost (medians over runs; each run's parts timed in one process):\n\n" + cost(rows)
    (out / "results.md").write_text(md)
    (out / "summary.json").write_text(json.dumps({"default": DEFAULT, "cells": table, "misses": misses(table)},
                                                 indent=1) + "\n")
    figures(table, out)
    print(md)


if __name__ == "__main__":
    main()
