"""A class opens the Space at once: N concurrent visitors walk the Lesson tab on the shipped models.

The app (``python app.py``, the embedded demo, exactly what a Space runs) is
served in a child process; N visitors (threads here, plain HTTP through the
queue protocol, ``tests/served_app.py``'s ``Session``) each load the page as
a browser does (``GET /``, then every load event and the events chained
after them: none since the Lesson's step 1 is in the page and the expert tabs
load when a visitor first leaves the Lesson), then walk the six
steps: next x 5, the trigger off and on in both playgrounds, step 3's
percentile, step 4's sample, step 6's second limit, and back twice, with a
think time of 0.5-2 s between events.  Every event's round trip is timed;
any failed request (an error answer, a dropped stream, a timeout) counts.

    python benchmarks/lesson_load.py --visitors 50 --out benchmarks/lesson_load.json

Targets (issue 18): 0 failed requests, each step's answer p90 <= 3 s on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from served_app import Session, free_port  # noqa: E402

import httpx  # noqa: E402


def start_server(data_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_SERVER_NAME": "127.0.0.1", "BYORN_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT),
           "GRADIO_TEMP_DIR": str(data_dir / "gradio-tmp")}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    end = time.time() + 300
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/config", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the app did not start in 5 minutes")


class Page:
    """What a browser does on page load: every load event, then the events chained after each (the Lesson
    needs none: step 1 is in the page, and the expert tabs load when the visitor first leaves it)."""

    def __init__(self, config: dict):
        self.deps = {d["id"]: d for d in config["dependencies"]}
        self.comps = {c["id"]: c for c in config["components"]}
        self.loads = [d["id"] for d in config["dependencies"] if any(t[1] == "load" for t in d["targets"])]
        self.after: dict[int, list[int]] = {}
        for d in config["dependencies"]:
            if d.get("trigger_after") is not None:
                self.after.setdefault(d["trigger_after"], []).append(d["id"])

    def inputs(self, dep_id: int) -> list:
        out = []
        for i in self.deps[dep_id]["inputs"]:
            c = self.comps.get(i, {})
            out.append(None if c.get("type") in ("state", "browserstate") else c.get("props", {}).get("value"))
        return out

    def load(self, s: Session, record) -> None:
        # one after the other: a session's results come over one event stream at a time
        for i in self.loads:
            self._chain(s, i, record)

    def _chain(self, s: Session, dep_id: int, record) -> None:
        name = self.deps[dep_id].get("api_name") or f"fn{dep_id}"
        ok = record("page load: the lesson's step 1" if name == "lesson_open" else "page load: other load events",
                    lambda: s.call_id(dep_id, self.inputs(dep_id)))
        for nxt in self.after.get(dep_id, []) if ok else []:
            self._chain(s, nxt, record)


class VisitorSession(Session):
    def call_id(self, fn_id: int, data: list):
        name = next((k for k, v in self.fns.items() if v == fn_id), None)
        if name is None:  # a private event (no api name): call it by id
            self.fns[f"/fn{fn_id}"] = fn_id
            name = f"/fn{fn_id}"
        return self.call(name, data)


def visitor(url: str, fns: dict, page: Page, sample_id: str, stats: dict, lock: threading.Lock,
            rng: random.Random, think: tuple[float, float]) -> None:
    s = VisitorSession(url, dict(fns), timeout=120)

    def record(kind: str, fn) -> bool:
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:  # every failure counts, whatever it is
            with lock:
                stats["failures"].append(f"{kind}: {type(e).__name__}: {str(e)[:200]}")
            return False
        with lock:
            stats["times"].setdefault(kind, []).append(time.perf_counter() - t0)
        return True

    def step(kind: str, api: str, data: list) -> None:
        time.sleep(rng.uniform(*think))
        record(kind, lambda: s.call(api, data))

    try:
        # the page itself: its HTML carries the app's config, step 1's content included (drawn at start)
        record("page load: the page, step 1 in it", lambda: httpx.get(url + "/", timeout=120).raise_for_status())
        page.load(s, record)
        step("step 2 (next)", "/lesson_next", [None])
        step("step 2: trigger off", "/lesson_trigger_2", [None, False])
        step("step 2: trigger on", "/lesson_trigger_2", [None, True])
        step("step 3 (next)", "/lesson_next", [None])
        step("step 3: percentile", "/lesson_split", [None, rng.choice([55, 70, 80, 90])])
        step("step 4 (next)", "/lesson_next", [None])
        step("step 4: sample", "/lesson_history", [None, sample_id])
        step("step 5 (next)", "/lesson_next", [None])
        step("step 5: trigger off", "/lesson_trigger_5", [None, False])
        step("step 5: trigger on", "/lesson_trigger_5", [None, True])
        step("step 6 (next)", "/lesson_next", [None])
        step("step 6: limit", "/lesson_limit", [None, "rate"])
        step("back (previous)", "/lesson_prev", [None])
        step("back (previous)", "/lesson_prev", [None])
    finally:
        s.close()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--visitors", type=int, default=50)
    ap.add_argument("--think", type=float, nargs=2, default=(0.5, 2.0), help="seconds between a visitor's events")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "lesson_load.json")
    ap.add_argument("--work", type=Path, default=Path("/tmp/byorn-lesson-load"))
    args = ap.parse_args(argv)

    from app.lesson.steps import history_choices
    from byorn.lesson import load_lesson

    other = os.environ.get("BYORN_LESSON_DIR")  # another lesson folder than the shipped one (development)
    sample_id = history_choices(load_lesson(other, verify=not other))[1][1]
    args.work.mkdir(parents=True, exist_ok=True)
    proc, url = start_server(args.work / f"data-{os.getpid()}", args.work / "server.log")
    try:
        config = httpx.get(url + "/config", timeout=30).json()
        fns = {"/" + d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name")}
        page = Page(config)
        time.sleep(75)  # the app's own warm-ups settle first (the lesson's models; UMAP compiles 20 s after start)
        stats: dict = {"times": {}, "failures": []}
        lock = threading.Lock()
        load_before = os.getloadavg()
        t0 = time.time()
        threads = [threading.Thread(target=visitor, args=(url, fns, page, sample_id, stats, lock,
                                                          random.Random(args.seed * 1000 + i), tuple(args.think)))
                   for i in range(args.visitors)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.time() - t0
        load_after = os.getloadavg()
    finally:
        proc.kill()
        proc.wait(30)
    kinds = {k: {"n": len(v), "p50_s": round(statistics.median(v), 3), "p90_s": round(pct(v, 0.9), 3),
                 "max_s": round(max(v), 3)} for k, v in stats["times"].items()}
    result = {"visitors": args.visitors, "think_s": list(args.think), "wall_s": round(wall, 1),
              "requests": sum(len(v) for v in stats["times"].values()) + len(stats["failures"]),
              "failures": len(stats["failures"]), "failure_examples": stats["failures"][:10],
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in load_after], "cpus": os.cpu_count(),
              "when": time.strftime("%Y-%m-%d %H:%M"), "events": kinds}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
