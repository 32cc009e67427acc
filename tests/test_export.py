"""Curated export: each decision's effect, round trips through byorn.data.io, CSV."""
from __future__ import annotations

import pytest
from PIL import Image

from byorn.data import Sample, VLDataset
from byorn.decisions import Decision
from byorn.export import (apply_decisions, export_dataset, export_decisions_csv,
                          read_decisions_csv)


@pytest.fixture()
def dataset():
    img = lambda c: Image.new("RGB", (8, 8), c)  # noqa: E731
    return VLDataset([Sample.single(f"s{i}", img((i * 40, 0, 0)), "Describe.", f"original {i}") for i in range(5)])


@pytest.fixture()
def decisions():
    return {"s0": Decision("s0", "approved", "replacement 0", 1.0e9),
            "s1": Decision("s1", "edited", "my text 1", 1.0e9),
            "s2": Decision("s2", "rejected", None, 1.0e9),
            "s3": Decision("s3", "dropped", None, 1.0e9)}


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
    assert lines[0] == "sample_id,status,text,updated_at,original_response"
    assert lines[1].startswith("s0,approved,replacement 0,2001-09-09T01:46:40+00:00,original 0")
    assert read_decisions_csv(path) == decisions
