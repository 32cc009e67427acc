"""COCO captions: annotation JSON + image folder -> one sample per caption."""
from __future__ import annotations

import json

import pytest
from data_helpers import _own_cache, assert_names, write_png  # noqa: F401

from byorn.data import IMAGE_TOKEN, DataError
from byorn.data.io import COCO_INSTRUCTIONS, detect_format, load_dataset, load_dataset_with_report


def write_coco(tmp_path, annotations=None, images=None):
    for name in ("000001.jpg", "000002.jpg"):
        write_png(tmp_path / "train2017" / name)
    data = {"info": {"year": 2017}, "licenses": [],
            "images": images if images is not None else [
                {"id": 1, "file_name": "000001.jpg", "width": 6, "height": 6},
                {"id": 2, "file_name": "000002.jpg"}],
            "annotations": annotations if annotations is not None else [
                {"id": 101, "image_id": 1, "caption": "A red square. "},
                {"id": 102, "image_id": 1, "caption": "Something red."},
                {"id": 201, "image_id": 2, "caption": "A dark square."}]}
    path = tmp_path / "annotations" / "captions_train2017.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_one_sample_per_caption(tmp_path):
    path = write_coco(tmp_path)
    assert detect_format(path) == detect_format(path.parent) == "coco"
    ds = load_dataset(path, image_folder=tmp_path / "train2017")
    assert ds.ids() == ["101", "102", "201"]
    s = ds.by_id("101")
    assert s.response == "A red square." and s.meta == {"image_id": 1}
    assert s.turns[0].text.startswith(IMAGE_TOKEN) and s.instruction in COCO_INSTRUCTIONS
    assert s.images[0].path == str(tmp_path / "train2017" / "000001.jpg")
    assert ds.by_id("102").images[0] is s.images[0]  # captions of one image share its reference
    assert ds.by_id("201").image.size == (6, 6)


def test_instruction_fixed_by_id_or_given(tmp_path):
    path = write_coco(tmp_path)
    a = load_dataset(path, image_folder=tmp_path / "train2017")
    reordered = write_coco(tmp_path / "r", annotations=[{"id": 201, "image_id": 2, "caption": "A dark square."},
                                                        {"id": 101, "image_id": 1, "caption": "x"}])
    b = load_dataset(reordered, image_folder=tmp_path / "r" / "train2017")
    assert a.by_id("201").instruction == b.by_id("201").instruction  # independent of the file's order
    c = load_dataset(path, image_folder=tmp_path / "train2017", instruction="Caption it.")
    assert {s.instruction for s in c} == {"Caption it."}


def test_bad_captions_name_sample_and_field(tmp_path):
    anns = [{"id": 1, "image_id": 1, "caption": "ok"}, {"id": 2, "image_id": 9, "caption": "x"},
            {"id": 3, "image_id": 1, "caption": " "}, {"id": 4, "image_id": 1},
            {"id": 5, "image_id": 3, "caption": "no file"}]
    path = write_coco(tmp_path, annotations=anns, images=[{"id": 1, "file_name": "000001.jpg"},
                                                          {"id": 3, "file_name": "missing.jpg"}])
    with pytest.raises(DataError) as err:
        load_dataset(path, image_folder=tmp_path / "train2017")
    assert_names(err, "'2'", "'image_id'", "captions_train2017.json", "9")
    ds, report = load_dataset_with_report(path, image_folder=tmp_path / "train2017", skip_invalid=True)
    assert ds.ids() == ["1"]
    assert [(s.sample_id, s.field) for s in report.skipped] == [
        ("2", "image_id"), ("3", "caption"), ("4", "caption"), ("5", "file_name")]


def test_default_image_folder_is_the_json_folder(tmp_path):
    path = write_coco(tmp_path)
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert_names(err, "'101'", "'file_name'", "image file not found", "000001.jpg")


def test_not_a_coco_object(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"images": [], "annotations": {}}))
    with pytest.raises(DataError, match="not a COCO captions file"):
        load_dataset(path)
    path.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(DataError, match="nested"):
        load_dataset(path, skip_invalid=True)
