"""The launched app through ``gradio_client``: every state-changing event, and bad input.

Runs on the embedded demo (``assets/demo``) with the embedded model and the
real trainer (``byorn.train.train``), in runs of a few steps with small
evaluations, so the whole module takes about a minute on 2 cores.
"""
from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from served_app import serve_workspace

from app.tab_train import wait_until_idle

# method, epochs, batch, lr, LoRA, EMA decay, temperature, seed, max steps, eval every, eval samples
LONG_RUN = ["BYORn (bootstrap replacements)", 1, 8, 1e-3, False, 0.99, 0.7, 0, 200, 1, 4]


def demo_workspace_or_skip():
    from app.loading import demo_workspace

    try:
        return demo_workspace()
    except FileNotFoundError as e:
        pytest.skip(f"embedded demo not built: {e}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    ws = demo_workspace_or_skip()
    from byorn.models import EMBEDDED_MODEL

    # server paths may point into the test's temporary folders and at the embedded model
    app = serve_workspace(ws, tmp, data_roots=(tmp_path_factory.getbasetemp(), Path(EMBEDDED_MODEL).parent))
    yield app
    app.close()


@pytest.fixture()
def client(served):
    return served.client()


def flagged_ids(ws, n=3):
    return ws.table.sort_values("score", ascending=False)["id"].head(n).tolist()


def test_page_load_shows_demo_overview(served, client):
    title, counts, hist, map_json, pct, value, mode = client.predict("joint", "ground truth",
                                                                     api_name="/refresh_overview")
    assert "Embedded demo" in title and "flagged" in counts
    fig = json.loads(map_json)  # one WebGL point per row, point i = table row i (hover: its id)
    assert fig["n"] == len(served.ws.table)
    assert [t.split("<br>")[0] for t in fig["text"]] == served.ws.table["id"].tolist()
    assert pct == pytest.approx(0.6) and mode == "percentile"  # the demo's audit was split at the paper's p


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
    other = served.client(page_load=False)
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
    with served.session(client) as events:  # raw queue calls (event_data); AppError when an event fails
        row = {"index": [0, 0], "value": sid, "row_value": [sid, 1.0, "yes", "pending"], "col_value": [sid],
               "selected": True}
        assert sid in events.call("/open_row", [None], row)[1]
        assert sid in events.call("/map_click", [None], {"sample_id": sid})[1]
        out = events.call("/map_select", [None], {"ids": flagged_ids(served.ws, 5)})
        assert "Selection: **5** samples" in out[1]


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


def test_regenerate_asks_the_model(served, client):
    sid = flagged_ids(served.ws, 1)[0]
    client.predict(sid, api_name="/select_sample")
    texts = {client.predict(api_name="/regenerate") for _ in range(2)}
    assert all(isinstance(t, str) and t.strip() for t in texts)
    with pytest.raises(AppError, match="Open a sample"):
        served.client(page_load=False).predict(api_name="/regenerate")


def _wait_for(pred, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_train_start_second_start_cancel_and_compare(served, client):
    ctx = served.ctx
    status, *_ = client.predict(*LONG_RUN, api_name="/train_start")
    assert "running" in status
    other = served.client(page_load=False)  # another browser, or this page reloaded
    with pytest.raises(AppError, match="already going"):
        other.predict(*LONG_RUN, api_name="/train_start")
    # a fresh page re-attaches to the running job: the same poll runs on page load
    assert "running" in other.predict(api_name="/train_poll")[0]
    assert _wait_for(lambda: ctx.job.snapshot()["evals"], 90), "no evaluation reported"
    status, curve, evals, _ = client.predict(api_name="/train_poll")
    assert "step" in status and "ASR" in status and evals["data"]
    assert {"CIDEr (clean)", "ASR (triggered)"} <= set(evals["headers"])
    client.predict(api_name="/train_cancel")
    assert wait_until_idle(ctx, 120)
    status, *_ = client.predict(api_name="/train_poll")
    assert "cancelled" in status
    run_dir = Path(ctx.job.snapshot()["out_dir"])
    assert (run_dir / "model" / "config.json").exists()  # the checkpoint is kept

    # the run uses this user's threshold and everyone's review decisions
    fp, sid = served.ws.fingerprint, flagged_ids(served.ws, 1)[0]
    ctx.store.set(fp, sid, "dropped")
    try:
        client.predict("value", 0.6, 1e9, "joint", "flag", api_name="/set_threshold")  # nothing flagged
        short = ["BYORn-F (drop flagged)", 1, 8, 1e-3, False, 0.99, 0.7, 0, 3, 0, 4]
        client.predict(*short, api_name="/train_start")
        assert wait_until_idle(ctx, 120)
        assert "finished" in client.predict(api_name="/train_poll")[0]
        config = json.loads((Path(ctx.job.snapshot()["out_dir"]) / "config.json").read_text())
        assert config["dropped"] == {sid: "dropped by review"}
    finally:
        ctx.store.clear(fp, sid)
        client.predict("percentile", 0.6, None, "joint", "flag", api_name="/set_threshold")
    runs, scatter = client.predict(api_name="/list_runs")
    rows = [dict(zip(runs["headers"], r)) for r in runs["data"]]
    assert len(rows) == 2 and {r["method"] for r in rows} == {"byorn", "byorn-f"}
    assert all(isinstance(r["ASR"], (int, float)) and isinstance(r["cider (clean)"], (int, float)) for r in rows)
    with pytest.raises(AppError, match="EMA decay"):
        client.predict("SFT (no defense)", 1, 8, 1e-3, False, 1.5, 0.7, 0, 3, 2, 4, api_name="/train_start")


def test_every_defense_is_offered_and_onion_runs_from_the_train_tab(served, client):
    from app.tab_train import METHODS
    from byorn.defenses import DEFENSES

    assert set(METHODS.values()) == set(DEFENSES) >= {"sft", "byorn-f", "byorn", "onion", "bye"}
    ctx = served.ctx
    assert wait_until_idle(ctx, 120)
    label = next(k for k, v in METHODS.items() if v == "onion")
    client.predict(label, 1, 8, 1e-3, False, 0.99, 0.7, 0, 2, 0, 4, api_name="/train_start")
    assert wait_until_idle(ctx, 300)
    snap = ctx.job.snapshot()
    assert snap["status"] == "finished", snap.get("error")
    config = json.loads((Path(snap["out_dir"]) / "config.json").read_text())
    assert config["train_config"]["method"] == "onion"
    runs, _ = client.predict(api_name="/list_runs")
    assert "onion" in {dict(zip(runs["headers"], r))["method"] for r in runs["data"]}


def _llava_zip(ws, tmp_path: Path, n: int = 12) -> Path:
    from byorn.data import VLDataset
    from byorn.data.io import save_llava_json

    folder = save_llava_json(VLDataset([ws.dataset[i] for i in range(n)], name="mine"), tmp_path / "mine").parent
    archive = tmp_path / "mine.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in Path(folder).rglob("*"):
            if f.is_file():
                z.write(f, f.relative_to(folder))
    return archive


def test_open_own_data_by_upload_then_back_to_demo(served, client, tmp_path):
    archive = _llava_zip(served.ws, tmp_path)
    current, msg = client.predict(handle_file(str(archive)), "", "", 0.5, "mean", True,
                                  api_name="/open_data")[:2]
    assert "12 samples" in current and "Opened and audited" in msg
    again = client.predict(handle_file(str(archive)), "", "", 0.5, "mean", True, api_name="/open_data")
    assert "12 samples" in again[0]  # the same zip twice: reuses its extraction and the audit cache
    title = client.predict("joint", "flag", api_name="/refresh_overview")[0]
    assert "12 samples" in title
    current = client.predict(api_name="/open_demo")[0]
    assert "Embedded demo" in current


def test_open_datasets_folder_with_a_model_folder(served, client, tmp_path):
    from byorn.data import VLDataset
    from byorn.data.io import save_hf_dataset
    from byorn.models import EMBEDDED_MODEL

    folder = save_hf_dataset(VLDataset([served.ws.dataset[i] for i in range(10)], name="hf"), tmp_path / "hf")
    current, msg = client.predict(None, str(folder), str(EMBEDDED_MODEL), 0.6, "max", False,
                                  api_name="/open_data")[:2]
    assert "10 samples" in current and "4 flagged" in msg
    # the grounding score: a second pass with blank images, chosen in the same dropdown
    current, msg = client.predict(None, str(folder), "", 0.6, "grounding", False, api_name="/open_data")[:2]
    assert "10 samples" in current and "4 flagged" in msg
    client.predict(api_name="/open_demo")


def test_bad_input_keeps_serving(served, client, tmp_path):
    fp = served.ws.fingerprint
    sid = flagged_ids(served.ws, 1)[0]
    served.ctx.store.set(fp, sid, "edited", "kept through bad input")
    with pytest.raises(AppError, match="No sample with id"):
        client.predict("no-such-id", api_name="/select_sample")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"this is not a zip")
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
    # a model folder that is not a model
    not_model = tmp_path / "not_a_model"
    not_model.mkdir()
    (not_model / "notes.txt").write_text("hello")
    _llava_zip(served.ws, tmp_path, 3)  # good data in tmp_path / "mine"
    with pytest.raises(AppError, match="not a model folder"):
        client.predict(None, str(tmp_path / "mine"), str(not_model), 0.6, "mean", False, api_name="/open_data")
    with pytest.raises(AppError, match="Open a sample|No sample"):
        served.client(page_load=False).predict("", "", False, api_name="/approve")
    # still serving, on the demo, the decision intact
    assert sid in client.predict(sid, api_name="/select_sample")[0]
    assert served.ctx.store.get(fp, sid).text == "kept through bad input"
    served.ctx.store.clear(fp, sid)
