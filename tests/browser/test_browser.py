"""Real-browser tests: Debian chromium driven by Playwright (never a downloaded browser).

``test_review_and_train_in_a_browser`` (the embedded demo): click a point on
the map and approve its replacement, open a table row, train a short real SFT
run (``byorn.train.train``) and watch it, then the gallery: open a card and
review three samples **by keyboard only** (keys typed into a text box do
nothing), open a trigger map and screenshot it, propose candidates with the
finished run and approve one.  ``test_map_of_100k_samples``: a synthetic audit
of 100k samples (~145k turns): box and lasso selections give the right count,
pan and lasso stay smooth (frame times printed), a pan moves the points.

Screenshots of each view go to the test's temporary folder, or to
``BYORN_SCREENSHOTS_DIR`` (``docs/screenshots`` refreshes the README's).
Install the browser with ``scripts/setup_browser.sh``.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
from served_app import (CHROMIUM, MAP, drag, launch_browser, map_mode, new_page, pan_map, pixels_of, serve_workspace,
                        start_frames, stop_frames, trace_lasso, wait_map, wait_text)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} not installed: run scripts/setup_browser.sh"),
]


def _has_review_library() -> bool:
    try:
        import byorn.explain  # noqa: F401
        import byorn.neighbors  # noqa: F401
        import byorn.propose  # noqa: F401
        return True
    except ImportError:
        return False


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from app.loading import demo_workspace

    try:
        ws = demo_workspace()
    except FileNotFoundError as e:
        pytest.skip(f"embedded demo not built: {e}")
    app = serve_workspace(ws, tmp_path_factory.mktemp("browser"), private_sessions=False)
    yield app.url, app.ctx
    app.close(job_timeout=60)


@pytest.fixture()
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_browser(p)
        pg = new_page(browser)
        yield pg
        browser.close()


def _shots_dir(tmp_path: Path) -> Path:
    # The README's screenshots are refreshed with BYORN_SCREENSHOTS_DIR=docs/screenshots;
    # a plain test run keeps the working tree clean.
    d = Path(os.environ.get("BYORN_SCREENSHOTS_DIR") or tmp_path / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def header_key(page) -> str:
    return page.locator("#inspector-header").inner_text().split("\n")[0].strip()


def press(page, key: str, header_before: str | None = None) -> None:
    """A key on the page body (no text box focused); waits for the Inspector to move on if asked."""
    page.keyboard.press(key)
    if header_before is not None:
        page.wait_for_function("(h) => !document.querySelector('#inspector-header').innerText.startsWith(h)",
                               arg=header_before, timeout=30_000)


def _id_turn(ws, key: str) -> tuple[str, int]:
    pos = ws.index.position(key)
    return ws.index.ids[pos], int(ws.index.turns[pos])


def test_review_and_train_in_a_browser(served, page, tmp_path):
    url, ctx = served
    shots = _shots_dir(tmp_path)
    ws = ctx.workspaces.get(ctx.default_key)
    t0 = time.time()
    page.goto(url)
    page.get_by_role("tab", name="Overview").click()  # the app opens on the Lesson
    wait_map(page)
    wait_text(page, "#overview-counts", "flagged")
    first_view_s = time.time() - t0
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "overview.png"), full_page=True)

    # 1. click a point on the map: the inspector opens on that sample
    page.locator(MAP).scroll_into_view_if_needed()
    pts = np.asarray(pixels_of(page, range(len(ws.table))))
    order = np.argsort(-ws.table["score"].to_numpy())
    dist = np.hypot(pts[:, None, 0] - pts[None, :, 0], pts[:, None, 1] - pts[None, :, 1])
    np.fill_diagonal(dist, np.inf)
    alone = next(int(i) for i in order if dist[i].min() > 9)  # the highest-scoring point alone within 9 px
    page.mouse.click(*pts[alone])
    sid = ws.table["key"].iloc[alone]
    wait_text(page, "#inspector-header", sid)
    assert page.get_by_role("tab", name="Inspector").get_attribute("aria-selected") == "true"

    # 2. approve the proposed replacement (stay on the sample to see the saved decision)
    page.get_by_label("open the next sample after a decision").uncheck()
    proposal = page.locator("#proposal textarea").input_value()
    if not proposal.strip():  # the audit proposed nothing for it: ask the model
        page.click("#regen-btn")
        page.wait_for_function("document.querySelector('#proposal textarea').value.trim().length > 0",
                               timeout=60_000)
        proposal = page.locator("#proposal textarea").input_value()
    page.click("#approve-btn")
    wait_text(page, "#decision-md", "approved")
    page.screenshot(path=str(shots / "inspector.png"), full_page=True)
    decision = ctx.store.get(ws.fingerprint, sid)
    assert decision is not None and decision.status == "approved" and decision.text == proposal
    page.get_by_label("open the next sample after a decision").check()

    # 3. a table row opens its sample (by id, whatever the visual order)
    page.get_by_role("tab", name="Table").click()
    # Gradio 6's table is virtual: cells are divs with data-testid="cell-<row>-<col>"
    id_cell = page.locator('#sample-table [data-testid="cell-1-0"]')
    id_cell.wait_for(timeout=15_000)
    row_id = id_cell.inner_text().strip()
    page.screenshot(path=str(shots / "table.png"), full_page=True)
    page.locator('#sample-table [data-testid="cell-1-1"]').click()
    wait_text(page, "#inspector-header", row_id)

    # 4. a short SFT run (it learns the backdoor: the trigger map's "rise" model), live progress
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-method").get_by_text("SFT (no defense)").click()
    for field, value in (("#max-steps", "6"), ("#eval-every", "2"), ("#eval-max", "16")):
        box = page.locator(f"{field} input")
        box.fill(value)
        box.press("Tab")
    page.click("#train-start")
    wait_text(page, "#train-status", "running", 30_000)
    wait_text(page, "#train-status", "evaluation at step [4-9]|finished|failed", 120_000)
    page.wait_for_timeout(1200)  # the next poll draws the curve
    page.screenshot(path=str(shots / "train.png"), full_page=True)
    wait_text(page, "#train-status", "finished|failed", 240_000)
    status = page.locator("#train-status").inner_text()
    assert "finished" in status, status
    assert "6 / 6" in status and "ASR" in status
    page.wait_for_timeout(800)
    page.screenshot(path=str(shots / "train-finished.png"), full_page=True)
    run_dir = Path(ctx.job.snapshot()["out_dir"])

    page.get_by_role("tab", name="Compare").click()
    page.locator('#runs-table [data-testid="cell-0-0"]').wait_for(timeout=15_000)
    page.wait_for_timeout(800)
    page.screenshot(path=str(shots / "compare.png"), full_page=True)

    # 5. the gallery; three samples reviewed by keyboard only
    page.get_by_role("tab", name="Gallery").click()
    page.wait_for_function("() => document.querySelectorAll('#gallery .byorn-card').length >= 3", timeout=30_000)
    keys = page.evaluate("() => Array.from(document.querySelectorAll('#gallery .byorn-card')).slice(0, 4)"
                         ".map(c => c.dataset.key)")
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "gallery.png"))
    page.locator(f"#gallery .byorn-card[data-key='{keys[0]}']").focus()
    page.keyboard.press("Enter")  # open the focused card
    wait_text(page, "#inspector-header", keys[0], 30_000)
    assert "in the gallery" in page.locator("#inspector-header").inner_text()
    # keys typed into a text box are text, not commands
    goto = page.locator("#goto-id textarea, #goto-id input").first
    goto.click()
    page.keyboard.type("ard")
    page.keyboard.press("Escape")  # leaves the box: keys are commands again
    page.wait_for_timeout(600)
    assert ctx.store.get(ws.fingerprint, keys[0]) is None and header_key(page) == keys[0]
    for i, key in enumerate("ard"):  # approve, reject, drop: each on the sample it was meant for
        wait_text(page, "#inspector-header", f"^{keys[i]}", 30_000)
        page.wait_for_timeout(300)  # the sample's own handlers have settled
        press(page, key, keys[i])
    wait_text(page, "#inspector-header", keys[3], 30_000)  # advanced past the three
    got = [ctx.store.get(ws.fingerprint, k) for k in keys[:3]]
    assert [d.status for d in got] == ["approved", "rejected", "dropped"], got
    assert got[0].source.startswith("reference:")
    press(page, "p", header_key(page))  # previous
    wait_text(page, "#inspector-header", keys[2])
    wait_text(page, "#decision-md", "dropped")

    if not _has_review_library():
        pytest.skip("byorn.propose / neighbors / explain not merged yet: trigger map and proposals not tested")

    # 6. the trigger map of a poisoned sample under the SFT run (mode rise), screenshot
    poisoned = ws.table[ws.table["gt_poisoned"].fillna(False).astype(bool)].sort_values("score", ascending=False)
    target = poisoned["key"].iloc[0]
    page.get_by_role("tab", name="Overview").click()
    page.get_by_role("tab", name="Inspector").click()  # lists the runs (the SFT run first)
    goto.fill(target)
    goto.press("Enter")
    wait_text(page, "#inspector-header", target)
    page.get_by_text("Show the trigger (heat map over the image").click()
    # the run's entry may appear a moment after the panel opens
    page.wait_for_function("(r) => ((document.querySelector('#explain-with input') || {}).value || '').includes(r)",
                           arg=run_dir.name, timeout=15_000)
    page.click("#trigger-btn")
    wait_text(page, "#trigger-note", "Mode \\*?\\*?rise", 60_000)
    page.locator("#trigger-image img").wait_for(timeout=15_000)
    page.locator("#trigger-panel").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "trigger.png"), full_page=True)
    assert list((ctx.data_dir / "trigger_maps").glob("*.json"))

    # 7. propose with the finished run for the top flagged turns of a narrow filter, pick, approve
    top = ws.table.sort_values("score", ascending=False)
    page.get_by_role("tab", name="Table").click()
    bound = math.floor(float(top["score"].iloc[9]) * 1e6) / 1e6  # rounded down: the 10th row stays in
    page.locator("#score-min input, #score-min textarea").first.fill(f"{bound:.6f}")
    page.click("#apply-filter")
    wait_text(page, "#table-counts", "Current filter: (\\*\\*)?10(\\*\\*)? samples")
    page.get_by_role("tab", name="Inspector").click()
    box = page.locator("#propose-with input").first
    box.click()
    page.get_by_role("option", name=run_dir.name).first.click(timeout=15_000)
    page.get_by_text("Replacements from a fine-tuned run").click()
    page.locator("#propose-scope").get_by_text("flagged turns in the current filter").click()
    page.click("#propose-start")
    wait_text(page, "#propose-status", "finished|failed", 120_000)
    assert "finished" in page.locator("#propose-status").inner_text()
    # a flagged turn of the filter that the keyboard review above left undecided
    pick = next(k for k in top["key"].iloc[:10] if ctx.store.get(ws.fingerprint, *_id_turn(ws, k)) is None)
    goto.fill(pick)
    goto.press("Enter")
    wait_text(page, "#inspector-header", pick)
    page.locator("#candidates input[type=radio]").first.wait_for(timeout=30_000)
    page.locator("body").click(position={"x": 5, "y": 5})  # no box focused
    page.keyboard.press("1")  # the first candidate, by its key
    # the proposal box then holds exactly that candidate's text (its label reads "1. <text> · NLL x")
    page.wait_for_function("""() => { const r = document.querySelector('#candidates input[type=radio]');
        const lab = r && r.closest('label'); const box = document.querySelector('#proposal textarea');
        const m = lab && lab.innerText.match(/^1\\.\\s(.*?)\\s+·\\s*NLL/s);
        return !!(r && r.checked && m && box && box.value.trim() === m[1].trim()); }""", timeout=30_000)
    text = page.locator("#proposal textarea").input_value()
    page.screenshot(path=str(shots / "candidates.png"), full_page=True)
    press(page, "a", header_key(page))
    d = None
    for _ in range(50):  # the store is written before the page moves on; allow for a slow event
        d = ctx.store.get(ws.fingerprint, *_id_turn(ws, pick))
        if d is not None:
            break
        time.sleep(0.1)
    assert d is not None and d.status == "approved" and d.text == text and d.source == f"run:{run_dir.name}", d

    page.get_by_role("tab", name="Data").click()
    wait_text(page, "#current-data", "review decisions")
    page.get_by_text("Open your own data").click()
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "data.png"), full_page=True)
    page.get_by_role("tab", name="Export").click()
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "export.png"), full_page=True)
    print(f"first interactive view after {first_view_s:.2f} s (demo)")


def test_map_of_100k_samples(page, tmp_path):
    from app.plots import _quantise_xy
    from app.synthetic import synthetic_workspace

    shots = _shots_dir(tmp_path)
    ws = synthetic_workspace(100_000, multi_turn=0.3, seed=7)
    app = serve_workspace(ws, tmp_path, private_sessions=False)
    try:
        page.goto(app.url)
        page.get_by_role("tab", name="Overview").click()  # the app opens on the Lesson
        wait_map(page, 180_000)
        page.locator(MAP).scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        n = len(ws.table)
        assert int(page.locator(MAP).get_attribute("data-points")) == n

        # a box: the count on the page is the points inside it, by the coordinates the server sent
        map_mode(page, "box")  # first: choosing the mode must not move the map under the geometry read below
        fl = page.evaluate(f"() => {{ const el = document.querySelector('{MAP}'), fl = el._fullLayout,"
                           " r = el.getBoundingClientRect(); return {l: r.left + fl._size.l, t: r.top + fl._size.t,"
                           " w: fl._size.w, h: fl._size.h, xr: fl.xaxis.range, yr: fl.yaxis.range}; }")
        # whole pixels: the browser rounds mouse positions, and at ~300 turns per pixel row here a sub-pixel
        # difference between the drag and this count is ~1 % of the box
        x0, y0, x1, y1 = (round(v) for v in (fl["l"] + 0.2 * fl["w"], fl["t"] + 0.3 * fl["h"],
                                             fl["l"] + 0.45 * fl["w"], fl["t"] + 0.6 * fl["h"]))
        drag(page, x0, y0, x1, y1, 10)
        wait_text(page, "#selection-counts", "Selection", 60_000)
        qx, _, _ = _quantise_xy(ws.table["umap_joint_x"].to_numpy(dtype=np.float64))
        qy, _, _ = _quantise_xy(ws.table["umap_joint_y"].to_numpy(dtype=np.float64))
        dx = lambda px: fl["xr"][0] + (px - fl["l"]) / fl["w"] * (fl["xr"][1] - fl["xr"][0])  # noqa: E731
        dy = lambda py: fl["yr"][1] - (py - fl["t"]) / fl["h"] * (fl["yr"][1] - fl["yr"][0])  # noqa: E731
        expected = int(((qx >= dx(x0)) & (qx <= dx(x1)) & (qy >= dy(y1)) & (qy <= dy(y0))).sum())
        shown = int(page.locator("#selection-counts").inner_text().split()[1])  # "Selection: N turns · ..."
        assert expected > 1000 and abs(shown - expected) <= max(5, expected // 500), (shown, expected)

        # a lasso around the poisoned blob: smooth while drawing; its count on the page
        map_mode(page, "lasso")
        blob = ws.table.index[ws.table["response"].str.contains("evil.example")][:300].tolist()
        pts = np.asarray(pixels_of(page, blob))
        cx, cy = float(np.median(pts[:, 0])), float(np.median(pts[:, 1]))
        start_frames(page)
        trace_lasso(page, cx, cy, 90, 70, 40)
        released = time.perf_counter()
        page.mouse.up()
        lasso_frames = stop_frames(page)
        wait_text(page, "#selection-counts", "by lasso", 60_000)
        to_counts = time.perf_counter() - released
        selected = int(page.locator(MAP).get_attribute("data-selected"))
        assert f"Selection: {selected} turns" in page.locator("#selection-counts").inner_text().replace("*", "")
        assert selected > 1000
        page.screenshot(path=str(shots / "map-100k.png"))

        # pan: the points follow the mouse, frames stay short, one redraw after release
        pan_frames, moved = pan_map(page, blob[0], cx - 300, cy + 150, 90, 60, 30)
        assert abs(moved[0] - 90) < 1.5 and abs(moved[1] - 60) < 1.5
        print(f"\n100k map ({n} points): lasso frames median {statistics.median(lasso_frames):.1f} ms, "
              f"max {max(lasso_frames):.0f} ms; release -> counts {1000 * to_counts:.0f} ms; pan frames median "
              f"{statistics.median(pan_frames):.1f} ms, max {max(pan_frames):.0f} ms; redraw after the pan "
              f"{page.locator(MAP).get_attribute('data-redraw-ms')} ms")
    finally:
        app.close()
