"""The lesson's engine (byorn.lesson): shipped assets, step functions with known answers, notebook, live run."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import byorn.lesson as L
from byorn.lesson.assets import LESSON_DIR, verify_manifest
from byorn.models import ASSETS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lesson():
    return L.load_lesson()


# ------------------------------------------------------------------ shipped files
def test_shipped_files_are_the_manifests():
    doc = verify_manifest(LESSON_DIR)
    assert doc["seed"] == 0 and "make_lesson_assets.py" in doc["command"]
    assert {"lesson.json", "audit.json", "sft/model.safetensors", "byorn/history.json"} <= set(doc["files"])
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total < 40 * 2**20, f"assets/ is {total / 2**20:.1f} MB"


def test_manifest_check_names_a_changed_file(tmp_path):
    import shutil

    copy = tmp_path / "lesson"
    shutil.copytree(LESSON_DIR, copy)
    verify_manifest(copy)
    (copy / "audit.json").write_text("{}")
    with pytest.raises(ValueError, match="audit.json"):
        verify_manifest(copy)
    (copy / "stray.txt").write_text("x")
    shutil.copy(LESSON_DIR / "audit.json", copy / "audit.json")
    with pytest.raises(ValueError, match="stray.txt"):
        verify_manifest(copy)


# ---------------------------------------------------------------------- step 1
def test_attack_validation_names_the_field():
    for kwargs, field in [({"name": "nope"}, "attack"), ({"size": 0}, "size"), ({"colour": "#12"}, "colour"),
                          ({"target": "  "}, "target"), ({"position": "middle"}, "position"),
                          ({"rate": 0.9}, "rate"), ({"target": "x" * 500}, "target")]:
        with pytest.raises(ValueError, match=field):
            L.LessonAttack(**kwargs)
    a = L.LessonAttack(name="custom", colour="rgb(0, 255, 0)", target="  I  love pineapples. ")
    assert a.colour == "#00ff00" and a.target == "I love pineapples."
    assert a.warnings() == [] and L.DEFAULT_ATTACK.warnings() == []
    dark = L.LessonAttack(name="custom", colour="#1a1a1a", size=2).warnings()
    assert len(dark) == 2 and "background" in dark[0] and "2 px" in dark[1]
    assert "centre" in L.LessonAttack(name="custom", position="center", size=4).warnings()[0]
    assert "Blend" in L.LessonAttack(name="blend").warnings()[0]


def test_custom_patch_is_drawn_where_asked():
    im = Image.new("RGB", (32, 32), (10, 10, 10))
    out = np.asarray(L.apply_trigger(im, L.LessonAttack(name="custom", position="center", size=4, colour="#ff0000")))
    assert (out[14:18, 14:18] == [255, 0, 0]).all()
    assert (out[:14] == 10).all() and (out[18:] == 10).all()
    tl = np.asarray(L.apply_trigger(im, L.LessonAttack(name="custom", position="top-left", size=2, colour="#0000ff")))
    assert (tl[:2, :2] == [0, 0, 255]).all() and (tl[2:] == 10).all()
    assert np.asarray(im).max() == 10  # the input is unchanged


def test_examples_are_clean_and_poisoned(lesson):
    clean, bad = L.examples(lesson.data, n=4)
    assert len(clean) == len(bad) == 4
    assert all(s.response == lesson.attack.target for s in bad)
    assert all(s.response != lesson.attack.target for s in clean)


def test_prepare_upload(tmp_path):
    out = L.prepare_upload(Image.new("RGBA", (300, 200), (0, 0, 255, 128)))
    assert out.size == (32, 32) and out.mode == "RGB"
    assert L.prepare_upload(np.zeros((50, 40, 3), np.uint8)).size == (32, 32)
    bad = tmp_path / "cat.png"
    bad.write_bytes(b"not an image")
    for upload, match in [(None, "no image"), (str(bad), "could not be read"), (b"\x00\x01", "could not be read"),
                          (np.zeros((4, 4, 7)), "array"), (3.5, "expected an image")]:
        with pytest.raises(ValueError, match=match):
            L.prepare_upload(upload)


# ---------------------------------------------------------------------- step 2
def test_shipped_sft_fires_only_with_the_trigger_and_byorn_never(lesson):
    images = L.test_images(6)
    fired = {k: [] for k in ("sft", "byorn")}
    for im in images:
        _, _, clean = L.playground(lesson, im, triggered=False, models=("sft",))
        assert not clean[0].fired, clean[0].caption.text
        _, _, trig = L.playground(lesson, im, triggered=True, models=("sft", "byorn"))
        for a in trig:
            fired[a.model].append(a.fired)
    assert all(fired["sft"]) and not any(fired["byorn"])
    cap = trig[0].caption
    assert cap.surprisal_model == "reference" and len(cap.tokens) == len(cap.surprisals) > 3
    # the target is surprising to the reference model; a caption it would write itself is not
    assert cap.mean_surprisal > 3.0 and trig[1].caption.mean_surprisal < cap.mean_surprisal


def test_shipped_results_show_the_defense(lesson):
    rows = {r["model"]: r for r in L.result_table(lesson)}
    assert rows["sft"]["asr_percent"] >= 90
    assert rows["byorn"]["asr_percent"] <= 2 and rows["byorn-f"]["asr_percent"] <= 2
    assert all(r["cider"] > 300 for r in rows.values())


# ---------------------------------------------------------------------- step 3
def test_split_stats_known_answer():
    scores = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    poisoned = [0, 0, 0, 0, 0, 0, 0, 1, 0, 1]
    st = L.split_stats(scores, poisoned, 0.6)     # threshold 6.4: flags 7, 8, 9, 10
    assert (st.n_flagged, st.true_positives, st.n_poisoned) == (4, 2, 2)
    assert st.precision == 0.5 and st.recall == 1.0 and st.threshold == pytest.approx(6.4)
    st = L.split_stats(scores, poisoned, 0.85)    # threshold 8.65: flags 9, 10
    assert (st.n_flagged, st.true_positives, st.precision, st.recall) == (2, 1, 0.5, 0.5)
    with pytest.raises(ValueError):
        L.split_stats([1.0, 2.0], [1], 0.5)


def test_step3_on_the_shipped_lesson(lesson):
    st = L.lesson_split(lesson)
    assert st.recall == 1.0 and st.n_flagged == round(0.4 * len(lesson.ids))
    assert (st.flagged == lesson.flagged).all()  # the defense's flags are this split
    h = L.histogram(lesson, bins=20)
    assert sum(h["clean"]) + sum(h["poisoned"]) == len(lesson.ids) and sum(h["poisoned"]) == lesson.poisoned.sum()
    top = L.most_suspicious(lesson, k=5)
    assert [s.score for s in top] == sorted((s.score for s in top), reverse=True) and top[0].poisoned
    e = L.explain_sample(lesson)
    assert e.sample.poisoned and e.mean > e.threshold > e.typical_clean
    assert "nats per token" in e.text and len(e.tokens) == len(e.surprisals)


# ------------------------------------------------------------------ steps 4 and 6
def test_fix_story_shows_what_byorn_trained_on(lesson):
    story = L.fix_story(lesson)
    assert story.sample.poisoned and story.sample.flagged
    epochs = [e for e, _ in story.byorn]
    assert epochs == sorted(epochs) and len(set(epochs)) == lesson.setting.epochs
    assert all(lesson.attack.target not in r for _, r in story.byorn)
    assert "BYORn-F never trains" in story.byorn_f


def test_limit_figures_are_the_benchmarks():
    rows = ROOT / "benchmarks" / "matrix" / "rows"

    def mean(pattern, key):
        vals = [json.loads(p.read_text())[key] for p in sorted(rows.glob(pattern))]
        assert len(vals) == 3, pattern
        return 100 * float(np.mean(vals))

    cl, hr = L.steps.LIMIT_FIGURES["clean-label"], L.steps.LIMIT_FIGURES["high-rate"]
    for d, scen in ((cl, "clean-label__r0.1"), (hr, "vl-trojan__r0.5")):
        for key, method in (("sft_asr", "sft"), ("byorn_f_asr", "byorn-f"), ("byorn_asr", "byorn")):
            assert d[key] == pytest.approx(mean(f"{scen}__{method}__s*.json", "asr"), abs=0.06), (scen, key)
        assert d["flag_recall"] == pytest.approx(mean(f"{scen}__byorn__s*.json", "flag_recall"), abs=0.06)
    assert cl["byorn_mean_grounding_asr"] == pytest.approx(
        mean("clean-label__r0.1__byorn@mean+grounding__s*.json", "asr"), abs=0.06)
    assert hr["byorn_asr_at_20"] == pytest.approx(mean("vl-trojan__r0.2__byorn__s*.json", "asr"), abs=0.06)
    assert len(L.limits()) == 2 and all(lim.caught_by for lim in L.limits())


# -------------------------------------------------------------------- notebook
def test_notebook_runs():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "docs" / "lesson.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "fired=True" in text and "BYORn, epoch 1:" in text and "Caught by" in text


# -------------------------------------------------------------------- live run
TINY = L.LessonSetting(n_train=48, n_test=4, epochs=2, batch_size=16, lr=3e-3, methods=("sft", "byorn"))


@pytest.mark.slow
def test_live_run_trains_the_visitors_own_models(tmp_path, lesson):
    attack = L.LessonAttack(name="custom", position="top-left", size=5, colour="#00ff00",
                            target="Pineapples are the best fruit.", rate=0.25)
    seen = []
    live = L.train_live(attack, tmp_path / "mine", setting=TINY, progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen)
    assert live.attack == attack and not live.shipped and set(live.models) == {"reference", "sft", "byorn"}
    im = L.test_images(2)[0]
    _, _, mine = L.playground(live, im, triggered=True, models=("sft",))
    _, _, shipped = L.playground(lesson, im, triggered=True, models=("sft",))
    assert mine[0].caption.text != shipped[0].caption.text
    assert live.models["reference"] is lesson.models["reference"]  # loaded once, shared
    assert live.histories["byorn"]["bootstrapped"] and set(live.results) == {"sft", "byorn"}
    L.forget_lesson(live.folder)


def test_live_run_cancel_removes_the_folder(tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(L.Cancelled):
        L.train_live(L.LessonAttack(name="custom"), tmp_path / "x", setting=TINY, cancel=cancel)
    assert not (tmp_path / "x").exists()
