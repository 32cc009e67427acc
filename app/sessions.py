"""New Gradio sessions cost what they use, not what the page holds (issue 18: a class opens the Space at once).

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

import logging
import os
from copy import copy

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
