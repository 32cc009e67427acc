"""Tests for byorn.data.io: loading, saving, format detection and zip uploads."""
from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from byorn.data import DataError, Sample, VLDataset
from byorn.data.io import (detect_format, extract_upload, load_dataset, load_dataset_with_report,
                      save_hf_dataset, save_jsonl, save_llava_json, strip_image_token)

COLOURS = [(255, 0, 0), (0, 128, 0), (0, 0, 255), (200, 200, 0)]


def make_dataset(n: int = 4) -> VLDataset:
    samples = []
    for i in range(n):
        image = Image.new("RGB", (8 + i, 8), COLOURS[i % len(COLOURS)])
        image.putpixel((i, 0), (i, 2 * i, 3 * i))
        meta = {"gt_poisoned": i % 2 == 0, "trigger": "badnets", "nested": {"k": [i]}}
        samples.append(Sample.single(f"s/{i}:é" if i == 3 else f"s{i}", image,
                              f"What colour is square {i}?", f"Colour number {i}.", meta))
    samples[1].meta = {}
    return VLDataset(samples, name="toy")


def write_png(path: Path, size=(6, 6), colour=(10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def llava_record(sid, image="img/a.png", question="<image>\nWhat is it?", answer="A cat."):
    rec = {"id": sid, "image": image, "conversations": [
        {"from": "human", "value": question}, {"from": "gpt", "value": answer}]}
    return rec


def write_llava(tmp_path: Path, records, name="train.json") -> Path:
    write_png(tmp_path / "img" / "a.png")
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def write_jsonl(tmp_path: Path, lines, name="chat.jsonl") -> Path:
    write_png(tmp_path / "img" / "a.png")
    path = tmp_path / name
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def messages_record(sid=None, user="<image>Describe.", answer="A square.", images=("img/a.png",)):
    rec = {"messages": [{"role": "user", "content": user},
                        {"role": "assistant", "content": answer}], "images": list(images)}
    if sid is not None:
        rec["id"] = sid
    return rec


def assert_names(err: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(err.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# ------------------------------------------------------------ round trips --

@pytest.mark.parametrize("saver", [save_llava_json, save_jsonl, save_hf_dataset])
def test_round_trip_preserves_fingerprint_and_meta(tmp_path, saver):
    ds = make_dataset()
    path = saver(ds, tmp_path / "out")
    loaded = load_dataset(path)
    assert loaded.fingerprint() == ds.fingerprint()
    assert loaded.ids() == ds.ids()
    for a, b in zip(ds, loaded):
        assert (a.instruction, a.response) == (b.instruction, b.response)
        assert a.image.tobytes() == b.image.tobytes()
        assert {k: v for k, v in b.meta.items() if k != "image_path"} == a.meta
    if saver is not save_hf_dataset:
        assert loaded[0].meta["image_path"].startswith("images/")
        assert (path.parent / loaded[3].meta["image_path"]).is_file()


def test_round_trip_through_the_folder_path(tmp_path):
    ds = make_dataset()
    for saver, fmt in [(save_llava_json, "llava_json"), (save_jsonl, "jsonl"),
                       (save_hf_dataset, "hf_dataset")]:
        out = tmp_path / fmt
        saver(ds, out)
        assert detect_format(out) == fmt
        assert load_dataset(out).fingerprint() == ds.fingerprint()


def test_save_drops_unserialisable_meta_and_makes_unique_names(tmp_path, caplog):
    img = Image.new("RGB", (4, 4))
    ds = VLDataset([Sample.single("a b", img, "q", "r", {"obj": object(), "ok": 1}),
                    Sample.single("a_b", img, "q", "r"), Sample.single("A_B", img, "q", "r"),
                    Sample.single("../..", img, "q", "r")])
    with caplog.at_level(logging.DEBUG, logger="byorn.data.io"):
        path = save_llava_json(ds, tmp_path)
    records = json.loads(path.read_text())
    assert records[0]["meta"] == {"ok": 1} and "meta" not in records[1]
    assert "obj" in caplog.text
    names = [r["image"] for r in records]
    assert len({n.lower() for n in names}) == 4
    assert all(n.startswith("images/") and ".." not in n for n in names)
    assert load_dataset(path).fingerprint() == ds.fingerprint()


def test_save_hf_dataset_dict_train_split(tmp_path):
    import datasets

    ds = make_dataset()
    save_hf_dataset(ds, tmp_path / "single")
    single = datasets.load_from_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": single, "test": single}).save_to_disk(str(tmp_path / "dd"))
    assert detect_format(tmp_path / "dd") == "hf_dataset"
    assert load_dataset(tmp_path / "dd").fingerprint() == ds.fingerprint()


# ---------------------------------------------------------------- parsing --

def test_llava_parsing_strips_placeholder_and_keeps_extra_keys(tmp_path):
    rec = llava_record("x1", question="<image>\n  Is it red?")
    rec["conversations"] = [{"from": "gpt", "value": "ignored"}] + rec["conversations"] + [
        {"from": "human", "value": "second"}, {"from": "gpt", "value": "later"}]
    rec["meta"] = {"gt_poisoned": True}
    rec["source"] = "web"
    ds = load_dataset(write_llava(tmp_path, [rec]), name="n")
    s = ds[0]
    assert (s.instruction, s.response) == ("Is it red?", "A cat.")
    assert s.meta == {"gt_poisoned": True, "source": "web", "image_path": "img/a.png"}
    assert s.image.mode == "RGB" and ds.name == "n"


def test_strip_image_token():
    assert strip_image_token("<image>\nHi") == "Hi"
    assert strip_image_token("Hi\n<image>") == "Hi"
    assert strip_image_token("Look <image> here") == "Look here"
    assert strip_image_token("no token ") == "no token "


def test_jsonl_messages_and_trl_content_and_generated_ids(tmp_path):
    trl = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A dot."}]}],
        "images": ["img/a.png"], "split": "train"}
    path = write_jsonl(tmp_path, [messages_record("m1"), "", trl])
    ds = load_dataset(path)
    assert ds.ids() == ["m1", "chat-3"]
    assert (ds[0].instruction, ds[0].response) == ("Describe.", "A square.")
    assert (ds[1].instruction, ds[1].response) == ("What?", "A dot.")
    assert ds[1].meta == {"split": "train", "image_path": "img/a.png"}


# ------------------------------------------------------------- bad inputs --

LLAVA_CASES = {
    "missing_image_file": (lambda r: r.update(image="img/none.png"), "image", "none.png"),
    "missing_image_field": (lambda r: r.pop("image"), "image", "missing"),
    "missing_conversations": (lambda r: r.pop("conversations"), "conversations", "missing"),
    "no_gpt_turn": (lambda r: r["conversations"].pop(), "conversations.response", "missing"),
    "empty_response": (lambda r: r["conversations"][1].update(value="  \n"),
                       "conversations.response", "empty"),
    "non_string_response": (lambda r: r["conversations"][1].update(value=3),
                            "conversations.response", "int"),
    "non_string_instruction": (lambda r: r["conversations"][0].update(value=None),
                               "conversations.instruction", "missing"),
    "non_string_image": (lambda r: r.update(image=["img/a.png"]), "image", "list"),
    "outside_folder": (lambda r: r.update(image="../secret.png"), "image", "outside"),
}


@pytest.mark.parametrize("case", sorted(LLAVA_CASES))
def test_llava_bad_sample_names_id_field_and_file(tmp_path, case):
    mutate, field, hint = LLAVA_CASES[case]
    write_png(tmp_path / "secret.png")
    bad = llava_record("bad-1")
    mutate(bad)
    root = tmp_path / "data"
    path = write_llava(root, [llava_record("ok-1"), bad])
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert_names(err, "'bad-1'", f"'{field}'", "train.json", hint)
    assert err.value.sample_id == "bad-1" and err.value.field == field


def test_corrupt_image(tmp_path):
    path = write_llava(tmp_path, [llava_record("c1", image="img/broken.png")])
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert_names(err, "'c1'", "'image'", "train.json", "broken.png")


def test_truncated_image(tmp_path):
    path = write_llava(tmp_path, [llava_record("t1", image="img/t.png")])
    png = tmp_path / "img" / "t.png"
    Image.effect_noise((64, 64), 50).convert("RGB").save(png)
    png.write_bytes(png.read_bytes()[:200])
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert_names(err, "'t1'", "'image'", "train.json")


def test_image_above_pixel_limit(tmp_path):
    path = write_llava(tmp_path, [llava_record("big")])
    with pytest.raises(DataError) as err:
        load_dataset(path, max_pixels=35)
    assert_names(err, "'big'", "'image'", "train.json", "6x6")
    assert len(load_dataset(path, max_pixels=36)) == 1


def test_external_image_allowed_only_on_request(tmp_path):
    outside = write_png(tmp_path / "elsewhere" / "x.png")
    path = write_llava(tmp_path / "data", [llava_record("e1", image=str(outside))])
    with pytest.raises(DataError, match="outside"):
        load_dataset(path)
    assert len(load_dataset(path, allow_external_images=True)) == 1


def test_duplicate_id(tmp_path):
    path = write_llava(tmp_path, [llava_record("d"), llava_record("d")])
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert_names(err, "'d'", "'id'", "train.json", "duplicate")
    ds, report = load_dataset_with_report(path, skip_invalid=True)
    assert len(ds) == 1 and report.n_skipped == 1


def test_non_string_id(tmp_path):
    path = write_llava(tmp_path, [llava_record(7)])
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert_names(err, "'7'", "'id'", "train.json", "string")


def test_malformed_json_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"id": "a",')
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert_names(err, "broken.json", "malformed JSON")


def test_malformed_jsonl_line_gives_line_number(tmp_path):
    path = write_jsonl(tmp_path, [messages_record("ok"), '{"id": "x", oops}'])
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert_names(err, "'chat-2'", "line 2", "chat.jsonl")
    ds, report = load_dataset_with_report(path, skip_invalid=True)
    assert ds.ids() == ["ok"] and report.skipped[0].sample_id == "chat-2"


JSONL_CASES = {
    "two_images": (dict(images=("img/a.png", "img/a.png")), "images", "exactly one"),
    "no_images": (dict(images=()), "images", "exactly one"),
    "empty_response": (dict(answer=""), "messages.response", "empty"),
    "non_string_content": (dict(user=5), "messages.instruction", "int"),
    "missing_image_file": (dict(images=("img/gone.png",)), "images", "gone.png"),
}


@pytest.mark.parametrize("case", sorted(JSONL_CASES))
def test_jsonl_bad_sample_names_id_field_and_file(tmp_path, case):
    kwargs, field, hint = JSONL_CASES[case]
    path = write_jsonl(tmp_path, [messages_record("good"), messages_record("bad-j", **kwargs)])
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert_names(err, "'bad-j'", f"'{field}'", "chat.jsonl", hint)


def test_jsonl_missing_messages(tmp_path):
    path = write_jsonl(tmp_path, [{"id": "nm", "images": ["img/a.png"]}])
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert_names(err, "'nm'", "chat.jsonl", "missing")


def test_hf_dataset_bad_rows(tmp_path):
    import datasets

    ok = make_dataset(2)
    save_hf_dataset(ok, tmp_path / "ok")
    rows = datasets.load_from_disk(str(tmp_path / "ok")).to_list()
    rows[1]["response"] = " "
    rows.append(dict(rows[0], id="bad-meta", meta="{nope"))
    rows.append(dict(rows[0], id="bad-img", image={"bytes": b"garbage", "path": "g.png"}))
    features = datasets.load_from_disk(str(tmp_path / "ok")).features
    datasets.Dataset.from_list(rows, features=features).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path / "bad")
    assert_names(err, "'s1'", "'response'", "bad", "empty")
    ds, report = load_dataset_with_report(tmp_path / "bad", skip_invalid=True)
    assert ds.ids() == ["s0"]
    assert [(s.sample_id, s.field) for s in report.skipped] == [
        ("s1", "response"), ("bad-meta", "meta"), ("bad-img", "image")]


def test_hf_dataset_missing_column(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"id": ["a"], "instruction": ["q"]}).save_to_disk(
        str(tmp_path / "cols"))
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path / "cols")
    assert_names(err, "'image'", "cols", "missing column")


def test_unknown_format_and_missing_path(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unknown format"):
        load_dataset(tmp_path / "data.csv")
    with pytest.raises(DataError, match="no such file"):
        detect_format(tmp_path / "nope.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="unknown format"):
        detect_format(tmp_path / "empty")


def test_ambiguous_folder(tmp_path):
    write_llava(tmp_path, [llava_record("a")], name="a.json")
    write_jsonl(tmp_path, [messages_record("b")], name="b.jsonl")
    with pytest.raises(DataError) as err:
        detect_format(tmp_path)
    assert_names(err, "ambiguous", "a.json", "b.jsonl")
    assert detect_format(tmp_path / "b.jsonl") == "jsonl"


# ----------------------------------------------------------- skip_invalid --

def test_skip_invalid_reports_and_logs(tmp_path, caplog):
    records = [llava_record("good"), llava_record("no-img", image="img/x.png"),
               llava_record("empty", answer=""), llava_record("good2")]
    path = write_llava(tmp_path, records)
    with caplog.at_level(logging.WARNING, logger="byorn.data.io"):
        ds, report = load_dataset_with_report(path, skip_invalid=True)
    assert ds.ids() == ["good", "good2"]
    assert (report.n_loaded, report.n_skipped, report.n_total) == (2, 2, 4)
    assert [(s.sample_id, s.field) for s in report.skipped] == [
        ("no-img", "image"), ("empty", "conversations.response")]
    assert "x.png" in report.skipped[0].message
    assert "no-img" in caplog.text and "empty" in caplog.text
    assert report.format == "llava_json" and "2 skipped" in report.summary()


def test_all_invalid_raises_even_when_skipping(tmp_path):
    path = write_llava(tmp_path, [llava_record("a", answer=""), llava_record("b", answer="")])
    with pytest.raises(DataError, match="no valid samples"):
        load_dataset(path, skip_invalid=True)
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(DataError, match="no valid samples"):
        load_dataset(tmp_path / "empty.json")


# ---------------------------------------------------------------- uploads --

def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extract_upload_single_folder_then_load(tmp_path):
    ds = make_dataset()
    src = tmp_path / "src" / "mydata"
    save_llava_json(ds, src)
    zpath = tmp_path / "up.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(src.rglob("*")):
            zf.write(f, f.relative_to(src.parent).as_posix())
        zf.writestr("__MACOSX/mydata/._data.json", b"junk")
    root = extract_upload(zpath, tmp_path / "dest")
    assert root == tmp_path / "dest" / "mydata"
    assert load_dataset(root).fingerprint() == ds.fingerprint()


def test_extract_upload_flat_archive_returns_dest(tmp_path):
    zpath = make_zip(tmp_path / "flat.zip", {"a.json": b"[]", "img/x.png": b"x"})
    assert extract_upload(zpath, tmp_path / "dest") == tmp_path / "dest"


@pytest.mark.parametrize("name, hint", [
    ("../evil.txt", ".."), ("a/../../evil.txt", ".."), ("/etc/evil", "absolute"),
    ("C:/evil", "absolute"), ("..\\evil.txt", "..")])
def test_extract_upload_rejects_unsafe_paths(tmp_path, name, hint):
    zpath = make_zip(tmp_path / "bad.zip", {"ok.txt": b"x", name: b"evil"})
    with pytest.raises(DataError) as err:
        extract_upload(zpath, tmp_path / "dest" / "inner")
    assert_names(err, hint, "bad.zip")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "dest" / "inner").exists()


def test_extract_upload_rejects_symlinks(tmp_path):
    zpath = tmp_path / "link.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="symbolic link"):
        extract_upload(zpath, tmp_path / "dest")


def test_extract_upload_limits(tmp_path):
    zpath = make_zip(tmp_path / "big.zip", {"a.bin": b"\0" * 5000, "b.bin": b"\0" * 5000})
    with pytest.raises(DataError, match="above the limit"):
        extract_upload(zpath, tmp_path / "d1", max_bytes=9999)
    with pytest.raises(DataError, match="members"):
        extract_upload(zpath, tmp_path / "d2", max_files=1)
    assert extract_upload(zpath, tmp_path / "d3", max_bytes=10_000) == tmp_path / "d3"


def test_extract_upload_forged_size_headers_do_not_pass(tmp_path, monkeypatch):
    zpath = make_zip(tmp_path / "liar.zip", {"a.bin": b"\0" * 5000})
    real_infolist = zipfile.ZipFile.infolist

    def lying_infolist(self):
        infos = real_infolist(self)
        for info in infos:
            info.file_size = 1  # forged: passes the declared-size check
        return infos

    monkeypatch.setattr(zipfile.ZipFile, "infolist", lying_infolist)
    with pytest.raises(DataError):
        extract_upload(zpath, tmp_path / "dest", max_bytes=1000)


def test_extract_upload_not_a_zip_and_nonempty_dest(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError) as err:
        extract_upload(junk, tmp_path / "dest")
    assert_names(err, "junk.zip", "zip")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        extract_upload(make_zip(tmp_path / "ok.zip", {"a": b"a"}), tmp_path / "full")
