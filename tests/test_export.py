"""Curated export: each decision's effect per turn, round trips through byorn.data.io, decision CSV,
and decision files given to `byorn train --decisions` (every bad file a clear error)."""
from __future__ import annotations

import csv
import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from byorn.data import Sample, Turn, VLDataset
from byorn.decisions import Decision, DecisionStore
from byorn.export import (CSV_COLUMNS, DecisionFileError, apply_decisions, export_dataset,
                          export_decisions_csv, read_decisions_csv, read_decisions_file)

V1_FILE = Path(__file__).parent / "data" / "decisions_v1.sqlite"


@pytest.fixture()
def dataset():
    img = lambda c: Image.new("RGB", (8, 8), c)  # noqa: E731
    return VLDataset([Sample.single(f"s{i}", img((i * 40, 0, 0)), "Describe.", f"original {i}") for i in range(5)])


@pytest.fixture()
def decisions():
    return {("s0", 0): Decision("s0", "approved", "replacement 0", 1.0e9, source="reference:tiny"),
            ("s1", 0): Decision("s1", "edited", "my text 1", 1.0e9, source="user"),
            ("s2", 0): Decision("s2", "rejected", None, 1.0e9),
            ("s3", 0): Decision("s3", "dropped", None, 1.0e9)}


def conversation(sid: str, answers: list[str]) -> Sample:
    turns = []
    for k, a in enumerate(answers):
        turns += [Turn("user", f"question {k}"), Turn("assistant", a)]
    return Sample(sid, turns)


def test_apply_decisions(dataset, decisions):
    out = apply_decisions(dataset, decisions)
    assert out.ids() == ["s0", "s1", "s2", "s4"]  # dropped left out, order kept
    responses = {s.id: s.response for s in out}
    assert responses == {"s0": "replacement 0", "s1": "my text 1", "s2": "original 2",
                         "s4": "original 4"}  # pending keeps the original
    assert out.by_id("s0").meta == {"original_response": "original 0", "review_decision": "approved"}
    assert out.by_id("s4").meta["review_decision"] == "pending"
    assert dataset.by_id("s0").response == "original 0"  # the input is untouched
    assert dataset.by_id("s0").meta == {}
    with pytest.raises(TypeError, match="sample_id, turn"):
        apply_decisions(dataset, {"s0": decisions[("s0", 0)]})  # the old key format: never silently ignored


def test_apply_decisions_per_turn_and_the_drop_rule():
    ds = VLDataset([conversation("c1", ["a", "b", "c"]), conversation("c2", ["x", "y"]),
                    conversation("c3", ["p", "q"])])
    decisions = {("c1", 1): Decision("c1", "approved", "B", source="run:r1"),
                 ("c1", 2): Decision("c1", "rejected"),
                 ("c2", 1): Decision("c2", "dropped"),  # any dropped turn leaves the sample out
                 ("c3", 0): Decision("c3", "edited", "P")}
    out = apply_decisions(ds, decisions)
    assert out.ids() == ["c1", "c3"]
    assert out.by_id("c1").assistant_texts() == ["a", "B", "c"]
    assert [t.text for t in out.by_id("c1").turns if t.role == "user"] == ["question 0", "question 1", "question 2"]
    assert out.by_id("c1").meta == {"review_decisions": ["pending", "approved", "rejected"],
                                    "original_responses": {"1": "b"}}
    assert out.by_id("c3").assistant_texts() == ["P", "q"]


@pytest.mark.parametrize("fmt", ["llava", "jsonl", "hf"])
def test_export_round_trip(tmp_path, dataset, decisions, fmt):
    io = pytest.importorskip("byorn.data.io")
    out = export_dataset(dataset, decisions, tmp_path / fmt, fmt=fmt)
    back = io.load_dataset(out)
    assert back.ids() == ["s0", "s1", "s2", "s4"]
    assert [s.response for s in back] == ["replacement 0", "my text 1", "original 2", "original 4"]
    assert back.by_id("s2").image.size == (8, 8)


def test_export_rejects_unknown_format(tmp_path, dataset):
    with pytest.raises(ValueError, match="'xml'"):
        export_dataset(dataset, {}, tmp_path, fmt="xml")


def test_decisions_csv_round_trip(tmp_path, dataset, decisions):
    path = export_decisions_csv(decisions, tmp_path / "d.csv", dataset=dataset)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)
    assert lines[1] == (f"s0,0,approved,replacement 0,reference:tiny,2001-09-09T01:46:40+00:00,"
                        f"{dataset.fingerprint()},original 0")
    assert read_decisions_csv(path) == decisions


def test_csv_without_turn_and_source_reads_as_turn_zero(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text("sample_id,status,text,updated_at,original_response\n"
                    "s0,approved,new text,2001-09-09T01:46:40+00:00,old\ns1,dropped,,,\n")
    assert read_decisions_csv(path) == {("s0", 0): Decision("s0", "approved", "new text", 1.0e9),
                                        ("s1", 0): Decision("s1", "dropped")}


# -- decision files for `byorn train --decisions` ----------------------------------
def keys(ds: VLDataset):
    return [(s.id, k) for s in ds for k in range(s.n_turns)]


def write_csv(path: Path, rows: list[list], header=("sample_id", "turn", "status", "text", "fingerprint")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_csv_partly_applies_with_a_report(tmp_path, dataset):
    fp = dataset.fingerprint()
    path = write_csv(tmp_path / "d.csv", [["s0", 0, "dropped", "", fp], ["ghost", 0, "dropped", "", fp],
                                          ["s1", 3, "rejected", "", ""], ["s2", 0, "rejected", "", "otherfp"]])
    got, report = read_decisions_file(path, fp, keys(dataset))
    assert got == {("s0", 0): Decision("s0", "dropped")}
    assert (report.kind, report.n_rows, report.applied) == ("csv", 4, 1)
    assert report.unknown == [("ghost", 0), ("s1", 3)] and report.other_datasets == {"otherfp": 1}
    assert "1 of 4" in report.summary() and "'ghost' turn 0" in report.summary() and "otherfp" in report.summary()


def test_csv_of_unknown_ids_is_an_error(tmp_path, dataset):
    path = write_csv(tmp_path / "d.csv", [["x1", 0, "dropped", "", ""], ["x2", 0, "rejected", "", ""]])
    with pytest.raises(DecisionFileError, match=r"none of the 2 decisions in .*d\.csv apply.*'x1' turn 0"):
        read_decisions_file(path, dataset.fingerprint(), keys(dataset))


def test_sqlite_store_of_another_dataset_is_an_error_naming_it(tmp_path, dataset):
    path = tmp_path / "decisions.sqlite"
    DecisionStore(path).set_many("fp-of-other-data", [("s0", "dropped"), ("s1", "rejected")])
    with pytest.raises(DecisionFileError, match="2 are of other datasets.*fp-of-other-data: 2"):
        read_decisions_file(path, dataset.fingerprint(), keys(dataset))
    DecisionStore(path).set(dataset.fingerprint(), "s4", "edited", "mine")
    got, report = read_decisions_file(path, dataset.fingerprint(), keys(dataset))
    assert set(got) == {("s4", 0)} and report.kind == "sqlite"
    assert report.other_datasets == {"fp-of-other-data": 2} and report.n_rows == 3


def test_old_store_file_is_read_without_being_migrated(tmp_path):
    path = tmp_path / "old.sqlite"
    shutil.copy(V1_FILE, path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    got, report = read_decisions_file(path, "fpv1aaaaaaaaaaaa", [("a", 0), ("b", 0), ("d", 0)])
    assert {k: d.status for k, d in got.items()} == {("a", 0): "approved", ("b", 0): "dropped",
                                                     ("d", 0): "edited"}
    assert report.unknown == [("e", 0)] and report.other_datasets == {"otherfp000000000": 1}
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_empty_file_is_an_error_and_stays_empty(tmp_path, dataset):
    for name in ("decisions.sqlite", "decisions.csv"):
        path = tmp_path / name
        path.write_bytes(b"")
        with pytest.raises(DecisionFileError, match=r"empty \(0 bytes\)"):
            read_decisions_file(path, dataset.fingerprint(), keys(dataset))
        assert path.read_bytes() == b""  # never silently turned into a database


@pytest.mark.parametrize("name, content, match", [
    ("decisions.sqlite", b"SQLite format 3\x00" + b"\xff" * 3000, "damaged or not an SQLite file"),
    ("decisions.sqlite", b"just some text", "neither an SQLite decision store"),
    ("decisions.csv", b"\x89PNG\r\n\x1a\n\x00\x00garbage", "neither an SQLite decision store"),
    ("decisions.csv", "sample_id,status\ns0,dropp\xe9d\n".encode("latin-1"), r"not a text \(UTF-8\)"),
])
def test_garbage_files_are_clear_errors(tmp_path, dataset, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DecisionFileError, match=match) as e:
        read_decisions_file(path, dataset.fingerprint(), keys(dataset))
    assert str(path) in str(e.value)


def test_sqlite_file_that_is_not_a_store(tmp_path, dataset):
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE things (x)")
    con.commit()
    con.close()
    with pytest.raises(DecisionFileError, match="not a BYORn decision store"):
        read_decisions_file(path, dataset.fingerprint(), keys(dataset))


@pytest.mark.parametrize("text, match", [
    ("id,decision\ns0,dropped\n", r"header \(line 1\) is 'id,decision'; it lacks sample_id, status"),
    ("sample_id,status,text\ns0,dropped,\ns1,maybe,\n", r"line 3: unknown status 'maybe' for sample 's1'"),
    ("sample_id,status,text\ns0,dropped,\ns1,approved,\n", r"line 3: sample 's1' is 'approved' but its text is empty"),
    ("sample_id,turn,status\ns0,first,dropped\n", r"line 2: the turn 'first'"),
    ("sample_id,status,updated_at\ns0,dropped,yesterday\n", r"line 2: the updated_at 'yesterday'"),
    ("sample_id,status\ns0,dropped\ns0,rejected\n", r"line 3: sample 's0' turn 0 is decided twice \(also on line 2\)"),
    ("sample_id,status\ns0,dropped,extra\n", r"line 2: 3 cells but the header has 2 columns"),
    ("sample_id,status\n", "holds no decisions"),
])
def test_bad_csv_rows_name_the_file_and_line(tmp_path, dataset, text, match):
    path = tmp_path / "d.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DecisionFileError, match=match) as e:
        read_decisions_file(path, dataset.fingerprint(), keys(dataset))
    assert str(path) in str(e.value)


def test_missing_file(tmp_path, dataset):
    with pytest.raises(DecisionFileError, match="does not exist"):
        read_decisions_file(tmp_path / "nope.csv", dataset.fingerprint(), keys(dataset))
    assert not (tmp_path / "nope.csv").exists()


def test_cli_train_refuses_a_bad_decision_file(tmp_path, capsys):
    """`byorn train --decisions` stops before training with the file's problem (exit 2, no traceback)."""
    from byorn.cli import main
    from byorn.data.io import save_llava_json
    from byorn.world import make_captions

    data = save_llava_json(make_captions(8, 0, "train"), tmp_path / "data")
    bad = write_csv(tmp_path / "d.csv", [["not-in-the-data", 0, "dropped", "", ""]])
    argv = ["train", "--data", str(data), "--method", "sft", "--max-steps", "1", "--batch-size", "4",
            "--out", str(tmp_path / "run"), "--decisions", str(bad)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "d.csv" in err and "none of the 1 decisions" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "model").exists()
