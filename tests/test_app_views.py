"""The app's pure pieces: filtering, sorting, token shading, plots, the training job."""
from __future__ import annotations

import base64
import json
import threading
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from app import plots, views
from app.index import TableIndex, status_codes
from app.jobs import CANCELLED, FAILED, FINISHED, RUNNING, JobBusy, TrainingJob
from app.state import Filter
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


def test_map_payload_carries_every_row_and_colours(table):
    ix = TableIndex(table)
    codes = status_codes(ix, {("b", 0): Decision("b", "approved", "x"), ("d", 0): Decision("d", "dropped")})
    for colour in plots.color_choices(ix):
        p = json.loads(plots.payload_json(plots.map_payload(ix, codes, 3.0, "joint", colour)))
        assert p["n"] == 4 and len(base64.b64decode(p["x"])) == 8  # uint16 per row, row i = table row i
        assert [t.split("<br>")[0] for t in p["text"]] == ["a", "b", "c", "d"]
    x = np.frombuffer(base64.b64decode(p["x"]), dtype=np.uint16)
    assert x[0] == 0 and x[-1] == plots.XY_MAX  # quantised over the range: ends at 0 and the top
    dec = json.loads(plots.payload_json(plots.map_payload(ix, codes, 3.0, "joint", "decision")))
    assert list(np.frombuffer(base64.b64decode(dec["c"]), dtype=np.uint8)) == [0, 1, 0, 4]  # STATUSES order
    assert dec["legend"] == {"pending": 2, "approved": 1, "rejected": 0, "edited": 0, "dropped": 1}
    flag = json.loads(plots.payload_json(plots.map_payload(ix, codes, 3.0, "joint", "flag")))
    assert list(np.frombuffer(base64.b64decode(flag["c"]), dtype=np.uint8)) == [0, 1, 0, 1]
    num = plots.map_payload(ix, codes, 3.0, "joint", "score_max")
    assert num["colorbar"]["ticktext"][0] == "2" and num["colorbar"]["ticktext"][-1] == "9"
    assert plots.map_payload(ix, codes, 3.0, "image", "score")["n"] == 0  # no image map: a note, no crash
    with pytest.raises(ValueError, match="colour"):
        plots.map_payload(ix, codes, 3.0, "joint", "no-such-column")
    hist = plots.histogram_figure(ix, 3.0)
    assert [t["name"] for t in hist["data"]] == ["clean (truth)", "poisoned (truth)"]
    assert sum(hist["data"][1]["y"][:-1]) == 1 and "2 flagged" in hist["layout"]["annotations"][0]["text"]


def test_selection_mask_round_trip():
    rows = np.array([0, 3, 7, 8, 99_999])
    p = json.loads(plots.selection_payload(rows, 100_000, rev=1))
    assert p["count"] == 5 and len(p["mask"]) < 20_000  # a bitmask, not a list of ids
    assert plots.rows_from_mask(p["mask"], 100_000).tolist() == rows.tolist()
    assert plots.rows_from_mask("", 10).tolist() == []


def test_fast_filter_matches_the_pandas_filter(table):
    ix = TableIndex(table)
    codes = status_codes(ix, {("b", 0): Decision("b", "approved", "a green star"), ("d", 0): Decision("d", "dropped")})
    thr = views.threshold_at(table["score"], 0.5)
    cases = [dict(flag="flagged"), dict(flag="not flagged"), dict(score_min=2.0, score_max=5.0, flag="all"),
             dict(decisions=("pending",), flag="all"), dict(search="BLUE", flag="all"),
             dict(search="green star", flag="all"), dict(search="a.*", flag="all")]
    for case in cases:
        f = Filter(**case)
        fast = ix.keys[views.filter_rows(ix, codes, thr, f)].tolist()
        slow = views.sort_table(views.filter_table(table, score_min=f.score_min, score_max=f.score_max, flag=f.flag,
                                                   decisions=f.decisions, search=f.search), "score")["id"].tolist()
        assert fast == slow, case
    by_id = views.filter_rows(ix, codes, thr, Filter(flag="all", sort_by="id", descending=False))
    assert ix.keys[by_id].tolist() == ["a", "b", "c", "d"]
    by_dec = views.filter_rows(ix, codes, thr, Filter(flag="all", sort_by="decision"))
    assert ix.keys[by_dec].tolist()[:2] == ["d", "b"]  # dropped (4), approved (1), then pending
    inside = views.filter_rows(ix, codes, thr, Filter(flag="all", in_selection=True), np.array([2, 3]))
    assert ix.keys[inside].tolist() == ["d", "c"]
    rows, page, pages = views.page_of(np.arange(120), 5, size=50)
    assert page == 2 and pages == 3 and rows.tolist() == list(range(100, 120))
    frame = views.page_frame(ix, codes, thr, by_dec[:2])
    assert frame["decision"].tolist() == ["dropped", "approved"] and frame["flagged"].tolist() == ["yes", "yes"]
    c = views.counts_of(ix, codes, thr)
    assert c == {**views.counts(table), "samples": 4}


def test_turn_rows_are_addressed_by_key_and_by_sample():
    from app.synthetic import synthetic_workspace

    ws = synthetic_workspace(60, multi_turn=1.0, seed=3)
    ix = ws.index
    assert ix.multi_turn and len(ws.table) > 60 and ws.table["key"].is_unique
    multi = ws.table[ws.table["n_turns"] > 1].iloc[0]
    assert ix.position(multi["key"]) == multi.name and "#" in multi["key"]
    best = ws.table[(ws.table["id"] == multi["id"]) & (ws.table["turn"] == multi["sample_turn"])].index[0]
    assert ix.position(multi["id"]) == best  # a bare sample id opens its most suspicious turn
    assert len(ix.positions_of([multi["id"]])) == multi["n_turns"]
    codes = status_codes(ix, {(multi["id"], 1): Decision(multi["id"], "dropped", turn=1)})
    assert codes[ix.turn_pos[(multi["id"], 1)]] == 4 and codes.sum() == 4
    joined = views.join_decisions(ws.table, {(multi["id"], 1): Decision(multi["id"], "dropped", turn=1)})
    assert (joined["decision"] == "dropped").sum() == 1


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


def test_decision_cache_follows_the_store(tmp_path):
    from app.context import DecisionCache
    from app.synthetic import synthetic_workspace
    from byorn.decisions import DecisionStore

    ws = synthetic_workspace(50, multi_turn=0.5, seed=2)
    ix, fp = ws.index, ws.fingerprint
    store = DecisionStore(tmp_path / "d.sqlite")
    cache = DecisionCache(store)
    codes = cache.codes(fp, ix)
    assert not codes.any() and cache.all(fp) == {}
    sid, turn = ix.ids[5], int(ix.turns[5])
    cache.set_many(fp, [Decision(sid, "dropped", turn=turn)])
    assert cache.codes(fp, ix) is codes and codes[5] == 4  # updated in place, no reload
    assert cache.all(fp)[(sid, turn)].status == "dropped"
    # a write behind the cache's back (another process, the CLI) is read on the next look
    DecisionStore(tmp_path / "d.sqlite").set(fp, ix.ids[7], "rejected", turn=int(ix.turns[7]))
    fresh = cache.codes(fp, ix)
    assert fresh[7] == 2 and fresh[5] == 4
    assert (fresh == status_codes(ix, store.all(fp))).all()
    cache.clear_many(fp, [(sid, turn)])
    assert cache.codes(fp, ix)[5] == 0 and (sid, turn) not in cache.all(fp)
