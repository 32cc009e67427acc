"""The app's pure pieces: filtering, sorting, token shading, plots, the training job."""
from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pandas as pd
import pytest

from app import plots, views
from app.jobs import CANCELLED, FAILED, FINISHED, RUNNING, JobBusy, TrainingJob
from byorn.decisions import Decision


@pytest.fixture()
def table():
    t = pd.DataFrame({
        "id": ["a", "b", "c", "d"],
        "instruction": ["Describe.", "What colour?", "Describe.", "Count."],
        "response": ["a red circle", "banana", "a blue square", "two"],
        "score": [1.0, 6.0, 2.5, 4.0], "score_max": [2.0, 9.0, 3.0, 5.0],
        "tokens": [["a", " red", " circle"], ["banana"], ["a", " blue", " square"], ["two"]],
        "surprisals": [[1, 1, 1], [6], [2, 3, 2.5], [4]],
        "proposed_response": ["", "a green star", "", "three"],
        "umap_joint_x": [0.0, 1.0, 2.0, 3.0], "umap_joint_y": [0.0, 1.0, 0.5, 2.0],
        "gt_poisoned": [False, True, False, False],
    })
    t = views.with_threshold(t, views.threshold_at(t["score"], 0.5))
    return views.join_decisions(t, {("b", 0): Decision("b", "approved", "a green star"),
                                    ("d", 0): Decision("d", "dropped")})


def test_threshold_and_flags(table):
    assert views.threshold_at([1, 2, 3, 4, 5], 0.6) == pytest.approx(3.4)
    assert table["suspicious"].tolist() == [False, True, False, True]
    with pytest.raises(ValueError):
        views.threshold_at([1, 2], 1.5)


def test_join_decisions_defaults_to_pending(table):
    assert table["decision"].tolist() == ["pending", "approved", "pending", "dropped"]
    assert table["decision_text"].tolist()[1] == "a green star"


def test_filter_by_each_criterion(table):
    f = views.filter_table
    assert f(table, flag="flagged")["id"].tolist() == ["b", "d"]
    assert f(table, flag="not flagged")["id"].tolist() == ["a", "c"]
    assert f(table, score_min=2.0, score_max=5.0)["id"].tolist() == ["c", "d"]
    assert f(table, decisions=["pending"])["id"].tolist() == ["a", "c"]
    assert f(table, search="BLUE")["id"].tolist() == ["c"]
    assert f(table, search="green star")["id"].tolist() == ["b"]  # proposed replacement is searched
    assert f(table, search="a.*")["id"].tolist() == []  # plain text, not a regex
    with pytest.raises(ValueError, match="flag"):
        f(table, flag="maybe")
    with pytest.raises(ValueError, match="decision"):
        f(table, decisions=["bogus"])


def test_sort_and_display(table):
    assert views.sort_table(table, "score")["id"].tolist() == ["b", "d", "c", "a"]
    assert views.sort_table(table, "id", descending=False)["id"].tolist() == ["a", "b", "c", "d"]
    shown = views.display_rows(table, limit=2)
    assert list(shown.columns)[:4] == ["id", "score", "flagged", "decision"]
    assert len(shown) == 2 and "poisoned (truth)" in shown.columns


def test_counts(table):
    c = views.counts(table)
    assert c["samples"] == 4 and c["flagged"] == 2 and c["approved"] == 1 and c["dropped"] == 1
    assert c["poisoned (truth)"] == 1 and c["poisoned and flagged"] == 1
    assert "2** flagged" in views.counts_markdown(table)


def test_shade_tokens_escapes_and_scales():
    out = views.shade_tokens_html(["<b>", " ok"], [8.0, 0.0])
    assert "&lt;b&gt;" in out and "<b>" not in out.split("byorn-legend")[0]
    assert "rgba(220, 38, 38, 1.00)" in out and "rgba(220, 38, 38, 0.00)" in out
    assert "8.00 nats" in out
    with pytest.raises(ValueError):
        views.shade_tokens_html(["a"], [])


def test_step_in_order():
    order = ["x", "y", "z"]
    assert views.step_in(order, "y", 1) == "z"
    assert views.step_in(order, "z", 1) == "z"  # clamped at the end
    assert views.step_in(order, "x", -1) == "x"
    assert views.step_in(order, "other", 1) == "x"
    assert views.step_in([], "x", 1) is None


def test_map_figure_carries_ids_and_colours(table):
    for colour in plots.COLOR_BY:
        fig = json.loads(plots.figure_json(plots.map_figure(table, "joint", colour)))
        ids = [i for tr in fig["data"] for i in tr["customdata"]]
        assert sorted(ids) == ["a", "b", "c", "d"]
    fig = plots.map_figure(table, "image", "score")  # no image map in this table: a note, no crash
    assert not fig.data
    hist = plots.histogram_figure(table, 3.0)
    assert len(hist.data) == 2  # split by ground truth


def test_tradeoff_and_loss_figures():
    runs = pd.DataFrame({"run_id": ["r1", "r2"], "method": ["sft", "byorn"], "clean_metric": ["cider"] * 2,
                         "clean_value": [0.5, 0.6], "asr": [0.9, 0.01]})
    assert len(plots.tradeoff_figure(runs).data) == 2
    assert plots.tradeoff_figure(pd.DataFrame()).layout.annotations
    fig = plots.loss_figure([(1, 2.0), (2, 1.5)], [{"step": 2, "cider": 0.3, "asr": 0.5}])
    assert len(fig.data) == 3


def _fake_runner(steps=5, delay=0.01, fail=False):
    def run(callbacks, cancel):
        state = SimpleNamespace(step=0, total_steps=steps, epoch=0, loss=None, elapsed_s=0.0, eta_s=None)
        for cb in callbacks:
            cb.on_train_begin(state)
        for k in range(1, steps + 1):
            if fail and k == 3:
                raise RuntimeError("boom")
            time.sleep(delay)
            state.step, state.loss, state.eta_s = k, 1.0 / k, (steps - k) * delay
            for cb in callbacks:
                cb.on_step_end(state)
            if k % 2 == 0:
                for cb in callbacks:
                    cb.on_evaluate(state, {"clean": 0.1 * k, "asr": 1.0 / k})
            if cancel.is_set():
                return SimpleNamespace(out_dir="/tmp/x", metrics={}, cancelled=True)
        for cb in callbacks:
            cb.on_train_end(state)
        return SimpleNamespace(out_dir="/tmp/x", metrics={"asr": 0.2}, cancelled=False)
    return run


def test_job_runs_records_and_refuses_a_second_start():
    job = TrainingJob()
    assert job.snapshot()["status"] == "idle"
    job.start(_fake_runner(steps=20, delay=0.02), "first")
    with pytest.raises(JobBusy, match="already going"):
        job.start(_fake_runner(), "second")
    assert job.join(10)
    snap = job.snapshot()
    assert snap["status"] == FINISHED and snap["step"] == 20 and len(snap["losses"]) == 20
    assert snap["evals"][0] == {"step": 2, "clean": pytest.approx(0.2), "asr": 0.5}
    assert snap["metrics"] == {"asr": 0.2}
    assert job.start(_fake_runner(steps=2), "third") == 2  # free again after the first ended
    job.join(10)


def test_job_cancel_and_failure():
    job = TrainingJob()
    job.start(_fake_runner(steps=500, delay=0.01), "long")
    time.sleep(0.05)
    assert job.cancel() is True
    assert job.join(10)
    snap = job.snapshot()
    assert snap["status"] == CANCELLED and snap["step"] < 500
    assert job.cancel() is False
    job.start(_fake_runner(fail=True), "failing")
    job.join(10)
    snap = job.snapshot()
    assert snap["status"] == FAILED and "boom" in snap["error"]


def test_job_start_is_atomic_across_threads():
    job = TrainingJob()
    started, busy = [], []

    def click():
        try:
            started.append(job.start(_fake_runner(steps=10, delay=0.02), "x"))
        except JobBusy:
            busy.append(1)

    threads = [threading.Thread(target=click) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(started) == 1 and len(busy) == 7
    assert job.snapshot()["status"] == RUNNING
    job.join(10)


def test_loss_figure_separates_bootstrapped_batches():
    fig = plots.loss_figure([(1, 4.0, False), (2, 0.2, True), (3, 3.5, False)], [])
    names = [tr.name for tr in fig.data]
    assert names == ["loss (data batches)", "loss (bootstrapped batches)"]
    assert list(fig.data[1].x) == [2]
