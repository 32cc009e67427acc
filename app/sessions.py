"""A class opens the Space at once (issue 18): new sessions and the page cost what they must, not more.

Gradio 6.31 builds, for every new session, the config of *every* block of the
page (``SessionState.config_values``: props, API info and JSON schemas, for
restoring a page from a deep link).  This app holds ~280 blocks, so each new
visitor cost the server ~0.1 s of CPU before their first event ran; fifty
visitors opening the Space in the same second queued ~5 s behind one another
(benchmarks/APP.md).  :func:`install` makes that per-session table lazy: a
block's config is built the first time the session reads it (an event that
updates the block) and all of them only when a deep link is saved.  What is
stored and when is unchanged; only the eager build is gone.

It replaces ``gradio.state_holder.SessionState`` with a subclass, so it is
installed only on the Gradio version it was written against
(:data:`GRADIO_VERSION`, the one requirements.txt pins) and with the
attributes it relies on; elsewhere it logs and leaves Gradio as it is.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from copy import copy
from typing import Any
from urllib.parse import parse_qs

import gradio as gr
from gradio import state_holder

logger = logging.getLogger(__name__)

GRADIO_VERSION = "6.31.0"


class LazyConfigs(dict):
    """``{block id: config}`` built per block on first read (``blocks_config.config_for_block``)."""

    def __init__(self, blocks_config, ids) -> None:
        super().__init__()
        self._blocks_config = blocks_config
        self._pending = set(ids)

    def _build(self, key) -> None:
        self._pending.discard(key)
        super().__setitem__(key, self._blocks_config.config_for_block(key, [], self._blocks_config.blocks[key]))

    def __missing__(self, key):
        if key not in self._pending:
            raise KeyError(key)
        self._build(key)
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:
        return super().__contains__(key) or key in self._pending

    def __setitem__(self, key, value) -> None:
        self._pending.discard(key)
        super().__setitem__(key, value)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def _all(self) -> None:
        for key in sorted(self._pending):
            self._build(key)

    def items(self):
        self._all()
        return super().items()

    def values(self):
        self._all()
        return super().values()

    def keys(self):
        self._all()
        return super().keys()

    def __iter__(self):
        self._all()
        return super().__iter__()

    def __len__(self) -> int:
        return super().__len__() + len(self._pending)


class LazySessionState(state_holder.SessionState):
    """Gradio's session state with :class:`LazyConfigs` (the rest of its ``__init__`` as Gradio's)."""

    def __init__(self, blocks) -> None:  # noqa: D107 (Gradio 6.31's __init__, config_values made lazy)
        self.blocks_config = copy(blocks.default_config)
        self.config_values = LazyConfigs(self.blocks_config,
                                         [k for k in self.blocks_config.blocks if k in blocks.blocks])
        self.state_data = {}
        self._state_ttl = {}
        self.is_closed = False
        self.STATE_TTL_WHEN_CLOSED = 1 if os.getenv("GRADIO_IS_E2E_TEST", None) else 3600


def install() -> bool:
    """Make new sessions' block configs lazy (module docstring); True when installed."""
    if state_holder.SessionState is LazySessionState:
        return True
    base = state_holder.SessionState
    if gr.__version__ != GRADIO_VERSION or not all(hasattr(base, a) for a in
                                                   ("_update_config", "_update_value_in_config", "components")):
        logger.info("gradio %s: new sessions build every block's config (lazy configs are for gradio %s)",
                    gr.__version__, GRADIO_VERSION)
        return False
    state_holder.SessionState = LazySessionState
    return True


class PageCache:
    """ASGI middleware: the app's page (``GET /``), rendered once and served again to every visitor.

    Gradio renders the page per request (a deep copy of the app's config, its API description with code
    snippets, 490 KB of HTML: ~50 ms of CPU), so fifty visitors opening the Space in the same second waited
    ~5 s for it.  The page depends on no visitor here (no login: :func:`app.launch` installs this only
    without a password; ``?lesson=k`` is read by the page's own script), only on the address it is served
    under, so it is cached per address (host, forwarded host / protocol / prefix, root path) for
    ``ttl_s``; the first request for an address renders it while the others wait for that one.  A request
    with any other query (a Gradio page or deep link), a login cookie or an authorization header, and any
    answer that is not a plain 200 without cookies, pass through untouched.
    """

    ADDRESS_HEADERS = (b"host", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-prefix",
                       b"x-forwarded-port", b"accept-encoding")

    def __init__(self, app, ttl_s: float = 600.0, max_entries: int = 16) -> None:
        self.app, self.ttl_s, self.max_entries = app, ttl_s, max_entries
        self._pages: dict[tuple, tuple[float, dict, bytes]] = {}
        self._locks: dict[tuple, Any] = {}

    def _key(self, scope) -> tuple | None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != "/":
            return None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        headers = dict(scope.get("headers") or [])
        if set(query) - {"lesson"} or b"access-token" in headers.get(b"cookie", b"") or b"authorization" in headers:
            return None
        return (scope.get("scheme"), scope.get("root_path", ""),
                *(headers.get(h, b"") for h in self.ADDRESS_HEADERS))

    async def __call__(self, scope, receive, send) -> None:
        key = self._key(scope)
        if key is None:
            return await self.app(scope, receive, send)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._pages.get(key)
            if hit is None or time.monotonic() - hit[0] > self.ttl_s:
                hit = await self._render(scope, receive, key)
        if hit is None:  # not cacheable: render it for this request as Gradio would
            return await self.app(scope, receive, send)
        _, start, body = hit
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _render(self, scope, receive, key):
        start: dict = {}
        chunks: list[bytes] = []

        async def capture(message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        if start.get("status") != 200 or any(k.lower() == b"set-cookie" for k, _ in headers):
            self._pages.pop(key, None)
            return None
        body = b"".join(chunks)
        entry = (time.monotonic(), {**start, "headers": headers + [(b"content-length", str(len(body)).encode())]},
                 body)
        if len(self._pages) >= self.max_entries:
            self._pages.pop(next(iter(self._pages)))
        self._pages[key] = entry
        return entry
