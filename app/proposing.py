"""The Inspector's "propose with run X" panel: a background job over the flagged turns, with progress.

The pattern of the Train tab (``app/jobs.py``): the job runs in a thread
owned by the shared :class:`app.candidates.ProposalJob`, each page polls it
from a ``gr.Timer`` (on only while it runs), and a reloaded page re-attaches.
"""
from __future__ import annotations

import time
from functools import partial

import gradio as gr
import numpy as np

from . import candidates
from .candidates import RUNNING
from .context import AppContext
from .showing import candidate_outputs
from .state import View

SCOPES = ("flagged turns", "flagged turns in the current filter", "flagged turns in the map selection")


def keys_for(ctx: AppContext, view: View, scope: str) -> list[tuple[str, int]]:
    """The flagged turns of ``scope``, most suspicious first."""
    ws = ctx.workspace(view)
    ix = ws.index
    if scope == SCOPES[1]:
        rows = view.order
    elif scope == SCOPES[2]:
        if not view.has_selection:
            raise gr.Error("Select points on the map first (lasso or box), or a cluster.")
        rows = view.selection
    elif scope == SCOPES[0]:
        rows = np.arange(ix.n)
    else:
        raise gr.Error(f"Unknown scope {scope!r}.")
    rows = rows[ix.score[rows] > view.threshold]
    rows = rows[np.argsort(-ix.score[rows], kind="stable")]
    return [(ix.ids[r], int(ix.turns[r])) for r in rows.tolist()]


def start(ctx: AppContext, ui, view: View, run_dir: str, k: float, scope: str) -> dict:
    view = View.coerce(view)
    p = ui.inspector.prop
    if not run_dir or run_dir == "reference model":
        raise gr.Error("Choose a finished run in 'propose with' first (the reference model's proposals are "
                       "in the audit already; 'regenerate' asks it again for one turn).")
    try:
        run_dir = candidates.check_run(ctx, view, run_dir)
    except ValueError as e:
        raise gr.Error(str(e)) from e
    ws = ctx.workspace(view)
    keys = keys_for(ctx, view, scope)
    if not keys:
        raise gr.Error("No flagged turns there: move the threshold or change the scope.")
    view.run = str(run_dir)
    k = int(k or 4)
    name = candidates.run_source(run_dir)

    def work(progress, cancel):
        return candidates.propose_with_run(ctx, str(run_dir), ws.dataset, keys, k, progress=progress, cancel=cancel)

    def done(found):
        candidates.book(ctx).put(ws, str(run_dir), found or {})

    try:
        candidates.job(ctx).start(work, f"{k} candidates for {len(keys)} flagged turns with {name}", len(keys), done,
                                  owner=ctx.owner(view))
    except RuntimeError as e:
        raise gr.Error(str(e)) from e
    return {ui.view: view, p.status: status_markdown(candidates.job(ctx).snapshot()), p.timer: gr.Timer(active=True)}


def status_markdown(snap: dict) -> str:
    st = snap["status"]
    if st == "idle":
        return ""
    done, total = snap["done"], snap["total"] or 0
    pct = f" ({100 * done / total:.0f} %)" if total else ""
    took = (snap.get("finished_at") or time.time()) - (snap.get("started_at") or time.time())
    line = f"**{st}**: {snap['label']} · {done} / {total}{pct} · {took:.0f} s"
    if st == "finished":
        line += f" · candidates for {snap.get('n_found', 0)} turns: open a flagged turn to pick one"
    if snap.get("error"):
        line += f"  \nerror: `{snap['error']}`"
    return line


def poll(ctx: AppContext, ui, view: View) -> dict:
    view = View.coerce(view)
    p = ui.inspector.prop
    snap = candidates.job(ctx).snapshot()
    running = snap["status"] == RUNNING
    out = {p.status: status_markdown(snap), p.timer: gr.Timer(active=running)}
    if not running:
        out.update(candidate_outputs(ctx, ui, view))
    return out


def cancel(ctx: AppContext, ui, view: View) -> dict:
    if not candidates.job(ctx).cancel():
        gr.Warning("No proposal job is running.")
    return poll(ctx, ui, view)


def wire_proposals(ui, ctx: AppContext) -> None:
    i = ui.inspector
    p = i.prop
    poll_outs = [p.status, p.timer, i.cands, i.cand_note]
    p.start.click(partial(start, ctx, ui), [ui.view, i.propose_with, p.k, p.scope], [ui.view, p.status, p.timer],
                  api_name="propose_start", concurrency_id="model", concurrency_limit=1)
    p.cancel.click(partial(cancel, ctx, ui), [ui.view], poll_outs, api_name="propose_cancel")
    p.timer.tick(partial(poll, ctx, ui), [ui.view], poll_outs, api_name="propose_poll", show_progress="hidden")
