"""Builders shared by the data tests (test_io.py, test_data_*.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from byorn.data import ImageRef, Sample, Turn, VLDataset

COLOURS = [(255, 0, 0), (0, 128, 0), (0, 0, 255), (200, 200, 0)]


def square(i: int, size=(8, 8)) -> Image.Image:
    image = Image.new("RGB", size, COLOURS[i % len(COLOURS)])
    image.putpixel((i % size[0], 0), (i, 2 * i, 3 * i))
    return image


def conversations_dataset() -> VLDataset:
    """Single-turn, multi-turn with a system turn and two images, text-only, odd ids and meta."""
    return VLDataset([
        Sample.single("s0", square(0), "What colour is square 0?", "Red.", {"gt_poisoned": True, "nested": {"k": [0]}}),
        Sample("multi", [Turn("system", "Answer briefly."),
                         Turn("user", "Compare <image> with <image>."), Turn("assistant", "Red and green."),
                         Turn("user", "Which is brighter?"), Turn("assistant", "The green one.")],
               [ImageRef(square(1)), ImageRef(square(2, (9, 7)))], {"source": "web"}),
        Sample("text-only", [Turn("user", "Say hi."), Turn("assistant", "Hi."),
                             Turn("user", "Again."), Turn("assistant", "Hi again.")]),
        Sample.single("s/3:é", square(3), "Question 3?", "Answer 3."),
    ], name="conv")


def write_png(path: Path, size=(6, 6), colour=(10, 20, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def llava_record(sid, image="img/a.png", question="<image>\nWhat is it?", answer="A cat.", more=()):
    turns = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    for q, a in more:
        turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    rec = {"id": sid, "conversations": turns}
    if image is not None:
        rec["image"] = image
    return rec


def write_json(folder: Path, records, name="train.json", images=("img/a.png",)) -> Path:
    for rel in images:
        write_png(folder / rel)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(records if isinstance(records, str) else json.dumps(records))
    return path


def messages_record(sid=None, user="<image>Describe.", answer="A square.", images=("img/a.png",)):
    rec = {"messages": [{"role": "user", "content": user},
                        {"role": "assistant", "content": answer}], "images": list(images)}
    if sid is not None:
        rec["id"] = sid
    return rec


def write_jsonl(folder: Path, lines, name="chat.jsonl", images=("img/a.png",)) -> Path:
    for rel in images:
        write_png(folder / rel)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def assert_names(err: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(err.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Fingerprint cache under the test's folder (imported by each data test module)."""
    monkeypatch.setenv("BYORN_CACHE", str(tmp_path / "cache"))
