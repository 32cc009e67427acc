"""The embedded demo: a poisoned fine-tuning set of the world, audited.

Shipped in ``assets/demo`` (built by ``scripts/build_demo.py``) so that the
app opens at once: the audit with its UMAP maps is precomputed.  If the
shipped audit no longer matches the data or the embedded model (say the
model was retrained), it is recomputed once and cached.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .attacks import Target
from .audit import Audit, AuditConfig, run_audit, with_ground_truth
from .data import VLDataset
from .models import ASSETS, EMBEDDED_MODEL, VLM, model_identity

logger = logging.getLogger(__name__)

DEMO_DIR = Path(os.environ.get("BYORN_DEMO_DIR", ASSETS / "demo"))
DEMO_ATTACK = "vl-trojan"
DEMO_RATE = 0.1


@dataclass
class Demo:
    dataset: VLDataset
    audit: Audit
    ground_truth: dict[str, bool]
    test_clean: VLDataset
    test_triggered: VLDataset
    target: str
    attack: str
    model_path: Path | None  # None = the embedded model


def load_demo(folder: Path = DEMO_DIR, vlm: VLM | None = None) -> Demo:
    """Load the shipped demo; re-audit (cached) if it is stale."""
    from .data.io import load_dataset

    folder = Path(folder)
    if not (folder / "demo.json").exists():
        raise FileNotFoundError(f"{folder} holds no demo; run `python scripts/build_demo.py`")
    info = json.loads((folder / "demo.json").read_text())
    dataset = load_dataset(folder / "train", name="demo")
    gt = json.loads((folder / "ground_truth.json").read_text())
    audit = Audit.load(folder / "audit")
    if (audit.meta.get("dataset_fingerprint") != dataset.fingerprint()
            or audit.meta.get("model_identity") != model_identity(EMBEDDED_MODEL)):
        logger.warning("shipped demo audit is stale; recomputing (cached)")
        cache = Path(os.environ.get("BYORN_CACHE", Path.home() / ".cache" / "byorn")) / "audits"
        audit = run_audit(dataset, vlm or VLM.load(), AuditConfig(**audit.meta.get("config", {})),
                          ground_truth=gt, cache_dir=cache)
    else:
        audit = with_ground_truth(audit, gt)
    return Demo(dataset, audit, gt, load_dataset(folder / "test_clean", name="demo-test"),
                load_dataset(folder / "test_triggered", name="demo-test-triggered"),
                info["target"], info["attack"], None)


def build_demo(folder: Path = DEMO_DIR, *, n_train: int = 800, n_test: int = 200, seed: int = 0,
               attack: str = DEMO_ATTACK, rate: float = DEMO_RATE) -> Demo:
    """Poison the world, audit it with the embedded model, write it all to ``folder``."""
    from .attacks import get_attack, poison
    from .data.io import save_hf_dataset
    from .world import make_captions

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = Target()
    pr = poison(make_captions(n_train, seed, "train"), get_attack(attack), rate=rate, target=target,
                seed=seed, test=make_captions(n_test, seed, "test"))
    from .data.io import load_dataset

    save_hf_dataset(pr.train, folder / "train")
    vlm = VLM.load()
    # Audit the data as it loads from disk: its fingerprint is of the saved files, which is
    # what load_demo compares (an audit of the in-memory set would read as stale).
    audit = run_audit(load_dataset(folder / "train", name="demo"), vlm, AuditConfig(seed=seed))
    audit.save(folder / "audit")
    save_hf_dataset(make_captions(n_test, seed, "test"), folder / "test_clean")
    save_hf_dataset(pr.triggered_test, folder / "test_triggered")
    (folder / "ground_truth.json").write_text(json.dumps(pr.mask, indent=1))
    (folder / "demo.json").write_text(json.dumps(
        {"attack": attack, "rate": rate, "target": target.text, "seed": seed, "n_train": n_train,
         "n_test": n_test, "poison_config": pr.config, "built_by": "scripts/build_demo.py"}, indent=2))
    return load_demo(folder, vlm)
