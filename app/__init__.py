"""BYORn Studio, the Gradio front end: one module per tab, no method logic.

:func:`build_app` lays out the tabs (``build_<tab>()`` in ``app/tab_*.py``)
and wires their handlers to the shared :class:`~app.context.AppContext`;
:func:`launch` starts the server with the app's CSS, the Inspector's
keyboard shortcuts (:data:`KEYS_JS`) and optional password.

Per-session state is a :class:`~app.state.View` in ``gr.State``; handlers
that update several components return ``{component: value}``; one handler
bound to several triggers is wired once with ``gr.on``.
"""
from __future__ import annotations

import os
import secrets
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
from starlette.middleware import Middleware

from . import lesson as tab_lesson
from . import sessions
from . import (plotly_html, proposing, render, showing, tab_compare, tab_export, tab_gallery, tab_inspector,
               tab_overview, tab_start, tab_table, tab_train)
from .context import TOKEN_RE, AppContext, new_view, new_visitor_token
from .plots import color_choices
from .security import LoginLimiter, LoginRateLimit
from .state import View

CSS = """
.byorn-pixelated img { image-rendering: pixelated; image-rendering: crisp-edges; }
.byorn-tokens { font-family: ui-monospace, monospace; font-size: 1.05rem; line-height: 2;
                white-space: pre-wrap; padding: 6px 0; }
.byorn-tokens .tok { border-radius: 3px; padding: 1px 0; }
.byorn-legend { font-size: 0.8rem; opacity: 0.75; }
.byorn-offscreen { position: absolute !important; left: -10000px !important; width: 1px; height: 1px;
                   overflow: hidden; }
""" + plotly_html.CSS + render.CSS + tab_lesson.CSS

KEYS_JS = r"""
() => {
  // The Inspector's keys.  Never while a text box, select or editable element has the focus
  // (Esc leaves it), never with Ctrl / Alt / Meta, only while the Inspector tab is shown.
  const click = (sel) => { const b = document.querySelector(sel); if (b && !b.disabled) { b.click(); return true; } return false; };
  document.addEventListener('keydown', (e) => {
    const t = e.target, tag = ((t && t.tagName) || '').toLowerCase();
    const typing = tag === 'input' || tag === 'textarea' || tag === 'select' || (t && t.isContentEditable);
    if (typing) {
      if (e.key === 'Escape') t.blur();
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && t.closest && t.closest('#edit-box')) {
        e.preventDefault(); t.dispatchEvent(new Event('change', {bubbles: true}));
        setTimeout(() => click('#edit-btn'), 50);
      }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const panel = document.querySelector('#inspector-panel');
    if (!panel || panel.offsetParent === null) return;
    const k = e.key.toLowerCase();
    const act = {a: '#approve-btn', r: '#reject-btn', d: '#drop-btn', n: '#next-btn', arrowright: '#next-btn',
                 j: '#next-btn', p: '#prev-btn', arrowleft: '#prev-btn', k: '#prev-btn'}[k];
    if (act) { if (click(act)) e.preventDefault(); return; }
    if (k === 'e') { const box = document.querySelector('#edit-box textarea');
      if (box) { e.preventDefault(); box.focus(); box.select(); } return; }
    if (/^[1-9]$/.test(k)) { const opts = document.querySelectorAll('#candidates input[type=radio]');
      const o = opts[parseInt(k, 10) - 1]; if (o) { e.preventDefault(); o.click(); } }
  });
}
"""


EXPERT_LOAD_JS = """() => {
  if (window.__byornExpertLoaded) return;
  window.__byornExpertLoaded = true;
  const b = document.querySelector('#expert-load');
  if (b) b.click();
}"""


def build_app(ctx: AppContext) -> gr.Blocks:
    """The whole app over the shared context (the default workspace opens first)."""
    ui = SimpleNamespace()
    sessions.install()  # a new visitor's session builds only the block configs it uses (app/sessions.py)
    can_decide = ctx.store_problem is None
    default = ctx.workspaces.get(ctx.default_key)
    gr.set_static_paths([str(ctx.images.folder)])  # thumbnails and image files, served as they are
    with gr.Blocks(title="BYORn Studio", analytics_enabled=False) as demo:
        ui.view = gr.State(new_view(default))
        # Who this browser is, kept in its localStorage across reloads (private sessions only).
        ui.visitor = gr.BrowserState(None, storage_key="byorn-visitor", secret=_browser_secret(ctx))
        gr.Markdown("# BYORn Studio · backdoor audit for vision-language fine-tuning data")
        ui.store_banner = gr.Markdown(ctx.store_problem or "", visible=not can_decide, elem_id="store-banner")
        with gr.Tabs(selected="lesson") as ui.tabs:
            with gr.Tab("Lesson", id="lesson") as ui.tab_lesson:
                ui.lesson = tab_lesson.build_lesson()
            with gr.Tab("Data", id="data") as ui.tab_data:
                ui.start = tab_start.build_start()
            with gr.Tab("Overview", id="overview") as ui.tab_overview:
                ui.overview = tab_overview.build_overview(_colour_choices(default))
            with gr.Tab("Gallery", id="gallery") as ui.tab_gallery:
                ui.gallery = tab_gallery.build_gallery()
            with gr.Tab("Table", id="table") as ui.tab_table:
                ui.table = tab_table.build_table(can_decide)
            with gr.Tab("Inspector", id="inspector") as ui.tab_inspector:
                ui.inspector = tab_inspector.build_inspector(can_decide)
            with gr.Tab("Train", id="train") as ui.tab_train:
                ui.train = tab_train.build_train(ctx.private_sessions)
            with gr.Tab("Compare", id="compare") as ui.tab_compare:
                ui.compare = tab_compare.build_compare()
            with gr.Tab("Export", id="export") as ui.tab_export:
                ui.export = tab_export.build_export()

        tab_overview.wire_overview(ui, ctx)
        tab_gallery.wire_gallery(ui, ctx)
        tab_table.wire_table(ui, ctx)
        tab_inspector.wire_inspector(ui, ctx)
        tab_train.wire_train(ui, ctx)
        tab_compare.wire_compare(ui, ctx)
        tab_export.wire_export(ui, ctx)
        tab_lesson.wire_lesson(ui, ctx, demo)
        refreshers = _refreshers(ui, ctx)
        tab_start.wire_start(ui, ctx, refreshers)

        # The expert tabs load when the visitor first leaves the Lesson (a class walking the lesson costs the
        # server no expert work: benchmarks/APP.md): who the visitor is; then the user's data description,
        # overview, table, and any running training job.
        ui.expert_load = gr.Button("load the expert tabs", elem_id="expert-load", elem_classes=["byorn-offscreen"])
        ui.tabs.select(None, None, None, js=EXPERT_LOAD_JS)
        visitor = ui.expert_load.click(partial(attach_visitor, ctx), [ui.visitor, ui.view], [ui.visitor, ui.view],
                                       api_visibility="private")
        load = visitor.then(partial(tab_start.describe_view, ctx), [ui.view], [ui.view, ui.start.current],
                            api_name="page_load")
        # Then the table and the inspector (the table sets the order the inspector walks), and the overview's
        # map last: every step before it writes this visitor's view, so a selection drawn on the map can no
        # longer be overwritten by a step that started before it (the map used to load in parallel, on page
        # load, long before anyone could draw on it).
        (overview_fn, overview_in, overview_out), *rest = refreshers
        for fn, inputs, outputs in rest:
            load = load.then(fn, inputs, outputs, api_visibility="private")
        load = load.then(**showing.extras_event(ui, ctx))
        load.then(partial(_without_view, overview_fn), overview_in, overview_out[1:], api_visibility="private")
        visitor.then(partial(tab_train.poll, ctx), [ui.view],
                     [ui.train.status, ui.train.curve, ui.train.evals, ui.train.timer],
                     api_visibility="private")
        p = ui.inspector.prop  # a running proposal job: re-attach its progress
        visitor.then(partial(proposing.poll, ctx, ui), [ui.view],
                     [p.status, p.timer, ui.inspector.cands, ui.inspector.cand_note], api_visibility="private")
    demo.ui = ui  # for tests and scripts
    return demo


def _refreshers(ui, ctx: AppContext) -> list:
    """(fn, inputs, outputs) that redraw the views after the data or threshold changed."""
    o = ui.overview
    return [
        (partial(tab_overview.refresh_overview, ctx), [ui.view, o.embedding, o.color_by],
         tab_overview.overview_outputs(ui)),
        (partial(tab_table.refresh_table, ctx), [ui.view, *tab_table.filter_inputs(ui)],
         [ui.view, ui.table.table, ui.table.counts]),
        (partial(_show_first, ctx, ui), [ui.view], showing.outputs(ui)),
    ]


def _without_view(fn, *args):
    """``fn``'s outputs after the view (a handler that leaves the view as it is)."""
    return fn(*args)[1:]


def _show_first(ctx: AppContext, ui, view: View) -> dict:
    return showing.to_outputs(ui, showing.show_first(ctx, view))


def _colour_choices(ws) -> list[str]:
    """"colour by": the default workspace's columns, and the audit table's standard ones."""
    choices = color_choices(ws.index) if ws is not None else []
    for c in ("score", "flag", "decision", "ground truth", "score_max", "sample_score", "n_tokens", "turn"):
        if c not in choices:
            choices.append(c)
    return choices


def attach_visitor(ctx: AppContext, token, view: View):
    """On page load: this browser's visitor token (made on the first visit), kept in the view."""
    view = View.coerce(view)
    if not ctx.private_sessions:
        return token, view
    token = token if isinstance(token, str) and TOKEN_RE.match(token) else new_visitor_token()
    view.owner = token
    return token, view


def _browser_secret(ctx: AppContext) -> str:
    """The key BrowserState encrypts with, kept in the data dir so tokens survive a restart."""
    path = Path(ctx.data_dir) / ".browser_state_key"
    try:
        if path.is_file():
            return path.read_text().strip()
        key = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        return key
    except OSError:  # read-only data dir (or a race): a key for this run only
        return path.read_text().strip() if path.is_file() else secrets.token_urlsafe(24)


def launch(demo: gr.Blocks, ctx: AppContext, login_limiter: LoginLimiter | None = None, **kwargs):
    """Start the server with the app's CSS and the password from ``BYORN_PASSWORD``.

    Server name and port come from ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``
    (Gradio reads them itself when they are not passed here).  With a
    password, failed logins are limited per client (``login_limiter``,
    default from the environment: ``app/security.py``).
    """
    password = os.environ.get("BYORN_PASSWORD")
    if password and "auth" not in kwargs:
        kwargs["auth"] = (os.environ.get("BYORN_USER", "byorn"), password)
        kwargs.setdefault("auth_message", "BYORn Studio: enter the password set in BYORN_PASSWORD.")
    app_kwargs = dict(kwargs.get("app_kwargs") or {})
    if kwargs.get("auth") is not None:
        limiter = login_limiter or LoginLimiter.from_env()
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(LoginRateLimit, limiter=limiter)]
    else:  # the page is the same for every visitor: rendered once per address (app/sessions.py)
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(sessions.PageCache)]
    kwargs["app_kwargs"] = app_kwargs
    kwargs.setdefault("css", CSS)
    kwargs.setdefault("js", KEYS_JS)
    kwargs.setdefault("footer_links", ["api", "gradio"])
    # Uploads above this are refused by the server with a message (zip contents are
    # checked again, uncompressed, by byorn.data.io.extract_upload).
    kwargs.setdefault("max_file_size", os.environ.get("BYORN_MAX_UPLOAD", "500mb"))
    return demo.queue(default_concurrency_limit=4).launch(**kwargs)
