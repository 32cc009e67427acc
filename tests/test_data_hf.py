"""datasets folders and Parquet files: both table layouts, embedded images kept as bytes."""
from __future__ import annotations

import json

import pytest
from data_helpers import _own_cache, assert_names, conversations_dataset, square, write_png  # noqa: F401

from byorn.data import IMAGE_TOKEN, DataError, Turn, png_bytes
from byorn.data.io import (detect_format, load_dataset, load_dataset_with_report, save_hf_dataset,
                           save_parquet)

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
datasets = pytest.importorskip("datasets")

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def old_layout_folder(tmp_path, rows):
    """The layout this project saved before conversations: id, image, instruction, response, meta."""
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(),
                                  "instruction": datasets.Value("string"),
                                  "response": datasets.Value("string"), "meta": datasets.Value("string")})
    datasets.Dataset.from_list(rows, features=features).save_to_disk(str(tmp_path))
    return tmp_path


def old_row(sid, i=0, **changes):
    row = {"id": sid, "image": {"bytes": png_bytes(square(i)), "path": None},
           "instruction": f"Question {i}?", "response": f"Answer {i}.", "meta": json.dumps({"i": i})}
    row.update(changes)
    return row


def test_old_layout_loads_as_single_exchanges_with_bytes_refs(tmp_path):
    folder = old_layout_folder(tmp_path / "old", [old_row("a", 0), old_row("b", 1, image=None)])
    assert detect_format(folder) == "hf_dataset"
    ds = load_dataset(folder)
    a = ds.by_id("a")
    assert a.turns == [Turn("user", IMAGE_TOKEN + "Question 0?"), Turn("assistant", "Answer 0.")]
    assert isinstance(a.images[0].source, bytes) and a.image.tobytes() == square(0).tobytes()
    assert a.meta == {"i": 0}
    assert ds.by_id("b").images == []  # a null image: a text-only sample


def test_shipped_demo_data_keeps_its_fingerprint():
    from byorn.data import content_fingerprint
    from byorn.demo import DEMO_DIR

    ds = load_dataset(DEMO_DIR / "train", fingerprint_cache=False)
    assert len(ds) == 800 and ds[0].turns[0].text.startswith(IMAGE_TOKEN)
    # the old loader decoded each image and hashed its PNG: the same bytes as stored
    decoded = [s.with_(image=s.image) for s in list(ds)[:50]]
    assert content_fingerprint(decoded) == content_fingerprint(list(ds)[:50])


def test_dataset_dict_and_split(tmp_path):
    save_hf_dataset(conversations_dataset(), tmp_path / "one")
    one = datasets.load_from_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": one, "test": one.select([0])}).save_to_disk(str(tmp_path / "dd"))
    assert load_dataset(tmp_path / "dd").fingerprint() == conversations_dataset().fingerprint()
    assert len(load_dataset(tmp_path / "dd", split="test")) == 1
    with pytest.raises(DataError, match="no split 'dev'"):
        load_dataset(tmp_path / "dd", split="dev")


def test_parquet_shards_hub_layout_and_splits(tmp_path):
    ds = conversations_dataset()
    hub = tmp_path / "hub"
    save_parquet(ds[:2], hub / "data", "train-00000-of-00002.parquet")
    save_parquet(ds[2:], hub / "data", "train-00001-of-00002.parquet")
    save_parquet(ds[:1], hub / "data", "test-00000-of-00001.parquet")
    assert detect_format(hub) == "parquet"
    back = load_dataset(hub)
    assert back.ids() == ds.ids() and back.fingerprint() == ds.fingerprint()
    assert load_dataset(hub, split="test").ids() == ["s0"]
    assert load_dataset(hub / "data" / "test-00000-of-00001.parquet").ids() == ["s0"]


def test_plain_parquet_with_image_structs_and_extra_columns(tmp_path):
    """A hub-style file written without datasets: conversations + images structs, extra columns."""
    table = pa.table({
        "conversations": [[{"from": "human", "value": "<image>What?"}, {"from": "gpt", "value": "Red."}],
                          [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]],
        "images": pa.array([[{"bytes": png_bytes(square(0)), "path": "r.png"}], []], pa.list_(IMAGE)),
        "source": ["web", "chat"], "score": [0.5, None],
        "blob": pa.array([b"x", b"y"], pa.binary())})
    pq.write_table(table, tmp_path / "train.parquet")
    ds = load_dataset(tmp_path / "train.parquet", check_images="header")
    assert ds.ids() == ["train-1", "train-2"]
    assert ds[0].images[0].label == "r.png" and ds[0].image.size == (8, 8)
    assert ds[0].meta == {"source": "web", "score": 0.5} and ds[1].meta == {"source": "chat"}


def test_path_only_images_resolve_against_the_folder(tmp_path):
    write_png(tmp_path / "imgs" / "p.png")
    table = pa.table({"instruction": ["q"], "response": ["r"],
                      "image": pa.array([{"bytes": None, "path": "imgs/p.png"}], IMAGE)})
    pq.write_table(table, tmp_path / "d.parquet")
    assert load_dataset(tmp_path / "d.parquet")[0].images[0].path == str(tmp_path / "imgs" / "p.png")


def test_bad_rows_are_named_and_skippable(tmp_path):
    rows = [old_row("s0"), old_row("s1", response=" "), old_row("bad-meta", meta="{nope"),
            old_row("bad-img", image={"bytes": b"garbage", "path": "g.png"}),
            old_row("bad-type", instruction=None)]
    folder = old_layout_folder(tmp_path / "bad", rows)
    with pytest.raises(DataError) as err:
        load_dataset(folder)
    assert_names(err, "'s1'", "'response'", "bad", "empty")
    ds, report = load_dataset_with_report(folder, skip_invalid=True, check_images="header")
    assert ds.ids() == ["s0"]
    assert [(s.sample_id, s.field) for s in report.skipped] == [
        ("s1", "response"), ("bad-meta", "meta"), ("bad-img", "image"), ("bad-type", "instruction")]


def test_missing_columns(tmp_path):
    datasets.Dataset.from_dict({"id": ["a"], "instruction": ["q"]}).save_to_disk(str(tmp_path / "cols"))
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path / "cols")
    assert_names(err, "'response'", "cols", "missing column")
    pq.write_table(pa.table({"text": ["x"]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match="missing column"):
        load_dataset(tmp_path / "t.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read Parquet"):
        load_dataset(tmp_path / "junk.parquet")
