"""The app's handlers on 100k conversations (~145k assistant-turn rows): right answers at scale.

Speed is measured in ``benchmarks/app_bench.py`` (figures in ``benchmarks/APP.md``);
here only what must hold whatever the machine: paging reaches every row, a
selection of tens of thousands of rows round-trips, one decision changes one
row's code, bulk decisions write exactly the planned turns, and the map
payload stays compact.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app import build_app, bulk, plots, tab_gallery, tab_inspector, tab_overview, tab_table  # noqa: E402
from app.context import make_context  # noqa: E402
from app.synthetic import synthetic_workspace  # noqa: E402


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    ws = synthetic_workspace(100_000, multi_turn=0.3, seed=5)
    ctx = make_context(ws, data_dir=tmp_path_factory.mktemp("scale"), private_sessions=False)
    demo = build_app(ctx)
    return ctx, ws, demo.ui


def test_100k_filter_pages_select_decide(big):
    ctx, ws, ui = big
    ix = ws.index
    assert len(ws.dataset) == 100_000 and ix.n > 130_000 and ix.multi_turn
    view = tab_inspector.View(ws=ws.key, threshold=ws.default_threshold())
    view, frame, md = tab_table.refresh_table(ctx, view, "", "", "all", [], "", "id", False, False)
    assert len(view.order) == ix.n and f"of {ix.n}" in md
    out = tab_table.go_page(ctx, ui, "number", view, 10_000_000)  # the last page
    last = out[ui.table.table]
    assert out[ui.table.page] == -(-ix.n // 50) and last["id"].iloc[-1] == sorted(ix.keys)[-1]

    # a lasso over the poisoned blob (rows come back as a bitmask)
    x, y = ws.table["umap_joint_x"].to_numpy(), ws.table["umap_joint_y"].to_numpy()
    inside = np.flatnonzero((x > 3) & (y > 3))
    evt = type("E", (), {"_data": {"mask": json.loads(plots.selection_payload(inside, ix.n, 1))["mask"]}})()
    out = tab_overview.select_points(ctx, ui, view, evt)
    assert np.array_equal(view.selection, inside) and f"**{len(inside)}** turns" in out[ui.overview.selection]

    # one decision: one row's code
    before = ctx.status_codes(ws).copy()
    shown = tab_inspector.decide(ctx, "dropped", tab_inspector.show_sample(ctx, view, ix.keys[inside[0]]).view,
                                 "", "", False)
    after = ctx.status_codes(ws)
    assert np.flatnonzero(after != before).tolist() == [int(inside[0])] and "dropped" in shown.decision

    # bulk over the selection: exactly the planned turns
    plan, msg = bulk.plan(ctx, view, "reject (originals are fine)", view.selection, "selection")
    assert f"**{len(inside)}** turns" in msg
    view.bulk = plan
    bulk.confirm_plan(ctx, view, "selection")
    decided = ctx.decisions(ws)
    assert len(decided) == len(inside) and all(d.status == "rejected" for d in decided.values())
    assert (ctx.status_codes(ws)[inside] == 2).all() and ctx.status_codes(ws).sum() == 2 * len(inside)


def test_100k_map_and_gallery_stay_small(big):
    ctx, ws, ui = big
    ix = ws.index
    view = tab_inspector.View(ws=ws.key, threshold=ws.default_threshold())
    payload = plots.payload_json(plots.map_payload(ix, ctx.status_codes(ws), view.threshold, "joint", "score"))
    assert len(payload) < 8 * ix.n  # ~6.7 bytes a point: coordinates and colour in binary columns
    assert "text" not in json.loads(payload)  # no hover texts above HOVER_MAX points
    view.order = np.arange(ix.n)
    out = tab_gallery.render(ctx, ui, view, "current filter")
    grid = out[ui.gallery.grid]
    assert grid.count("data-key=") == tab_gallery.PAGE and grid.count("<img") == tab_gallery.PAGE
