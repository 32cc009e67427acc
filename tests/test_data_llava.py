"""LLaVA JSON: full conversations, image folders, placeholders, bad input, the streaming reader."""
from __future__ import annotations

import json

import pytest
from data_helpers import _own_cache, assert_names, llava_record, write_json, write_png  # noqa: F401
from PIL import Image

from byorn.data import IMAGE_TOKEN, DataError, Turn
from byorn.data import jsonstream
from byorn.data.io import load_dataset, load_dataset_with_report


def test_every_turn_is_kept_in_order(tmp_path):
    rec = llava_record("x1", question="<image>\nIs it red?", more=[("Why?", "Because."), ("Sure?", "Yes.")])
    rec["conversations"].insert(0, {"from": "system", "value": "Be brief."})
    rec["meta"] = {"gt_poisoned": True}
    rec["source"] = "web"
    s = load_dataset(write_json(tmp_path, [rec]))[0]
    assert s.turns == [Turn("system", "Be brief."), Turn("user", "<image>\nIs it red?"),
                       Turn("assistant", "A cat."), Turn("user", "Why?"), Turn("assistant", "Because."),
                       Turn("user", "Sure?"), Turn("assistant", "Yes.")]
    assert s.n_turns == 3 and s.assistant_texts()[2] == "Yes."
    assert (s.instruction, s.response) == ("Is it red?", "A cat.")
    assert s.meta == {"gt_poisoned": True, "source": "web"}
    assert s.images[0].path == str(tmp_path / "img" / "a.png") and s.image.mode == "RGB"


def test_text_only_and_two_image_records(tmp_path):
    records = [llava_record("t", image=None, question="Hi?", answer="Hello."),
               llava_record("two", image=["img/a.png", "img/b.png"], question="<image> vs <image>?",
                            answer="Same.")]
    ds = load_dataset(write_json(tmp_path, records, images=("img/a.png", "img/b.png")))
    assert ds.by_id("t").images == [] and ds.by_id("t").turns[0] == Turn("user", "Hi?")
    two = ds.by_id("two")
    assert [r.path for r in two.images] == [str(tmp_path / "img" / n) for n in ("a.png", "b.png")]
    conv = two.conversation()
    assert len(conv.images) == 2 and conv.turns == two.turns


def test_image_without_placeholder_goes_before_the_first_question(tmp_path):
    rec = llava_record("np", question="What is it?")
    rec["conversations"].insert(0, {"from": "system", "value": "sys"})
    s = load_dataset(write_json(tmp_path, [rec]))[0]
    assert s.turns[1] == Turn("user", IMAGE_TOKEN + "What is it?")
    two = llava_record("np2", image=["img/a.png", "img/a.png"], question="Compare.")
    s2 = load_dataset(write_json(tmp_path / "b", [two]))[0]
    assert s2.turns[0].text == IMAGE_TOKEN * 2 + "Compare." and len(s2.images) == 2
    assert s2.images[0] is s2.images[1]  # one reference per file


def test_image_folder_like_llava(tmp_path):
    write_png(tmp_path / "coco" / "train2017" / "0001.jpg")
    path = write_json(tmp_path / "anno", [llava_record("f", image="train2017/0001.jpg")], images=())
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert_names(err, "'f'", "'image'", "image file not found", "train2017/0001.jpg")
    ds = load_dataset(path, image_folder=tmp_path / "coco")
    assert ds[0].images[0].path == str(tmp_path / "coco" / "train2017" / "0001.jpg")
    assert ds[0].image.size == (6, 6)


def test_image_folder_that_does_not_exist(tmp_path):
    path = write_json(tmp_path, [llava_record("a")])
    with pytest.raises(DataError) as err:
        load_dataset(path, image_folder=tmp_path / "nope", skip_invalid=True)
    assert_names(err, "'image_folder'", "nope", "does not exist", "train.json")


def test_absolute_paths_allowed_by_default_refused_for_uploads(tmp_path):
    outside = write_png(tmp_path / "elsewhere" / "x.png")
    path = write_json(tmp_path / "data", [llava_record("e1", image=str(outside)),
                                          llava_record("e2", image="../elsewhere/x.png")])
    assert len(load_dataset(path)) == 2
    with pytest.raises(DataError) as err:
        load_dataset(path, allow_external_images=False)
    assert_names(err, "'e1'", "'image'", "absolute")
    with pytest.raises(DataError, match="no valid samples"):
        load_dataset(path, allow_external_images=False, skip_invalid=True)


def test_symlink_out_of_the_folder_refused_for_uploads(tmp_path):
    secret = write_png(tmp_path / "secret.png")
    (tmp_path / "data" / "img").mkdir(parents=True)
    (tmp_path / "data" / "img" / "link.png").symlink_to(secret)
    path = write_json(tmp_path / "data", [llava_record("s", image="img/link.png")], images=())
    with pytest.raises(DataError, match="outside the dataset folder"):
        load_dataset(path, allow_external_images=False)


# ------------------------------------------------------------- bad input --

BAD = {  # mutate a good record -> (field named, words in the message)
    "turn_order": (lambda r: r["conversations"].insert(1, {"from": "human", "value": "again"}),
                   "conversations[1].from", "alternate"),
    "starts_with_gpt": (lambda r: r["conversations"].insert(0, {"from": "gpt", "value": "hi"}),
                        "conversations[0].from", "turn 0"),
    "empty_assistant": (lambda r: r["conversations"][1].update(value="  \n"), "conversations[1].value", "empty"),
    "placeholder_count": (lambda r: r["conversations"][0].update(value="<image><image> two?"), "image",
                          "2 image placeholder"),
    "placeholder_without_image": (lambda r: r.pop("image"), "image", "0 image"),
    "placeholder_in_answer": (lambda r: r["conversations"][1].update(value="<image>"),
                              "conversations[1].value", "placeholder"),
    "missing_conversations": (lambda r: r.pop("conversations"), "conversations", "missing"),
    "missing_value": (lambda r: r["conversations"][1].pop("value"), "conversations[1].value", "missing"),
    "wrong_type_value": (lambda r: r["conversations"][1].update(value=3), "conversations[1].value", "int"),
    "wrong_type_image": (lambda r: r.update(image=3), "image", "int"),
    "unknown_role": (lambda r: r["conversations"][1].update({"from": "bot"}), "conversations[1].from", "'bot'"),
    "ends_with_user": (lambda r: r["conversations"].append({"from": "human", "value": "and?"}),
                       "conversations[2].from", "no assistant"),
    "turn_not_object": (lambda r: r["conversations"].append("hi"), "conversations[2]", "not an object"),
    "missing_image_file": (lambda r: r.update(image="img/none.png"), "image", "none.png"),
    "second_image_missing": (lambda r: (r.update(image=["img/a.png", "img/none.png"]),
                                        r["conversations"][0].update(value="<image><image>")),
                             "image[1]", "image 1, in turn 0"),
    "both_image_keys": (lambda r: r.update(images=["img/a.png"]), "images", "both"),
    "bad_id": (lambda r: r.update(id=["x"]), "id", "list"),
    "deep_meta": (lambda r: r.update(meta={"x": json.loads("[" * 50 + "]" * 50)}), "x", "nested"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_record_names_sample_turn_field_and_file(tmp_path, case):
    mutate, field, hint = BAD[case]
    bad = llava_record("bad-1")
    mutate(bad)
    path = write_json(tmp_path, [llava_record("ok-1"), bad, llava_record("ok-2")])
    with pytest.raises(DataError) as err:
        load_dataset(path)
    sid = "train-2" if case == "bad_id" else "bad-1"
    assert_names(err, f"'{sid}'", f"'{field}'", "train.json", hint)
    assert (err.value.sample_id, err.value.field) == (sid, field)
    ds, report = load_dataset_with_report(path, skip_invalid=True)
    assert ds.ids() == ["ok-1", "ok-2"] and [s.field for s in report.skipped] == [field]


def test_integer_ids_are_strings(tmp_path):
    assert load_dataset(write_json(tmp_path, [llava_record(7)])).ids() == ["7"]


def test_generated_ids(tmp_path):
    rec = llava_record(None)
    rec.pop("id")
    assert load_dataset(write_json(tmp_path, [llava_record("a"), rec])).ids() == ["a", "train-2"]


def test_deeply_nested_record_is_one_bad_sample(tmp_path):
    deep = '{"id": "deep", "conversations": ' + "[" * 100_000 + "]" * 100_000 + "}"
    text = "[" + json.dumps(llava_record("ok-1")) + ",\n" + deep + ",\n" + json.dumps(llava_record("ok-2")) + "]"
    path = write_json(tmp_path, text)
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert_names(err, "'train-2'", "record 2", "nested", "train.json")
    ds, report = load_dataset_with_report(path, skip_invalid=True)
    assert ds.ids() == ["ok-1", "ok-2"] and report.skipped[0].sample_id == "train-2"


def test_deeply_nested_file(tmp_path):
    path = write_json(tmp_path, "[" * 200_000 + "]" * 200_000)
    with pytest.raises(DataError, match="nested"):
        load_dataset(path, skip_invalid=True)  # its one record is bad: no valid samples


def test_malformed_json_names_line_and_column(tmp_path):
    path = write_json(tmp_path, '[\n{"id": "a",\n oops}]')
    with pytest.raises(DataError) as err:
        load_dataset(path, skip_invalid=True)
    assert_names(err, "train.json", "malformed JSON", "line 3")
    for text, hint in [("", "empty"), ('{"id": 1}', "expected a JSON list"), (json.dumps([llava_record("a", image=None, question="q")]) + " [2]", "extra data"),
                       ('[{"id": "a"},', "not closed"), ('[{"a": 1} {"b": 2}]', "expected ','")]:
        path = write_json(tmp_path, text, name="t.json", images=())
        with pytest.raises(DataError, match=hint):
            load_dataset(path, format="llava_json", check_images="none", skip_invalid=True)


# ------------------------------------------------------------ image checks --

def test_check_images_modes(tmp_path):
    path = write_json(tmp_path, [llava_record("c1", image="img/broken.png"), llava_record("big"),
                                 llava_record("small", image="img/s.png")])
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    write_png(tmp_path / "img" / "s.png", size=(5, 5))
    # none: nothing checked at load; decoding names the sample and the field
    ds = load_dataset(path, check_images="none")
    with pytest.raises(DataError) as err:
        ds.by_id("c1").conversation()
    assert_names(err, "'c1'", "'images[0]'", "broken.png")
    # exists: a corrupt file exists, so it loads; header: it does not
    assert len(load_dataset(path)) == 3
    with pytest.raises(DataError) as err:
        load_dataset(path, check_images="header")
    assert_names(err, "'c1'", "'image'", "train.json", "cannot read image")
    ds, report = load_dataset_with_report(path, check_images="header", max_pixels=35, skip_invalid=True)
    assert ds.ids() == ["small"] and [s.sample_id for s in report.skipped] == ["c1", "big"]


def test_image_above_max_pixels(tmp_path):
    path = write_json(tmp_path, [llava_record("big")])
    with pytest.raises(DataError) as err:
        load_dataset(path, check_images="header", max_pixels=35)
    assert_names(err, "'big'", "'image'", "train.json", "6x6", "turn 0")
    ds = load_dataset(path, max_pixels=35)  # exists only: the size is seen when decoding
    with pytest.raises(DataError) as err:
        ds[0].conversation(max_pixels=35)
    assert_names(err, "'big'", "'images[0]'", "6x6")
    assert len(load_dataset(path, check_images="header", max_pixels=36)) == 1


def test_truncated_image_fails_when_decoded(tmp_path):
    path = write_json(tmp_path, [llava_record("t1", image="img/t.png")])
    png = tmp_path / "img" / "t.png"
    Image.effect_noise((64, 64), 50).convert("RGB").save(png)
    png.write_bytes(png.read_bytes()[:200])
    ds = load_dataset(path, check_images="header")  # the header is fine
    with pytest.raises(DataError) as err:
        ds[0].conversation()
    assert_names(err, "'t1'", "'images[0]'", "t.png")


# ---------------------------------------------------------- stream reader --

def test_stream_reader_across_small_windows(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonstream, "CHUNK", 7)
    records = [llava_record(f"é-{i}", question=f"<image>Ünïcödé {i} 🙂 \"q\" \\", answer="ß" * (i + 1))
               for i in range(30)]
    records[5] = llava_record(5, question="<image>" + "x" * 100)
    deep = '{"id": "deep", "v": "a]}\\"[", "c": ' + "[" * 3000 + '"]]"' + "]" * 3000 + "}"
    text = "\ufeff [" + ",\n ".join(json.dumps(r, ensure_ascii=False) for r in records[:10]) + ",\n" + deep \
           + ",  " + ", ".join(json.dumps(r) for r in records[10:]) + " ]\n"
    path = write_json(tmp_path, text)
    ds, report = load_dataset_with_report(path, skip_invalid=True)
    assert ds.ids() == [str(r["id"]) for r in records]
    assert ds[29].turns[1].text == "ß" * 30 and ds[1].turns[0].text.endswith('"q" \\')
    assert [s.sample_id for s in report.skipped] == ["train-11"]
    assert list(jsonstream.iter_json_array(write_json(tmp_path, "[ 1, 2.5e3 ,true]", name="n.json"))) == [
        (1, 1), (2, 2500.0), (3, True)]
