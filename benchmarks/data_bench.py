"""Data loading at scale: 1M LLaVA records, memory at 10k / 30k / 100k samples, fingerprints.

    .venv/bin/python benchmarks/data_bench.py [--quick] [--work DIR] [--out benchmarks/data_results.json]

* ``llava_1m``: a synthetic LLaVA JSON of 1,000,000 two-turn records (references
  only: five image files, each referenced 200,000 times), loaded with
  ``check_images="exists"`` (the default) and ``"none"``.
* ``rss``: peak RSS of loading N samples, N = 10k / 30k / 100k, each with its own
  32x32 PNG file (LLaVA JSON + image files) or embedded (a ``datasets`` folder:
  the bytes are held in memory, not decoded); bytes per sample over a baseline
  process that imported everything and loaded one sample.
* ``fingerprint``: the dataset fingerprint cold (hashing every byte) and cached
  (a stat pass over the files) in a fresh process each.

Every measurement runs in a fresh subprocess (peak RSS = its ``ru_maxrss``).
``--quick`` divides the sizes by 10.  Results go to ``--out``; see benchmarks/DATA.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------- child --

def child(path: str, options: dict, cache: str, fingerprint: bool) -> dict:
    """Load ``path`` (and fingerprint it) in this process; times and peak RSS."""
    os.environ["BYORN_CACHE"] = cache
    from byorn.data.io import load_dataset

    t0 = time.perf_counter()
    ds = load_dataset(path, **options)
    t1 = time.perf_counter()
    out = {"n": len(ds), "load_s": round(t1 - t0, 2), "rss_after_load_mb": _rss_mb()}
    if fingerprint:
        fp = ds.fingerprint()
        out.update(fingerprint=fp, fingerprint_s=round(time.perf_counter() - t1, 2))
    out["peak_rss_mb"] = _rss_mb()
    return out


def _rss_mb() -> float:
    """Peak RSS of this process in MiB: VmHWM (ru_maxrss would carry the forking parent's peak over exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_child(path: Path, cache: Path, fingerprint: bool = False, **options) -> dict:
    cmd = [sys.executable, __file__, "--child", str(path), "--options", json.dumps(options),
           "--cache", str(cache)] + (["--fingerprint"] if fingerprint else [])
    res = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(res.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------- generators --

def write_llava_json(path: Path, n: int, image_of) -> Path:
    rng = random.Random(0)
    with open(path, "w") as f:
        f.write("[")
        for i in range(n):
            rec = {"id": f"s{i:07d}", "image": image_of(i), "conversations": [
                {"from": "human", "value": f"<image>\nWhat colour is shape {rng.randrange(1000)}?"},
                {"from": "gpt", "value": f"It is a red square, sample {i}, at {rng.randrange(100)}."},
                {"from": "human", "value": "Anything else?"},
                {"from": "gpt", "value": f"A small circle near corner {rng.randrange(4)}."}]}
            f.write(("\n" if i == 0 else ",\n") + json.dumps(rec))
        f.write("\n]\n")
    return path


def write_pngs(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(n):
        p = folder / f"{i:07d}.png"
        if not p.exists():
            Image.new("RGB", (32, 32), (rng.randrange(256), rng.randrange(256), i % 256)).save(p)


# ------------------------------------------------------------------- bench --

def bench_1m(work: Path, n: int) -> dict:
    write_pngs(work / "img5", 5)
    path = write_llava_json(work / f"llava_{n}.json", n, lambda i: f"img5/{i % 5:07d}.png")
    out = {"records": n, "file_mb": round(path.stat().st_size / 2**20, 1)}
    cache = work / "cache_1m"
    for check in ("exists", "none"):
        out[f"check_{check}"] = run_child(path, cache, check_images=check)
    out["fingerprint_cold"] = run_child(path, cache, fingerprint=True)
    out["fingerprint_cached"] = run_child(path, cache, fingerprint=True)
    return out


def bench_rss(work: Path, sizes: list[int]) -> dict:
    write_pngs(work / "img", max(sizes))
    base_json = write_llava_json(work / "llava_1.json", 1, lambda i: f"img/{i:07d}.png")
    if not (work / "hf_1").exists():
        _save_hf(base_json, work / "hf_1")
    # what a process holds before any sample: interpreter, imports (datasets for the folder), one sample
    out = {"baseline": {"llava_json": run_child(base_json, work / "cache_base"),
                        "hf_dataset": run_child(work / "hf_1", work / "cache_base")}}
    for n in sizes:
        path = write_llava_json(work / f"llava_n{n}.json", n, lambda i: f"img/{i:07d}.png")
        cache = work / f"cache_{n}"
        row = {"llava_json": run_child(path, cache)}
        row["fingerprint_cold"] = run_child(path, cache, fingerprint=True)
        row["fingerprint_cached"] = run_child(path, cache, fingerprint=True)
        hf = work / f"hf_{n}"
        if not hf.exists():
            _save_hf(path, hf)
        row["hf_dataset"] = run_child(hf, cache)
        out[str(n)] = row
    for n in sizes:
        for fmt in ("llava_json", "hf_dataset"):
            r = out[str(n)][fmt]
            base = out["baseline"][fmt]["peak_rss_mb"]
            r["bytes_per_sample"] = round((r["peak_rss_mb"] - base) * 2**20 / n)
    return out


def _save_hf(src: Path, dest: Path) -> None:
    """The same samples as a ``datasets`` folder (in a subprocess: this one stays small)."""
    code = ("import sys; from byorn.data.io import load_dataset, save_hf_dataset; "
            "save_hf_dataset(load_dataset(sys.argv[1], fingerprint_cache=False), sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(src), str(dest)], check=True, cwd=ROOT,
                   capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="sizes / 10")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one, kept)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "data_results.json"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    ap.add_argument("--fingerprint", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, json.loads(a.options), a.cache, a.fingerprint)))
        return
    div = 10 if a.quick else 1
    work = Path(a.work or tempfile.mkdtemp(prefix="byorn-data-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "load_average_start": os.getloadavg()}, "work": str(work)}
    t = time.time()
    results["llava_1m"] = bench_1m(work, 1_000_000 // div)
    print(json.dumps(results["llava_1m"], indent=1), flush=True)
    results["rss"] = bench_rss(work, [10_000 // div, 30_000 // div, 100_000 // div])
    print(json.dumps(results["rss"], indent=1), flush=True)
    results["machine"]["load_average_end"] = os.getloadavg()
    results["machine"]["wall_s"] = round(time.time() - t)
    Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
