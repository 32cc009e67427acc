"""App speed at 100k samples and on the demo: first view, events, map interaction, gallery, trigger map.

    .venv/bin/python benchmarks/app_bench.py                      # everything (a few minutes)
    .venv/bin/python benchmarks/app_bench.py --parts big --n 100000
    .venv/bin/python benchmarks/app_bench.py --parts demo

``big``: a synthetic audit of ``--n`` samples, 30 % of them conversations of
2-3 exchanges (``app/synthetic.py``; ~1.45 rows per sample), built before the
server starts (the "cached audit"):

* first interactive view, in Debian chromium (Playwright): navigation until
  the WebGL map is drawn, with the timeline (plotly.js in, map data in, drawn);
* events through the Gradio queue (``gradio_client`` / HTTP, a full round
  trip): open a turn, decide, filter, page, map selection (a bitmask of the
  poisoned blob), bulk preview over it, gallery page;
* map interaction in the browser: frame intervals while panning and while
  drawing a lasso (``requestAnimationFrame``), and from releasing the lasso to
  the selection's counts on the page (through the server).

``demo``: the embedded demo: first view; the gallery of 200 thumbnails (from
the tab click until every image has loaded, cold then warm); a trigger map of
one poisoned sample (reference model, cold cache); candidates (k=4) for 320
flagged turns with a run's model (the embedded model saved as a run).

The server, the browser, the map's helpers and the page's queue protocol
(``Session``: events in plain HTTP) come from ``tests/served_app.py``, the
tests' harness.  Results go to benchmarks/app_results.json; see benchmarks/APP.md.  Nothing
here asserts a speed: the machine is shared, so the load average is recorded.
"""
from __future__ import annotations

import argparse
import base64
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the app, and the served-app harness (tests/served_app.py)

from served_app import (MAP, Session, launch_browser, new_page, pan_map, pixels_of, serve_workspace,  # noqa: E402
                        start_frames, stop_frames, trace_lasso, wait_map)


def med(xs) -> float | None:
    return round(statistics.median(xs), 1) if xs else None


def p95(xs) -> float | None:
    return round(sorted(xs)[min(len(xs) - 1, int(math.ceil(0.95 * len(xs))) - 1)], 1) if xs else None


# -- browser -----------------------------------------------------------------------------------
_TIMELINE = """() => { const d = document.querySelector('%s').dataset;
  const pl = performance.getEntriesByType('resource').find(r => r.name.includes('plotly'));
  return {plotly_in_ms: pl ? Math.round(pl.responseEnd) : null, map_data_in_ms: +d.valueAt,
          map_drawn_ms: +d.drawnAt, draw_ms: +d.drawnMs, points: +d.points}; }""" % MAP


def first_views(browser, url: str, repeats: int = 3) -> list[dict]:
    out = []
    for _ in range(repeats):
        page = new_page(browser)
        t0 = time.perf_counter()
        page.goto(url)
        page.get_by_role("tab", name="Overview").click()  # the app opens on the Lesson
        wait_map(page, 180_000)
        page.wait_for_function("() => /flagged/.test((document.querySelector('#overview-counts') || {}).innerText || '')",
                               timeout=180_000)
        out.append({"first_view_s": round(time.perf_counter() - t0, 2), **page.evaluate(_TIMELINE)})
        page.close()
    return out


def blob_centre(page, rows) -> tuple[float, float]:
    """Client pixel of the middle of ``rows`` on the map (the median point)."""
    pts = pixels_of(page, rows)
    xs, ys = sorted(p[0] for p in pts), sorted(p[1] for p in pts)
    return xs[len(xs) // 2], ys[len(ys) // 2]


def map_interaction(browser, url: str, blob: list[int]) -> dict:
    """Frame intervals while panning / drawing a lasso around ``blob`` (rows), and release -> counts shown."""
    page = new_page(browser)
    page.goto(url)
    page.get_by_role("tab", name="Overview").click()  # the app opens on the Lesson
    wait_map(page, 180_000)
    el = page.locator(MAP)
    el.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    cx, cy = blob_centre(page, blob)
    result = {}
    # lasso: ~40 mouse moves around the blob
    start_frames(page)
    trace_lasso(page, cx, cy, 90, 70, 40)
    page.evaluate("() => { window.__released = performance.now(); }")
    page.mouse.up()
    frames = stop_frames(page)
    page.wait_for_function("() => /Selection/.test(document.querySelector('#selection-counts').innerText)",
                           timeout=60_000)
    shown = page.evaluate("() => performance.now() - window.__released")
    d = page.evaluate(f"() => document.querySelector('{MAP}').dataset")
    result["lasso"] = {"frame_median_ms": med(frames), "frame_p95_ms": p95(frames), "frames": len(frames),
                       "points_tested_ms": float(d.get("testMs", "nan")),
                       "highlight_ms": float(d.get("highlightMs", "nan")), "selected": int(d.get("selected", 0)),
                       "release_to_counts_shown_ms": round(shown, 1),
                       "counts": page.locator("#selection-counts").inner_text()}
    page.screenshot(path=str(Path(tempfile.gettempdir()) / "byorn-bench-lasso.png"))
    # pan: switch the map's mode, drag across
    frames, moved = pan_map(page, blob[0], cx - 200, cy + 150, 160, 80, 40)
    result["pan"] = {"frame_median_ms": med(frames), "frame_p95_ms": p95(frames), "frames": len(frames),
                     "longest_ms": sorted(round(f) for f in frames)[-3:],
                     "redraw_after_release_ms": int(page.evaluate(f"() => document.querySelector('{MAP}').dataset.redrawMs")),
                     "point_moved_px": [round(moved[0], 1), round(moved[1], 1)]}
    page.close()
    return result


def gallery_times(browser, url: str, repeats: int = 2) -> list[dict]:
    """Tab click -> 200 thumbnails loaded; the first time renders the thumbnail files."""
    out = []
    page = new_page(browser)
    page.goto(url)
    page.get_by_role("tab", name="Overview").click()  # the app opens on the Lesson
    page.wait_for_function("() => /flagged/.test((document.querySelector('#overview-counts') || {}).innerText || '')",
                           timeout=180_000)
    page.wait_for_timeout(2000)  # the table's default filter (flagged: 320 of the demo's 800) fills a page of 200
    for _ in range(repeats):
        page.get_by_role("tab", name="Overview").click()
        page.wait_for_timeout(300)
        t0 = time.perf_counter()
        page.get_by_role("tab", name="Gallery").click()
        # 200 cards on the page, and every thumbnail in the window loaded (the rest load lazily on scroll)
        page.wait_for_function("() => { const im = document.querySelectorAll('#gallery img'); if (im.length < 200) return false;"
                               " return Array.from(im).every(i => i.getBoundingClientRect().top > innerHeight"
                               " || (i.complete && i.naturalWidth > 0)); }", timeout=60_000)
        shown = time.perf_counter() - t0
        for _ in range(12):  # scroll down the page so the lazy thumbnails load
            page.mouse.wheel(0, 800)
            page.wait_for_timeout(50)
        page.wait_for_function("() => Array.from(document.querySelectorAll('#gallery img'))"
                               ".every(i => i.complete && i.naturalWidth > 0)", timeout=60_000)
        out.append({"gallery_200_shown_s": round(shown, 3), "all_200_loaded_s": round(time.perf_counter() - t0, 3),
                    "cards": page.evaluate("() => document.querySelectorAll('#gallery .byorn-card').length")})
        page.evaluate("() => window.scrollTo(0, 0)")
    page.close()
    return out


# -- events ------------------------------------------------------------------------------------
def event_ms(url: str, ws, repeats: int) -> dict:
    """Median / p95 round trips of the events, in plain HTTP (queue join + SSE result), as the page does."""
    import numpy as np

    page = Session(url, timeout=120)  # one page's session (served_app: the queue protocol)
    page.call("/page_load", [None])
    t = ws.table
    out: dict[str, list[float]] = {}

    def timed(name, data, event_data=None):
        t0 = time.perf_counter()
        res = page.call(name, [None, *data], event_data)  # raises when the event fails
        out.setdefault(name, []).append(1000 * (time.perf_counter() - t0))
        return res

    flt = ["", "", "flagged", [], "", "score", True, False]
    for k in t.sort_values("score", ascending=False)["key"].tolist()[:repeats]:
        shown = timed("select_sample", [k])
        timed("approve", [shown[5] or "replacement", shown[6], False])
    for _ in range(repeats):
        timed("filter_table", flt)
        timed("next_page", [])
    for _ in range(repeats):
        t0 = time.perf_counter()
        page.call("/filter_table", [None, "", "", "all", [], "evil", "id", False, False])
        out.setdefault("filter_search", []).append(1000 * (time.perf_counter() - t0))
    x, y = t["umap_joint_x"].to_numpy(), t["umap_joint_y"].to_numpy()
    rows = np.flatnonzero((x > 3) & (y > 3))
    bits = np.zeros(len(t), dtype=bool)
    bits[rows] = True
    mask = base64.b64encode(np.packbits(bits, bitorder="little").tobytes()).decode()
    for _ in range(repeats):
        timed("map_select", [], {"mask": mask, "count": len(rows), "how": "lasso"})
        timed("selection_bulk_preview", ["drop"])
        timed("gallery", ["current filter"])
    timed("selection_bulk_confirm", [])
    page.close()
    summary = {k: {"median_ms": med(v), "p95_ms": p95(v), "n": len(v)} for k, v in out.items()}
    summary["selection_rows"] = int(len(rows))
    return summary


# -- the parts ---------------------------------------------------------------------------------
def big(n: int, repeats: int) -> dict:
    from playwright.sync_api import sync_playwright

    from app.synthetic import synthetic_workspace

    t0 = time.perf_counter()
    ws = synthetic_workspace(n, multi_turn=0.3)
    ws.index  # noqa: B018 - the column arrays, as a cached audit would have them before the first visit
    build_s = time.perf_counter() - t0
    app = serve_workspace(ws, Path(tempfile.mkdtemp()), private_sessions=False)
    row = {"data": f"synthetic {n}", "samples": n, "rows": len(ws.table), "build_workspace_s": round(build_s, 2),
           "load_before": os.getloadavg()}
    try:
        with sync_playwright() as p:
            browser = launch_browser(p)
            row["first_view"] = first_views(browser, app.url)
            poisoned = ws.table.index[ws.table["response"].str.contains("evil.example")][:200].tolist()
            row["map"] = map_interaction(browser, app.url, poisoned)
            browser.close()
        row["events"] = event_ms(app.url, ws, repeats)
    finally:
        app.close()
    row["load_after"] = os.getloadavg()
    return row


def demo_part() -> dict:
    from playwright.sync_api import sync_playwright

    from app.loading import demo_workspace

    ws = demo_workspace()
    app = serve_workspace(ws, Path(tempfile.mkdtemp()), private_sessions=False)
    ctx = app.ctx
    row = {"data": "demo", "rows": len(ws.table), "load_before": os.getloadavg()}
    try:
        with sync_playwright() as p:
            browser = launch_browser(p)
            row["first_view"] = first_views(browser, app.url)
            row["gallery"] = gallery_times(browser, app.url)
            browser.close()
        row["trigger_map"] = trigger_map_s(ctx, ws)
        row["proposals_320"] = proposals_s(ctx, ws)
    finally:
        app.close()
    row["load_after"] = os.getloadavg()
    return row


def trigger_map_s(ctx, ws) -> dict:
    from app import hosting

    poisoned = ws.table[ws.table["gt_poisoned"].fillna(False).astype(bool)]
    sid = str(poisoned.sort_values("score", ascending=False)["id"].iloc[0])
    vlm = ws.vlm()
    folder = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    tm = hosting.trigger_map(vlm, None, ws.dataset, sid, 0, folder, mode="fall")
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    hosting.trigger_map(vlm, None, ws.dataset, sid, 0, folder, mode="fall")
    return {"sample": sid, "cold_s": round(cold, 2), "cached_s": round(time.perf_counter() - t0, 3),
            "grid": list(tm.grid.shape) if tm.grid is not None else None, "words": len(tm.words)}


def proposals_s(ctx, ws) -> dict:
    from byorn.propose import propose_with_run
    from byorn.train import save_model

    run = Path(tempfile.mkdtemp()) / "bench-run"
    save_model(ws.vlm(), run / "model")
    (run / "config.json").write_text(json.dumps({"status": "finished", "train_config": {"method": "byorn"}}))
    keys = [(str(i), 0) for i in ws.table.sort_values("score", ascending=False)["id"].head(320)]
    t0 = time.perf_counter()
    found = propose_with_run(run, ws.dataset, keys, k=4)
    return {"turns": len(found), "k": 4, "seconds": round(time.perf_counter() - t0, 2),
            "mean_distinct": round(sum(len(v) for v in found.values()) / max(len(found), 1), 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="big,demo")
    ap.add_argument("--n", type=int, default=100_000, help="samples of the synthetic audit")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
               "when": time.strftime("%Y-%m-%d %H:%M"), "runs": []}
    for part in args.parts.split(","):
        row = big(args.n, args.repeats) if part == "big" else demo_part()
        print(json.dumps(row), flush=True)
        results["runs"].append(row)
    out = Path(__file__).with_name("app_results.json")
    if out.exists():  # keep the other parts' latest figures (each run records when it was measured)
        before = json.loads(out.read_text())
        rerun = {row.get("data") for row in results["runs"]}
        kept = [r for r in before.get("runs", []) if r.get("data") not in rerun]
        for r in kept:
            r.setdefault("when", before.get("when"))
        results["runs"] = kept + results["runs"]
    for r in results["runs"]:
        r.setdefault("when", results["when"])
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
