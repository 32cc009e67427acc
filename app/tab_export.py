"""Export tab: the curated dataset (decisions applied) and the decisions alone."""
from __future__ import annotations

import datetime as _dt
import shutil
import tempfile
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from byorn.data import VLDataset
from byorn.export import export_dataset, export_decisions_csv

from .context import AppContext
from .state import View

FORMAT_LABELS = {"LLaVA JSON + images": "llava", "messages JSONL + images": "jsonl",
                 "datasets folder": "hf"}
SCOPES = ("everything", "current filter", "map selection")

EXPLAIN = """\
The curated dataset applies the review decisions: **approved** samples get the
approved replacement, **edited** ones your text, **rejected** ones keep their
original response, **dropped** ones are left out. **Pending samples keep their
original response, even when flagged**: BYORn replaces flagged responses during
training, which an exported file cannot do. Approve, edit or drop the flagged
samples first if the export is meant to be clean on its own.

**What to export**: everything, or only the samples of the current filter (Table
tab) or of the map selection (Overview) — a sample goes out whole, with the
decisions on all its turns; the decision CSV then holds the decisions on the
chosen turns only.
"""


def build_export() -> SimpleNamespace:
    gr.Markdown(EXPLAIN)
    summary = gr.Markdown(elem_id="export-summary")
    with gr.Row():
        scope = gr.Radio(list(SCOPES), value="everything", label="what to export", elem_id="export-scope")
        fmt = gr.Radio(list(FORMAT_LABELS), value="LLaVA JSON + images", label="format")
        dataset_btn = gr.Button("export curated dataset (.zip)", variant="primary", elem_id="export-data")
        csv_btn = gr.Button("export decisions (.csv)", elem_id="export-csv")
    file = gr.File(label="download", interactive=False, elem_id="export-file")
    return SimpleNamespace(**{k: v for k, v in locals().items()})


def _stamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def scoped(ctx: AppContext, view: View, scope: str):
    """(dataset, decisions, what) limited to ``scope``: everything, the current filter or the map selection."""
    if scope not in SCOPES:
        raise gr.Error(f"Unknown export scope {scope!r}.")
    ws = ctx.workspace(view)
    decisions = dict(ctx.decisions(ws))
    if scope == "everything":
        return ws.dataset, decisions, decisions, ""
    rows = view.order if scope == "current filter" else (view.selection if view.has_selection else None)
    if rows is None:
        raise gr.Error("Nothing is selected on the map: draw a lasso or a box on the Overview map first.")
    if not len(rows):
        raise gr.Error(f"The {scope} is empty: nothing to export.")
    ix = ws.index
    ids = set(ix.ids[rows].tolist())
    turns = set(zip(ix.ids[rows].tolist(), ix.turns[rows].tolist()))
    dataset = VLDataset([s for s in ws.dataset if s.id in ids], name=f"{ws.dataset.name}-{scope.replace(' ', '-')}",
                        fingerprint=ws.fingerprint)  # decisions keep naming the original data
    of_samples = {k: d for k, d in decisions.items() if k[0] in ids}
    of_turns = {k: d for k, d in decisions.items() if (k[0], k[1]) in turns}
    return dataset, of_samples, of_turns, f" of the {scope}"


def export_curated(ctx: AppContext, view: View, fmt_label: str, scope: str = "everything"):
    if fmt_label not in FORMAT_LABELS:
        raise gr.Error(f"Unknown format {fmt_label!r}.")
    view = View.coerce(view)
    ws = ctx.workspace(view)
    dataset, decisions, _, what = scoped(ctx, view, scope)
    work = Path(tempfile.mkdtemp(prefix="byorn-export-"))
    name = f"{ws.fingerprint}-curated-{FORMAT_LABELS[fmt_label]}-{_stamp()}"
    export_dataset(dataset, decisions, work / name, fmt=FORMAT_LABELS[fmt_label])
    archive = shutil.make_archive(str(work / name), "zip", root_dir=work, base_dir=name)
    shutil.rmtree(work / name, ignore_errors=True)
    n_drop = len({sid for (sid, _), d in decisions.items() if d.status == "dropped"})
    return archive, (f"Exported {len(dataset) - n_drop} samples{what} ({n_drop} dropped, "
                     f"{len(decisions)} decisions applied).")


def export_csv(ctx: AppContext, view: View, scope: str = "everything"):
    view = View.coerce(view)
    ws = ctx.workspace(view)
    _, _, decisions, what = scoped(ctx, view, scope)
    path = Path(tempfile.mkdtemp(prefix="byorn-export-")) / f"{ws.fingerprint}-decisions-{_stamp()}.csv"
    export_decisions_csv(decisions, path, dataset=ws.dataset, fingerprint=ws.fingerprint)
    return str(path), f"Exported {len(decisions)} decisions{what}."


def wire_export(ui, ctx: AppContext) -> None:
    e = ui.export
    e.dataset_btn.click(partial(export_curated, ctx), [ui.view, e.fmt, e.scope], [e.file, e.summary],
                        api_name="export_dataset")
    e.csv_btn.click(partial(export_csv, ctx), [ui.view, e.scope], [e.file, e.summary], api_name="export_decisions")
