"""Login rate limiting for the password set in ``BYORN_PASSWORD``.

Gradio's ``auth=`` takes a ``(user, password)`` pair or a callable
``auth(username, password) -> bool``; neither sees who is asking, so a limit
per client cannot live there.  It lives in front of Gradio's ``POST /login``
instead, as an ASGI middleware (:class:`LoginRateLimit`, given to FastAPI via
``launch(app_kwargs={"middleware": ...})``): after ``max_failures`` failed
logins from one client within ``window_s`` seconds, that client's logins are
refused with HTTP 429 for ``lockout_s`` seconds, even with the right password.

Settings (environment): ``BYORN_LOGIN_MAX_FAILURES`` (default 5),
``BYORN_LOGIN_LOCKOUT_S`` (default 300), ``BYORN_TRUSTED_PROXIES``: how many
reverse proxies in front of the app append to ``X-Forwarded-For`` (default 1
on a Hugging Face Space, whose proxy does, else 0: the socket's address).
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
from typing import Callable


class LoginLimiter:
    """Failed-login counts per client, and lockouts (thread-safe; time from ``clock``)."""

    def __init__(self, max_failures: int = 5, window_s: float = 900.0, lockout_s: float = 300.0,
                 trusted_proxies: int = 0, clock: Callable[[], float] = time.monotonic):
        if max_failures < 1 or window_s <= 0 or lockout_s <= 0 or trusted_proxies < 0:
            raise ValueError("max_failures >= 1, window_s > 0, lockout_s > 0 and trusted_proxies >= 0 are needed")
        self.max_failures, self.window_s, self.lockout_s = int(max_failures), float(window_s), float(lockout_s)
        self.trusted_proxies, self.clock = int(trusted_proxies), clock
        self._failures: dict[str, list[float]] = {}
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> "LoginLimiter":
        on_space = bool(os.environ.get("SPACE_ID"))
        return cls(max_failures=int(os.environ.get("BYORN_LOGIN_MAX_FAILURES", "5")),
                   lockout_s=float(os.environ.get("BYORN_LOGIN_LOCKOUT_S", "300")),
                   trusted_proxies=int(os.environ.get("BYORN_TRUSTED_PROXIES", "1" if on_space else "0")))

    def client_of(self, scope: dict) -> str:
        """The client's address: the socket peer, or the entry our trusted proxies added."""
        peer = (scope.get("client") or ("unknown", 0))[0]
        if not self.trusted_proxies:
            return peer
        forwarded = [v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-forwarded-for"]
        hops = [h.strip() for h in ",".join(forwarded).split(",") if h.strip()]
        # Each trusted proxy appends the address it saw; entries further left are the client's word.
        return hops[-self.trusted_proxies] if len(hops) >= self.trusted_proxies else peer

    def wait_s(self, client: str) -> float:
        """Seconds until ``client`` may try again (0: now)."""
        with self._lock:
            return max(0.0, self._locked_until.get(client, 0.0) - self.clock())

    def record(self, client: str, ok: bool) -> None:
        now = self.clock()
        with self._lock:
            if ok:
                self._failures.pop(client, None)
                return
            recent = [t for t in self._failures.get(client, []) if now - t < self.window_s] + [now]
            if len(recent) >= self.max_failures:
                self._locked_until[client] = now + self.lockout_s
                recent = []
            self._failures[client] = recent
            if len(self._failures) > 10_000:  # bound memory under a flood of addresses
                self._failures = {k: v for k, v in self._failures.items() if v and now - v[-1] < self.window_s}
                self._locked_until = {k: v for k, v in self._locked_until.items() if v > now}


class LoginRateLimit:
    """ASGI middleware: applies a :class:`LoginLimiter` to ``POST .../login``."""

    def __init__(self, app, limiter: LoginLimiter):
        self.app, self.limiter = app, limiter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" \
                or not scope.get("path", "").rstrip("/").endswith("/login"):
            return await self.app(scope, receive, send)
        client = self.limiter.client_of(scope)
        wait = self.limiter.wait_s(client)
        if wait > 0:
            return await _refuse(send, wait)
        status: list[int] = []

        async def watch(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, receive, watch)
        if status and status[0] in (200, 400):  # 400: Gradio's "Incorrect credentials"
            self.limiter.record(client, ok=status[0] == 200)


async def _refuse(send, wait_s: float) -> None:
    seconds = math.ceil(wait_s)
    body = json.dumps({"detail": f"Too many failed logins from this address: try again in {seconds} s."}).encode()
    await send({"type": "http.response.start", "status": 429,
                "headers": [(b"content-type", b"application/json"), (b"retry-after", str(seconds).encode()),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
