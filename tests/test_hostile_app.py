"""The app against hostile or careless use (issue 6): each bad input, and the clear answer it gets.

Decision store read-only / in a read-only folder / damaged; public-deployment
defaults (server paths, data roots, login rate limit, per-visitor runs); bad
training values; partial upload extractions; concurrent image requests.
Handlers are called directly where that shows the behaviour; the store and
login cases also go through a launched app.  The synthetic workspace keeps
it fast (no model).
"""
from __future__ import annotations

import copy
import hashlib
import os
import shutil
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from _readonly import read_only  # noqa: E402
from served_app import serve  # noqa: E402
from app import attach_visitor, build_app, tab_inspector, tab_start, tab_train  # noqa: E402
from app.context import make_context, visitor_folder  # noqa: E402
from app.images import ImageFiles  # noqa: E402
from app.jobs import FINISHED  # noqa: E402
from app.loading import COMPLETE, PATH_REFUSED, extracted_upload  # noqa: E402
from app.security import LoginLimiter  # noqa: E402
from app.synthetic import synthetic_workspace  # noqa: E402
from app.tab_compare import load_runs  # noqa: E402
from byorn.decisions import DecisionStore  # noqa: E402

# the Train form's values: method, epochs, batch, lr, LoRA, EMA decay, temperature, seed, max steps,
# eval every, eval samples
GOOD = ["SFT (no defense)", 1, 8, 1e-3, False, 0.99, 0.7, 0, 3, 0, 4]


@pytest.fixture(scope="module")
def ws():
    return synthetic_workspace(40)


@pytest.fixture(autouse=True)
def _no_space(monkeypatch, tmp_path):
    for name in ("SPACE_ID", "BYORN_ALLOW_SERVER_PATHS", "BYORN_DATA_ROOTS", "BYORN_PRIVATE_SESSIONS",
                 "BYORN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))


def first_id(ws) -> str:
    return ws.table["id"].iloc[0]


def decide(ctx, view, status="edited", text="my text"):
    return tab_inspector.decide(ctx, status, view, "proposed", text, False)


# -- the decision store: read-only, read-only folder, damaged -------------------------
def test_read_only_store_shows_decisions_and_disables_deciding(tmp_path, ws):
    data = tmp_path / "data"
    DecisionStore(data / "decisions.sqlite").set(ws.fingerprint, first_id(ws), "edited", "saved before")
    with read_only(data / "decisions.sqlite"):
        ctx = make_context(ws, data_dir=data)  # no traceback at startup
        assert "Read-only mode" in ctx.store_problem and str(data / "decisions.sqlite") in ctx.store_problem
        demo = build_app(ctx)
        assert demo.ui.store_banner.visible and "Read-only" in demo.ui.store_banner.value
        assert not demo.ui.inspector.approve_btn.interactive and not demo.ui.table.bulk_preview.interactive
        view = copy.deepcopy(demo.ui.view.value)  # the per-session state (a View)
        shown = tab_inspector.show_sample(ctx, view, first_id(ws))
        assert "saved before" in shown[-1]  # decisions still shown
        with pytest.raises(gr.Error, match="read-only"):
            decide(ctx, view)
    assert DecisionStore(data / "decisions.sqlite").get(ws.fingerprint, first_id(ws)).text == "saved before"


def test_read_only_folder_starts_in_read_only_mode(tmp_path, ws):
    data = tmp_path / "data"
    DecisionStore(data / "decisions.sqlite").set(ws.fingerprint, first_id(ws), "dropped")
    with read_only(data):
        ctx = make_context(ws, data_dir=data)
        assert "Read-only mode" in ctx.store_problem
        assert ctx.decisions(ws)[(first_id(ws), 0)].status == "dropped"
        with pytest.raises(gr.Error, match="read-only"):
            decide(ctx, {"ws": ws.key, "threshold": 0.0, "current": first_id(ws)})


def test_damaged_store_app_starts_and_says_what_to_do(tmp_path, ws):
    data = tmp_path / "data"
    data.mkdir()
    (data / "decisions.sqlite").write_bytes(b"garbage, not SQLite " * 100)
    ctx = make_context(ws, data_dir=data)
    assert "switched off" in ctx.store_problem and "Move it aside" in ctx.store_problem
    with serve(ctx) as app:
        config = httpx.get(app.url + "/config", timeout=30).json()
        banner = next(c for c in config["components"] if c["props"].get("elem_id") == "store-banner")
        assert banner["props"]["visible"] and "decisions.sqlite" in banner["props"]["value"]
        client = app.client()
        out = client.predict(first_id(ws), api_name="/select_sample")
        assert "pending" in out[-1]
        with pytest.raises(AppError, match="Move it aside"):
            client.predict("proposed", "text", False, api_name="/edit")
    assert (data / "decisions.sqlite").read_bytes().startswith(b"garbage")  # left for the user to inspect


def test_store_failing_at_runtime_is_a_message_not_a_traceback(tmp_path, ws):
    ctx = make_context(ws, data_dir=tmp_path / "data")
    view = {"ws": ws.key, "threshold": 0.0, "current": first_id(ws), "order": []}
    decide(ctx, view, text="first")
    with read_only(tmp_path / "data" / "decisions.sqlite"):
        with pytest.raises(gr.Error, match="Decisions: .*read-only"):
            decide(ctx, view, text="second")
    assert ctx.decision(ws, first_id(ws)).text == "first"


# -- server paths ---------------------------------------------------------------------
def test_space_defaults(monkeypatch, tmp_path, ws):
    monkeypatch.setenv("SPACE_ID", "someone/byorn")
    ctx = make_context(ws, data_dir=tmp_path / "d1")
    assert not ctx.allow_server_paths and ctx.private_sessions
    with pytest.raises(gr.Error, match="switched off"):
        tab_start.open_data(ctx, {}, None, "/etc", "", 0.6, "mean", False)
    monkeypatch.setenv("BYORN_ALLOW_SERVER_PATHS", "1")
    monkeypatch.setenv("BYORN_DATA_ROOTS", os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    monkeypatch.setenv("BYORN_PRIVATE_SESSIONS", "0")
    ctx = make_context(ws, data_dir=tmp_path / "d2")
    assert ctx.allow_server_paths and not ctx.private_sessions
    assert ctx.data_roots == (Path(os.path.realpath(tmp_path / "a")), Path(os.path.realpath(tmp_path / "b")))
    monkeypatch.delenv("SPACE_ID")
    monkeypatch.delenv("BYORN_DATA_ROOTS")
    ctx = make_context(ws, data_dir=tmp_path / "d3")
    assert ctx.data_roots == (Path(os.path.realpath(tmp_path / "d3")),)  # default: the data dir


def test_paths_outside_the_data_roots_get_one_answer(tmp_path, ws):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "data.json").write_text("[]")
    (root / "link").symlink_to(outside)
    ctx = make_context(ws, data_dir=tmp_path / "data", data_roots=(root,))

    def answer(path, model=""):
        with pytest.raises(gr.Error) as e:
            tab_start.open_data(ctx, {}, None, path, model, 0.6, "mean", False)
        return e.value.message

    refused = {answer(p) for p in ("/etc", "/etc/passwd", "/no/such/place", str(outside), str(outside / "data.json"),
                                    str(root / ".." / "outside"), str(root / "link"), str(root / "link" / "data.json"),
                                    "~", "../outside")}
    assert refused == {PATH_REFUSED.format(roots=os.path.realpath(root))}  # exists or not: the same words
    assert answer(str(root / "missing")).endswith("does not exist on the server.")  # inside: may say so
    assert answer(str(root / "missing"), model="/etc") == next(iter(refused))  # model folders too


# -- login attempts ----------------------------------------------------------------------
def test_login_limiter_counts_per_client():
    now = [0.0]
    lim = LoginLimiter(max_failures=3, window_s=60, lockout_s=30, clock=lambda: now[0])
    for _ in range(2):
        lim.record("1.2.3.4", ok=False)
    lim.record("1.2.3.4", ok=True)  # a success clears the count
    for _ in range(3):
        assert lim.wait_s("1.2.3.4") == 0
        lim.record("1.2.3.4", ok=False)
    assert lim.wait_s("1.2.3.4") == 30 and lim.wait_s("5.6.7.8") == 0  # others unaffected
    now[0] = 31.0
    assert lim.wait_s("1.2.3.4") == 0
    scope = {"client": ("10.0.0.1", 1), "headers": [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.9")]}
    assert LoginLimiter().client_of(scope) == "10.0.0.1"  # no proxy trusted: the socket's address
    assert LoginLimiter(trusted_proxies=1).client_of(scope) == "203.0.113.9"  # not the spoofable left part


def test_login_attempts_are_rate_limited(tmp_path, ws):
    ctx = make_context(ws, data_dir=tmp_path / "data")
    with serve(ctx, auth=("byorn", "right horse battery"),
               login_limiter=LoginLimiter(max_failures=3, lockout_s=2.0)) as app:
        login = app.url + "/login"
        wrong = {"username": "byorn", "password": "guess"}
        right = {"username": "byorn", "password": "right horse battery"}
        assert [httpx.post(login, data=wrong).status_code for _ in range(3)] == [400, 400, 400]
        refused = httpx.post(login, data=right)  # locked out: even the right password waits
        assert refused.status_code == 429 and "Too many failed logins" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1
        time.sleep(2.1)
        assert httpx.post(login, data=right).status_code == 200


# -- one visitor's runs are not another's ----------------------------------------------
def fake_trainer(release: threading.Event):
    def trainer(ws, cfg, decisions, callbacks, cancel):
        release.wait(30)
        out_dir = Path(cfg.out_dir)
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text('{"train_config": {"method": "%s"}}' % cfg.method)
        (out_dir / "metrics.json").write_text('{"asr": 0.5, "cider": 1.0}')
        return SimpleNamespace(out_dir=out_dir, metrics={"asr": 0.5}, cancelled=False)
    return trainer


def test_private_sessions_keep_runs_apart(tmp_path, ws):
    release = threading.Event()
    ctx = make_context(ws, data_dir=tmp_path / "data", private_sessions=True, trainer=fake_trainer(release))
    a_token, a = attach_visitor(ctx, None, {"ws": ws.key, "threshold": 0.0})
    b_token, b = attach_visitor(ctx, "../../etc/passwd", {"ws": ws.key, "threshold": 0.0})  # forged: replaced
    assert a_token != b_token and ".." not in b_token
    assert attach_visitor(ctx, a_token, {})[0] == a_token  # the same browser after a reload: the same visitor

    tab_train.start_training(ctx, a, *GOOD, False)
    mine = tab_train.poll(ctx, a)[0]
    theirs = tab_train.poll(ctx, b)[0]
    assert "sft on Synthetic" in mine
    assert "Another visitor's training run is going" in theirs and "Synthetic" not in theirs
    with pytest.raises(gr.Error, match="only they can cancel"):
        tab_train.cancel_training(ctx, b)
    with pytest.raises(gr.Error, match="Another visitor's training run is going"):
        tab_train.start_training(ctx, b, *GOOD, False)
    release.set()
    assert tab_train.wait_until_idle(ctx, 30) and ctx.job.snapshot()["status"] == FINISHED
    run_a = Path(ctx.job.snapshot()["out_dir"])
    assert run_a.parent == ctx.runs_dir / "visitors" / visitor_folder(a_token)
    assert "No training run of yours" in tab_train.poll(ctx, b)[0]
    assert list(load_runs(ctx, a)["run_id"]) == [run_a.name] and load_runs(ctx, b).empty

    tab_train.start_training(ctx, b, *GOOD, True)  # shared on purpose
    assert tab_train.wait_until_idle(ctx, 30)
    shared = Path(ctx.job.snapshot()["out_dir"])
    assert shared.parent == ctx.runs_dir
    assert set(load_runs(ctx, a)["run_id"]) == {run_a.name, shared.name}
    assert list(load_runs(ctx, b)["run_id"]) == [shared.name]


def test_without_private_sessions_everyone_sees_every_run(tmp_path, ws):
    release = threading.Event()
    release.set()
    ctx = make_context(ws, data_dir=tmp_path / "data", trainer=fake_trainer(release))
    tab_train.start_training(ctx, {"ws": ws.key, "threshold": 0.0}, *GOOD, False)
    assert tab_train.wait_until_idle(ctx, 30)
    assert Path(ctx.job.snapshot()["out_dir"]).parent == ctx.runs_dir
    assert len(load_runs(ctx, {})) == 1 and "sft on" in tab_train.poll(ctx, {})[0]


# -- training values the library rejects are form errors -------------------------------------
@pytest.mark.parametrize("index, value, match", [(5, 1.5, r"ema_decay \(EMA decay λ\)"),
                                                 (2, 0, r"batch_size \(batch size\)")])
def test_bad_training_values_are_form_errors(tmp_path, ws, index, value, match):
    ctx = make_context(ws, data_dir=tmp_path / "data", trainer=fake_trainer(threading.Event()))
    raw = list(GOOD)
    raw[index] = value
    with pytest.raises(gr.Error, match=match):
        tab_train.start_training(ctx, {"ws": ws.key, "threshold": 0.0}, *raw, False)
    assert ctx.job.snapshot()["status"] == "idle" and not ctx.runs_dir.exists()  # no run started


# -- uploads: a partial extraction is never reused ---------------------------------------------
def small_zip(tmp_path: Path) -> Path:
    archive = tmp_path / "up.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("mine/data.json", "[]")
        z.writestr("mine/images/a.png", b"not really a png")
    return archive


def test_partial_extraction_is_extracted_again(tmp_path):
    from byorn.data.io import extract_upload

    archive, root = small_zip(tmp_path), tmp_path / "uploads"
    calls = []

    def crashing(src, dest):
        extract_upload(src, dest)
        raise OSError("killed mid-extraction")

    def counting(src, dest):
        calls.append(dest)
        return extract_upload(src, dest)

    with pytest.raises(OSError):
        extracted_upload(archive, root, crashing)
    assert list(root.iterdir()) == []  # a crash leaves nothing behind that could be reused
    # a folder from before markers existed, or a crash of older code: present, not marked
    partial = root / hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
    (partial / "mine").mkdir(parents=True)
    (partial / "mine" / "data.json").write_text("[")  # truncated
    got = extracted_upload(archive, root, counting)
    assert len(calls) == 1 and got == partial / "mine" and (got / "data.json").read_text() == "[]"
    assert (partial / COMPLETE).is_file() and (got / "images" / "a.png").exists()
    assert extracted_upload(archive, root, counting) == got and len(calls) == 1  # whole and marked: reused

    shutil.rmtree(partial)
    results = []
    threads = [threading.Thread(target=lambda: results.append(extracted_upload(archive, root, counting)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(calls) == 2  # four uploads of one zip at once: one extraction
    assert not [p for p in root.iterdir() if p.name.startswith((".extract", ".stale"))]  # no leftovers


# -- images: written once, whole -------------------------------------------------------------------
def test_image_files_are_whole_under_concurrency(tmp_path):
    from PIL import Image

    files = ImageFiles(tmp_path / "img")
    renders = []

    def render():
        renders.append(1)
        time.sleep(0.01)
        return Image.new("RGB", (300, 300), (200, 10, 10))

    paths = []
    threads = [threading.Thread(target=lambda: paths.append(files.path(("ws", "s1"), render))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 1
    with Image.open(paths[0]) as im:
        assert im.size == (300, 300)
    assert files.path(("ws", "s1"), render) == paths[0] and len(renders) <= 16
    other = files.path(("ws", "s2"), lambda: Image.new("RGB", (4, 4)))
    assert other != paths[0]
    assert sorted(p.name for p in (tmp_path / "img").iterdir() if p.name.startswith(".")) == []  # no partial files
