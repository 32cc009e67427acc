"""Export tab: the curated dataset (decisions applied) and the decisions alone."""
from __future__ import annotations

import datetime as _dt
import shutil
import tempfile
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from byorn.export import export_dataset, export_decisions_csv

from .context import AppContext

FORMAT_LABELS = {"LLaVA JSON + images": "llava", "messages JSONL + images": "jsonl",
                 "datasets folder": "hf"}

EXPLAIN = """\
The curated dataset applies the review decisions: **approved** samples get the
approved replacement, **edited** ones your text, **rejected** ones keep their
original response, **dropped** ones are left out. **Pending samples keep their
original response, even when flagged**: BYORn replaces flagged responses during
training, which an exported file cannot do. Approve, edit or drop the flagged
samples first if the export is meant to be clean on its own.
"""


def build_export() -> SimpleNamespace:
    gr.Markdown(EXPLAIN)
    summary = gr.Markdown(elem_id="export-summary")
    with gr.Row():
        fmt = gr.Radio(list(FORMAT_LABELS), value="LLaVA JSON + images", label="format")
        dataset_btn = gr.Button("export curated dataset (.zip)", variant="primary", elem_id="export-data")
        csv_btn = gr.Button("export decisions (.csv)", elem_id="export-csv")
    file = gr.File(label="download", interactive=False, elem_id="export-file")
    return SimpleNamespace(**{k: v for k, v in locals().items()})


def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def export_curated(ctx: AppContext, view: dict, fmt_label: str):
    if fmt_label not in FORMAT_LABELS:
        raise gr.Error(f"Unknown format {fmt_label!r}.")
    ws = ctx.workspace(view)
    decisions = ctx.decisions(ws)
    work = Path(tempfile.mkdtemp(prefix="byorn-export-"))
    name = f"{ws.fingerprint}-curated-{FORMAT_LABELS[fmt_label]}-{_stamp()}"
    export_dataset(ws.dataset, decisions, work / name, fmt=FORMAT_LABELS[fmt_label])
    archive = shutil.make_archive(str(work / name), "zip", root_dir=work, base_dir=name)
    shutil.rmtree(work / name, ignore_errors=True)
    n_drop = len({sid for (sid, _), d in decisions.items() if d.status == "dropped"})
    return archive, (f"Exported {len(ws.dataset) - n_drop} samples ({n_drop} dropped, "
                     f"{len(decisions)} decisions applied).")


def export_csv(ctx: AppContext, view: dict):
    ws = ctx.workspace(view)
    decisions = ctx.decisions(ws)
    path = Path(tempfile.mkdtemp(prefix="byorn-export-")) / f"{ws.fingerprint}-decisions-{_stamp()}.csv"
    export_decisions_csv(decisions, path, dataset=ws.dataset, fingerprint=ws.fingerprint)
    return str(path), f"Exported {len(decisions)} decisions."


def wire_export(ui, ctx: AppContext) -> None:
    e = ui.export
    e.dataset_btn.click(partial(export_curated, ctx), [ui.view, e.fmt], [e.file, e.summary],
                        api_name="export_dataset")
    e.csv_btn.click(partial(export_csv, ctx), [ui.view], [e.file, e.summary], api_name="export_decisions")
