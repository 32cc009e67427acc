"""Dataset fingerprints: equal across formats, sensitive to every byte, cached by file stats."""
from __future__ import annotations

import json
import os

from data_helpers import _own_cache, conversations_dataset, llava_record, write_json  # noqa: F401

from byorn.data import ImageRef, Sample, Turn, VLDataset, content_fingerprint
from byorn.data import sample as sample_mod
from byorn.data.io import load_dataset, save_hf_dataset, save_jsonl, save_llava_json, save_parquet


def test_same_data_same_fingerprint_in_every_format(tmp_path):
    ds = conversations_dataset()
    fps = {saver.__name__: load_dataset(saver(ds, tmp_path / saver.__name__)).fingerprint()
           for saver in (save_llava_json, save_jsonl, save_hf_dataset, save_parquet)}
    assert set(fps.values()) == {ds.fingerprint()}
    # saved again from the loaded copy: still the same
    again = load_dataset(save_llava_json(load_dataset(tmp_path / "save_hf_dataset"), tmp_path / "again"))
    assert again.fingerprint() == ds.fingerprint()


def test_content_fingerprint_is_the_same_from_memory_and_from_files(tmp_path):
    ds = conversations_dataset()
    loaded = load_dataset(save_llava_json(ds, tmp_path), fingerprint_cache=False)
    assert content_fingerprint(loaded) == content_fingerprint(ds) == loaded.fingerprint()


def _saved(tmp_path):
    path = save_llava_json(conversations_dataset(), tmp_path / "d")
    return path, load_dataset(path).fingerprint()


def test_any_text_byte_changes_it(tmp_path):
    path, before = _saved(tmp_path)
    text = path.read_text()
    path.write_text(text.replace("The green one.", "The green one!"))
    assert load_dataset(path).fingerprint() != before
    path.write_text(text.replace('"s0"', '"s9"'))
    assert load_dataset(path).fingerprint() != before
    path.write_text(text)
    assert load_dataset(path).fingerprint() == before


def test_any_image_byte_changes_it(tmp_path):
    path, before = _saved(tmp_path)
    image = path.parent / json.loads(path.read_text())[1]["image"][1]
    data = bytearray(image.read_bytes())
    data[-5] ^= 1  # inside the PNG trailer: same size, the file still loads
    image.write_bytes(bytes(data))
    os.utime(image, ns=(1, 1))  # even with an old modification time: the stat key changed
    assert load_dataset(path).fingerprint() != before


def test_cache_spares_rehashing_and_follows_file_stats(tmp_path, monkeypatch):
    path, before = _saved(tmp_path)
    calls = []
    real = sample_mod._hash_source
    monkeypatch.setattr(sample_mod, "_hash_source", lambda ref: calls.append(ref) or real(ref))
    assert load_dataset(path).fingerprint() == before and calls == []  # cached: no image read
    # a same-size edit keeping the modification time is invisible to the cache (by design) ...
    image = path.parent / "images" / "s0.png"
    st = image.stat()
    data = bytearray(image.read_bytes())
    data[-5] ^= 1
    image.write_bytes(bytes(data))
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert load_dataset(path).fingerprint() == before and calls == []
    # ... any other touch recomputes
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load_dataset(path).fingerprint() != before and len(calls) == 4
    assert load_dataset(path, fingerprint_cache=False).fingerprint() != before


def test_cache_is_keyed_by_load_options(tmp_path):
    path = write_json(tmp_path, [llava_record("a"), llava_record("b", answer="")])
    full = load_dataset(path, skip_invalid=True)
    (tmp_path / "train.json").write_text(json.dumps([llava_record("a")]))
    os.utime(path, ns=(1, 1))
    assert load_dataset(path).fingerprint() == full.fingerprint()  # same samples, same value
    assert len(list((tmp_path / "cache" / "fingerprints").rglob("*"))) >= 2


def test_each_image_file_is_read_once(tmp_path, monkeypatch):
    path = write_json(tmp_path, [llava_record(f"r{i}") for i in range(50)])
    calls = []
    real = sample_mod._hash_source
    monkeypatch.setattr(sample_mod, "_hash_source", lambda ref: calls.append(ref) or real(ref))
    ds = load_dataset(path)
    fp = ds.fingerprint()
    assert len(calls) == 1  # 50 samples share one image file: it is read once
    assert fp == content_fingerprint(ds)


def test_unreadable_image_is_a_marker_not_a_crash(tmp_path):
    path = write_json(tmp_path, [llava_record("a", image="img/gone.png")])
    ds = load_dataset(path, check_images="none")
    fp = ds.fingerprint()
    assert len(fp) == 16
    (tmp_path / "img" / "gone.png").write_bytes((tmp_path / "img" / "a.png").read_bytes())
    assert load_dataset(path, check_images="none").fingerprint() != fp


def test_read_only_cache_is_not_an_error(tmp_path, monkeypatch):
    blocker = tmp_path / "ro"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("BYORN_CACHE", str(blocker))
    path = write_json(tmp_path / "d", [llava_record("a")])
    assert load_dataset(path).fingerprint() == content_fingerprint(load_dataset(path))


def test_in_memory_datasets_are_unchanged(tmp_path):
    s = Sample("x", [Turn("user", "hi"), Turn("assistant", "yo")], [])
    assert VLDataset([s]).fingerprint() == content_fingerprint([s])
    one, other = ([Sample("y", [Turn("user", "<image>"), Turn("assistant", "a")], [ImageRef(b)])]
                  for b in (b"\x89PNG not really", b"\x89PNG not really!"))
    assert VLDataset(one).fingerprint() == content_fingerprint(one) != content_fingerprint(other)
