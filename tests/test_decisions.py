"""DecisionStore: turns and sources, validation, persistence, history, concurrency, migration of the
first schema, read-only and damaged files, and transactions that never write half."""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from _readonly import read_only
from byorn.decisions import (SCHEMA_VERSION, STATUSES, Decision, DecisionStore, DecisionStoreError,
                             decisions_from_mapping)

FP = "fp0123456789abcd"
V1_FILE = Path(__file__).parent / "data" / "decisions_v1.sqlite"  # written by the first DecisionStore
V1_FP = "fpv1aaaaaaaaaaaa"


@pytest.fixture()
def store(tmp_path):
    return DecisionStore(tmp_path / "decisions.sqlite")


def test_set_get_all_and_overwrite(store):
    assert store.get(FP, "a") is None
    d = store.set(FP, "a", "approved", "a red circle", source="reference:tiny")
    assert (d.sample_id, d.status, d.text, d.turn, d.source) == ("a", "approved", "a red circle", 0, "reference:tiny")
    assert d.updated_at > 0
    store.set(FP, "b", "dropped")
    store.set(FP, "a", "rejected", "ignored text", source="ignored")  # text / source only for approved, edited
    got = store.all(FP)
    assert set(got) == {("a", 0), ("b", 0)}
    assert got[("a", 0)].status == "rejected" and got[("a", 0)].text is None and got[("a", 0)].source is None
    assert store.counts(FP) == {"rejected": 1, "dropped": 1}
    assert store.all("other-fingerprint") == {}


def test_turns_are_decided_apart_and_remember_their_source(store):
    store.set(FP, "conv", "approved", "turn one text", turn=1, source="run:20260101-byorn")
    store.set(FP, "conv", "edited", "turn zero text")
    assert store.get(FP, "conv").source == "user"  # an edit is the user's text
    assert store.get(FP, "conv", 1).source == "run:20260101-byorn"
    assert store.get(FP, "conv", 2) is None
    assert set(store.all(FP)) == {("conv", 0), ("conv", 1)}
    assert store.clear(FP, "conv", 1) is True and store.get(FP, "conv") is not None
    hist = store.history(FP, "conv")
    assert [(h["turn"], h["status"], h["source"]) for h in hist] == [
        (1, "approved", "run:20260101-byorn"), (0, "edited", "user"), (1, "cleared", None)]
    assert [h["status"] for h in store.history(FP, "conv", turn=1)] == ["approved", "cleared"]
    with pytest.raises(ValueError, match="turn"):
        store.set(FP, "conv", "dropped", turn=-1)


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
    out = store.set_many(FP, [("a", "dropped"), Decision("b", "edited", "my text"), ("c", "pending"),
                              ("c", "approved", "later turn", 1, "reference:m")])
    assert [(d.status, d.turn) for d in out] == [("dropped", 0), ("edited", 0), ("pending", 0), ("approved", 1)]
    assert store.get(FP, "b").text == "my text"
    assert store.clear(FP, "a") is True
    assert store.clear(FP, "a") is False
    assert store.get(FP, "a") is None
    store.set(FP, "b", "approved", "replacement")
    assert [h["status"] for h in store.history(FP, "b")] == ["edited", "approved"]
    assert [h["status"] for h in store.history(FP, "a")] == ["dropped", "cleared"]
    assert len(store.history(FP)) == 6
    assert store.clear_many(FP, [("b", 0), ("c", 1), ("nope", 0)]) == 2
    assert set(store.all(FP)) == {("c", 0)}


def test_decisions_from_mapping_keys_turn_zero():
    got = decisions_from_mapping({"a": ("approved", "x"), "b": ("dropped", "ignored")})
    assert got == {("a", 0): Decision("a", "approved", "x"), ("b", 0): Decision("b", "dropped")}


def test_survives_reopen(tmp_path):
    path = tmp_path / "sub" / "d.sqlite"
    s1 = DecisionStore(path)
    s1.set(FP, "a", "edited", "kept after restart")
    del s1
    s2 = DecisionStore(path)
    d = s2.get(FP, "a")
    assert d == Decision("a", "edited", "kept after restart", d.updated_at, 0, "user")
    assert len(s2.history(FP)) == 1


def test_a_failed_write_writes_nothing(store):
    """Decisions are never written half: a failure in the middle of a batch rolls all of it back."""
    store.set(FP, "kept", "dropped")
    con = sqlite3.connect(store.path)
    con.execute("CREATE TRIGGER boom BEFORE INSERT ON decisions WHEN NEW.sample_id = 'bad' "
                "BEGIN SELECT RAISE(ABORT, 'disk trouble'); END")
    con.close()
    with pytest.raises(DecisionStoreError, match="disk trouble"):
        store.set_many(FP, [("a", "dropped"), ("b", "rejected"), ("bad", "dropped"), ("c", "dropped")])
    assert set(store.all(FP)) == {("kept", 0)}
    assert [h["sample_id"] for h in store.history(FP)] == ["kept"]


# -- the first schema ------------------------------------------------------------
def _v1_copy(tmp_path) -> Path:
    path = tmp_path / "decisions.sqlite"
    shutil.copy(V1_FILE, path)
    return path


def test_old_store_is_migrated_in_place_losing_nothing(tmp_path):
    path = _v1_copy(tmp_path)
    store = DecisionStore(path)
    got = store.all(V1_FP)
    assert {k: (d.status, d.text, d.source) for k, d in got.items()} == {
        ("a", 0): ("approved", "a red circle", None), ("b", 0): ("dropped", None, None),
        ("d", 0): ("edited", "my words", None), ("e", 0): ("rejected", None, None)}
    assert got[("a", 0)].updated_at > 1.7e9  # times kept
    assert set(store.all("otherfp000000000")) == {("a", 0)}
    hist = store.history(V1_FP)
    assert [(h["seq"], h["sample_id"], h["turn"], h["status"]) for h in hist] == [
        (1, "a", 0, "edited"), (2, "a", 0, "approved"), (3, "b", 0, "dropped"), (4, "c", 0, "rejected"),
        (5, "c", 0, "cleared"), (6, "d", 0, "edited"), (7, "e", 0, "rejected")]
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {"turn", "source"} <= {r[1] for r in con.execute("PRAGMA table_info(decisions)")}
    con.close()
    store.set(V1_FP, "a", "edited", "second turn", turn=1)  # the new key works on the migrated file
    assert DecisionStore(path).get(V1_FP, "a", 1).text == "second turn"  # reopening: nothing to migrate
    assert len(DecisionStore(path).history(V1_FP)) == 8


def test_a_failed_migration_leaves_the_old_store_as_it_was(tmp_path, monkeypatch):
    import byorn.decisions as dmod

    path = _v1_copy(tmp_path)
    monkeypatch.setattr(dmod, "_HISTORY_INDEX", "CREATE INDEX broken ON no_such_table (x)")  # fails mid-way
    with pytest.raises(DecisionStoreError):
        DecisionStore(path)
    con = sqlite3.connect(path)
    assert "turn" not in {r[1] for r in con.execute("PRAGMA table_info(decisions)")}
    assert con.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 5
    assert con.execute("SELECT COUNT(*) FROM history").fetchone()[0] == 8
    con.close()
    monkeypatch.undo()
    assert len(DecisionStore(path).all(V1_FP)) == 4


def test_old_store_read_only_is_read_without_changing_it(tmp_path):
    path = _v1_copy(tmp_path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    store = DecisionStore(path, mode="ro")
    assert store.readonly and store.get(V1_FP, "d") == Decision("d", "edited", "my words",
                                                                store.get(V1_FP, "d").updated_at)
    assert len(store.history(V1_FP)) == 7
    with pytest.raises(DecisionStoreError, match="read-only") as e:
        store.set(V1_FP, "x", "dropped")
    assert e.value.kind == "read-only"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


# -- read-only and damaged files ---------------------------------------------------
def test_read_only_file(tmp_path):
    path = tmp_path / "decisions.sqlite"
    DecisionStore(path).set(FP, "a", "dropped")
    with read_only(path):
        with pytest.raises(DecisionStoreError) as e:
            DecisionStore(path)  # rw: says so instead of failing later
        assert e.value.kind == "read-only" and str(path) in str(e.value)
        store = DecisionStore(path, mode="auto")
        assert store.readonly and "read-only" in store.readonly_reason
        assert store.get(FP, "a").status == "dropped"
        with pytest.raises(DecisionStoreError, match="read-only"):
            store.set(FP, "b", "dropped")
    assert set(DecisionStore(path).all(FP)) == {("a", 0)}


def test_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    DecisionStore(folder / "decisions.sqlite").set(FP, "a", "rejected")
    (tmp_path / "empty").mkdir()
    with read_only(folder), read_only(tmp_path / "empty"):
        store = DecisionStore(folder / "decisions.sqlite", mode="auto")  # WAL file, no -shm possible
        assert store.readonly and store.get(FP, "a").status == "rejected"
        new = DecisionStore(tmp_path / "empty" / "decisions.sqlite", mode="auto")  # cannot even be created
        assert new.readonly and new.all(FP) == {} and new.history(FP) == []
        with pytest.raises(DecisionStoreError, match="read-only"):
            new.set(FP, "a", "dropped")
    assert not (tmp_path / "empty" / "decisions.sqlite").exists()


@pytest.mark.parametrize("mode", ["rw", "ro", "auto"])
def test_damaged_or_foreign_files_are_named_with_what_to_do(tmp_path, mode):
    garbage = tmp_path / "decisions.sqlite"
    garbage.write_bytes(b"\x00\x01 not a database " * 200)
    with pytest.raises(DecisionStoreError, match="Move it aside") as e:
        DecisionStore(garbage, mode=mode)
    assert e.value.kind == "corrupt" and str(garbage) in str(e.value)
    assert garbage.read_bytes().startswith(b"\x00\x01 not")  # untouched
    foreign = tmp_path / "other.sqlite"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE users (name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(DecisionStoreError, match="not a BYORn decision store.*users"):
        DecisionStore(foreign, mode=mode)


def test_truncated_store_is_reported_as_damaged(tmp_path):
    path = tmp_path / "decisions.sqlite"
    store = DecisionStore(path)
    store.set_many(FP, [(f"s{i}", "edited", "x" * 500) for i in range(200)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # a disk that lost the end of the file
    problem = None
    try:
        problem = DecisionStore(path, mode="auto").check()
    except DecisionStoreError as e:
        problem = str(e)
    assert problem  # either refused at open or found by quick_check


# -- concurrency ---------------------------------------------------------------------
def test_many_threads_write_without_loss(store):
    def work(k: int) -> None:
        for i in range(20):
            store.set(FP, f"t{k}-{i}", STATUSES[1 + (i % 4)], "x", turn=i % 2)

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
