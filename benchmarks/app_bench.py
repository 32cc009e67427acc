"""App speed: time to the first interactive view, and select / decide response times.

    .venv/bin/python benchmarks/app_bench.py [--sizes demo,10000] [--repeats 20]
    .venv/bin/python benchmarks/app_bench.py --bundle-ab   # full vs basic plotly.js, demo

"demo" is the embedded demo (skipped when its assets are missing); a number is
a synthetic audit table of that many samples (app/synthetic.py).  The first
view is timed in Debian chromium (Playwright) from navigation until the sample
map is drawn (plotly.js parsed, overview, counts and map filled); the events
are timed through gradio_client (a full round trip through the queue).
Results go to benchmarks/app_results.json; see benchmarks/APP.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def workspace(size: str):
    if size == "demo":
        from app.loading import demo_workspace
        return demo_workspace()
    from app.synthetic import synthetic_workspace
    return synthetic_workspace(int(size))


_PLOTLY_MS = """() => { const e = performance.getEntriesByType('resource')
  .find(r => r.name.includes('plotly')); return e ? Math.round(e.responseEnd) : null; }"""


def first_view_s(url: str, repeats: int = 3) -> tuple[list[float], list[int]]:
    """Seconds from navigation to the drawn overview, and ms until plotly.js was downloaded."""
    from playwright.sync_api import sync_playwright

    times, plotly_ms = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for _ in range(repeats):
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("#sample-map .byorn-plot .main-svg", timeout=120_000)
            page.wait_for_function("(() => { const e = document.querySelector('#overview-counts');"
                                   " return !!e && e.innerText.includes('flagged'); })()", timeout=120_000)
            times.append(time.perf_counter() - t0)
            plotly_ms.append(page.evaluate(_PLOTLY_MS))
            page.close()
        browser.close()
    return times, plotly_ms


def event_ms(url: str, ws, repeats: int) -> dict[str, float]:
    from gradio_client import Client

    c = Client(url, verbose=False)
    c.predict(api_name="/page_load")
    ids = ws.table.sort_values("score", ascending=False)["id"].tolist()[:repeats]
    out: dict[str, list[float]] = {"select_sample": [], "approve": [], "filter_table": [], "set_threshold": []}
    for sid in ids:
        t = time.perf_counter()
        _, _, _, _, proposal, edit, _ = c.predict(sid, api_name="/select_sample")
        out["select_sample"].append(time.perf_counter() - t)
        t = time.perf_counter()
        c.predict(proposal or "replacement", edit, False, api_name="/approve")
        out["approve"].append(time.perf_counter() - t)
    for _ in range(min(repeats, 5)):
        t = time.perf_counter()
        c.predict("", "", "flagged", [], "", "score", True, api_name="/filter_table")
        out["filter_table"].append(time.perf_counter() - t)
        t = time.perf_counter()
        c.predict("percentile", 0.6, None, "joint", "ground truth", api_name="/set_threshold")
        out["set_threshold"].append(time.perf_counter() - t)
    return {k: round(1000 * statistics.median(v), 1) for k, v in out.items() if v}


def bundle_ab(rounds: int = 2) -> None:
    """First view of the demo with the full plotly.js (from the plotly wheel) against the basic bundle."""
    import plotly

    import app.plotly_html as ph
    from app import build_app, launch
    from app.context import make_context
    from app.loading import demo_workspace

    ws = demo_workspace()
    bundles = {"full": Path(plotly.__file__).parent / "package_data" / "plotly.min.js", "basic": ph.PLOTLY_JS}
    for _ in range(rounds):
        for name, js in bundles.items():
            ph.PLOTLY_JS = js  # read when the app is built
            ctx = make_context(ws, data_dir=Path(tempfile.mkdtemp()))
            demo = build_app(ctx)
            launch(demo, ctx, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
            try:
                views, _ = first_view_s(demo.local_url)
            finally:
                demo.close()
            print(f"{name} ({js.stat().st_size / 2**20:.1f} MB): first view {[round(v, 2) for v in views]} s")
    ph.PLOTLY_JS = bundles["basic"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="demo,10000")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--bundle-ab", action="store_true", help="compare full and basic plotly.js on the demo")
    args = ap.parse_args()
    if args.bundle_ab:
        bundle_ab()
        return
    from app import build_app, launch
    from app.context import make_context

    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "runs": []}
    for size in args.sizes.split(","):
        try:
            t = time.perf_counter()
            ws = workspace(size)
            load_s = time.perf_counter() - t
        except FileNotFoundError as e:
            print(f"skip {size}: {e}")
            continue
        ctx = make_context(ws, data_dir=Path(tempfile.mkdtemp()))
        t = time.perf_counter()
        demo = build_app(ctx)
        launch(demo, ctx, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        start_s = time.perf_counter() - t
        try:
            views, plotly_ms = first_view_s(demo.local_url) if Path(CHROMIUM).exists() else ([], [])
            events = event_ms(demo.local_url, ws, args.repeats)
        finally:
            demo.close()
        row = {"data": size, "samples": len(ws.table), "load_workspace_s": round(load_s, 2),
               "build_and_launch_s": round(start_s, 2),
               "first_view_s": [round(v, 2) for v in views],
               "first_view_median_s": round(statistics.median(views), 2) if views else None,
               "plotly_js_downloaded_ms": plotly_ms,
               "event_median_ms": events}
        print(json.dumps(row))
        results["runs"].append(row)
    out = Path(__file__).with_name("app_results.json")
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
