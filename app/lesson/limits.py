"""Step 6: what BYORn misses, with the project's measured figures (``benchmarks/matrix/summary.json``).

The figures are read from the benchmark matrix the project ran (``byorn
bench``, 3 seeds per cell on world 2; ``benchmarks/RESULTS.md`` tells the
story); nothing here is typed in by hand.  Without that file the step says
where the figures would come from.
"""
from __future__ import annotations

import html
import json
import math
from functools import lru_cache
from pathlib import Path

SUMMARY = Path(__file__).resolve().parents[2] / "benchmarks" / "matrix" / "summary.json"
CHOICES = [("A plausible target (approximately clean-label)", "plausible"),
           ("More poison than flags (50 % of the data poisoned)", "rate")]
LABELS = {"sft": "SFT (no defense)", "byorn-f": "BYORn-F", "byorn": "BYORn (the paper's score: mean NLL)",
          "byorn@grounding": "BYORn flagging by the grounding score",
          "byorn@mean+grounding": "BYORn flagging by mean NLL + grounding"}


@lru_cache(maxsize=2)
def _rows(path: str = str(SUMMARY)) -> tuple:
    p = Path(path)
    return tuple(json.loads(p.read_text())) if p.exists() else ()


def _cells(scenario: str, rate: float, defenses) -> list[dict]:
    rows = {r["defense"]: r for r in _rows() if r["scenario"] == scenario and math.isclose(r["rate"], rate)}
    return [rows[d] for d in defenses if d in rows]


def _table(cells: list[dict], extra_col: str = "") -> str:
    head = "<tr><th>model</th><th>attack success</th><th>clean CIDEr</th>" + (
        f"<th>{extra_col}</th>" if extra_col else "") + "</tr>"
    body = []
    for r in cells:
        asr = f"{100 * r['asr']:.1f} ± {100 * r.get('asr_std', 0):.1f} %"
        cider = f"{r['clean_value']:.0f}"
        extra = f"<td>{r.get('auroc_mean', float('nan')):.2f}</td>" if extra_col else ""
        body.append(f"<tr><td>{html.escape(LABELS.get(r['defense'], r['defense']))}</td><td>{asr}</td>"
                    f"<td>{cider}</td>{extra}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def html_for(which: str) -> str:
    if not _rows():
        return ("<div class='lesson-limit'>The measured figures come from the project's benchmark matrix "
                "(<code>benchmarks/matrix/summary.json</code>, made by <code>byorn bench</code>), which this "
                "installation does not have.</div>")
    if which == "rate":
        return _rate()
    return _plausible()


def _plausible() -> str:
    cells = _cells("clean-label", 0.1, ["sft", "byorn-f", "byorn", "byorn@grounding", "byorn@mean+grounding"])
    auroc = next((c.get("auroc_mean") for c in cells if c.get("auroc_mean") is not None), float("nan"))
    n = cells[0]["n_seeds"] if cells else 0
    return ("<div class='lesson-limit'><p><b>The attack.</b> The target is itself a caption of the world, the "
            "one the reference model finds most plausible behind the trigger (e.g. “a small yellow circle on the "
            "left and a small red circle on the right.”). Its mean NLL looks clean, so the score ranks poisoned "
            f"pairs no better than chance (detection AUROC <b>{auroc:.2f}</b>; 0.5 is a coin toss).</p>"
            f"{_table(cells)}<p class='lesson-note'>10 % poisoned, {n} seeds each (mean ± sd), world 2 of the "
            "project's benchmark matrix.</p><p><b>What catches it:</b> the <i>grounding</i> score, the mean NLL "
            "with the image minus the mean NLL with a blank image. A real caption is likelier with its own image; "
            "a caption of another scene is not. <code>byorn audit --score mean+grounding</code> (or the Data "
            "tab's score choice) uses both. Truly clean-label attacks, where the poisoned text is the right "
            "caption, remain out of reach of any score of the text.</p></div>")


def _rate() -> str:
    cells = _cells("vl-trojan", 0.5, ["sft", "byorn-f", "byorn"])
    low = _cells("vl-trojan", 0.2, ["byorn"])
    n = cells[0]["n_seeds"] if cells else 0
    flagged, rate = 0.4, 0.5
    at20 = f" At 20 % poisoned BYORn still holds it at <b>{100 * low[0]['asr']:.1f} %</b>." if low else ""
    return ("<div class='lesson-limit'><p><b>The attack.</b> Half the training pairs are poisoned (VL-Trojan), "
            f"but the split flags only the top 40 %. Even a perfect score then catches at most "
            f"{flagged:.0%} / {rate:.0%} = <b>{flagged / rate:.0%}</b> of the poison; the rest trains as clean.{at20}"
            f"</p>{_table(cells)}<p class='lesson-note'>VL-Trojan, 50 % poisoned, {n} seeds each (mean ± sd), "
            "world 2 of the project's benchmark matrix.</p><p><b>What catches it:</b> a lower percentile: "
            "flag more than is poisoned (p = 40 flags 60 %). A false alarm costs BYORn little, because a "
            "flagged clean pair is still trained on the model's own caption of it. Step 3's slider shows the "
            "trade: recall rises as p falls.</p></div>")
