"""BYORn Studio: `python app.py` serves the app on the embedded demo.

Environment:
  GRADIO_SERVER_NAME / GRADIO_SERVER_PORT  where to listen (Gradio's own variables;
                                           default 127.0.0.1:7860, 0.0.0.0 on a Space)
  BYORN_DATA_DIR      decisions database, uploads, audits and runs (default ./byorn_data)
  BYORN_PASSWORD      optional: ask for this password (user name BYORN_USER, default "byorn");
                      failed logins are limited per client: BYORN_LOGIN_MAX_FAILURES (5) within
                      15 min lock that client out for BYORN_LOGIN_LOCKOUT_S (300 s);
                      BYORN_TRUSTED_PROXIES: proxies adding X-Forwarded-For (1 on a Space, else 0)
  BYORN_ALLOW_SERVER_PATHS=0/1  "open a path on the server" (default: on, off on a Space)
  BYORN_DATA_ROOTS    folders server paths may point into, os.pathsep-separated (default: the data dir)
  BYORN_PRIVATE_SESSIONS=0/1  each browser sees only its own (and shared) training runs
                      (default: on on a Space, off elsewhere)
A Hugging Face Space is recognised by SPACE_ID.  A read-only or damaged decisions
database does not stop the app: it says so on the page (read-only mode, or what to do).
"""
from __future__ import annotations

import logging
import os
import threading

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from app import build_app, launch  # noqa: E402
from app.context import AppContext, make_context  # noqa: E402
from app.loading import demo_workspace  # noqa: E402


def create(data_dir=None) -> tuple:
    """The app on the embedded demo, and its shared context."""
    ctx: AppContext = make_context(demo_workspace(), data_dir=data_dir)
    demo = build_app(ctx)
    # Load the reference model off the request path, so the first "regenerate" is quick.
    ws = ctx.workspaces.get(ctx.default_key)
    threading.Thread(target=ws.vlm, name="byorn-warmup", daemon=True).start()
    threading.Thread(target=_warm_up_umap, name="byorn-umap-warmup", daemon=True).start()
    return demo, ctx


def _warm_up_umap(delay_s: float = 20.0) -> None:
    """Compile UMAP (numba, 20-60 s the first time in a process) after the first page is served,
    so that auditing the user's own data later does not pay for it on the request path."""
    import time

    time.sleep(delay_s)
    try:
        import numpy as np

        from byorn.audit import compute_maps

        rng = np.random.default_rng(0)
        compute_maps({"response": rng.normal(size=(64, 8)), "image": rng.normal(size=(64, 8))})
    except Exception:  # only a warm-up: the audit reports real failures itself
        logging.getLogger(__name__).exception("UMAP warm-up failed")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    demo, ctx = create()
    if os.environ.get("SPACE_ID"):  # on a Hugging Face Space, listen on every interface
        os.environ.setdefault("GRADIO_SERVER_NAME", "0.0.0.0")
    launch(demo, ctx)
