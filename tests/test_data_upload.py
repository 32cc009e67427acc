"""Zip uploads: unsafe members refused, limits counted, never half an extraction in place."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from data_helpers import _own_cache, assert_names, conversations_dataset  # noqa: F401

from byorn.data import DataError
from byorn.data import upload as upmod
from byorn.data.io import extract_upload, load_dataset, save_llava_json


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def zip_folder(src: Path, zpath: Path) -> Path:
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(src.rglob("*")):
            zf.write(f, f.relative_to(src.parent).as_posix())
        zf.writestr("__MACOSX/mydata/._data.json", b"junk")
    return zpath


def test_single_folder_then_load(tmp_path):
    ds = conversations_dataset()
    src = tmp_path / "src" / "mydata"
    save_llava_json(ds, src)
    root = extract_upload(zip_folder(src, tmp_path / "up.zip"), tmp_path / "dest")
    assert root == tmp_path / "dest" / "mydata"
    back = load_dataset(root, allow_external_images=False)
    assert back.fingerprint() == ds.fingerprint()


def test_flat_archive_returns_dest(tmp_path):
    zpath = make_zip(tmp_path / "flat.zip", {"a.json": b"[]", "img/x.png": b"x"})
    assert extract_upload(zpath, tmp_path / "dest") == tmp_path / "dest"


@pytest.mark.parametrize("name, hint", [
    ("../evil.txt", ".."), ("a/../../evil.txt", ".."), ("/etc/evil", "absolute"),
    ("C:/evil", "absolute"), ("..\\evil.txt", "..")])
def test_rejects_unsafe_paths(tmp_path, name, hint):
    zpath = make_zip(tmp_path / "bad.zip", {"ok.txt": b"x", name: b"evil"})
    with pytest.raises(DataError) as err:
        extract_upload(zpath, tmp_path / "dest" / "inner")
    assert_names(err, hint, "bad.zip")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "dest" / "inner").exists()
    assert list((tmp_path / "dest").iterdir()) == []  # no temporary folder left behind


def test_rejects_symlinks(tmp_path):
    zpath = tmp_path / "link.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="symbolic link"):
        extract_upload(zpath, tmp_path / "dest")


def test_limits(tmp_path):
    zpath = make_zip(tmp_path / "big.zip", {"a.bin": b"\0" * 5000, "b.bin": b"\0" * 5000})
    with pytest.raises(DataError, match="above the limit"):
        extract_upload(zpath, tmp_path / "d1", max_bytes=9999)
    with pytest.raises(DataError, match="members"):
        extract_upload(zpath, tmp_path / "d2", max_files=1)
    assert extract_upload(zpath, tmp_path / "d3", max_bytes=10_000) == tmp_path / "d3"


def test_forged_size_headers_do_not_pass(tmp_path, monkeypatch):
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
    assert not (tmp_path / "dest").exists()


def test_not_a_zip_and_nonempty_dest(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError) as err:
        extract_upload(junk, tmp_path / "dest")
    assert_names(err, "junk.zip", "zip")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        extract_upload(make_zip(tmp_path / "ok.zip", {"a": b"a"}), tmp_path / "full")
    (tmp_path / "empty").mkdir()
    assert extract_upload(tmp_path / "ok.zip", tmp_path / "empty") == tmp_path / "empty"


def test_interrupted_extraction_leaves_nothing_to_reuse(tmp_path, monkeypatch):
    zpath = make_zip(tmp_path / "up.zip", {"d/a.json": b"[]", "d/b.bin": b"x" * 100})
    real = upmod._extract_members

    def killed(zf, members, dest, max_bytes, label):
        real(zf, members[:1], dest, max_bytes, label)  # one member written, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(upmod, "_extract_members", killed)
    with pytest.raises(KeyboardInterrupt):
        extract_upload(zpath, tmp_path / "cache" / "abc", reuse=True)
    assert not (tmp_path / "cache" / "abc").exists()
    monkeypatch.setattr(upmod, "_extract_members", real)
    root = extract_upload(zpath, tmp_path / "cache" / "abc", reuse=True)
    assert (root / "b.bin").read_bytes() == b"x" * 100


def test_reuse_returns_a_complete_extraction_and_replaces_a_partial_one(tmp_path, monkeypatch):
    zpath = make_zip(tmp_path / "up.zip", {"d/a.json": b"[]", "d/b.bin": b"b"})
    dest = tmp_path / "uploads" / "abc"
    # a partial extraction left by an older version: no completion marker
    (dest / "d").mkdir(parents=True)
    (dest / "d" / "a.json").write_bytes(b"[]")
    root = extract_upload(zpath, dest, reuse=True)
    assert root == dest / "d" and (root / "b.bin").read_bytes() == b"b"
    monkeypatch.setattr(upmod, "_extract", lambda *a: pytest.fail("extracted again"))
    assert extract_upload(zpath, dest, reuse=True) == root
    assert sorted(p.name for p in dest.parent.iterdir()) == ["abc"]
