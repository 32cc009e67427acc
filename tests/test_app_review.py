"""The review workflow through the launched app: turns, pages, the map selection, gallery, candidates, trigger.

The server runs on a synthetic workspace of conversations (``app/synthetic.py``,
one row per assistant turn) with the embedded tiny model behind it, so
regenerating, proposing with a run and the trigger map run for real in a few
seconds.  The "finished run" is a run folder holding the embedded model (the
shape ``byorn.train`` writes), which is all "propose with run X" needs.
"""
from __future__ import annotations

import base64
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from gradio_client.exceptions import AppError
from served_app import serve_workspace

from app.synthetic import synthetic_workspace


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


needs_review_library = pytest.mark.skipif(
    not all(_has(m) for m in ("byorn.propose", "byorn.neighbors", "byorn.explain")),
    reason="byorn.propose / neighbors / explain (issue 10, review branch) not merged yet")


def make_run(runs: Path, name: str, vlm, fingerprint: str, method: str = "sft") -> Path:
    """A finished run folder as ``byorn.train`` leaves it, holding ``vlm`` as its model."""
    from byorn.train import save_model

    folder = runs / name
    save_model(vlm, folder / "model")
    (folder / "config.json").write_text(json.dumps({"train_config": {"method": method, "epochs": 1},
                                                    "status": "finished", "dataset_fingerprint": fingerprint}))
    (folder / "metrics.json").write_text(json.dumps({"clean_metric": "cider", "clean_value": 0.5, "asr": 0.9}))
    return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory, vlm):
    ws = synthetic_workspace(300, multi_turn=0.5, seed=1)
    ws.vlm_loader = lambda: vlm  # the embedded model stands behind the synthetic audit
    app = serve_workspace(ws, tmp_path_factory.mktemp("review"), private_sessions=False)
    app.vlm = vlm
    yield app
    app.close()


@pytest.fixture()
def client(served):
    c = served.client()
    yield c
    served.ctx.store.clear_many(served.ws.fingerprint, list(served.ctx.store.all(served.ws.fingerprint)))


@pytest.fixture()
def events(served, client):
    """Events with ``event_data`` (which gradio_client cannot send), in the client's session."""
    s = served.session(client)
    yield s
    s.close()


def mask_of(rows, n: int) -> str:
    bits = np.zeros(n, dtype=bool)
    bits[list(rows)] = True
    return base64.b64encode(np.packbits(bits, bitorder="little").tobytes()).decode()


def test_a_conversation_turn_in_the_inspector(served, client, events):
    ws, store = served.ws, served.ctx.store
    t = ws.table
    row = t[(t["n_turns"] == 3)].iloc[1]  # turn 1 of a three-exchange conversation
    header, image, instruction, tokens, proposal, edit, decision = client.predict(row["key"], api_name="/select_sample")
    assert row["key"] in header and "assistant turn **2 of 3**" in header and Path(image).exists()
    assert row["instruction"] in instruction and edit == row["response"]
    others = t[(t["id"] == row["id"]) & (t["turn"] != row["turn"])]["key"].tolist()
    assert "byorn-tokens" in tokens and all(f"data-key='{k}'" in tokens for k in others)  # every turn shown
    assert tokens.count("turn assistant current") == 1 and "gradio_api/file=" in tokens  # the image, in place
    out = client.predict("a proposal", "", False, api_name="/approve")
    d = store.get(ws.fingerprint, row["id"], int(row["turn"]))
    assert d.status == "approved" and d.text == "a proposal" and d.turn == 1 and d.source == "reference:synthetic"
    assert store.get(ws.fingerprint, row["id"], 0) is None and "approved" in out[-1]
    # a click on another turn of the conversation opens it; a bare sample id opens its most suspicious turn
    out = events.call("/open_turn", [None], {"key": others[0]})
    assert others[0] in out[1]
    best = t[(t["id"] == row["id"]) & (t["turn"] == row["sample_turn"])]["key"].iloc[0]
    assert best in client.predict(row["id"], api_name="/select_sample")[0]
    one = t[t["n_turns"] == 1].iloc[0]
    header, *_, tokens, _, _, _ = client.predict(one["key"], api_name="/select_sample")
    assert "assistant turn" not in header and "turn assistant" not in tokens  # single-turn looks as before


def test_table_is_paged_sorted_and_filtered_on_the_server(served, client, events):
    ws = served.ws
    t = ws.table
    frame, counts = client.predict("", "", "all", [], "", "score", True, False, api_name="/filter_table")
    assert f"rows 1-50 of {len(t)}" in counts and len(frame["data"]) == 50
    assert [r[0] for r in frame["data"]] == t.sort_values("score", ascending=False, kind="stable")["key"].head(50).tolist()
    assert "turn" in frame["headers"]  # conversations: which turn each row is
    frame2, counts2, page = client.predict(api_name="/next_page")
    assert page == 2 and "rows 51-100" in counts2 and frame2["data"][0][0] != frame["data"][0][0]
    last = -(-len(t) // 50)
    frame3, _, page = client.predict(10_000, api_name="/table_page")  # clamped to the last page
    assert page == last and len(frame3["data"]) == len(t) - 50 * (last - 1)
    frame, _ = client.predict("", "", "all", ["pending"], "evil.example", "id", False, False, api_name="/filter_table")
    poisoned = t[t["response"].str.contains("evil.example")]["key"].sort_values().tolist()
    assert [r[0] for r in frame["data"]] == poisoned[:50]
    # only the map selection
    rows = [3, 10, 11, 40]
    out = events.call("/map_select", [None], {"mask": mask_of(rows, len(t)), "count": 4, "how": "lasso"})
    assert "Selection: **4** turns" in out[1] and "by lasso" in out[1]
    frame, counts = client.predict("", "", "all", [], "", "score", True, True, api_name="/filter_table")
    assert sorted(r[0] for r in frame["data"]) == sorted(t["key"].iloc[rows])
    with pytest.raises(AppError, match="must be a number"):
        client.predict("abc", "", "all", [], "", "score", True, False, api_name="/filter_table")


def test_bulk_decision_over_the_map_selection_asks_first(served, client, events):
    ws, store = served.ws, served.ctx.store
    t = ws.table
    rows = t.index[t["n_turns"] > 1][:7].tolist()
    events.call("/map_select", [None], {"mask": mask_of(rows, len(t)), "count": 7, "how": "box"})
    msg = client.predict("reject (originals are fine)", api_name="/selection_bulk_preview")
    assert "**7** turns of the map selection" in msg and "Confirm" in msg
    assert store.all(ws.fingerprint) == {}  # nothing written before confirming
    assert client.predict(api_name="/selection_bulk_cancel").startswith("Cancelled")
    with pytest.raises(AppError, match="Preview"):
        client.predict(api_name="/selection_bulk_confirm")
    client.predict("reject (originals are fine)", api_name="/selection_bulk_preview")
    assert "7 turns marked rejected" in client.predict(api_name="/selection_bulk_confirm")
    got = {k: d.status for k, d in store.all(ws.fingerprint).items()}
    assert got == {(t.at[r, "id"], int(t.at[r, "turn"])): "rejected" for r in rows}
    # the same selection from API clients by key; an empty selection asks for one
    events.call("/map_select", [None], {"ids": []})
    with pytest.raises(AppError, match="Select points"):
        client.predict("drop", api_name="/selection_bulk_preview")


def test_gallery_shows_the_filter_by_score_and_opens_the_inspector(served, client, events):
    ws = served.ws
    t = ws.table
    client.predict("", "", "flagged", [], "", "id", False, False, api_name="/filter_table")
    info, grid = client.predict("current filter", api_name="/gallery")
    keys = [k for k in grid.split("data-key='")[1:]]
    keys = [k.split("'")[0] for k in keys]
    flagged = t[t["score"] > ws.default_threshold()].sort_values("score", ascending=False, kind="stable")["key"]
    assert keys == flagged.head(200).tolist()  # by score, whatever the table's sort
    assert grid.count("<img") == len(keys) and "flagged" in grid and "pending" in grid
    assert f"showing 1-{len(keys)} of {len(flagged)}" in info
    out = events.call("/gallery_open", [None, "current filter"], {"key": keys[1]})
    assert keys[1] in out[1] and f"2 / {len(flagged)} in the gallery" in out[1]
    assert keys[2] in client.predict(api_name="/next_sample")[0]  # the Inspector walks the gallery
    # the map selection, and nothing selected
    events.call("/map_select", [None], {"ids": []})
    info, grid = client.predict("map selection", api_name="/gallery")
    assert "Nothing selected" in info and "data-key" not in grid


def test_export_the_map_selection(served, client, events):
    ws, store = served.ws, served.ctx.store
    t = ws.table
    conv = t[t["n_turns"] == 2]["id"].iloc[0]
    rows = t.index[t["id"] == conv].tolist() + [int(t.index[t["n_turns"] == 1][0])]
    store.set(ws.fingerprint, conv, "edited", "exported text", turn=1)
    store.set(ws.fingerprint, t["id"].iloc[-1], "dropped")  # outside the selection
    events.call("/map_select", [None], {"mask": mask_of(rows, len(t)), "count": len(rows)})
    path, summary = client.predict("LLaVA JSON + images", "map selection", api_name="/export_dataset")
    assert "Exported 2 samples of the map selection" in summary
    with zipfile.ZipFile(path) as z:
        data = json.loads(z.read(next(n for n in z.namelist() if n.endswith(".json"))))
    assert sorted(d["id"] for d in data) == sorted({t.at[r, "id"] for r in rows})
    assert "exported text" in json.dumps(data)
    path, summary = client.predict("map selection", api_name="/export_decisions")
    assert summary == "Exported 1 decisions of the map selection." and "exported text" in Path(path).read_text()
    with pytest.raises(AppError, match="Nothing is selected"):
        served.client(page_load=False).predict("LLaVA JSON + images", "map selection", api_name="/export_dataset")


@needs_review_library
def test_similar_samples_and_select_their_cluster(served, client, events):
    from app import similar
    from app.state import View

    ws = served.ws
    t = ws.table
    poisoned = t[t["response"].str.contains("evil.example")]
    key = poisoned["key"].iloc[0]
    client.predict(key, api_name="/select_sample")
    view = View(ws=ws.key, threshold=ws.default_threshold(), current=key)
    html = similar.similar_outputs(served.ctx, served.demo.ui, view)[served.demo.ui.inspector.sim.html]
    near = [k.split("'")[0] for k in html.split("data-key='")[1:]]
    assert len(near) == 10 and key not in near
    assert set(near) <= set(poisoned["key"])  # the synthetic embedding puts poisoned turns together
    out = events.call("/open_similar", [None], {"key": near[0]})
    assert near[0] in out[1]
    sel, *_rest = client.predict(api_name="/select_cluster")
    n = int(sel.split("**")[1])
    assert 0.8 * len(poisoned) <= n <= len(poisoned) + 5  # the poisoned blob of the map
    msg = client.predict("drop", api_name="/selection_bulk_preview")
    assert f"**{n}** turns of the map selection" in msg


@needs_review_library
def test_propose_with_a_run_and_approve_a_candidate(served, client, events):
    ws, ctx = served.ws, served.ctx
    run = make_run(ctx.runs_dir, "20990101-000000-sft", served.vlm, ws.fingerprint)
    client.predict("", "", "flagged", [], "", "score", True, False, api_name="/filter_table")
    # one-exchange samples: main's model adapter generates single-turn conversations only for now
    single = ws.table[ws.table["n_turns"] == 1].sort_values("score", ascending=False)
    target = single["key"].iloc[0]
    client.predict(target, api_name="/select_sample")
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict(str(run), api_name="/propose_with")  # the page lists runs when the tab opens
    proposers = client.predict(api_name="/list_proposers")[0]
    assert [c[1] for c in proposers["choices"]] == ["reference model", str(run)]
    client.predict(str(run), api_name="/propose_with")
    with pytest.raises(AppError, match="Choose a finished run"):
        client.predict("reference model", 2, "flagged turns", api_name="/propose_start")
    # candidates for the 12 most suspicious flagged turns of a narrow filter
    client.predict("", "", "flagged", [], "", "score", True, False, api_name="/filter_table")
    order = single["key"].head(12).tolist()
    rows = ws.index.positions_of(order)
    events.call("/map_select", [None], {"mask": mask_of(rows, len(ws.table)), "count": 12})
    client.predict(str(run), 2, "flagged turns in the map selection", api_name="/propose_start")
    from app import candidates

    assert candidates.job(ctx).join(120)
    status, *_ = client.predict(api_name="/propose_poll")
    assert "finished" in status and "12 / 12" in status, status
    client.predict(target, api_name="/select_sample")
    client.predict(str(run), api_name="/propose_with")
    book = candidates.book(ctx).for_run(ws, str(run))
    pos = ws.index.position(target)
    cands = book[(ws.index.ids[pos], int(ws.index.turns[pos]))]
    assert 1 <= len(cands) <= 2 and all(c.text and np.isfinite(c.nll) for c in cands)
    proposal, edit = client.predict(0, api_name="/pick_candidate")
    assert proposal == edit == cands[0].text
    client.predict(proposal, edit, False, api_name="/approve")
    d = ctx.store.get(ws.fingerprint, ws.index.ids[pos], int(ws.index.turns[pos]))
    assert d.status == "approved" and d.text == cands[0].text and d.source == f"run:{run.name}"
    # regenerate with the run: fresh candidates for the open turn, the best one proposed
    assert isinstance(client.predict(api_name="/regenerate"), str)


@needs_review_library
def test_trigger_map_on_demand_and_cached(served, client):
    ws, ctx = served.ws, served.ctx
    t = ws.table
    key = t[t["response"].str.contains("evil.example") & (t["n_turns"] == 1)]["key"].iloc[0]
    client.predict(key, api_name="/select_sample")
    t0 = time.perf_counter()
    image, words, note = client.predict("reference model", api_name="/trigger_map")
    first = time.perf_counter() - t0
    assert Path(image).exists() and "byorn-words" in words and "Mode **fall** under the reference model" in note
    assert list((ctx.data_dir / "trigger_maps").glob("*.json"))  # cached on disk
    t0 = time.perf_counter()
    assert client.predict("reference model", api_name="/trigger_map")[2] == note
    print(f"\ntrigger map: {first:.2f} s, cached {time.perf_counter() - t0:.2f} s")
    with pytest.raises(AppError, match="Open a sample"):
        served.client(page_load=False).predict("reference model", api_name="/trigger_map")
