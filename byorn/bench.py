"""The paper's comparison on the embedded world: scenarios x defenses x poison rates x seeds.

For each cell (scenario, rate, seed): build the scenario (adaptive ones
optimise against the reference model on the training split), poison the
downstream training split, audit it once with the reference model (the
defense's only view of the data; detection is reported for every score
variant), then train every defense and evaluate the clean metric and ASR on
the triggered test split.  BYORn's and BYORn-F's wall time includes the audit.

Resumable: each finished run is one JSON row under ``rows/``; a restarted
bench skips finished runs and resumes an interrupted training run from its
checkpoint.  :func:`summarise` gives mean and standard deviation per
(scenario, rate, defense), :func:`write_report` the Markdown tables and the
trade-off figure (ASR against the clean metric, one point per run).
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .audit import AuditConfig, run_audit
from .evaluate import EvalSuite
from .metrics import detection_by_score, detection_metrics
from .scoring import DEFAULT_SCORE, PAPER_SCORE, SCORE_METHODS
from .split import AUTO, DEFAULT_P, PAPER_P, parse_p
from .models import VLM
from .train import TrainConfig, train
from .world import make_captions

logger = logging.getLogger(__name__)

PAPER_SCENARIOS = ("badnets", "blend", "vl-trojan", "dual-key")
ALL_SCENARIOS = PAPER_SCENARIOS + ("insertion", "substitution", "aligned-patch", "pgd-patch", "clean-label")
ALL_DEFENSES = ("sft", "byorn-f", "byorn", "onion", "bye")
ALL_RATES = (0.01, 0.05, 0.1, 0.2, 0.5)


@dataclass
class BenchConfig:
    scenarios: tuple[str, ...] = field(default=ALL_SCENARIOS, metadata={"help": "scenarios (attack + target)"})
    defenses: tuple[str, ...] = field(default=ALL_DEFENSES, metadata={"help": "defenses"})
    rates: tuple[float, ...] = field(default=ALL_RATES, metadata={"help": "poisoning rates"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "seeds (data, poison and training)"})
    n_train: int = field(default=1000, metadata={"help": "downstream training samples"})
    n_test: int = field(default=200, metadata={"help": "clean test samples"})
    epochs: float = field(default=8.0, metadata={"help": "training epochs"})
    batch_size: int = field(default=32, metadata={"help": "batch size"})
    lr: float = field(default=2e-3, metadata={"help": "learning rate"})
    score: str = field(default=DEFAULT_SCORE, metadata={
        "help": f"the score BYORn and BYORn-F flag by, one of {SCORE_METHODS} (the paper: mean); detection is "
                "reported for every score either way"})
    p: float | str = field(default=DEFAULT_P, metadata={
        "help": "their split: 'auto' or a percentile (the paper: 0.6). Rows of the paper's setting (mean, 0.6) "
                "are named byorn, others byorn@<score>[@auto|@p<p>] (defense_label)"})
    model: str | None = field(default=None, metadata={"help": "reference model folder (None = embedded)"})

    def __post_init__(self) -> None:
        from .attacks import get_scenario
        from .defenses import DEFENSES

        for name in self.scenarios:
            get_scenario(name)  # raises on an unknown scenario
        unknown = [d for d in self.defenses if d not in DEFENSES]
        if unknown:
            raise ValueError(f"unknown defense(s) {unknown}; known: {sorted(DEFENSES)}")
        self.p = parse_p(self.p)
        if self.score not in SCORE_METHODS:
            raise ValueError(f"score must be one of {SCORE_METHODS}, got {self.score!r}")
        if not self.seeds or any(not 0.0 < r < 1.0 for r in self.rates):
            raise ValueError("give at least one seed, and rates in (0, 1)")

    @classmethod
    def quick(cls) -> "BenchConfig":
        """The configuration that runs in under 15 minutes on 2 CPU cores."""
        return cls(scenarios=PAPER_SCENARIOS, defenses=("sft", "byorn-f", "byorn"), rates=(0.1,), seeds=(0,))

    def label(self, defense: str) -> str:
        """How ``defense``'s rows are named under this configuration (:func:`defense_label`)."""
        return defense_label(defense, self.score, self.p)

    def runs(self) -> list[tuple[str, float, int, str]]:
        return [(sc, r, s, d) for s in self.seeds for r in self.rates for sc in self.scenarios for d in self.defenses]


AUDITED_DEFENSES = ("byorn-f", "byorn")  # the defenses that train on the audit's flags


def defense_label(defense: str, score: str = PAPER_SCORE, p: float | str = PAPER_P) -> str:
    """How a run is named in rows and tables.  An audited defense in the paper's setting (the mean score, split
    at p = 0.6) is plain ``byorn``; another score adds ``@<score>``, another split ``@auto`` or ``@p<p>``:
    ``byorn@grounding`` (p = 0.6), ``byorn@mean+grounding@auto`` (the library's default since issue 19).
    Each row also records its ``score``, ``p`` and the ``split`` the audit chose."""
    if defense not in AUDITED_DEFENSES:
        return defense
    parts = [defense] + ([score] if score != PAPER_SCORE else [])
    if p != PAPER_P:
        parts.append(AUTO if p == AUTO else f"p{p:g}")
    return "@".join(parts)


def default_label(defense: str = "byorn") -> str:
    """The label of ``defense`` run with the library's default score and split."""
    return defense_label(defense, DEFAULT_SCORE, DEFAULT_P)


def _base(label: str) -> str:
    return label.split("@", 1)[0]


def row_name(scenario: str, rate: float, defense: str, seed: int) -> str:
    return f"{scenario}__r{rate:g}__{defense}__s{seed}"


def run_bench(cfg: BenchConfig, out_dir: Path, progress: Callable[[float, str], None] | None = None) -> list[dict]:
    """Run every (scenario, rate, seed, defense) not finished yet; rows land in ``out_dir/rows``."""
    report = progress or (lambda f, m: None)
    out_dir = Path(out_dir)
    (out_dir / "rows").mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    ref = VLM.load(cfg.model)
    t0 = time.time()
    cells = sorted({(sc, r, s) for sc, r, s, _ in cfg.runs()}, key=lambda c: (c[2], c[1], cfg.scenarios.index(c[0])))
    total = len(cfg.runs())
    done = 0
    for scenario, rate, seed in cells:
        todo = [d for d in cfg.defenses
                if not (out_dir / "rows" / f"{row_name(scenario, rate, cfg.label(d), seed)}.json").exists()]
        done += len(cfg.defenses) - len(todo)
        if not todo:
            continue
        report(done / total, f"{scenario} {rate:g} seed {seed}")
        cell = _Cell(cfg, ref, scenario, rate, seed)
        for defense in todo:
            name = row_name(scenario, rate, cfg.label(defense), seed)
            row = cell.run(defense, out_dir / "runs" / name)
            (out_dir / "rows" / f"{name}.json").write_text(json.dumps(row, indent=1))
            done += 1
            report(done / total, f"{scenario} {rate:g} {defense} seed {seed}: ASR {row['asr']:.3f}")
            logger.info("%s %g %s s%d: ASR %.3f %s %.1f (%.0f s)", scenario, rate, defense, seed, row["asr"],
                        row["clean_metric"], row["clean_value"], row["wall_s"])
    report(1.0, "done")
    rows = load_rows(out_dir)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "config": asdict(cfg),
            "wall_s_this_session": round(time.time() - t0, 1), "n_rows": len(rows),
            "bench_wall_s_total": round(sum(r["wall_s"] + r.get("cell_s", 0.0) for r in rows), 1)}
    (out_dir / "bench_meta.json").write_text(json.dumps(meta, indent=2))
    return rows


def poisoned_cell(ref: VLM, scenario: str, rate: float, seed: int, n_train: int, n_test: int):
    """The data of one bench cell, built from its seed: ``(clean_test, built_scenario, poison_result)``."""
    from .attacks import get_scenario, poison

    clean_train = make_captions(n_train, seed, "train")
    clean_test = make_captions(n_test, seed, "test")
    built = get_scenario(scenario).build(ref, list(clean_train), seed)
    pr = poison(clean_train, built.attack, rate=rate, target=built.target, seed=seed, test=clean_test)
    return clean_test, built, pr


def audit_cell(ref: VLM, pr, score: str = PAPER_SCORE, p: float | str = PAPER_P):
    """The reference model's audit of a cell's poisoned training split: ``(audit, detection of its flags,
    detection_by_score)``.  ``audit.meta["bench_audit_s"]`` is the time of that audit alone, as the defense
    needs it; a score that needs no blank-image pass gets one afterwards, untimed, so that detection is
    reported for the grounding scores too.

    Ground truth (``pr.mask``) is read here for the figures only; the audit itself never sees it.
    """
    t = time.time()
    audit = run_audit(pr.train, ref, AuditConfig(score=score, p=p, propose=False, maps=False))
    audit.meta["bench_audit_s"] = round(time.time() - t, 2)
    table = audit.table
    blanked = table if "surprisals_blank" in table.columns else run_audit(
        pr.train, ref, AuditConfig(score=score, p=p, grounding=True, propose=False, maps=False)).table
    mask = [pr.mask[i] for i in table["id"]]
    return (audit, detection_metrics(table["score"], mask, flagged=table["suspicious"]),
            detection_by_score(blanked["surprisals"].tolist(), mask, blank=blanked["surprisals_blank"].tolist(),
                               responses=blanked["response"].astype(str).tolist(),
                               tokens=blanked["tokens"].map(list).tolist()))


class _Cell:
    """One (scenario, rate, seed): poisoned data, the reference audit, and the defenses trained on it."""

    def __init__(self, cfg: BenchConfig, ref: VLM, scenario: str, rate: float, seed: int):
        t = time.time()
        self.cfg, self.ref, self.seed = cfg, ref, seed
        self.clean_test, self.built, self.pr = poisoned_cell(ref, scenario, rate, seed, cfg.n_train, cfg.n_test)
        self.scenario = scenario
        self.rate = rate
        t_build = time.time() - t
        self.audit, self.detection, self.detection_by_score = audit_cell(ref, self.pr, cfg.score, cfg.p)
        self.audit_s = self.audit.meta["bench_audit_s"]
        self.cell_s = t_build  # building the scenario (PGD, clean-label search) is the attacker's cost
        self.evals = EvalSuite(self.clean_test, self.pr.triggered_test, self.built.target, self.pr.extra_tests)

    def run(self, defense: str, run_dir: Path) -> dict:
        cfg = self.cfg
        uses_audit = defense in AUDITED_DEFENSES
        tcfg = TrainConfig(method=defense, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=self.seed,
                           score=cfg.score if uses_audit else None, out_dir=str(run_dir), checkpoint_every=50)
        resume = (run_dir / "checkpoint" / "state.json").exists() and not (run_dir / "metrics.json").exists()
        if run_dir.exists() and not resume:
            shutil.rmtree(run_dir)  # interrupted before its first checkpoint: start it again
        res = train(self.pr.train, tcfg, vlm=self.ref, audit=self.audit if uses_audit else None, evals=self.evals,
                    resume=resume)
        m = res.metrics
        wall = m["wall_s"] + (self.audit_s if uses_audit else 0.0)
        return {
            "scenario": self.scenario, "rate": self.rate, "defense": cfg.label(defense),
            "score": cfg.score if uses_audit else None, "p": cfg.p if uses_audit else None,
            "split": _jsonable(self.audit.split_info.to_dict()) if uses_audit else None, "seed": self.seed,
            "asr": m.get("asr"), "asr_mode": m.get("asr_mode"), "clean_metric": m.get("clean_metric", "cider"),
            "clean_value": m.get("clean_value"), "cider": m.get("cider"), "bleu": m.get("bleu"),
            "n_poisoned": len(self.pr.poisoned_ids), "detection_auroc": self.detection["auroc"],
            "detection_ap": self.detection["ap"], "flag_precision": self.detection["precision"],
            "flag_recall": self.detection["recall"],
            "detection_by_score": self.detection_by_score, "wall_s": round(wall, 2), "cell_s": round(self.cell_s, 2),
            "train_s": m.get("train_s"), "generate_s": m.get("generate_s"), "audit_s": round(self.audit_s, 2),
            "steps": m.get("steps"), "bootstrap": m.get("bootstrap"), "scenario_info": _jsonable(self.built.info),
            **{k: v for k, v in m.items() if k.startswith("asr_") and k != "asr_mode"},
        }


def _jsonable(info: dict) -> dict:
    """``info`` as JSON values: numpy numbers and arrays become numbers and lists, other objects None."""
    return json.loads(json.dumps(info, default=lambda o: o.tolist() if hasattr(o, "tolist") else None))


def load_rows(out_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(out_dir) / "rows").glob("*.json"))]


# ------------------------------------------------------------------------ summary --

def summarise(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation (over seeds) per (scenario, rate, defense)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["scenario"], r["rate"], r["defense"]), []).append(r)
    out = []
    for (sc, rate, d), rs in groups.items():
        entry = {"scenario": sc, "rate": rate, "defense": d, "n_seeds": len(rs),
                 "clean_metric": rs[0].get("clean_metric", "cider")}
        for key in ("asr", "clean_value", "wall_s", "detection_auroc"):
            vals = np.array([r[key] for r in rs if r.get(key) is not None], dtype=float)
            entry[key] = float(vals.mean()) if len(vals) else math.nan
            entry[f"{key}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        for method in SCORE_METHODS:
            vals = [r["detection_by_score"][method]["auroc"] for r in rs
                    if method in (r.get("detection_by_score") or {})]
            entry[f"auroc_{method}"] = float(np.mean(vals)) if vals else math.nan
        out.append(entry)
    return out


def _pm(mean: float, std: float, scale: float = 1.0, digits: int = 1) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def write_report(rows: list[dict], out_dir: Path) -> str:
    """``results.md`` (per-cell mean ± std, detection by score, wall-time ratios) and ``tradeoff.png``."""
    out_dir = Path(out_dir)
    summary = summarise(rows)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    metric = summary[0]["clean_metric"] if summary else "cider"
    lines = [f"| scenario | rate | defense | seeds | ASR % | {metric} | detection AUROC "
             f"({' / '.join(SCORE_METHODS)}) | wall s |", "|---|---|---|---|---|---|---|---|"]
    for e in sorted(summary, key=lambda e: (e["scenario"], e["rate"], _order(e["defense"]), e["defense"])):
        det = " / ".join(f"{e[f'auroc_{m}']:.3f}" if math.isfinite(e[f"auroc_{m}"]) else "n/a"
                         for m in SCORE_METHODS)
        lines.append(f"| {e['scenario']} | {100 * e['rate']:g} % | {e['defense']} | {e['n_seeds']} | "
                     f"{_pm(e['asr'], e['asr_std'], 100)} | {_pm(e['clean_value'], e['clean_value_std'])} | {det} | "
                     f"{e['wall_s']:.0f} |")
    for label, ratios in _wall_ratios(rows).items():
        name = "BYORn" if label == "byorn" else label
        lines += ["", f"{name} / SFT wall time (audit included): {np.mean(ratios):.2f}x mean over {len(ratios)} "
                      f"cells (min {min(ratios):.2f}, max {max(ratios):.2f})"]
    text = "\n".join(lines) + "\n"
    (out_dir / "results.md").write_text(text)
    tradeoff_figure(rows, out_dir / "tradeoff.png")
    return text


def _order(label: str) -> int:
    return ALL_DEFENSES.index(_base(label)) if _base(label) in ALL_DEFENSES else 99


def _wall_ratios(rows: list[dict]) -> dict[str, list[float]]:
    """Wall time of each BYORn variant (``byorn``, ``byorn@...``) over SFT's in the same cell and seed."""
    sft = {(r["scenario"], r["rate"], r["seed"]): r["wall_s"] for r in rows if r["defense"] == "sft"}
    out: dict[str, list[float]] = {}
    for r in sorted(rows, key=lambda r: r["defense"]):
        k = (r["scenario"], r["rate"], r["seed"])
        if _base(r["defense"]) == "byorn" and sft.get(k):
            out.setdefault(r["defense"], []).append(r["wall_s"] / sft[k])
    return out


DEFENSE_COLOURS = {"sft": "#6b7280", "byorn-f": "#2563eb", "byorn": "#16a34a", "onion": "#d97706", "bye": "#9333ea"}


def tradeoff_figure(rows: list[dict], path: Path) -> Path | None:
    """ASR against the clean metric, one point per run, coloured by defense (PNG, matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no trade-off figure")
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for d in sorted({r["defense"] for r in rows}, key=lambda d: (_order(d), d)):
        pts = [(r["clean_value"], 100 * r["asr"]) for r in rows if r["defense"] == d and r.get("clean_value") is not None]
        if pts:
            x, y = zip(*pts)
            ax.scatter(x, y, s=18, alpha=0.7, label=d, color=DEFENSE_COLOURS.get(d),
                       marker="o" if d == _base(d) else "^")
    metric = rows[0].get("clean_metric", "cider") if rows else "cider"
    ax.set_xlabel(f"{metric} on the clean test set (higher is better)")
    ax.set_ylabel("attack success rate, % (lower is better)")
    ax.set_ylim(-5, 105)
    ax.grid(alpha=0.3)
    ax.legend(title="defense", fontsize=8)
    ax.set_title("One point per run: every scenario, rate and seed")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
