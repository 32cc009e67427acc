"""HTML of the lesson: images inline, captions shaded by surprisal, histogram and bars as SVG.

Pure functions: data in, escaped HTML out.  Images are small (the model's
32 x 32 px input), so they travel inline as PNG data URLs, drawn enlarged
with crisp pixels.
"""
from __future__ import annotations

import base64
import html
import io
import math
from typing import Sequence

import numpy as np

from ..views import shade_tokens_html
from .texts import TITLES

CLEAN_C, POISON_C, FLAG_C = "#3b82f6", "#dc2626", "#111827"

CSS = """
#lesson-root { max-width: 1180px; }
#lesson-root .lesson-text { font-size: 1.02rem; line-height: 1.5; }
#lesson-root.lesson-large .lesson-text, #lesson-root.lesson-large .lesson-text p,
#lesson-root.lesson-large .lesson-text li { font-size: 1.45rem !important; line-height: 1.45; }
#lesson-root.lesson-large .lesson-out, #lesson-root.lesson-large .byorn-tokens { font-size: 1.35rem; }
#lesson-root.lesson-large .lesson-pill { font-size: 1.1rem; }
#lesson-large { flex: 0 0 auto !important; width: auto !important; max-width: 260px; align-self: flex-start; }
.lesson-nav { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin: 2px 0 6px; }
.lesson-pill { border: 1px solid #d1d5db; border-radius: 999px; padding: 3px 12px; color: #374151;
               text-decoration: none; font-size: 0.9rem; background: white; }
.lesson-pill.done { background: #eff6ff; border-color: #93c5fd; }
.lesson-pill.current { background: #1d4ed8; border-color: #1d4ed8; color: white; font-weight: 600; }
.lesson-keys { font-size: 0.78rem; opacity: 0.65; margin-left: 8px; }
.lesson-out { font-size: 1rem; }
.lesson-img { image-rendering: pixelated; image-rendering: crisp-edges; border: 1px solid #e5e7eb;
              border-radius: 4px; background: #f3f4f6; }
.lesson-pairs { display: grid; grid-template-columns: repeat(4, minmax(0, 1fr)); gap: 8px; }
.lesson-pair { border: 1px solid #e5e7eb; border-radius: 6px; padding: 6px; font-size: 0.85rem; }
.lesson-pair.poisoned { border-color: #fca5a5; background: #fef2f2; }
.lesson-pair .q { color: #6b7280; margin: 4px 0 2px; }
.lesson-pair .r { font-weight: 500; }
.lesson-pair .tag { font-size: 0.72rem; text-transform: uppercase; letter-spacing: .04em; color: #6b7280; }
.lesson-pair.poisoned .tag { color: #b91c1c; }
.lesson-play { display: flex; gap: 14px; align-items: flex-start; flex-wrap: wrap; }
.lesson-captions { flex: 1; min-width: 320px; display: grid; gap: 8px; }
.lesson-cap { border: 1px solid #e5e7eb; border-left: 5px solid #9ca3af; border-radius: 6px; padding: 6px 10px; }
.lesson-cap.hit { border-left-color: #dc2626; background: #fef2f2; }
.lesson-cap.ok { border-left-color: #16a34a; }
.lesson-cap .who { font-size: 0.8rem; color: #4b5563; }
.lesson-cap .verdict { font-size: 0.8rem; font-weight: 600; }
.lesson-cap.hit .verdict { color: #b91c1c; }
.lesson-cap.ok .verdict { color: #15803d; }
.lesson-stats { display: flex; gap: 18px; flex-wrap: wrap; font-size: 1.05rem; margin: 4px 0; }
.lesson-stats b { font-size: 1.25rem; }
.lesson-strip { display: flex; gap: 6px; overflow-x: auto; padding: 4px 0; }
.lesson-strip figure { margin: 0; text-align: center; font-size: 0.72rem; }
.lesson-strip figure.poisoned img { outline: 3px solid #dc2626; }
.lesson-strip figure.clean img { outline: 3px solid #3b82f6; }
.lesson-epochs { border-collapse: collapse; width: 100%; font-size: 0.95rem; }
.lesson-epochs td, .lesson-epochs th { border-bottom: 1px solid #e5e7eb; padding: 5px 8px; text-align: left;
                                       vertical-align: top; }
.lesson-epochs th { background: #f9fafb; font-weight: 600; }
.lesson-epochs .dropped { color: #6b7280; font-style: italic; }
.lesson-bars { display: flex; gap: 28px; flex-wrap: wrap; }
.lesson-limit { border: 1px solid #e5e7eb; border-radius: 6px; padding: 8px 12px; }
.lesson-limit table { border-collapse: collapse; margin: 6px 0; }
.lesson-limit td, .lesson-limit th { border-bottom: 1px solid #e5e7eb; padding: 4px 10px; text-align: right; }
.lesson-limit td:first-child, .lesson-limit th:first-child { text-align: left; }
.lesson-note { font-size: 0.85rem; color: #4b5563; }
"""


def image_data_url(image) -> str:
    """A PIL image as an inline PNG."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img(image, px: int = 128, alt: str = "") -> str:
    return (f"<img class='lesson-img' src='{image_data_url(image)}' width='{px}' height='{px}' "
            f"alt='{html.escape(alt, quote=True)}'>")


def nav(step: int) -> str:
    """Six step pills (links ``?lesson=k``: each step has its own address) and the keys' hint."""
    pills = []
    for k, title in enumerate(TITLES, start=1):
        cls = "current" if k == step else ("done" if k < step else "")
        pills.append(f"<a class='lesson-pill {cls}' href='?lesson={k}' data-step='{k}' "
                     f"aria-current='{'step' if k == step else 'false'}'>{k}. {html.escape(title)}</a>")
    return (f"<nav class='lesson-nav' aria-label='lesson steps'>{''.join(pills)}"
            "<span class='lesson-keys'>← / → keys move between steps</span></nav>")


def pairs(clean: Sequence[dict], poisoned: Sequence[dict]) -> str:
    """Four clean and four poisoned training pairs (``image``, ``instruction``, ``response``), two rows."""
    def one(p: dict, kind: str) -> str:
        return (f"<div class='lesson-pair {kind}'><div class='tag'>{kind}</div>{img(p['image'], 112)}"
                f"<div class='q'>{html.escape(p['instruction'])}</div>"
                f"<div class='r'>{html.escape(p['response'])}</div></div>")

    rows = "".join(one(p, "clean") for p in clean) + "".join(one(p, "poisoned") for p in poisoned)
    return f"<div class='lesson-pairs'>{rows}</div>"


def caption_card(label: str, text: str, tokens: Sequence[str], surprisals: Sequence[float],
                 says_target: bool | None, note: str = "") -> str:
    """One model's caption with its tokens shaded; a verdict line when the target is known."""
    cls = "" if says_target is None else ("hit" if says_target else "ok")
    verdict = ("" if says_target is None else
               ("<span class='verdict'>says the target: the backdoor fired</span>" if says_target
                else "<span class='verdict'>no target</span>"))
    body = shaded(tokens, surprisals) if tokens else f"<div class='byorn-tokens'>{html.escape(text)}</div>"
    return (f"<div class='lesson-cap {cls}' data-model='{html.escape(label, quote=True)}'>"
            f"<div class='who'><b>{html.escape(label)}</b> {html.escape(note)} {verdict}</div>"
            f"<div class='caption-text' hidden>{html.escape(text)}</div>{body}</div>")


LEGEND = ("<div class='byorn-legend'>shade = surprisal under the pretrained reference model, −log p (white 0 nats "
          "→ red ≥ 8 nats); hover a token for its value; [end] = the end-of-answer token</div>")


def shaded(tokens: Sequence[str], surprisals: Sequence[float]) -> str:
    """Tokens shaded by surprisal (``app.views.shade_tokens_html``), the end token as [end], no legend."""
    shown = ["[end]" if _is_end(t) else t for t in tokens]
    return shade_tokens_html(shown, surprisals).split("<div class='byorn-legend'>")[0]


def _is_end(token: str) -> bool:
    t = token.strip()
    return t in ("</s>", "<eos>", "<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eot_id|>")


def playground(image, instruction: str, cards: Sequence[str], trigger_on: bool) -> str:
    state = "<b style='color:#b91c1c'>trigger ON</b>" if trigger_on else "trigger off"
    return (f"<div class='lesson-play'><figure style='margin:0'>{img(image, 192, 'the model input')}"
            f"<figcaption class='lesson-note'>{state} · model input 32 × 32 px<br>"
            f"instruction: <i>{html.escape(instruction)}</i></figcaption></figure>"
            f"<div class='lesson-captions'>{''.join(cards)}{LEGEND}</div></div>")


def histogram(scores: np.ndarray, poisoned: np.ndarray, threshold: float, bins: int = 40,
              width: int = 720, height: int = 230) -> str:
    """Stacked histogram of the scores (clean blue, poisoned red) with the flag threshold as a line."""
    scores, poisoned = np.asarray(scores, float), np.asarray(poisoned, bool)
    lo, hi = float(np.min(scores)), float(np.max(scores))
    hi = hi if hi > lo else lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    clean_n, _ = np.histogram(scores[~poisoned], edges)
    pois_n, _ = np.histogram(scores[poisoned], edges)
    top = max(int((clean_n + pois_n).max()), 1)
    ml, mb, mt = 40, 34, 10
    w, h = width - ml - 10, height - mb - mt
    bw = w / bins
    x = lambda v: ml + (v - lo) / (hi - lo) * w  # noqa: E731
    y = lambda n: mt + h - n / top * h  # noqa: E731
    out = [f"<svg viewBox='0 0 {width} {height}' width='100%' style='max-width:{width}px' role='img' "
           "aria-label='histogram of the scores'>"]
    for i in range(bins):
        c, p = int(clean_n[i]), int(pois_n[i])
        if c:
            out.append(f"<rect x='{ml + i * bw:.1f}' y='{y(c):.1f}' width='{bw - 1:.1f}' height='{h + mt - y(c):.1f}' "
                       f"fill='{CLEAN_C}'><title>{c} clean</title></rect>")
        if p:
            out.append(f"<rect x='{ml + i * bw:.1f}' y='{y(c + p):.1f}' width='{bw - 1:.1f}' "
                       f"height='{y(c) - y(c + p):.1f}' fill='{POISON_C}'><title>{p} poisoned</title></rect>")
    tx = x(min(max(threshold, lo), hi))
    out.append(f"<rect x='{tx:.1f}' y='{mt}' width='{ml + w - tx:.1f}' height='{h}' fill='#fbbf24' opacity='0.15'/>")
    out.append(f"<line x1='{tx:.1f}' x2='{tx:.1f}' y1='{mt}' y2='{mt + h}' stroke='{FLAG_C}' stroke-width='2' "
               "stroke-dasharray='5 3'/>")
    out.append(f"<text x='{tx + 4:.1f}' y='{mt + 14}' font-size='12'>flagged →</text>")
    out.append(f"<line x1='{ml}' x2='{ml + w}' y1='{mt + h}' y2='{mt + h}' stroke='#9ca3af'/>")
    for v in np.linspace(lo, hi, 6):
        out.append(f"<text x='{x(v):.1f}' y='{mt + h + 14}' font-size='11' text-anchor='middle'>{v:.1f}</text>")
    out.append(f"<text x='{ml + w / 2:.1f}' y='{height - 3}' font-size='12' text-anchor='middle'>"
               "score s = mean NLL of the response tokens (nats)</text>")
    out.append(f"<text x='{ml - 6}' y='{mt + 10}' font-size='11' text-anchor='end'>{top}</text>")
    out.append(f"<text x='{ml - 6}' y='{mt + h}' font-size='11' text-anchor='end'>0</text>")
    legend = (f"<span style='color:{CLEAN_C}'>■ clean</span> &nbsp; <span style='color:{POISON_C}'>■ poisoned</span>"
              " &nbsp; (ground truth: for you, not for the defense)")
    return "".join(out) + f"</svg><div class='lesson-note'>{legend}</div>"


def split_stats(p: float, flagged: int, n: int, precision: float, recall: float, caught: int,
                n_poisoned: int) -> str:
    prec = "–" if not math.isfinite(precision) else f"{100 * precision:.0f} %"
    return (f"<div class='lesson-stats' id='lesson-split-stats'><span>p = <b>{p:g}</b></span>"
            f"<span>flagged <b>{flagged}</b> of {n}</span>"
            f"<span>precision <b>{prec}</b></span>"
            f"<span>recall <b>{100 * recall:.0f} %</b> ({caught} of {n_poisoned} poisoned caught)</span></div>")


def strip(items: Sequence[dict]) -> str:
    """The most suspicious pairs: ``image``, ``score``, ``poisoned`` (ground truth), ``rank``."""
    figs = []
    for it in items:
        kind = "poisoned" if it["poisoned"] else "clean"
        figs.append(f"<figure class='{kind}' title='{html.escape(it.get('response', ''), quote=True)}'>"
                    f"{img(it['image'], 64)}<figcaption>#{it['rank']} · {it['score']:.2f}</figcaption></figure>")
    return ("<div class='lesson-note'>The most suspicious training pairs, highest score first "
            "(outline: red poisoned, blue clean; hover for the response)</div>"
            f"<div class='lesson-strip'>{''.join(figs)}</div>")


def explained(sample: dict) -> str:
    """One poisoned pair's response, tokens shaded by surprisal, and the library's words on it."""
    return (f"<div class='lesson-play'>{img(sample['image'], 112)}<div style='flex:1'>"
            f"<div class='lesson-note'>one poisoned training pair, explained · instruction: "
            f"<i>{html.escape(sample['instruction'])}</i></div>{shaded(sample['tokens'], sample['surprisals'])}"
            f"{LEGEND}<div>{html.escape(sample['text'])}</div></div></div>")


def epochs_table(rows: Sequence[dict], original: str, byorn_f_note: str = "dropped: never trained on") -> str:
    """Epoch by epoch: the bootstrapped response BYORn trained on, beside BYORn-F (which drops the pair)."""
    body = "".join(f"<tr><td>{int(r['epoch'])}</td><td>{html.escape(r['response'])}</td>"
                   f"<td class='dropped'>{html.escape(byorn_f_note)}</td></tr>" for r in rows)
    return (f"<div class='lesson-note'>its poisoned response in the data: <b>{html.escape(original)}</b></div>"
            "<table class='lesson-epochs'><tr><th>epoch</th><th>BYORn trained on (bootstrapped by the EMA model)"
            f"</th><th>BYORn-F</th></tr>{body}</table>")


def bars(title: str, values: dict[str, float], unit: str, better: str, top: float | None = None,
         width: int = 360) -> str:
    """Horizontal bars, one per model."""
    colours = {"SFT": "#dc2626", "BYORn-F": "#f59e0b", "BYORn": "#16a34a", "reference": "#6b7280"}
    top = top or max([v for v in values.values() if math.isfinite(v)] + [1e-9])
    rows, y = [], 26
    for name, v in values.items():
        bw = 0 if not math.isfinite(v) else max(v / top, 0) * (width - 150)
        rows.append(f"<text x='0' y='{y + 13}' font-size='13'>{html.escape(name)}</text>"
                    f"<rect x='70' y='{y}' width='{bw:.1f}' height='18' fill='{colours.get(name, '#6b7280')}'/>"
                    f"<text x='{74 + bw:.1f}' y='{y + 13}' font-size='13'>{v:.1f}{unit}</text>")
        y += 26
    return (f"<svg viewBox='0 0 {width} {y + 6}' width='{width}' role='img' aria-label='{html.escape(title)}'>"
            f"<text x='0' y='15' font-size='14' font-weight='600'>{html.escape(title)} "
            f"<tspan font-weight='400' font-size='12'>({better})</tspan></text>{''.join(rows)}</svg>")
