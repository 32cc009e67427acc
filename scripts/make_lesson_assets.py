"""Rebuild the shipped lesson (``assets/lesson``): the default attack's SFT, BYORn-F and BYORn models.

    python scripts/make_lesson_assets.py [--out assets/lesson] [--seed 0]

Deterministic from the seed (the world, the poisoning and the training are
seeded; one CPU thread): two builds give the same files, byte for byte.
Writes ``manifest.json`` with this command, the seed, the build's timings,
and each file's size and SHA-256 (checked by the test suite).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from byorn.lesson import DEFAULT_ATTACK, SHIPPED_SETTING, train_lesson  # noqa: E402
from byorn.lesson.assets import LESSON_DIR, write_manifest  # noqa: E402
from byorn.lesson.build import TIMINGS  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=LESSON_DIR)
    ap.add_argument("--seed", type=int, default=SHIPPED_SETTING.seed)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    setting = replace(SHIPPED_SETTING, seed=args.seed)
    tmp = args.out.with_name(args.out.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    last = [-1.0]

    def progress(f: float, msg: str) -> None:
        if f - last[0] >= 0.05 or f >= 1.0:
            last[0] = f
            logging.info("%3.0f %% %s", 100 * f, msg)

    train_lesson(DEFAULT_ATTACK, setting, tmp, progress=progress)
    command = f"python scripts/make_lesson_assets.py --seed {args.seed}"
    timings = json.loads((tmp / TIMINGS).read_text())
    (tmp / TIMINGS).unlink()  # into the manifest: every shipped file is then reproducible to the byte
    write_manifest(tmp, command=command, seed=args.seed,
                   extra={"attack": DEFAULT_ATTACK.to_dict(), "setting": setting.to_dict(),
                          "build_s": round(time.time() - t0, 1), "timings": timings})
    shutil.rmtree(args.out, ignore_errors=True)
    tmp.replace(args.out)
    logging.info("wrote %s in %.0f s", args.out, time.time() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
