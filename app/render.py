"""HTML the tabs show: gallery cards, the Inspector's conversation, similar samples, word importances.

Pure functions (data in, escaped HTML out).  Images are referenced by URL
(``gradio_api/file=<path>`` of a finished file in the app's image folder,
which the app serves as a static path), never inlined.
"""
from __future__ import annotations

import html
import math
from typing import Sequence

from .views import SNIPPET, shade_tokens_html

DECISION_BADGE = {"pending": "#9ca3af", "approved": "#16a34a", "rejected": "#2563eb", "edited": "#9333ea",
                  "dropped": "#111827"}

CSS = """
.byorn-gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(132px, 1fr)); gap: 8px; }
.byorn-card { border: 1px solid #e5e7eb; border-radius: 6px; padding: 4px; cursor: pointer; background: white;
              font-size: 0.75rem; line-height: 1.25; }
.byorn-card:hover, .byorn-card:focus { border-color: #2563eb; outline: none; box-shadow: 0 0 0 2px #bfdbfe; }
.byorn-card img { width: 100%; aspect-ratio: 1; object-fit: contain; image-rendering: pixelated; background: #f3f4f6; }
.byorn-card .txt { height: 96px; overflow: hidden; color: #374151; background: #f9fafb; padding: 4px; }
.byorn-card .meta { display: flex; flex-wrap: wrap; justify-content: space-between; gap: 2px 4px; margin-top: 2px; }
.byorn-card .key { font-family: ui-monospace, monospace; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.byorn-badge { border-radius: 3px; padding: 0 4px; color: white; font-size: 0.7rem; white-space: nowrap; }
.byorn-flag { background: #dc2626; }
.byorn-conv .turn { border-left: 3px solid #e5e7eb; padding: 4px 8px; margin: 4px 0; }
.byorn-conv .turn.user { color: #374151; }
.byorn-conv .turn.assistant { border-left-color: #93c5fd; cursor: pointer; }
.byorn-conv .turn.current { border-left-color: #dc2626; background: #fef2f2; cursor: default; }
.byorn-conv .who { font-size: 0.75rem; opacity: 0.7; }
.byorn-conv img { height: 64px; image-rendering: pixelated; vertical-align: middle; margin-right: 6px; }
.byorn-similar { display: flex; flex-wrap: wrap; gap: 6px; }
.byorn-similar .byorn-card { width: 120px; }
.byorn-words span { border-radius: 3px; padding: 1px 2px; }
"""


def file_url(path: str | None) -> str | None:
    return None if path is None else "gradio_api/file=" + html.escape(str(path), quote=True)


def card(key: str, score: float, flagged: bool, decision: str, image_url: str | None, text: str,
         extra: str = "") -> str:
    """One thumbnail: image (or text for a text-only sample), key, score, flag and decision badges."""
    body = (f"<img src='{image_url}' loading='lazy' alt=''>" if image_url
            else f"<div class='txt'>{html.escape(_snip(text, 140))}</div>")
    flag = "<span class='byorn-badge byorn-flag'>flagged</span>" if flagged else ""
    colour = DECISION_BADGE.get(decision, "#9ca3af")
    k = html.escape(key, quote=True)
    return (f"<div class='byorn-card' tabindex='0' data-key='{k}' title='{k}: {html.escape(_snip(text, 200), quote=True)}'>"
            f"{body}<div class='meta'><span class='key'>{html.escape(key)}</span><b>{score:.2f}</b></div>"
            f"<div class='meta'>{flag}<span class='byorn-badge' style='background:{colour}'>{decision}</span>"
            f"{extra}</div></div>")


def gallery(cards: Sequence[str]) -> str:
    if not cards:
        return "<div class='byorn-gallery-empty'><em>Nothing to show: the list is empty.</em></div>"
    return "<div class='byorn-gallery'>" + "".join(cards) + "</div>"


def conversation(turns: Sequence[tuple[str, str]], current: int, rows: dict[int, dict], tokens: Sequence[str],
                 surprisals: Sequence[float], image_urls: Sequence[str | None]) -> str:
    """Every turn of a conversation; assistant turn ``current`` shaded by surprisal, the others clickable.

    ``turns``: (role, text) in order (``<image>`` placeholders replaced by
    the images at ``image_urls`` in order); ``rows``: per assistant turn,
    ``{"key", "score", "flagged", "decision"}``.
    """
    out, k, img = ["<div class='byorn-conv'>"], 0, 0
    for role, text in turns:
        if role == "assistant":
            r = rows.get(k, {})
            badge = (f"turn {k + 1} · score {r.get('score', float('nan')):.2f}"
                     + (" · <b>flagged</b>" if r.get("flagged") else "") + f" · {r.get('decision', 'pending')}")
            if k == current:
                out.append(f"<div class='turn assistant current'><div class='who'>assistant · {badge}</div>"
                           f"{shade_tokens_html(tokens, surprisals)}</div>")
            else:
                key = html.escape(str(r.get("key", "")), quote=True)
                out.append(f"<div class='turn assistant' data-key='{key}' title='open this turn'>"
                           f"<div class='who'>assistant · {badge}</div>{html.escape(text)}</div>")
            k += 1
            continue
        parts = text.split("<image>")
        body = [html.escape(parts[0])]
        for rest in parts[1:]:
            url = image_urls[img] if img < len(image_urls) else None
            img += 1
            body.append(f"<img src='{url}' alt='image {img}'>" if url else "[image]")
            body.append(html.escape(rest))
        out.append(f"<div class='turn {html.escape(role)}'><div class='who'>{html.escape(role)}</div>{''.join(body)}</div>")
    return "".join(out) + "</div>"


def word_importances(words: Sequence[tuple[str, float]], mode: str) -> str:
    """Instruction words shaded by how much leaving each out moves the response's NLL (positive part)."""
    if not words:
        return "<em>no instruction words</em>"
    top = max((v for _, v in words if math.isfinite(v)), default=0.0)
    spans = []
    for w, v in words:
        a = 0.0 if top <= 0 or not math.isfinite(v) else max(0.0, v) / top
        spans.append(f"<span style='background: rgba(234, 88, 12, {a:.2f})' title='{v:+.3f} nats/token'>"
                     f"{html.escape(w)}</span>")
    what = ("rise of the response's NLL when the word is left out (a backdoored model: the trigger lights up)"
            if mode == "rise" else "fall of the response's NLL when the word is left out (reference model)")
    return (f"<div class='byorn-words byorn-tokens'>{' '.join(spans)}</div>"
            f"<div class='byorn-legend'>shade = {what}; hover a word for its value</div>")


def _snip(text, n: int = SNIPPET) -> str:
    text = "" if text is None else str(text).replace("\n", " ")
    return text if len(text) <= n else text[: n - 1] + "…"
