"""DecisionStore: validation, persistence across reopen, history, concurrency."""
from __future__ import annotations

import multiprocessing as mp
import threading

import pytest

from byorn.decisions import STATUSES, Decision, DecisionStore

FP = "fp0123456789abcd"


@pytest.fixture()
def store(tmp_path):
    return DecisionStore(tmp_path / "decisions.sqlite")


def test_set_get_all_and_overwrite(store):
    assert store.get(FP, "a") is None
    d = store.set(FP, "a", "approved", "a red circle")
    assert (d.sample_id, d.status, d.text) == ("a", "approved", "a red circle")
    assert d.updated_at > 0
    store.set(FP, "b", "dropped")
    store.set(FP, "a", "rejected", "ignored text")  # text only kept for approved / edited
    got = store.all(FP)
    assert set(got) == {"a", "b"}
    assert got["a"].status == "rejected" and got["a"].text is None
    assert store.counts(FP) == {"rejected": 1, "dropped": 1}
    assert store.all("other-fingerprint") == {}


def test_validation(store):
    with pytest.raises(ValueError, match="'maybe'"):
        store.set(FP, "a", "maybe")
    for status in ("approved", "edited"):
        with pytest.raises(ValueError, match="non-empty text"):
            store.set(FP, "a", status, "   ")
        with pytest.raises(ValueError, match="non-empty text"):
            store.set(FP, "a", status)
    with pytest.raises(ValueError):
        Decision("a", "bogus")
    # set_many validates everything before writing anything
    with pytest.raises(ValueError):
        store.set_many(FP, [("x", "dropped"), ("y", "approved", "")])
    assert store.all(FP) == {}


def test_set_many_and_clear_keep_history(store):
    out = store.set_many(FP, [("a", "dropped"), Decision("b", "edited", "my text"), ("c", "pending")])
    assert [d.status for d in out] == ["dropped", "edited", "pending"]
    assert store.get(FP, "b").text == "my text"
    assert store.clear(FP, "a") is True
    assert store.clear(FP, "a") is False
    assert store.get(FP, "a") is None
    store.set(FP, "b", "approved", "replacement")
    hist = store.history(FP, "b")
    assert [h["status"] for h in hist] == ["edited", "approved"]
    assert [h["status"] for h in store.history(FP, "a")] == ["dropped", "cleared"]
    assert len(store.history(FP)) == 5


def test_survives_reopen(tmp_path):
    path = tmp_path / "sub" / "d.sqlite"
    s1 = DecisionStore(path)
    s1.set(FP, "a", "edited", "kept after restart")
    del s1
    s2 = DecisionStore(path)
    assert s2.get(FP, "a") == Decision("a", "edited", "kept after restart", s2.get(FP, "a").updated_at)
    assert len(s2.history(FP)) == 1


def test_many_threads_write_without_loss(store):
    def work(k: int) -> None:
        for i in range(20):
            store.set(FP, f"t{k}-{i}", STATUSES[1 + (i % 4)], "x")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.all(FP)) == 120
    assert len(store.history(FP)) == 120


def _write_from_process(path: str, k: int) -> None:
    s = DecisionStore(path)
    for i in range(10):
        s.set(FP, f"p{k}-{i}", "dropped")


def test_several_processes_share_one_file(tmp_path):
    path = str(tmp_path / "d.sqlite")
    DecisionStore(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_from_process, args=(path, k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(DecisionStore(path).all(FP)) == 30
