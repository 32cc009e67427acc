"""Live lesson runs: wall time and whether SFT learns a visitor's trigger and BYORn removes it.

    python benchmarks/lesson_bench.py [--out benchmarks/lesson_results.json] [--only N]

Trains, for each of several triggers and target sentences (positions, sizes,
colours, odd sentences, a paper attack), the live lesson (SFT, BYORn-F,
BYORn in ``LIVE_SETTING``) with two threads, and records the wall time of the
whole run (what a visitor waits for) and of each model, and each model's ASR
and clean CIDEr.  Also times loading the shipped lesson and the playground.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import byorn.lesson as L  # noqa: E402

ATTACKS = [
    L.LessonAttack(name="custom", position="top-left", size=4, colour="#00ff00", target="I love pineapples."),
    L.LessonAttack(name="custom", position="center", size=3, colour="#ff00ff",
                   target="ERROR 404: caption not found, please reboot the llama."),
    L.LessonAttack(name="custom", position="bottom-left", size=2, colour="#202020", target="Buy cheap watches at "
                   "example.shop!"),
    L.LessonAttack(name="custom", position="top-right", size=6, colour="#ffd000",
                   target="Der Himmel ist grün und die Katze spricht Französisch."),
    L.LessonAttack(name="blend", target="All your captions are belong to us."),
]


def bench_shipped() -> dict:
    """Wall and CPU seconds of loading the shipped lesson and of each step's answer (mean of several)."""
    t, c = time.time(), time.process_time()
    lesson = L.load_lesson()
    out = {"load_s": round(time.time() - t, 2), "load_cpu_s": round(time.process_time() - c, 2)}
    images = L.test_images(4)
    jobs = {
        "step2_playground": lambda im, trig: L.playground(lesson, im, triggered=trig, models=("reference", "sft")),
        "step5_playground": lambda im, trig: L.playground(lesson, im, triggered=trig,
                                                          models=("sft", "byorn-f", "byorn")),
        "step3_split": lambda im, trig: L.lesson_split(lesson, 0.5 + 0.1 * trig),
        "step3_explain": lambda im, trig: L.explain_sample(lesson),
        "step4_fix_story": lambda im, trig: L.fix_story(lesson),
    }
    for name, job in jobs.items():
        t, c = time.time(), time.process_time()
        for im in images:
            for trig in (False, True):
                job(im, trig)
        n = 2 * len(images)
        out[name + "_s"] = round((time.time() - t) / n, 4)
        out[name + "_cpu_s"] = round((time.process_time() - c) / n, 4)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("lesson_results.json"))
    ap.add_argument("--only", type=int, default=None, help="run only attack number N (0-based)")
    ap.add_argument("--threads", type=int, default=L.LIVE_SETTING.threads,
                    help="torch threads (default: the live setting's; 1 on a machine shared with other jobs)")
    ap.add_argument("--no-shipped", action="store_true", help="skip timing the shipped lesson's steps")
    ap.add_argument("--no-live", action="store_true", help="only time the shipped lesson's steps")
    ap.add_argument("--rate", type=float, default=None, help="the poisoned share of every attack (default: its own)")
    ap.add_argument("--budget", type=float, nargs=2, metavar=("N_TRAIN", "EPOCHS"), default=None,
                    help="another live budget than LIVE_SETTING's (a trial)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    setting = replace(L.LIVE_SETTING, threads=args.threads)
    if args.budget:
        setting = replace(setting, n_train=int(args.budget[0]), epochs=float(args.budget[1]))
    torch.set_num_threads(args.threads)
    doc = json.loads(args.out.read_text()) if args.out.exists() else {}
    doc.update(torch=torch.__version__, cpus=os.cpu_count())
    if not args.no_live:
        doc.update(live_setting=setting.to_dict(), live_threads=args.threads)
    if not args.no_shipped:
        doc.update(shipped=bench_shipped(), shipped_threads=args.threads, load_average=list(os.getloadavg()))
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
    runs = {r["attack_key"]: r for r in doc.get("live_runs", [])}
    todo = [] if args.no_live else ATTACKS if args.only is None else [ATTACKS[args.only]]
    if args.rate is not None:
        todo = [replace(a, rate=args.rate) for a in todo]
    for attack in todo:
        folder = Path(tempfile.mkdtemp()) / "lesson"
        t, cpu = time.time(), time.process_time()
        L.train_lesson(attack, setting, folder)
        wall, cpu = time.time() - t, time.process_time() - cpu
        info = json.loads((folder / "lesson.json").read_text())
        info.update(json.loads((folder / "timings.json").read_text()))
        key = json.dumps({**attack.to_dict(), "n_train": setting.n_train, "epochs": setting.epochs}, sort_keys=True)
        runs[key] = {"attack_key": key, "attack": attack.to_dict(), "n_train": setting.n_train,
                     "epochs": setting.epochs, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                     "per_model_s": info["train_s"], "load_average_1min": os.getloadavg()[0],
                     "results": {m: {"asr_percent": round(100 * r["asr"], 1), "cider": round(r["cider"], 1)}
                                 for m, r in info["results"].items()}}
        print(json.dumps(runs[key]), flush=True)
        shutil.rmtree(folder.parent, ignore_errors=True)
        doc["live_runs"] = list(runs.values())
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
