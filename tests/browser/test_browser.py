"""Real-browser test: Debian chromium driven by Playwright (never a downloaded browser).

Opens the app, clicks a point on the map, approves the replacement, opens a
sample from a table row, starts a short training run, watches its progress,
and saves screenshots (to ``BYORN_SCREENSHOTS_DIR`` when set, e.g.
``docs/screenshots``, else the test's temp folder).

Runs on the embedded demo with the real trainer when the demo assets exist,
else on a synthetic workspace with the fake trainer of ``tests/test_app.py``.
Install the browser with ``scripts/setup_browser.sh``.
"""
from __future__ import annotations

import os
import shutil
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

    try:
        from app.loading import demo_workspace
        ws = demo_workspace()
        return make_context(ws, data_dir=tmp / "data"), True
    except (FileNotFoundError, ImportError) as e:  # demo assets not built: synthetic stand-in
        from app.synthetic import synthetic_workspace
        from tests.test_app import fake_list_runs, fake_trainer
        print(f"embedded demo unavailable ({e}); using a synthetic workspace")
        return make_context(synthetic_workspace(300), data_dir=tmp / "data", trainer=fake_trainer,
                            list_runs=fake_list_runs), False


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    tmp = tmp_path_factory.mktemp("browser")
    os.environ["GRADIO_TEMP_DIR"] = str(tmp / "gradio")
    from app import build_app, launch

    ctx, real = _context(tmp)
    demo = build_app(ctx)
    launch(demo, ctx, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield demo.local_url, ctx, real
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
    d = Path(os.environ.get("BYORN_SCREENSHOTS_DIR") or tmp_path / "shots")
    d.mkdir(parents=True, exist_ok=True)
    return d


_POINT_JS = """() => {
  const el = document.querySelector('#sample-map .byorn-plot');
  const fl = el._fullLayout, r = el.getBoundingClientRect();
  // the highest-scoring point: the one a reviewer opens first
  let best = null;
  el._fullData.forEach(tr => Array.from(tr.x).forEach((x, i) => {
    const s = tr.hovertext[i].match(/score ([0-9.]+)/);
    const v = s ? parseFloat(s[1]) : 0;
    if (!best || v > best.v) best = {x, y: tr.y[i], id: tr.customdata[i], v};
  }));
  return {id: best.id, px: r.left + fl._size.l + fl.xaxis.l2p(best.x),
          py: r.top + fl._size.t + fl.yaxis.l2p(best.y)};
}"""


def wait_text(page, selector: str, pattern: str, timeout: float = 15_000) -> None:
    """Wait until the element exists and its text matches the regex ``pattern``."""
    page.wait_for_function(
        "([sel, pat]) => { const el = document.querySelector(sel);"
        " return !!el && new RegExp(pat).test(el.innerText); }",
        arg=[selector, pattern], timeout=timeout)


def test_review_and_train_in_a_browser(served, page, tmp_path):
    url, ctx, real = served
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

    # 4. a short training run, with live progress
    page.get_by_role("tab", name="Train").click()
    steps = page.locator("#max-steps input")
    steps.fill("6")
    steps.press("Tab")
    page.click("#train-start")
    wait_text(page, "#train-status", "step", 30_000)
    wait_text(page, "#train-status", "finished|failed", 240_000)
    status = page.locator("#train-status").inner_text()
    assert "finished" in status, status
    assert "6 / 6" in status
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "train.png"), full_page=True)

    page.get_by_role("tab", name="Compare").click()
    page.locator('#runs-table [data-testid="cell-0-0"]').wait_for(timeout=15_000)
    page.wait_for_timeout(800)
    page.screenshot(path=str(shots / "compare.png"), full_page=True)
    for tab, name in (("Data", "data"), ("Export", "export")):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(500)
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    print(f"first interactive view after {first_view_s:.2f} s ({'demo' if real else 'synthetic'})")
    assert shutil.disk_usage(shots).free > 0
