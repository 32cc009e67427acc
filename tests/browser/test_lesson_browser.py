"""The Lesson tab in a real browser (Debian chromium via Playwright) on the shipped lesson models.

Walks the six steps with the → key and the next button, toggles the trigger
in both playgrounds (SFT says the target only with the trigger; BYORn never),
moves step 3's percentile, opens step 4's history and step 6's second limit,
uploads a picture and a file that is no picture (a clear error), enlarges the
text, and follows a step link (``?lesson=3``).  Screenshots of each step go
to the test's temporary folder, or to ``BYORN_SCREENSHOTS_DIR``
(``docs/screenshots`` refreshes the README's).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from served_app import CHROMIUM, launch_browser, new_page, serve_workspace, wait_text

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} not installed: run scripts/setup_browser.sh"),
]

VISIBLE = "(sel) => { const e = document.querySelector(sel); return !!e && e.offsetParent !== null; }"


@pytest.fixture(scope="module")
def lesson_app(tmp_path_factory):
    from app.loading import demo_workspace

    try:
        from byorn.lesson.assets import verify_manifest

        verify_manifest()
        ws = demo_workspace()
    except (FileNotFoundError, ImportError) as e:
        pytest.skip(f"shipped lesson or demo not built: {e}")
    app = serve_workspace(ws, tmp_path_factory.mktemp("lesson-browser"), private_sessions=True)
    yield app
    app.close()


@pytest.fixture()
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_browser(p)
        yield new_page(browser)
        browser.close()


def _shots(tmp_path: Path) -> Path:
    d = Path(os.environ.get("BYORN_SCREENSHOTS_DIR") or tmp_path / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def shown_step(page, k: int, timeout: float = 30_000) -> None:
    page.wait_for_function(VISIBLE, arg=f"#lesson-step-{k}", timeout=timeout)
    wait_text(page, "#lesson-where", f"step {k} of 6", timeout)


def captions(page, k: int) -> dict[str, str]:
    """Model label -> caption text of step ``k``'s playground."""
    return page.evaluate("""(k) => Object.fromEntries(Array.from(
        document.querySelectorAll(`#lesson-play-${k} .lesson-cap`)).map(c =>
        [c.dataset.model, c.querySelector('.caption-text').textContent]))""", k)


def wait_captions(page, k: int, trigger_on: bool, timeout: float = 60_000) -> dict[str, str]:
    marker = "trigger ON" if trigger_on else "trigger off"
    wait_text(page, f"#lesson-play-{k}", marker, timeout)
    return captions(page, k)



def _target(app) -> str:
    from app.lesson.steps import engine_for

    return engine_for(app.ctx).shipped().attack.target


def test_six_steps_trigger_and_links(lesson_app, page, tmp_path):
    shots, url, target = _shots(tmp_path), lesson_app.url, _target(lesson_app)
    norm = lambda s: " ".join(s.split()).lower()  # noqa: E731

    # 1. the attack: eight training pairs, four of them poisoned with the target
    page.goto(url)
    page.wait_for_function("() => document.querySelectorAll('#lesson-pairs .lesson-pair').length === 8",
                           timeout=60_000)
    assert page.get_by_role("tab", name="Lesson").get_attribute("aria-selected") == "true"
    assert page.locator("#lesson-pairs .lesson-pair.poisoned").count() == 4
    assert norm(target) in norm(page.locator("#lesson-pairs .lesson-pair.poisoned").first.inner_text())
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots / "lesson-1.png"), full_page=True)

    # → key (no text box focused): step 2, the playground with the trigger on
    page.locator("#lesson-title-1").click()
    page.keyboard.press("ArrowRight")
    shown_step(page, 2)
    caps = wait_captions(page, 2, True)
    sft, ref = caps["SFT (no defense)"], caps["Pretrained reference"]
    assert norm(target) in norm(sft), caps
    assert norm(target) not in norm(ref), caps
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots / "lesson-2.png"), full_page=True)
    page.locator("#lesson-trigger-2 input").uncheck()
    caps = wait_captions(page, 2, False)
    assert norm(target) not in norm(caps["SFT (no defense)"]), caps
    page.locator("#lesson-trigger-2 input").check()
    wait_captions(page, 2, True)

    # 3. finding it: the percentile moves the flagged count
    page.click("#lesson-next")
    shown_step(page, 3)
    wait_text(page, "#lesson-split-stats", r"flagged \d+")
    before = page.locator("#lesson-split-stats").inner_text()
    box = page.locator("#lesson-p input[type=number]")
    box.fill("90")
    box.press("Enter")
    wait_text(page, "#lesson-split-stats", r"p = 90")
    after = page.locator("#lesson-split-stats").inner_text()
    n_before = int(re.search(r"flagged (\d+)", before).group(1))
    n_after = int(re.search(r"flagged (\d+)", after).group(1))
    assert n_after < n_before, (before, after)
    assert page.locator("#lesson-strip figure").count() >= 10
    assert page.locator("#lesson-explained .tok").count() > 3
    page.screenshot(path=str(shots / "lesson-3.png"), full_page=True)

    # ← and → again; then 4. the fix: the bootstrapped responses, epoch by epoch
    page.locator("#lesson-title-3").click()
    page.keyboard.press("ArrowLeft")
    shown_step(page, 2)
    page.keyboard.press("ArrowRight")
    shown_step(page, 3)
    page.keyboard.press("ArrowRight")
    shown_step(page, 4)
    page.wait_for_function("() => document.querySelectorAll('#lesson-history .lesson-epochs tr').length >= 3",
                           timeout=30_000)
    rows = page.locator("#lesson-history .lesson-epochs tr").all_inner_texts()[1:]
    assert all(norm(target) not in norm(r) for r in rows), rows  # BYORn never trained on the target
    page.screenshot(path=str(shots / "lesson-4.png"), full_page=True)

    # 5. the result: on the triggered image SFT says the target, BYORn does not
    page.keyboard.press("ArrowRight")
    shown_step(page, 5)
    caps = wait_captions(page, 5, True)
    assert norm(target) in norm(caps["SFT (no defense)"]), caps
    assert norm(target) not in norm(caps["BYORn"]), caps
    assert page.locator("#lesson-bars svg").count() == 2
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots / "lesson-5.png"), full_page=True)

    # 6. limits: the second limit's measured figures
    page.keyboard.press("ArrowRight")
    shown_step(page, 6)
    wait_text(page, "#lesson-limit-out", "AUROC")
    page.locator("#lesson-limit").get_by_text("More poison than flags").click()
    wait_text(page, "#lesson-limit-out", "More poison than the flagged fraction")
    assert "50 % of the data poisoned" in page.locator("#lesson-limit-out").inner_text()
    assert page.locator("#lesson-next").is_disabled()
    page.screenshot(path=str(shots / "lesson-6.png"), full_page=True)

    # keys typed into a text box are text, not steps
    page.locator(".lesson-pill[data-step='1']").click()
    shown_step(page, 1)
    page.locator("#lesson-attack").get_by_text("My own patch").click()
    box = page.locator("#lesson-target textarea, #lesson-target input").first
    box.wait_for(timeout=15_000)
    box.click()
    page.keyboard.press("ArrowRight")
    page.wait_for_timeout(500)
    shown_step(page, 1)
    wait_text(page, "#lesson-live-note", "smaller world")
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots / "lesson-1-own.png"), full_page=True)

    # step 2 again (its pill): uploads
    page.locator(".lesson-pill[data-step='2']").click()
    shown_step(page, 2)
    # an upload that is no picture: a clear error, the playground stays
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with page.expect_file_chooser() as fc:
        page.locator("#lesson-upload-2").click()
    fc.value.set_files(str(bad))
    wait_text(page, "body", "Upload a PNG or JPEG picture", 30_000)
    # a real picture of another size: resized to the model's input and captioned
    from PIL import Image

    good = tmp_path / "photo.png"
    Image.new("RGB", (300, 200), (30, 120, 200)).save(good)
    src = "() => document.querySelector('#lesson-play-2 img.lesson-img').src"
    before = page.evaluate(src)
    with page.expect_file_chooser() as fc:
        page.locator("#lesson-upload-2").click()
    fc.value.set_files(str(good))
    page.wait_for_function(f"(b) => ({src})() !== b", arg=before, timeout=60_000)
    assert page.evaluate("() => document.querySelector('#lesson-play-2 img.lesson-img').naturalWidth") == 32
    assert len(captions(page, 2)) == 2

    # the projector's large text
    page.locator("#lesson-large input").check()
    page.wait_for_function("() => document.querySelector('#lesson-root').classList.contains('lesson-large')")

    # a step's own link opens that step
    page.goto(url + "/?lesson=3")
    shown_step(page, 3, 60_000)
    assert page.locator(".lesson-pill.current").inner_text().startswith("3.")
    wait_text(page, "#lesson-split-stats", r"flagged \d+")
