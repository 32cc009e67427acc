"""Attacks x methods on the embedded world, measured the same way each time.

For each attack: poison the downstream training split, audit it once with
the reference model (the defense's only view of the data), train every
method, evaluate clean CIDEr and ASR on the triggered test split.  BYORn's
and BYORn-F's wall time includes that audit.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .attacks import Target, get_attack, poison
from .audit import AuditConfig, run_audit
from .evaluate import EvalSuite
from .metrics import detection_metrics
from .models import VLM
from .train import TrainConfig, train
from .world import make_captions

logger = logging.getLogger(__name__)

PAPER_ATTACKS = ("badnets", "blend", "vl-trojan", "dual-key")


@dataclass
class BenchConfig:
    attacks: tuple[str, ...] = field(default=PAPER_ATTACKS, metadata={"help": "attacks to run"})
    methods: tuple[str, ...] = field(default=("sft", "byorn-f", "byorn"), metadata={"help": "methods"})
    rate: float = field(default=0.1, metadata={"help": "poisoning rate"})
    seeds: tuple[int, ...] = field(default=(0,), metadata={"help": "seeds (data, poison and training)"})
    n_train: int = field(default=2000, metadata={"help": "downstream training samples"})
    n_test: int = field(default=300, metadata={"help": "clean test samples"})
    epochs: float = field(default=8.0, metadata={"help": "training epochs"})
    batch_size: int = field(default=32, metadata={"help": "batch size"})
    lr: float = field(default=2e-3, metadata={"help": "learning rate"})
    target: str | None = field(default=None, metadata={"help": "target sentence (None = attacks' default)"})
    model: str | None = field(default=None, metadata={"help": "reference model folder (None = embedded)"})

    @classmethod
    def quick(cls) -> "BenchConfig":
        """The configuration that runs in under 15 minutes on 2 CPU cores."""
        return cls(n_train=1000, n_test=200, epochs=8.0)


def _timed(fn, *args, **kwargs):
    t = time.time()
    out = fn(*args, **kwargs)
    return out, time.time() - t


def run_bench(cfg: BenchConfig, out_dir: Path, progress: Callable[[float, str], None] | None = None) -> list[dict]:
    """Run every (seed, attack, method); write ``results.json`` as rows arrive."""
    report = progress or (lambda f, m: None)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    ref = VLM.load(cfg.model)
    target = Target(mode="replace", text=cfg.target)
    rows: list[dict] = []
    jobs = [(s, a) for s in cfg.seeds for a in cfg.attacks]
    for j, (seed, attack) in enumerate(jobs):
        report(j / len(jobs), f"{attack} seed {seed}")
        clean_train = make_captions(cfg.n_train, seed, "train")
        clean_test = make_captions(cfg.n_test, seed, "test")
        pr = poison(clean_train, get_attack(attack), rate=cfg.rate, target=target, seed=seed, test=clean_test)
        audit, audit_s = _timed(run_audit, pr.train, ref, AuditConfig(propose=False, maps=False))
        mask = [pr.mask[i] for i in audit.table["id"]]
        det = detection_metrics(audit.table["score"], mask, flagged=audit.table["suspicious"])
        for method in cfg.methods:
            run_dir = out_dir / "runs" / f"{attack}-{method}-s{seed}"
            tcfg = TrainConfig(method=method, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                               seed=seed, out_dir=str(run_dir))
            res = train(pr.train, tcfg, vlm=ref, audit=None if method == "sft" else audit,
                        evals=EvalSuite(clean_test, pr.triggered_test, target, pr.extra_tests))
            m = res.metrics
            wall = m["wall_s"] + (audit_s if method != "sft" else 0.0)
            rows.append({
                "attack": attack, "rate": cfg.rate, "method": method, "seed": seed,
                "asr": m.get("asr"), "clean_metric": "cider", "clean_value": m.get("cider"),
                "bleu": m.get("bleu"), "exact_match": m.get("exact_match"),
                "detection_auroc": det["auroc"], "detection_ap": det["ap"],
                "flag_precision": det["precision"], "flag_recall": det["recall"],
                "wall_s": round(wall, 2), "train_s": m.get("train_s"), "generate_s": m.get("generate_s"),
                "audit_s": round(audit_s, 2), "steps": m.get("steps"),
                **{k: v for k, v in m.items() if k.startswith("asr_") and k != "asr_mode"},
            })
            (out_dir / "results.json").write_text(json.dumps(rows, indent=2))
            logger.info("%s %s: ASR %.3f CIDEr %.1f (%.0f s)", attack, method, m.get("asr", float("nan")),
                        m.get("cider", float("nan")), wall)
    report(1.0, "done")
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "config": asdict(cfg)}
    (out_dir / "bench_meta.json").write_text(json.dumps(meta, indent=2))
    return rows


def write_markdown(rows: list[dict], path: Path) -> str:
    """A Markdown table of the rows, plus the BYORn / SFT wall-time ratio."""
    lines = ["| attack | method | ASR % | CIDEr | BLEU | detection AUROC | wall s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['attack']} | {r['method']} | {100 * r['asr']:.1f} | {r['clean_value']:.1f} | "
                     f"{r['bleu']:.1f} | {r['detection_auroc']:.3f} | {r['wall_s']:.0f} |")
    sft = {(r["attack"], r["seed"]): r for r in rows if r["method"] == "sft"}
    ratios = [r["wall_s"] / sft[(r["attack"], r["seed"])]["wall_s"] for r in rows
              if r["method"] == "byorn" and (r["attack"], r["seed"]) in sft]
    if ratios:
        lines.append("")
        lines.append(f"BYORn / SFT wall time (audit included): {sum(ratios) / len(ratios):.2f}x "
                     f"(per attack: {', '.join(f'{x:.2f}' for x in ratios)})")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text
