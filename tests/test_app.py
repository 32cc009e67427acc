"""The launched app through ``gradio_client``: every state-changing event, and bad input.

Runs on a synthetic workspace (no model) with a fake trainer, so it is fast;
the browser test (tests/browser) runs the embedded demo and the real trainer
when the demo assets are built.
"""
from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import httpx
import pandas as pd
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from app import build_app, launch  # noqa: E402
from app.context import make_context  # noqa: E402
from app.synthetic import synthetic_workspace  # noqa: E402
from app.tab_train import wait_until_idle  # noqa: E402


def fake_trainer(ws, settings, decisions, table, threshold, callbacks, cancel, out_dir: Path):
    """Stands in for byorn.train.train: a few timed steps, a run folder, honours cancel."""
    total = settings["max_steps"] or 30
    state = SimpleNamespace(step=0, total_steps=total, epoch=0, loss=None, elapsed_s=0.0, eta_s=None)
    for cb in callbacks:
        cb.on_train_begin(state)
    for k in range(1, total + 1):
        time.sleep(0.05)
        state.step, state.loss, state.eta_s = k, 2.0 / k, 0.05 * (total - k)
        for cb in callbacks:
            cb.on_step_end(state)
        if k % 2 == 0:
            for cb in callbacks:
                cb.on_evaluate(state, {"cider": 0.1 * k, "asr": 1.0 / k})
        if cancel.is_set():
            break
    out_dir.mkdir(parents=True)
    metrics = {"clean_metric": "cider", "clean_value": 0.5, "asr": 0.02 if settings["method"] == "byorn" else 0.9}
    (out_dir / "config.json").write_text(json.dumps({**settings, "n_decisions": len(decisions),
                                                     "threshold": threshold}))
    (out_dir / "metrics.json").write_text(json.dumps(metrics))
    return SimpleNamespace(out_dir=out_dir, metrics=metrics, cancelled=cancel.is_set())


def fake_list_runs(root: Path) -> pd.DataFrame:
    rows = []
    for d in sorted(Path(root).iterdir()):
        cfg, m = json.loads((d / "config.json").read_text()), json.loads((d / "metrics.json").read_text())
        rows.append({"run_id": d.name, "method": cfg["method"], "settings": cfg, **m, "wall_s": 1.0,
                     "out_dir": str(d)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    os.environ["GRADIO_TEMP_DIR"] = str(tmp / "gradio")
    ws = synthetic_workspace(120, poison_rate=0.15, seed=1)
    ctx = make_context(ws, data_dir=tmp / "data", trainer=fake_trainer, list_runs=fake_list_runs)
    demo = build_app(ctx)
    launch(demo, ctx, prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    yield SimpleNamespace(ctx=ctx, ws=ws, url=demo.local_url, demo=demo)
    wait_until_idle(ctx, 10)
    demo.close()


@pytest.fixture()
def client(served):
    c = Client(served.url, verbose=False)
    c.predict(api_name="/page_load")
    return c


def call_with_event(client: Client, url: str, api_name: str, data: list, event_data: dict):
    """Call an endpoint with ``event_data`` (which gradio_client cannot send), in the client's session."""
    fn_index = client._infer_fn_index(api_name, None)
    base = url.rstrip("/") + "/gradio_api"
    body = {"data": data, "event_data": event_data, "fn_index": fn_index, "trigger_id": None,
            "session_hash": client.session_hash}
    with httpx.Client(timeout=30) as h:
        event_id = h.post(f"{base}/queue/join", json=body).json()["event_id"]
        with h.stream("GET", f"{base}/queue/data", params={"session_hash": client.session_hash}) as r:
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") == event_id and msg.get("msg") == "process_completed":
                    return msg["output"]
    raise AssertionError("no result")


def flagged_ids(ws, n=3):
    return ws.table.sort_values("score", ascending=False)["id"].head(n).tolist()


def test_page_load_shows_demo_overview(served, client):
    title, counts, hist, map_json, pct, value = client.predict("joint", "ground truth",
                                                               api_name="/refresh_overview")
    assert "Synthetic data" in title and "flagged" in counts
    fig = json.loads(map_json)
    assert sorted(i for tr in fig["data"] for i in tr["customdata"]) == sorted(served.ws.table["id"])
    assert pct == pytest.approx(0.6)


def test_select_decide_and_persist(served, client):
    sid = flagged_ids(served.ws, 1)[0]
    header, image, instruction, tokens, proposal, edit, decision = client.predict(sid, api_name="/select_sample")
    assert sid in header and Path(image).exists() and "byorn-tokens" in tokens
    assert proposal and "pending" in decision
    out = client.predict(proposal, edit, False, api_name="/approve")
    assert "approved" in out[-1]
    fp = served.ws.fingerprint
    assert served.ctx.store.get(fp, sid).text == proposal
    out = client.predict(proposal, "my own words", False, api_name="/edit")
    assert served.ctx.store.get(fp, sid).status == "edited" and "my own words" in out[-1]
    client.predict(proposal, edit, False, api_name="/drop")
    assert served.ctx.store.get(fp, sid).status == "dropped"
    client.predict(proposal, edit, False, api_name="/reject")
    assert served.ctx.store.get(fp, sid).status == "rejected"
    client.predict(proposal, edit, False, api_name="/reset")
    assert served.ctx.store.get(fp, sid) is None
    # another session sees decisions made in this one
    client.predict(proposal, edit, False, api_name="/approve")
    other = Client(served.url, verbose=False)
    assert "approved" in other.predict(sid, api_name="/select_sample")[-1]
    served.ctx.store.clear(fp, sid)


def test_filter_walk_and_advance(served, client):
    _, counts = client.predict("", "", "flagged", [], "", "score", True, api_name="/filter_table")
    order = served.ws.table.sort_values("score", ascending=False)
    order = order[order["score"] > served.ws.default_threshold()]["id"].tolist()
    assert f"**{len(order)}** samples" in counts
    first = client.predict(order[0], api_name="/select_sample")
    assert f"1 / {len(order)}" in first[0]
    assert order[1] in client.predict(api_name="/next_sample")[0]
    assert order[0] in client.predict(api_name="/previous_sample")[0]
    # rejecting with "advance" opens the next sample of the filter
    out = client.predict("", "", True, api_name="/reject")
    assert order[1] in out[0]
    served.ctx.store.clear(served.ws.fingerprint, order[0])
    with pytest.raises(AppError, match="must be a number"):
        client.predict("abc", "", "all", [], "", "score", True, api_name="/filter_table")


def test_table_row_and_map_click_open_the_inspector(served, client):
    sid = flagged_ids(served.ws, 2)[1]
    out = call_with_event(client, served.url, "/open_row", [None],
                          {"index": [0, 0], "value": sid, "row_value": [sid, 1.0, "yes", "pending"],
                           "col_value": [sid], "selected": True})
    assert out.get("error") is None, out
    assert sid in out["data"][1]
    out = call_with_event(client, served.url, "/map_click", [None], {"sample_id": sid})
    assert out.get("error") is None and sid in out["data"][1]
    out = call_with_event(client, served.url, "/map_select", [None], {"ids": flagged_ids(served.ws, 5)})
    assert "Selection: **5** samples" in out["data"][1]


def test_threshold_by_value_and_percentile(served, client):
    out = client.predict("value", 0.6, 1e9, "joint", "flag", api_name="/set_threshold")
    assert "**0** flagged" in out[1]
    out = client.predict("percentile", 0.5, None, "joint", "flag", api_name="/set_threshold")
    assert f"**{len(served.ws.table) // 2}** flagged" in out[1]
    with pytest.raises(AppError, match="threshold value"):
        client.predict("value", 0.5, None, "joint", "flag", api_name="/set_threshold")


def test_bulk_preview_confirm_cancel(served, client):
    fp = served.ws.fingerprint
    client.predict("", "", "flagged", [], "", "score", True, api_name="/filter_table")
    # (buttons are not API outputs: the preview returns its message alone)
    msg = client.predict("drop", "", "", "flagged", [], "", "score", True, api_name="/bulk_preview")
    n = int(msg.split("**")[1])
    assert n > 0 and "Confirm" in msg
    assert client.predict(api_name="/bulk_cancel").startswith("Cancelled")
    assert served.ctx.store.all(fp) == {}
    with pytest.raises(AppError, match="Preview"):
        client.predict("", "", "flagged", [], "", "score", True, api_name="/bulk_confirm")
    client.predict("approve proposed replacements", "", "", "flagged", [], "", "score", True,
                   api_name="/bulk_preview")
    out = client.predict("", "", "flagged", [], "", "score", True, api_name="/bulk_confirm")
    assert f"{n} samples marked approved" in out[2]
    decisions = served.ctx.store.all(fp)
    assert len(decisions) == n and all(d.status == "approved" and d.text for d in decisions.values())
    client.predict("reset to pending", "", "", "flagged", [], "", "score", True, api_name="/bulk_preview")
    client.predict("", "", "flagged", [], "", "score", True, api_name="/bulk_confirm")
    assert served.ctx.store.all(fp) == {}


def test_export_dataset_and_csv(served, client, tmp_path):
    fp = served.ws.fingerprint
    ids = served.ws.table["id"].tolist()
    served.ctx.store.set(fp, ids[0], "dropped")
    served.ctx.store.set(fp, ids[1], "edited", "exported text")
    try:
        path, summary = client.predict("LLaVA JSON + images", api_name="/export_dataset")
        assert f"Exported {len(ids) - 1} samples" in summary
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            data = json.loads(z.read(next(n for n in names if n.endswith(".json"))))
        assert len(data) == len(ids) - 1 and sum(n.endswith(".png") for n in names) == len(ids) - 1
        assert "exported text" in json.dumps(data)
        path, summary = client.predict(api_name="/export_decisions")
        text = Path(path).read_text()
        assert "exported text" in text and text.count("\n") == 3
    finally:
        served.ctx.store.clear(fp, ids[0])
        served.ctx.store.clear(fp, ids[1])


def test_train_start_second_start_cancel_and_compare(served, client):
    settings = ["BYORn (bootstrap replacements)", 1, 8, 1e-3, False, 0.99, 0.7, 0, 200, 2]
    status, *_ = client.predict(*settings, api_name="/train_start")
    assert "running" in status
    with pytest.raises(AppError, match="already going"):
        Client(served.url, verbose=False).predict(*settings, api_name="/train_start")
    time.sleep(0.3)
    status, curve, evals, _ = client.predict(api_name="/train_poll")
    assert "step" in status and evals["data"]
    status, *_ = client.predict(api_name="/train_cancel")
    assert wait_until_idle(served.ctx, 10)
    status, *_ = client.predict(api_name="/train_poll")
    assert "cancelled" in status
    short = ["SFT (no defense)", 1, 8, 1e-3, False, 0.99, 0.7, 0, 3, 2]
    client.predict(*short, api_name="/train_start")
    assert wait_until_idle(served.ctx, 10)
    assert "finished" in client.predict(api_name="/train_poll")[0]
    runs, scatter = client.predict(api_name="/list_runs")
    assert len(runs["data"]) == 2 and {r[1] for r in runs["data"]} == {"byorn", "sft"}
    with pytest.raises(AppError, match="EMA decay"):
        client.predict("SFT (no defense)", 1, 8, 1e-3, False, 1.5, 0.7, 0, 3, 2, api_name="/train_start")


def test_bad_input_keeps_serving(served, client, tmp_path):
    with pytest.raises(AppError, match="No sample with id"):
        client.predict("no-such-id", api_name="/select_sample")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"this is not a zip")
    from gradio_client import handle_file
    with pytest.raises(AppError, match="(?i)zip"):
        client.predict(handle_file(str(broken)), "", "", 0.6, "mean", False, api_name="/open_data")
    with pytest.raises(AppError, match="does not exist"):
        client.predict(None, str(tmp_path / "missing"), "", 0.6, "mean", False, api_name="/open_data")
    # a LLaVA JSON whose image file is missing
    bad = tmp_path / "missing_image"
    bad.mkdir()
    (bad / "data.json").write_text(json.dumps([{"id": "x", "image": "nope.png", "conversations": [
        {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "a cat"}]}]))
    with pytest.raises(AppError, match="nope.png"):
        client.predict(None, str(bad), "", 0.6, "mean", False, api_name="/open_data")
    with pytest.raises(AppError, match="Open a sample|No sample"):
        Client(served.url, verbose=False).predict("", "", False, api_name="/approve")
    # still serving, decisions intact
    sid = flagged_ids(served.ws, 1)[0]
    assert sid in client.predict(sid, api_name="/select_sample")[0]
