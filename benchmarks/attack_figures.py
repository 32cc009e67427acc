"""Figures for the attack scenarios and the ONION / BYE cores on the embedded world.

    python benchmarks/attack_figures.py [--n 500] [--out benchmarks/attack_figures.json]
        [--skip-bye | --only-bye] [--bye-attacks badnets,blend]

1. Per scenario, at 10 % poison on ``n`` training samples: the reference
   model's detection AUROC / AP for each score variant (mean, max, top-k)
   and the mean NLL of poisoned vs clean responses.  Adaptive scenarios are
   built against the reference model (PGD: its NLL before / after).
2. ONION (bar 0 and the 0.99 quantile) on VL-Trojan / text: words removed,
   triggers removed.
3. BYE on models fine-tuned (SFT) on poisoned data (default BadNets and
   Blend): the SFT model's ASR on 100 triggered test samples, sensitive
   layers, detection AUROC of -score, flag precision / recall.

Timings are wall-clock on whatever the machine is doing (shared CPU).
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from byorn.attacks import get_scenario, poison
from byorn.defenses.bye import bye_detect, image_attention_entropy
from byorn.defenses.onion import OnionConfig, onion_clean
from byorn.metrics import detection_by_score, detection_metrics
from byorn.models import VLM
from byorn.world import make_captions

SCENARIOS = ("badnets", "blend", "vl-trojan", "dual-key", "insertion", "concept-insertion", "substitution",
             "aligned-patch", "pgd-patch", "clean-label", "clean-label-sub")


def scenario_detection(ref: VLM, train, rate: float, seed: int) -> dict:
    out = {}
    for name in SCENARIOS:
        t = time.time()
        built = get_scenario(name).build(ref, train, seed=seed)
        res = poison(train, built.attack, rate=rate, target=built.target, seed=seed)
        scores = ref.score([s.image for s in res.train], [s.instruction for s in res.train],
                           [s.response for s in res.train])
        mask = np.array([res.mask[s.id] for s in res.train])
        means = np.array([s.mean for s in scores])
        out[name] = {
            "asr": built.target.asr_variant, "target": built.target.text, "mode": built.target.mode,
            "detection": detection_by_score([s.surprisals for s in scores], mask),
            "nll_poisoned": float(means[mask].mean()), "nll_clean": float(means[~mask].mean()),
            "info": {k: v for k, v in built.info.items() if k not in ("history", "candidate_nll")},
            "seconds": round(time.time() - t, 1)}
        logging.info("%s: %s", name, out[name])
    return out


def onion_figures(ref: VLM, train, rate: float, seed: int) -> dict:
    out = {}
    for attack, trigger in (("vl-trojan", "cf"), ("text", "zbw")):
        built = get_scenario(attack).build()
        res = poison(train, built.attack, rate=rate, target=built.target, seed=seed)
        for label, cfg in (("bar 0", OnionConfig()), ("quantile 0.99", OnionConfig(bar_quantile=0.99))):
            t = time.time()
            _, rep = onion_clean(res.train, ref, cfg)
            hit = sum(trigger in rep.removed_words(i) for i in res.poisoned_ids)
            out[f"{attack} / {label}"] = {
                "words_removed": rep.n_removed, "words": rep.n_words,
                "fraction_removed": round(rep.n_removed / rep.n_words, 4),
                "triggers_removed": f"{hit}/{len(res.poisoned_ids)}", "bar": rep.config["bar"],
                "seconds": round(time.time() - t, 1)}
            logging.info("ONION %s %s: %s", attack, label, out[f"{attack} / {label}"])
    return out


def bye_figures(ref: VLM, train, rate: float, seed: int, epochs: float, attacks) -> dict:
    from byorn.train import TrainConfig, train as fit

    out = {}
    test = make_captions(100, seed, "test")
    for attack in attacks:
        built = get_scenario(attack).build()
        res = poison(train, built.attack, rate=rate, target=built.target, seed=seed, test=test)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.time()
            run = fit(res.train, TrainConfig(method="sft", epochs=epochs, seed=seed, out_dir=f"{tmp}/run"), vlm=ref,
                      eval_triggered=res.triggered_test, target=built.target)
            tuned = VLM.load(run.out_dir / "model")
            train_s = time.time() - t
            t = time.time()
            ent = image_attention_entropy(tuned, list(res.train))
            det = bye_detect(ent, seed=seed)
        mask = np.array([res.mask[s.id] for s in res.train])
        m = detection_metrics(-det.scores, mask, flagged=det.flags)
        out[attack] = {"sft_asr": run.metrics.get("asr"), "layers": det.layers, "fallback": det.fallback,
                       "layer_ratios": [round(d["ratio"], 2) for d in det.layer_stats],
                       "auroc": m["auroc"], "ap": m["ap"], "precision": m["precision"], "recall": m["recall"],
                       "n_flagged": m["n_flagged"], "n_poisoned": m["n_poisoned"],
                       "train_s": round(train_s, 1), "bye_s": round(time.time() - t, 1)}
        logging.info("BYE %s: %s", attack, out[attack])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=float, default=8.0)
    ap.add_argument("--skip-bye", action="store_true")
    ap.add_argument("--only-bye", action="store_true")
    ap.add_argument("--bye-attacks", default="badnets,blend")
    ap.add_argument("--out", default="benchmarks/attack_figures.json")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ref = VLM.load()
    train = make_captions(a.n, a.seed, "train")
    t0 = time.time()
    result = {"n": a.n, "rate": a.rate, "seed": a.seed, "torch_threads": torch.get_num_threads()}
    if not a.only_bye:
        result.update(scenarios=scenario_detection(ref, train, a.rate, a.seed),
                      onion=onion_figures(ref, train, a.rate, a.seed))
    if not a.skip_bye:
        result["bye"] = bye_figures(ref, train, a.rate, a.seed, a.epochs, a.bye_attacks.split(","))
    result["wall_s"] = round(time.time() - t0, 1)
    Path(a.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
