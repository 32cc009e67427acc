"""Memory and time of loading + auditing N small-image samples with the embedded model.

For each N (default 10k, 30k, 100k) a fresh process loads a LLaVA-JSON set of
N world captions (images as PNG files, decoded lazily in the batch pipeline)
and audits it (scores, split, 2-D maps; proposals optional), and reports its
peak resident memory (``ru_maxrss``) and the wall time of each phase.  Target
(issue 8): peak <= 4 GB, flat in N apart from the table itself.

    python benchmarks/audit_scale.py --out /tmp/scale --sizes 10000,30000,100000
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_data(n: int, out: Path) -> Path:
    """N world captions as LLaVA JSON + PNG files (written once, reused)."""
    from byorn.data.io import save_llava_json
    from byorn.world import make_captions

    path = out / f"world-{n}" / "data.json"
    if not path.exists():
        save_llava_json(make_captions(n, 0, "train"), path.parent)
    return path


def one(path: str, propose: bool, workers: int) -> dict:
    """Load and audit in this process; returns timings and peak RSS."""
    from byorn.audit import AuditConfig, run_audit
    from byorn.data.io import load_dataset
    from byorn.models import VLM

    t0 = time.time()
    ds = load_dataset(path)
    t_load = time.time() - t0
    rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    vlm = VLM.load()
    t1 = time.time()
    audit = run_audit(ds, vlm, AuditConfig(propose=propose, num_workers=workers))
    t_audit = time.time() - t1
    return {"n": len(ds), "load_s": round(t_load, 1), "audit_s": round(t_audit, 1),
            "timings_s": audit.meta["timings_s"], "maps": audit.meta["maps"],
            "rss_after_load_gb": round(rss_load, 3),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
            "table_mb": round(audit.table.memory_usage(deep=True).sum() / 2**20, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/byorn-scale")
    ap.add_argument("--sizes", default="10000,30000,100000")
    ap.add_argument("--propose", action="store_true", help="also generate proposals for the flagged turns")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(args.child, args.propose, args.workers)))
        return 0
    out = Path(args.out)
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        path = make_data(n, out)
        cmd = [sys.executable, __file__, "--child", str(path), "--workers", str(args.workers)]
        if args.propose:
            cmd.append("--propose")
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            print(res.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    (out / "audit_scale.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
