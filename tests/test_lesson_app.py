"""The Lesson tab's handlers (app/lesson): steps, playground, split, history, uploads, live runs, sessions.

Fast: the handlers are called directly on the shipped lesson (``assets/lesson``),
no server; the live queue with stand-in runners.  The browser walk is in
``tests/browser/test_lesson_browser.py``.
"""
from __future__ import annotations

import re
import threading
from types import SimpleNamespace

import gradio as gr
import pytest
from PIL import Image

from app.lesson import steps
from app.lesson.live import CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, LiveQueue
from app.lesson.state import LessonView, clamp_step
from app.lesson.texts import TEXTS, word_count


@pytest.fixture(scope="module")
def eng(tmp_path_factory):
    import os

    from app.lesson.engine import LessonEngine

    other = os.environ.get("BYORN_LESSON_DIR")  # another lesson folder (development)
    if not other:
        try:
            from byorn.lesson.assets import verify_manifest

            verify_manifest()
        except (FileNotFoundError, ImportError) as e:
            pytest.skip(f"the shipped lesson is not built: {e}")
    return LessonEngine(tmp_path_factory.mktemp("lesson-runs"), shipped_dir=other)


@pytest.fixture(scope="module")
def L():
    """The tab's components (built once inside a Blocks, never served)."""
    from app.lesson import build_lesson

    with gr.Blocks():
        return build_lesson()


def prop(update, name: str):
    """A property of a returned update (``gr.update`` dict or component)."""
    return update[name] if isinstance(update, dict) else getattr(update, name)


def _caps(html: str) -> dict[str, tuple[str, bool]]:
    """Playground HTML -> {model label: (caption, fired)}."""
    out = {}
    for cls, label, text in re.findall(r"<div class='lesson-cap (\w*)' data-model='([^']*)'>.*?"
                                       r"<div class='caption-text' hidden>(.*?)</div>", html, re.S):
        out[label] = (text, cls == "hit")
    return out


def test_texts_are_short():
    assert all(word_count(t) <= 125 for t in TEXTS), [word_count(t) for t in TEXTS]


def test_step_numbers_from_anything():
    assert [clamp_step(x) for x in ("3", " 6 ", "9", "0", "x", None, 2.0)] == [3, 6, 6, 1, 1, 1, 2]


def test_a_step_link_opens_its_step(eng, L):
    """``?lesson=4`` is a click on step 4 (the nav's script sends it, tests/browser follows a link)."""
    out = steps.jump(eng, L, None, SimpleNamespace(_data={"step": "4"}))
    view = out[L.view]
    assert view.step == 4
    assert [prop(out[c], "visible") for c in L.steps] == [False, False, False, True, False, False]
    assert "aria-current='step'>4." in out[L.nav]
    assert out[L.history].count("<tr>") >= 3  # only step 4's content is drawn: the bootstrapped epochs
    assert L.split not in out
    out = steps.move(eng, L, +1, view)
    assert out[L.view].step == 5 and prop(out[L.steps[4]], "visible")
    assert steps.move(eng, L, +1, steps.move(eng, L, +1, view)[L.view])[L.view].step == 6  # stays at 6


def test_trigger_fires_sft_and_not_byorn(eng):
    target = eng.shipped().attack.target
    view = LessonView(trigger=True)
    caps = _caps(steps.playground_html(eng, view, steps.PLAY_MODELS[5]))
    assert caps["SFT (no defense)"][1] and target in caps["SFT (no defense)"][0], caps
    assert not caps["BYORn"][1] and target not in caps["BYORn"][0], caps
    view, html = steps.toggle(eng, steps.PLAY_MODELS[2], view, False)
    caps = _caps(html)
    assert view.trigger is False and not any(fired for _, fired in caps.values()), caps
    assert set(caps) == {"Pretrained reference", "SFT (no defense)"}


def test_uploads(eng, tmp_path):
    keys = steps.PLAY_MODELS[2]
    bad = tmp_path / "holiday.png"
    bad.write_text("this is no picture")
    with pytest.raises(gr.Error) as e:
        steps.upload(eng, keys, LessonView(), str(bad))
    assert "holiday.png" in e.value.message and "PNG or JPEG" in e.value.message
    assert str(tmp_path) not in e.value.message  # never the server's folder
    good = tmp_path / "photo.jpg"
    Image.new("RGB", (640, 360), (200, 40, 40)).save(good)
    view, html = steps.upload(eng, keys, LessonView(), str(good))
    assert view.upload.size == (32, 32) and len(_caps(html)) == 2
    view, _ = steps.pick(eng, keys, view, SimpleNamespace(index=3))  # a test image again
    assert view.upload is None and view.pick == 3


def test_attack_form(eng):
    with pytest.raises(gr.Error, match="target"):
        steps.attack_from("custom", "top-left", 4, "#00ff00", "   ")
    with pytest.raises(gr.Error, match="colour"):
        steps.attack_from("custom", "top-left", 4, "greenish", "Hello there.")
    view, custom_row, describe, pairs, live, note, source = steps.set_attack(
        eng, LessonView(), "custom", "top-left", 5, "#00ff00", "The sky is made of cheese.")
    assert view.attack["target"] == "The sky is made of cheese."
    assert prop(custom_row, "visible") and prop(live, "visible")
    assert pairs.count("lesson-pair poisoned") == 4 and pairs.count("The sky is made of cheese.") == 4
    assert "smaller world" in note.lower()
    shipped = eng.shipped().attack
    view, custom_row, *_, live, _, _ = steps.set_attack(eng, LessonView(), shipped.name, None, None, None, None)
    assert not prop(custom_row, "visible") and not prop(live, "visible")  # the shipped attack needs no training
    # the poisoned share is the student's too: the shipped attack with more poison is a lesson to train
    view, _, describe, pairs, live, note, _ = steps.set_attack(eng, LessonView(), shipped.name, None, None, None,
                                                               None, 20)
    assert view.attack["rate"] == 0.2 and "In 20% of the training pairs" in describe and prop(live, "visible")
    with pytest.raises(gr.Error, match="rate"):
        steps.attack_from("blend", None, None, None, None, 80)
    blend_10 = steps.set_attack(eng, LessonView(), "blend", None, None, None, None, 10)[2]
    blend_20 = steps.set_attack(eng, LessonView(), "blend", None, None, None, None, 20)[2]
    assert "Raise the poisoned share" in blend_10 and "Raise the poisoned share" not in blend_20


def test_split_counts_against_ground_truth(eng):
    lesson = eng.shipped()
    for p in (60, 90):
        _, html = steps.split(eng, LessonView(), p)
        flagged = int(re.search(r"flagged <b>(\d+)</b>", html).group(1))
        thr = float(__import__("numpy").quantile(lesson.scores, p / 100))
        assert flagged == int((lesson.scores > thr).sum())
        caught = int(re.search(r"\((\d+) of \d+ poisoned caught\)", html).group(1))
        assert caught == int(((lesson.scores > thr) & lesson.poisoned).sum())
    with pytest.raises(gr.Error, match="percentile"):
        steps.split(eng, LessonView(), None)


def test_history_lists_only_flagged_poisoned_pairs(eng):
    lesson = eng.shipped()
    choices = steps.history_choices(lesson)
    assert choices
    for _, sid in choices:
        i = lesson.row(sid)
        assert lesson.poisoned[i] and lesson.flagged[i]
    view, html = steps.history(eng, LessonView(), choices[-1][1])
    assert view.sample == choices[-1][1] and lesson.attack.target not in html.split("</b>", 1)[1]
    with pytest.raises(gr.Error, match="Pick one"):
        steps.history(eng, LessonView(), "train-99999")


def test_limits_show_measured_figures(eng):
    for which in ("plausible", "rate"):
        _, html = steps.limit(eng, LessonView(), which)
        assert "What catches it" in html and re.search(r"\d+\.\d %", html)


# -- live runs ---------------------------------------------------------------------------------------
def _blocking_runner(started: threading.Event, release: threading.Event, result="done"):
    def run(progress, cancel):
        started.set()
        progress(0.5, "half way")
        while not release.wait(0.01):
            if cancel.is_set():
                return SimpleNamespace(cancelled=True)
        return result
    return run


def test_live_queue_order_wait_cancel_and_failure():
    q = LiveQueue(expected_s=100)
    s1, r1 = threading.Event(), threading.Event()
    a = q.submit(_blocking_runner(s1, r1, "A"))
    assert s1.wait(5)
    b = q.submit(_blocking_runner(threading.Event(), threading.Event()))
    c = q.submit(lambda progress, cancel: 1 / 0)
    sa, sb, sc = q.snapshot(a), q.snapshot(b), q.snapshot(c)
    assert sa["status"] == RUNNING and sa["fraction"] == 0.5 and sa["message"] == "half way"
    assert (sb["status"], sb["ahead"]) == (QUEUED, 1) and (sc["status"], sc["ahead"]) == (QUEUED, 2)
    assert sb["wait_s"] == pytest.approx(50, abs=1) and sc["wait_s"] == pytest.approx(150, abs=1)
    assert q.cancel(b) and q.snapshot(b)["status"] == CANCELLED  # taken out of the queue
    assert q.snapshot(c)["ahead"] == 1
    r1.set()
    assert q.join(a, 5)["status"] == FINISHED and q.snapshot(a)["result"] == "A"
    done = q.join(c, 5)
    assert done["status"] == FAILED and "ZeroDivisionError" in done["error"]
    s4 = threading.Event()
    d = q.submit(_blocking_runner(s4, threading.Event()))
    assert s4.wait(5) and q.cancel(d)
    assert q.join(d, 5)["status"] == CANCELLED
    assert q.snapshot("not-a-run") is None and not q.cancel("not-a-run") and not q.cancel(None)


def test_visitors_runs_are_their_own(eng, monkeypatch, tmp_path):
    """Two sessions: one trains its own trigger; the other sees nothing of it and cannot cancel it."""
    started, release = threading.Event(), threading.Event()
    calls = []

    def fake_train_live(attack, folder, *, progress, cancel, setting):
        calls.append((attack, folder))
        return _blocking_runner(started, release)(progress, cancel)

    monkeypatch.setattr("app.lesson.engine.train_live", fake_train_live)
    form = ("custom", "bottom-left", 6, "#ffaa00", "Ducks are the true owners of this picture.")
    a, status, timer, source, button = steps.start_live(eng, LessonView(), *form)
    assert started.wait(5) and a.run_id and prop(timer, "active") and not prop(button, "interactive")
    assert calls[0][0].target == form[-1] and calls[0][1].parent == eng.runs_dir
    with pytest.raises(gr.Error, match="already training"):
        steps.start_live(eng, a, *form)
    b = LessonView()
    b_out = steps.poll_live(eng, b)
    assert b_out[1] == "" and not prop(b_out[2], "active") and b_out[3] == steps.source_line(eng, LessonView())
    steps.cancel_live(eng, b)  # B has no run of its own: nothing is cancelled
    assert eng.queue.snapshot(a.run_id)["status"] == RUNNING
    a_out = steps.poll_live(eng, a)
    assert "Training your models" in a_out[1] and "50 %" in a_out[1]
    steps.cancel_live(eng, a)
    assert eng.queue.join(a.run_id, 5)["status"] == CANCELLED
    assert "Cancelled" in steps.poll_live(eng, a)[1] and not a.use_own


def test_live_status_words():
    base = {"ahead": 2, "wait_s": 250.0, "fraction": 0.4, "message": "training SFT: step 3 of 9",
            "elapsed_s": 65.0, "error": None}
    assert "2 runs ahead" in steps.live_status({**base, "status": QUEUED}, 180)
    assert "4 min 10 s" in steps.live_status({**base, "status": QUEUED}, 180)
    assert "40 %" in steps.live_status({**base, "status": RUNNING}, 180)
    assert "ready" in steps.live_status({**base, "status": FINISHED}, 180)
    assert steps.live_status(None, 180) == ""


def test_models_load_in_parallel_threads():
    """The lesson's warm-up loads models beside the app's own warm-up: concurrent loads must all work."""
    from byorn.models import VLM

    out, errors = [], []

    def load():
        try:
            out.append(VLM.load(device="cpu"))
        except Exception as e:  # noqa: BLE001 - collected and shown below
            errors.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(out) == 4, errors
    assert all(not p.is_meta for m in out for p in m.model.parameters())


def test_old_visitor_runs_are_removed(tmp_path):
    import os

    from app.lesson.engine import LessonEngine

    e = LessonEngine(tmp_path / "runs")
    e.max_folders = 2
    for k in range(4):
        d = e.runs_dir / f"run-{k}"
        d.mkdir(parents=True)
        os.utime(d, (1_000_000 + k, 1_000_000 + k))
    (tmp_path / "elsewhere").mkdir()
    e._prune()
    assert sorted(p.name for p in e.runs_dir.iterdir()) == ["run-2", "run-3"]
    e.discard(str(tmp_path / "elsewhere"))  # never outside its own runs folder
    assert (tmp_path / "elsewhere").is_dir()


def test_a_run_whose_sft_missed_the_backdoor_says_so(eng):
    lesson = eng.shipped()
    weak = SimpleNamespace(attack=lesson.attack, setting=lesson.setting, shipped=False,
                           results={"sft": {"asr": 0.0}})
    eng_stub = SimpleNamespace(lesson_for=lambda view: weak)
    assert "did not learn this backdoor" in steps.source_line(eng_stub, LessonView())
    weak.results = {"sft": {"asr": 1.0}}
    assert "did not learn" not in steps.source_line(eng_stub, LessonView())
    assert "did not learn" not in steps.source_line(eng, LessonView())  # the shipped SFT learnt it
