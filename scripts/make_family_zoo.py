"""Build the family zoo: a tiny random-weight checkpoint of each supported VLM family.

Offline and seeded; each folder holds the family's real transformers model
and processor classes, saved with save_pretrained (safetensors), and loads
with ``byorn.models.VLM.load(DIR/<family>)`` (or AutoModelForImageTextToText /
AutoProcessor where torchvision is installed):

    python scripts/make_family_zoo.py --out /tmp/zoo
    python scripts/make_family_zoo.py --out /tmp/zoo --families llava,qwen2_vl --seed 1
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from byorn.models import zoo
from byorn.models.loading import has_torchvision


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder to write <family>/ checkpoints into")
    ap.add_argument("--families", default=",".join(zoo.NAMES),
                    help=f"comma-separated subset of: {', '.join(zoo.NAMES)}")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = [n.strip() for n in args.families.split(",") if n.strip()]
    unknown = [n for n in names if n not in zoo.NAMES]
    if unknown:
        ap.error(f"unknown families {unknown}; choose from {', '.join(zoo.NAMES)}")
    if not has_torchvision():
        skipped = [n for n in names if n in zoo.NEEDS_TORCHVISION]
        if skipped and args.families != ",".join(zoo.NAMES):
            ap.error(f"{', '.join(skipped)}: their processors need torchvision, which does not import here")
        if skipped:
            print(f"skipped {', '.join(skipped)}: their processors need torchvision, which does not import here")
        names = [n for n in names if n not in skipped]
    t0 = time.perf_counter()
    paths = zoo.build_zoo(Path(args.out), names, seed=args.seed)
    for name, path in paths.items():
        print(f"{name:12s} {path}")
    print(f"{len(paths)} checkpoints in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
