"""Real-browser test: Debian chromium driven by Playwright (never a downloaded browser).

Opens the app on the embedded demo, clicks a point on the map, approves the
replacement, opens a sample from a table row, starts a short real training
run (``byorn.train.train``), watches its progress and evaluations, and saves a
screenshot of each tab to the test's temporary folder (or ``BYORN_SCREENSHOTS_DIR``,
e.g. ``docs/screenshots`` to refresh the README's pictures).
Install the browser with ``scripts/setup_browser.sh``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} not installed: run scripts/setup_browser.sh"),
]


def _context(tmp: Path):
    from app.context import make_context
    from app.loading import demo_workspace

    try:
        ws = demo_workspace()
    except FileNotFoundError as e:
        pytest.skip(f"embedded demo not built: {e}")
    return make_context(ws, data_dir=tmp / "data")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    tmp = tmp_path_factory.mktemp("browser")
    os.environ["GRADIO_TEMP_DIR"] = str(tmp / "gradio")
    from app import build_app, launch

    ctx = _context(tmp)
    demo = build_app(ctx)
    launch(demo, ctx, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield demo.local_url, ctx
    ctx.job.cancel()
    ctx.job.join(60)
    demo.close()


@pytest.fixture()
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # Playwright gives the browser a fresh temporary profile (user data dir) itself.
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 1000})
        yield pg
        browser.close()


def _shots_dir(tmp_path: Path) -> Path:
    # The README's screenshots are refreshed with BYORN_SCREENSHOTS_DIR=docs/screenshots;
    # a plain test run keeps the working tree clean.
    d = Path(os.environ.get("BYORN_SCREENSHOTS_DIR") or tmp_path / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


_POINT_JS = """() => {
  const el = document.querySelector('#sample-map .byorn-plot');
  el.scrollIntoView({block: 'center'});  // mouse clicks land only inside the viewport
  const fl = el._fullLayout, r = el.getBoundingClientRect();
  const pts = [];
  el._fullData.forEach(tr => Array.from(tr.x).forEach((x, i) => {
    const s = tr.hovertext[i].match(/score ([0-9.]+)/);
    pts.push({id: tr.customdata[i], v: s ? parseFloat(s[1]) : 0,
              px: r.left + fl._size.l + fl.xaxis.l2p(x), py: r.top + fl._size.t + fl.yaxis.l2p(tr.y[i])});
  }));
  // the highest-scoring point with no other point within 8 px (a click there hits only it)
  const alone = p => pts.every(q => q === p || Math.hypot(q.px - p.px, q.py - p.py) > 8);
  pts.sort((a, b) => b.v - a.v);
  return pts.find(alone) || pts[0];
}"""


def wait_text(page, selector: str, pattern: str, timeout: float = 15_000) -> None:
    """Wait until the element exists and its text matches the regex ``pattern``."""
    page.wait_for_function(
        "([sel, pat]) => { const el = document.querySelector(sel);"
        " return !!el && new RegExp(pat).test(el.innerText); }",
        arg=[selector, pattern], timeout=timeout)


def test_review_and_train_in_a_browser(served, page, tmp_path):
    url, ctx = served
    shots = _shots_dir(tmp_path)
    ws = ctx.workspaces.get(ctx.default_key)
    t0 = time.time()
    page.goto(url)
    page.wait_for_selector("#sample-map .byorn-plot .main-svg", timeout=30_000)
    wait_text(page, "#overview-counts", "flagged")
    first_view_s = time.time() - t0
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "overview.png"), full_page=True)

    # 1. click a point on the map: the inspector opens on that sample
    pt = page.evaluate(_POINT_JS)
    page.mouse.click(pt["px"], pt["py"])
    wait_text(page, "#inspector-header", pt["id"])
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
    decision = ctx.store.get(ws.fingerprint, pt["id"])
    assert decision is not None and decision.status == "approved" and decision.text == proposal

    # 3. a table row opens its sample (by id, whatever the visual order)
    page.get_by_role("tab", name="Table").click()
    # Gradio 6's table is virtual: cells are divs with data-testid="cell-<row>-<col>"
    id_cell = page.locator('#sample-table [data-testid="cell-1-0"]')
    id_cell.wait_for(timeout=15_000)
    row_id = id_cell.inner_text().strip()
    page.screenshot(path=str(shots / "table.png"), full_page=True)
    page.locator('#sample-table [data-testid="cell-1-1"]').click()
    wait_text(page, "#inspector-header", row_id)

    # 4. a short training run, with live progress and evaluations (clean metric, ASR)
    page.get_by_role("tab", name="Train").click()
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

    page.get_by_role("tab", name="Compare").click()
    page.locator('#runs-table [data-testid="cell-0-0"]').wait_for(timeout=15_000)
    page.wait_for_timeout(800)
    page.screenshot(path=str(shots / "compare.png"), full_page=True)
    page.get_by_role("tab", name="Data").click()
    wait_text(page, "#current-data", "1 review decisions")
    page.get_by_text("Open your own data").click()
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "data.png"), full_page=True)
    page.get_by_role("tab", name="Export").click()
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "export.png"), full_page=True)
    print(f"first interactive view after {first_view_s:.2f} s (demo)")
