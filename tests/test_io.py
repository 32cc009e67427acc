"""byorn.data.io, the public API: detection, round trips through every saver, options, reports.

Format details live in test_data_llava / _messages / _coco / _hf, the fingerprint
cache in test_data_fingerprint, uploads in test_data_upload.
"""
from __future__ import annotations

import json
import logging

import pytest
from data_helpers import (_own_cache, assert_names, conversations_dataset, llava_record,  # noqa: F401
                          messages_record, write_json, write_jsonl, write_png)

from byorn.data import DataError, ImageRef, Sample, Turn, VLDataset, content_fingerprint
from byorn.data.io import (FORMATS, LoadConfig, LoadReport, detect_format, load_dataset,
                           load_dataset_with_report, save_hf_dataset, save_jsonl, save_llava_json,
                           save_parquet, strip_image_token)

SAVERS = [save_llava_json, save_jsonl, save_hf_dataset, save_parquet]
SAVED_AS = {save_llava_json: "llava_json", save_jsonl: "jsonl", save_hf_dataset: "hf_dataset",
            save_parquet: "parquet"}


# ------------------------------------------------------------ round trips --

@pytest.mark.parametrize("saver", SAVERS, ids=lambda s: s.__name__)
def test_round_trip_keeps_conversations_images_meta_and_fingerprint(tmp_path, saver):
    ds = conversations_dataset()
    out = saver(ds, tmp_path / "out")
    assert detect_format(out) == SAVED_AS[saver] == detect_format(tmp_path / "out")
    back = load_dataset(tmp_path / "out")
    assert back.ids() == ds.ids()
    for a, b in zip(ds, back):
        assert b.turns == a.turns  # every turn, in order, placeholders where they were
        assert len(b.images) == len(a.images)
        for ra, rb in zip(a.images, b.images):
            assert rb.load().tobytes() == ra.load().tobytes()
        assert b.meta == a.meta
    assert back.by_id("multi").n_turns == 2 and back.by_id("text-only").images == []
    assert back.fingerprint() == ds.fingerprint() == content_fingerprint(back)


def test_loading_never_decodes_images(tmp_path, monkeypatch):
    from PIL import Image

    save_llava_json(conversations_dataset(), tmp_path / "a")
    save_hf_dataset(conversations_dataset(), tmp_path / "b")
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded at load time"))
    for path in (tmp_path / "a", tmp_path / "b"):
        ds = load_dataset(path, check_images="header")
        assert all(isinstance(r, ImageRef) for s in ds for r in s.images)


def test_save_refuses_a_sample_that_would_not_load_back(tmp_path):
    bad = VLDataset([Sample("x", [Turn("user", "<image> hi"), Turn("assistant", "yo")], [])])
    with pytest.raises(DataError) as err:
        save_llava_json(bad, tmp_path)
    assert_names(err, "'x'", "placeholder")


def test_save_drops_unserialisable_meta_and_makes_unique_names(tmp_path, caplog):
    from data_helpers import square

    img = square(0)
    ds = VLDataset([Sample.single("a b", img, "q", "r", {"obj": object(), "ok": 1}),
                    Sample.single("a_b", square(1), "q", "r"), Sample.single("A_B", square(2), "q", "r"),
                    Sample.single("../..", square(3), "q", "r"), Sample.single("same", img, "q2", "r2")])
    with caplog.at_level(logging.DEBUG, logger="byorn.data.io"):
        path = save_llava_json(ds, tmp_path)
    records = json.loads(path.read_text())
    assert records[0]["meta"] == {"ok": 1} and "meta" not in records[1]
    assert "obj" in caplog.text
    names = [r["image"] for r in records]
    assert len({n.lower() for n in names[:4]}) == 4
    assert names[4] == names[0]  # one image object shared by two samples: written once
    assert all(n.startswith("images/") and ".." not in n for n in names)
    assert load_dataset(path).fingerprint() == ds.fingerprint()


def test_savers_copy_image_bytes_as_they_are(tmp_path):
    jpeg = tmp_path / "src" / "photo.jpg"
    jpeg.parent.mkdir()
    from data_helpers import square

    square(1, (16, 16)).save(jpeg, quality=70)
    ds = VLDataset([Sample.single("j", ImageRef(str(jpeg)), "q", "r")])
    path = save_llava_json(ds, tmp_path / "out")
    rec = json.loads(path.read_text())[0]
    assert rec["image"] == "images/j.jpg"
    assert (path.parent / rec["image"]).read_bytes() == jpeg.read_bytes()


# -------------------------------------------------------------- detection --

def test_detection_rules(tmp_path):
    llava = write_json(tmp_path / "l", [llava_record("a")])
    assert detect_format(llava) == detect_format(llava.parent) == "llava_json"
    lines = write_jsonl(tmp_path / "m", [messages_record("b")])
    assert detect_format(lines) == "jsonl"
    named_json = write_jsonl(tmp_path / "j", [messages_record("c"), messages_record("d")], name="x.json")
    assert detect_format(named_json) == "jsonl"  # JSON Lines under a .json name
    coco = write_json(tmp_path / "c", {"info": {}, "images": [], "annotations": []}, name="captions.json")
    assert detect_format(coco) == "coco"
    save_parquet(conversations_dataset(), tmp_path / "p")
    assert detect_format(tmp_path / "p") == detect_format(tmp_path / "p" / "data.parquet") == "parquet"
    assert set(FORMATS) == {"llava_json", "jsonl", "coco", "hf_dataset", "parquet"}


def test_unknown_format_and_missing_path(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unknown format"):
        load_dataset(tmp_path / "data.csv")
    with pytest.raises(DataError, match="no such file"):
        detect_format(tmp_path / "nope.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="unknown format"):
        detect_format(tmp_path / "empty")
    (tmp_path / "obj.json").write_text('{"data": []}')
    with pytest.raises(DataError, match="unknown JSON layout"):
        detect_format(tmp_path / "obj.json")


def test_ambiguous_folder(tmp_path):
    write_json(tmp_path, [llava_record("a")], name="a.json")
    write_jsonl(tmp_path, [messages_record("b")], name="b.jsonl")
    with pytest.raises(DataError) as err:
        detect_format(tmp_path)
    assert_names(err, "ambiguous", "a.json", "b.jsonl")
    assert detect_format(tmp_path / "b.jsonl") == "jsonl"


def test_format_can_be_forced(tmp_path):
    path = write_jsonl(tmp_path, [messages_record("a")], name="data.txt")
    assert load_dataset(path, format="jsonl").ids() == ["a"]
    with pytest.raises(ValueError, match="format must be one of"):
        load_dataset(path, format="xml")


# ---------------------------------------------------------------- options --

def test_load_options_are_validated():
    with pytest.raises(ValueError, match="check_images"):
        LoadConfig(check_images="all")
    with pytest.raises(ValueError, match="max_pixels"):
        LoadConfig(max_pixels=0)
    with pytest.raises(ValueError, match="instruction"):
        LoadConfig(instruction="  ")
    with pytest.raises(TypeError, match="unknown load option"):
        load_dataset("x", image_dir="y")


def test_config_and_keywords_combine(tmp_path):
    path = write_json(tmp_path / "d", [llava_record("a", image="a.png")], images=())
    write_png(tmp_path / "pics" / "a.png")
    cfg = LoadConfig(image_folder=str(tmp_path / "pics"), check_images="header")
    assert load_dataset(path, cfg)[0].images[0].path == str(tmp_path / "pics" / "a.png")
    with pytest.raises(DataError, match="above the limit"):
        load_dataset(path, cfg, max_pixels=35)


# ----------------------------------------------------------- skip_invalid --

def test_skip_invalid_reports_and_logs(tmp_path, caplog):
    records = [llava_record("good"), llava_record("no-img", image="img/x.png"),
               llava_record("empty", answer=""), llava_record("good2")]
    path = write_json(tmp_path, records)
    with caplog.at_level(logging.WARNING, logger="byorn.data.io"):
        ds, report = load_dataset_with_report(path, skip_invalid=True)
    assert ds.ids() == ["good", "good2"]
    assert (report.n_loaded, report.n_skipped, report.n_total) == (2, 2, 4)
    assert [(s.sample_id, s.field) for s in report.skipped] == [
        ("no-img", "image"), ("empty", "conversations[1].value")]
    assert "x.png" in report.skipped[0].message
    assert "no-img" in caplog.text and "empty" in caplog.text
    assert report.format == "llava_json" and "2 skipped" in report.summary()
    assert LoadReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


def test_all_invalid_raises_even_when_skipping(tmp_path):
    path = write_json(tmp_path, [llava_record("a", answer=""), llava_record("b", answer="")])
    with pytest.raises(DataError, match="no valid samples"):
        load_dataset(path, skip_invalid=True)
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(DataError, match="no valid samples"):
        load_dataset(tmp_path / "empty.json")


def test_duplicate_id(tmp_path):
    path = write_json(tmp_path, [llava_record("d"), llava_record("d")])
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert_names(err, "'d'", "'id'", "train.json", "duplicate")
    ds, report = load_dataset_with_report(path, skip_invalid=True)
    assert len(ds) == 1 and report.n_skipped == 1


def test_strip_image_token():
    assert strip_image_token("<image>\nHi") == "Hi"
    assert strip_image_token("Look <image> here") == "Look here"
