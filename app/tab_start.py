"""Data tab: the embedded demo (default), or your own data and model, audited here."""
from __future__ import annotations

import logging
from functools import partial
from types import SimpleNamespace

import gradio as gr

from byorn.scoring import DEFAULT_SCORE, SCORE_METHODS
from byorn.split import AUTO, DEFAULT_P, PAPER_P, parse_p

from .context import AppContext, new_view, store_errors
from .state import View
from .loading import OpenError, allowed_server_path, audit_workspace, load_user_dataset

logger = logging.getLogger(__name__)

INTRO = """\
**BYORn Studio** audits vision-language fine-tuning data for backdoors. Every
sample gets a *misalignment score*: how implausible its response is under the
pretrained reference model (mean surprisal of the response tokens). Poisoned
samples pair a trigger with an attacker's target response, which the reference
model finds unlikely, so they score high. Samples above the threshold are
*flagged*; BYORn keeps them but trains on responses bootstrapped from the model
itself, so the backdoor never gets learnt.

The app opens on an **embedded demo**: a poisoned fine-tuning set of a small
procedural world of shapes, audited by a tiny LLaVA model shipped with the app.
Review the flagged samples (Overview, Table, Inspector), then train with SFT,
BYORn-F or BYORn (Train) and compare attack success and clean quality (Compare).
"""


def build_start() -> SimpleNamespace:
    gr.Markdown(INTRO)
    current = gr.Markdown(elem_id="current-data")
    demo_btn = gr.Button("open the embedded demo", elem_id="open-demo")
    with gr.Accordion("Open your own data", open=False):
        gr.Markdown("A LLaVA JSON file (or messages+images JSONL) with its images, or a folder "
                    "saved with `datasets`, as a **zip upload** or a **path on the server**. "
                    "Leave the model empty for the embedded tiny model, or give the path of a "
                    "`transformers` image-text-to-text model folder on the server.")
        with gr.Row():
            upload = gr.File(label="upload a zip", file_types=[".zip"], type="filepath", elem_id="upload")
            with gr.Column():
                path = gr.Textbox(label="or a dataset path on the server", elem_id="data-path")
                model_path = gr.Textbox(label="model folder on the server (empty = embedded model)",
                                        elem_id="model-path")
        with gr.Row():
            p = gr.Dropdown([AUTO] + [f"{q:g}" for q in (0.5, PAPER_P, 0.7, 0.8, 0.9)], value=str(DEFAULT_P),
                            allow_custom_value=True, elem_id="split-p",
                            label=f"split: auto (a threshold read off the scores) or a percentile p in [0, 1] "
                                  f"(turns above the p-quantile are flagged; the paper: {PAPER_P:g})")
            score = gr.Dropdown(list(SCORE_METHODS), value=DEFAULT_SCORE, elem_id="score-method",
                                label="score (mean / max / top-k token NLL; grounding: NLL with the image minus "
                                      "with a blank one, scores twice)")
            propose = gr.Checkbox(value=True, label="propose replacements (slower)")
        open_btn = gr.Button("open and audit", variant="primary", elem_id="open-data")
    status = gr.Markdown(elem_id="open-status")
    return SimpleNamespace(**{k: v for k, v in locals().items()})


def describe(ctx: AppContext, view: View) -> str:
    ws = ctx.workspace(view)
    with store_errors():
        n_dec = sum(ctx.store.counts(ws.fingerprint).values())
    return (f"**Open now:** {ws.name} · {len(ws.dataset)} samples · fingerprint `{ws.fingerprint}` · "
            f"{n_dec} review decisions saved")


def open_demo(ctx: AppContext, view: View):
    view = new_view(ctx.workspaces.get(ctx.default_key), owner=View.coerce(view).owner)
    return view, describe(ctx, view), "Opened the embedded demo.", gr.Tabs(selected="overview")


def open_data(ctx: AppContext, view: View, upload, path, model_path, p, score, propose,
              progress=gr.Progress()):
    """Load, audit (with a progress bar) and switch this user to the new data."""
    path, model_path = (path or "").strip() or None, (model_path or "").strip() or None
    if path and not ctx.allow_server_paths:
        raise gr.Error("Opening server paths is switched off on this server; upload a zip instead.")
    if model_path and not ctx.allow_server_paths:
        raise gr.Error("Model folders on the server are switched off here; leave the model empty.")
    try:
        p = parse_p(p)
    except ValueError as e:
        raise gr.Error(f"The split: {e}.") from e
    try:
        # Checked before anything is read: outside the data roots, one answer whether it exists or not.
        path = str(allowed_server_path(path, ctx.data_roots)) if path and not upload else path
        model_path = str(allowed_server_path(model_path, ctx.data_roots)) if model_path else None
        progress(0.0, desc="reading the data")
        dataset = load_user_dataset(path=path, upload=upload, upload_root=ctx.data_dir / "uploads")
        ws = audit_workspace(dataset, model_path, ctx.data_dir / "audits",
                             p=p, score=score, propose=bool(propose),
                             progress=lambda frac, msg: progress(frac, desc=msg))
    except OpenError as e:
        raise gr.Error(str(e)) from e
    except Exception as e:  # anything else the model or the data throws: say so, keep serving
        logger.exception("opening %s failed", path or upload)
        raise gr.Error(f"The audit failed ({type(e).__name__}: {e}). Check the data and the model "
                       "folder; the demo and your decisions are untouched.") from e
    ctx.workspaces.add(ws)
    view = new_view(ws, owner=View.coerce(view).owner)  # the visitor stays who they are
    msg = f"Opened and audited **{ws.name}**: {int(ws.table['score'].gt(view.threshold).sum())} flagged."
    msg += "".join(f"\n\n**Warning:** {w}" for w in ws.meta.get("model_warnings") or [])
    return view, describe(ctx, view), msg, gr.Tabs(selected="overview")


def wire_start(ui, ctx: AppContext, after_open: list) -> None:
    """``after_open``: (fn, inputs, outputs) to chain after opening (refresh the views)."""
    s = ui.start
    outs = [ui.view, s.current, s.status, ui.tabs]
    ev1 = s.demo_btn.click(partial(open_demo, ctx), [ui.view], outs, api_name="open_demo")
    ev2 = s.open_btn.click(partial(open_data, ctx),
                           [ui.view, s.upload, s.path, s.model_path, s.p, s.score, s.propose], outs,
                           api_name="open_data", concurrency_id="audit", concurrency_limit=1)
    for ev in (ev1, ev2):
        for fn, inputs, outputs in after_open:
            ev = ev.success(fn, inputs, outputs, api_visibility="private")
    # the decision count changes as people review: recount when the tab is opened
    ui.tab_data.select(partial(describe_view, ctx), [ui.view], [ui.view, s.current],
                       api_visibility="private")


def describe_view(ctx: AppContext, view: View):
    view = View.coerce(view)
    """On page load: the view (reset if its workspace is gone) and what is open."""
    ctx.workspace(view)
    return view, describe(ctx, view)
