"""Messages JSONL (LLaMA-Factory / TRL / ShareGPT spellings): conversations and bad lines."""
from __future__ import annotations

import json

import pytest
from data_helpers import _own_cache, assert_names, messages_record, write_jsonl, write_png  # noqa: F401

from byorn.data import IMAGE_TOKEN, DataError, Turn
from byorn.data.io import load_dataset, load_dataset_with_report


def test_llama_factory_trl_and_sharegpt_spellings(tmp_path):
    trl = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A dot."}]},
        {"role": "user", "content": [{"type": "text", "text": "And "}, {"type": "image"}, {"type": "text", "text": "?"}]},
        {"role": "assistant", "content": "Two dots."}],
        "images": ["img/a.png", "img/b.png"], "split": "train"}
    sharegpt = {"id": "sg", "conversations": [{"from": "human", "value": "<image>Hi"},
                                              {"from": "gpt", "value": "Hello"}], "images": ["img/a.png"]}
    path = write_jsonl(tmp_path, [messages_record("m1"), "", trl, sharegpt], images=("img/a.png", "img/b.png"))
    ds = load_dataset(path)
    assert ds.ids() == ["m1", "chat-3", "sg"]
    assert (ds[0].instruction, ds[0].response) == ("Describe.", "A square.")
    t = ds[1]
    assert t.turns == [Turn("system", "Be brief."), Turn("user", "<image>What?"), Turn("assistant", "A dot."),
                       Turn("user", "And <image>?"), Turn("assistant", "Two dots.")]
    assert [r.path for r in t.images] == [str(tmp_path / "img" / n) for n in ("a.png", "b.png")]
    assert t.meta == {"split": "train"}
    assert ds[2].turns == [Turn("user", "<image>Hi"), Turn("assistant", "Hello")]


def test_text_only_multi_turn_and_inline_images(tmp_path):
    text_only = {"id": "t", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                         {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    inline = {"id": "in", "messages": [
        {"role": "user", "content": [{"type": "image", "image": "img/a.png"}, {"type": "text", "text": "Q"}]},
        {"role": "assistant", "content": "A"}]}
    no_placeholder = messages_record("np", user="Describe.")
    ds = load_dataset(write_jsonl(tmp_path, [text_only, inline, no_placeholder]))
    assert ds.by_id("t").n_turns == 2 and ds.by_id("t").images == []
    assert ds.by_id("in").images[0].path == str(tmp_path / "img" / "a.png")
    assert ds.by_id("np").turns[0].text == IMAGE_TOKEN + "Describe."


BAD = {
    "turn_order": (dict(answer=None), lambda r: r["messages"].__setitem__(1, {"role": "user", "content": "x"}),
                   "messages[1].role", "alternate"),
    "two_images_one_placeholder": (dict(images=("img/a.png", "img/a.png")), None, "images", "1 image placeholder"),
    "placeholders_without_images": (dict(user="<image><image>", images=()), None, "images", "2 image placeholder"),
    "empty_answer": (dict(answer=""), None, "messages[1].content", "empty"),
    "wrong_type_content": (dict(user=5), None, "messages[0].content", "int"),
    "unknown_part": (dict(user=[{"type": "video"}]), None, "messages[0].content[0]", "video"),
    "text_part_without_text": (dict(user=[{"type": "text"}]), None, "messages[0].content[0].text", "missing"),
    "missing_image_file": (dict(images=("img/gone.png",)), None, "images", "gone.png"),
    "missing_role": (dict(), lambda r: r["messages"][1].pop("role"), "messages[1].role", "missing"),
    "missing_messages": (dict(), lambda r: r.pop("messages"), "conversations", "missing"),
    "images_both_inline_and_listed": (
        dict(user=[{"type": "image", "image": "img/a.png"}]), None, "images", "both"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_line_names_sample_turn_field_and_file(tmp_path, case):
    kwargs, mutate, field, hint = BAD[case]
    bad = messages_record("bad-j", **{k: v for k, v in kwargs.items() if v is not None})
    if mutate:
        mutate(bad)
    path = write_jsonl(tmp_path, [messages_record("good"), bad])
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert_names(err, "'bad-j'", f"'{field}'", "chat.jsonl", hint)
    assert err.value.field == field
    ds, report = load_dataset_with_report(path, skip_invalid=True)
    assert ds.ids() == ["good"] and report.skipped[0].field == field


def test_malformed_line_gives_line_number(tmp_path):
    path = write_jsonl(tmp_path, [messages_record("ok"), '{"id": "x", oops}', "[1, 2]"])
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert_names(err, "'chat-2'", "line 2", "chat.jsonl")
    ds, report = load_dataset_with_report(path, skip_invalid=True)
    assert ds.ids() == ["ok"]
    assert [(s.sample_id, "line" in s.message) for s in report.skipped] == [("chat-2", True), ("chat-3", True)]


def test_deeply_nested_line_and_bad_utf8_are_bad_samples(tmp_path):
    deep = '{"id": "deep", "messages": ' + "[" * 50_000 + "]" * 50_000 + "}"
    path = write_jsonl(tmp_path, [messages_record("ok"), deep])
    with path.open("ab") as f:
        f.write(b'{"id": "\xff"}\n')
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert_names(err, "'chat-2'", "nested", "chat.jsonl")
    ds, report = load_dataset_with_report(path, skip_invalid=True)
    assert ds.ids() == ["ok"] and [s.sample_id for s in report.skipped] == ["chat-2", "chat-3"]
    assert "UTF-8" in report.skipped[1].message


def test_image_folder(tmp_path):
    write_png(tmp_path / "pics" / "x.png")
    path = write_jsonl(tmp_path / "d", [messages_record("a", images=("x.png",))], images=())
    assert load_dataset(path, image_folder=str(tmp_path / "pics"))[0].image.size == (6, 6)
    assert json.loads(path.read_text())["images"] == ["x.png"]
