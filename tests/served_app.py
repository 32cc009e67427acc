"""One harness for the served app: serve it, perform its events, drive it in a browser.

Every test or benchmark that talks to a running BYORn Studio goes through this
module.  Importing it: in ``tests/`` (and ``tests/browser/``, whose conftest
chain puts ``tests/`` on ``sys.path``) ``from served_app import ...``; in
``benchmarks/`` put the repository root and ``tests/`` on the path first::

    ROOT = Path(__file__).resolve().parent.parent
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from served_app import serve_workspace

**Serving, in this process** (loopback, a free port, analytics off; a launch whose
startup check timed out on a loaded machine is retried)::

    app = serve_workspace(ws, tmp, private_sessions=False)  # data in tmp/data, GRADIO_TEMP_DIR=tmp/gradio
    app = serve(ctx, gradio_temp=tmp / "gradio", auth=...)  # an AppContext you built; launch() kwargs
    app.url, app.ctx, app.demo, app.ws, app.endpoints      # endpoints: {"/select_sample": fn id, ...}
    app.close()                                             # cancel + join the training job, stop, restore env
    with serve_workspace(ws, tmp) as app: ...               # or as a context manager

**Events through the public client API** (``gradio_client``)::

    c = app.client()                     # a new browser session with the page loaded (/page_load)
    c.predict(sid, api_name="/select_sample"); c.submit(...)
    app.client(page_load=False)          # a bare session (another visitor, before any page load)

**Events with ``event_data``** (a map click, a table row: ``gradio_client``
cannot send it) and **plain-HTTP sessions** (load and kill tests, latency
figures): the browser's queue protocol over Gradio's public routes, endpoint
ids from ``/config`` (as the page reads them): POST ``/gradio_api/queue/join``,
then the result from the SSE stream ``/gradio_api/queue/data``::

    s = app.session(c)                                   # in client c's session (shares its gr.State)
    out = s.call("/open_row", [None], {"index": [0, 0], "value": sid})  # output data; AppError on failure
    # data: every input of the event in order, gr.State ones as None (the server holds them)
    s = Session(url, stats=Latencies())                  # a fresh page session; timings per event
    s.download(file_data)                                # a whole image file, timed as "image"
    s.close()

**Serving in a child process** (``python -m app.synthetic``, for SIGKILL and
load tests)::

    server = ServerProcess(data_dir, log_file, n=200); s = server.session(stats=...); server.kill()

**Browser** (Playwright + Debian chromium, never a downloaded browser)::

    browser = launch_browser(playwright); page = new_page(browser)
    wait_map(page); wait_text(page, "#inspector-header", sid); pixels_of(page, rows)
    start_frames(page); trace_lasso(page, cx, cy); page.mouse.up(); frames = stop_frames(page)
    map_mode(page, "box"); drag(page, x0, y0, x1, y1, steps)
    frames, moved_px = pan_map(page, row, x, y, dx, dy, steps)
"""
from __future__ import annotations

import io
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import httpx  # noqa: E402
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


# -- serving in this process -------------------------------------------------------------
def free_port() -> int:
    """A loopback port nobody listens on right now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def endpoints(url: str, timeout: float = 30.0) -> dict[str, int]:
    """``{"/api_name": fn id}`` of a served app, from its public ``/config`` (what the page reads)."""
    deps = httpx.get(url.rstrip("/") + "/config", timeout=timeout).raise_for_status().json()["dependencies"]
    return {"/" + d["api_name"]: d["id"] for d in deps if d.get("api_name")}


class ServedApp:
    """A launched app: ``url`` (no trailing slash), ``ctx``, ``demo``, ``ws`` (the default workspace)."""

    def __init__(self, ctx, demo, url: str, env_before: str | None, set_env: bool):
        self.ctx, self.demo, self.url = ctx, demo, url.rstrip("/")
        self._env_before, self._set_env = env_before, set_env
        self.ws = ctx.workspaces.get(ctx.default_key)
        self._endpoints: dict[str, int] | None = None

    @property
    def endpoints(self) -> dict[str, int]:
        if self._endpoints is None:
            self._endpoints = endpoints(self.url)
        return self._endpoints

    def client(self, page_load: bool = True) -> Client:
        """A new session through ``gradio_client``; with the page's own load event run first."""
        c = Client(self.url, verbose=False)
        if page_load:
            c.predict(api_name="/page_load")
        return c

    def session(self, client: Client | None = None, **kwargs) -> Session:
        """Raw queue calls, in ``client``'s session (sharing its state) or in a fresh one."""
        return Session(self.url, self.endpoints, session_hash=client.session_hash if client else None, **kwargs)

    def close(self, job_timeout: float = 120.0) -> None:
        """Cancel a running training job and wait for it, stop the server, restore GRADIO_TEMP_DIR."""
        try:
            self.ctx.job.cancel()
            self.ctx.job.join(job_timeout)
        finally:
            self.demo.close()
            if self._set_env:
                _restore("GRADIO_TEMP_DIR", self._env_before)

    def __enter__(self) -> ServedApp:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve(ctx, gradio_temp: Path | None = None, demo=None, **launch_kwargs) -> ServedApp:
    """Build (unless ``demo`` is given) and launch the app of ``ctx`` on 127.0.0.1, a free port, quietly.

    ``gradio_temp``: GRADIO_TEMP_DIR while it serves (set before the app is
    built; the previous value comes back at ``close``).  ``launch_kwargs`` go
    to ``app.launch`` (``auth``, ``login_limiter``, ...).
    """
    from app import build_app, launch

    before = os.environ.get("GRADIO_TEMP_DIR")
    if gradio_temp is not None:
        os.environ["GRADIO_TEMP_DIR"] = str(gradio_temp)
    try:
        demo = demo if demo is not None else build_app(ctx)
        for attempt in range(5):
            try:
                launch(demo, ctx, prevent_thread_lock=True, server_name=HOST, server_port=free_port(),
                       quiet=True, **launch_kwargs)
                break
            except (OSError, ValueError) as e:
                # OSError: another process took the port between the choice and the bind.  ValueError:
                # Gradio's one HEAD request to the new server (3 s timeout) went unanswered on a
                # loaded machine ("localhost is not accessible"); it has started: stop it, try again.
                if attempt == 4 or (isinstance(e, ValueError) and "localhost is not accessible" not in str(e)):
                    raise
                if isinstance(e, ValueError):
                    demo.close()
    except BaseException:
        _restore("GRADIO_TEMP_DIR", before)
        raise
    return ServedApp(ctx, demo, demo.local_url, before, gradio_temp is not None)


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def serve_workspace(ws, folder: Path, **context_kwargs) -> ServedApp:
    """Serve ``ws`` with its decisions and runs in ``folder/data`` and Gradio's files in ``folder/gradio``.

    ``context_kwargs`` go to ``make_context`` (``private_sessions``, ``data_roots``, ``trainer``, ...).
    """
    from app.context import make_context

    folder = Path(folder)
    ctx = make_context(ws, data_dir=folder / "data", **context_kwargs)
    return serve(ctx, folder / "gradio")


# -- the queue protocol, over plain HTTP ----------------------------------------------------------
@dataclass
class Latencies:
    """Per-kind round trips and failures, shared by many sessions' threads."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, seconds: float | None, error: str | None = None) -> None:
        with self.lock:
            if error is not None:
                self.failures.append(f"{kind}: {error}")
            else:
                self.latencies.setdefault(kind, []).append(seconds)

    def summary(self) -> dict:
        """Requests, failures, and n / p50 / p95 (ms) per kind and for ``all``."""
        out = {"requests": sum(map(len, self.latencies.values())) + len(self.failures),
               "failures": len(self.failures)}
        every = [x for xs in self.latencies.values() for x in xs]
        for kind, xs in sorted({**self.latencies, "all": every}.items()):
            if not xs:
                continue
            xs = sorted(xs)
            out[kind] = {"n": len(xs), "p50_ms": round(1000 * statistics.median(xs)),
                         "p95_ms": round(1000 * xs[min(len(xs) - 1, int(0.95 * len(xs)))])}
        return out


class Session:
    """One page's session over plain HTTP: queue calls with its session hash, as the browser makes them.

    ``fns``: ``{"/api_name": fn id}`` (read from ``/config`` when not given).
    ``stats``: a ``Latencies`` that gets each successful call's round trip,
    under the api name without its slash, and each download's as ``image``.
    """

    def __init__(self, url: str, fns: dict[str, int] | None = None, session_hash: str | None = None,
                 stats: Latencies | None = None, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.fns = fns if fns is not None else endpoints(self.url)
        self.hash = session_hash or uuid.uuid4().hex[:12]
        self.stats = stats
        self.http = httpx.Client(timeout=timeout)

    def call(self, api_name: str, data: list, event_data: Any = None) -> list:
        """Run one event (inputs ``data``, gr.State ones as None) and return its output data.

        Raises ``AppError`` when the event fails (a ``gr.Error`` in the handler), or
        ``RuntimeError`` when the stream ends without its result.
        """
        name = "/" + api_name.lstrip("/")
        t0 = time.perf_counter()
        base = self.url + "/gradio_api"
        body = {"data": data, "event_data": event_data, "fn_index": self.fns[name], "trigger_id": None,
                "session_hash": self.hash}
        event_id = self.http.post(f"{base}/queue/join", json=body).raise_for_status().json()["event_id"]
        with self.http.stream("GET", f"{base}/queue/data", params={"session_hash": self.hash}) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") == event_id and msg.get("msg") == "process_completed":
                    if not msg.get("success"):
                        raise AppError(f"{name} failed: {msg.get('output')}")
                    if self.stats is not None:
                        self.stats.add(name[1:], time.perf_counter() - t0)
                    return msg["output"]["data"]
        raise RuntimeError(f"{name}: the event stream ended without a result")

    def download(self, file_data: dict) -> bytes:
        """GET a file an event returned (``{"url": ...}``); raises unless it is one whole image."""
        from PIL import Image

        t0 = time.perf_counter()
        r = self.http.get(file_data["url"]).raise_for_status()  # a short body raises (Content-Length)
        body = r.content
        if int(r.headers.get("content-length", len(body))) != len(body):
            raise RuntimeError(f"broken image: {len(body)} bytes of {r.headers.get('content-length')}")
        Image.open(io.BytesIO(body)).load()  # a whole image file, not only the right length
        if self.stats is not None:
            self.stats.add("image", time.perf_counter() - t0)
        return body

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def image_of(output: list) -> dict:
    """The first file (``{"url": ...}``) among an event's outputs."""
    return next(x for x in output if isinstance(x, dict) and x.get("url"))


# -- serving in a child process -------------------------------------------------------------------
class ServerProcess:
    """``python -m app.synthetic`` (a synthetic audit of ``n`` samples, no model) in a child process.

    Decisions and runs in ``data_dir``, Gradio's files next to it
    (``gradio-tmp``), shared sessions, no Space settings; its output goes to
    ``log``.  Waits until it prints ``READY <url>``.
    """

    def __init__(self, data_dir: Path, log: Path, n: int = 200, multi_turn: float = 0.0,
                 timeout: float = 120.0):
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT),
               "GRADIO_TEMP_DIR": str(Path(data_dir).parent / "gradio-tmp"), "BYORN_PRIVATE_SESSIONS": "0"}
        env.pop("SPACE_ID", None)
        self.log = Path(log)
        self.proc = subprocess.Popen([sys.executable, "-m", "app.synthetic", "--n", str(n),
                                      "--multi-turn", str(multi_turn), "--data-dir", str(data_dir)],
                                     cwd=ROOT, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        self.url = self._wait_ready(timeout)
        self.endpoints = endpoints(self.url)

    def _wait_ready(self, timeout: float) -> str:
        end = time.time() + timeout
        while time.time() < end:
            for line in self.log.read_text().splitlines():
                if line.startswith("READY "):
                    return line.split()[1].rstrip("/")
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app server exited: {self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        self.kill()
        raise RuntimeError("the app server did not start in time")

    def session(self, **kwargs) -> Session:
        return Session(self.url, self.endpoints, **kwargs)

    def kill(self) -> None:
        """SIGKILL (our own child, by its id), and reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


# -- the browser ----------------------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 1000}
MAP = "#sample-map .byorn-plot"  # the WebGL map's element (app/plotly_html.py)


def launch_browser(playwright):
    """Debian chromium, headless (Playwright gives it a fresh temporary profile itself)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def new_page(browser):
    return browser.new_page(viewport=VIEWPORT)


def wait_text(page, selector: str, pattern: str, timeout: float = 15_000) -> None:
    """Wait until the element exists and its text matches the regex ``pattern``."""
    try:
        page.wait_for_function(
            "([sel, pat]) => { const el = document.querySelector(sel);"
            " return !!el && new RegExp(pat).test(el.innerText); }",
            arg=[selector, pattern], timeout=timeout)
    except Exception as e:
        now = page.evaluate("(sel) => { const el = document.querySelector(sel); return el ? el.innerText : null; }",
                            selector)
        raise AssertionError(f"{selector} never matched {pattern!r}; it reads {now!r}") from e


def wait_map(page, timeout: float = 120_000, settle_ms: int = 1500) -> None:
    """Wait until the map has drawn its points and stays drawn: no redraw for ``settle_ms`` (opening the Overview
    tab refreshes it, and a redraw after the page has read the map's geometry would move the points under it)."""
    page.wait_for_function(f"() => {{ const e = document.querySelector('{MAP}'); return e && e.dataset.drawnAt; }}",
                           timeout=timeout)
    drawn = lambda: page.evaluate(f"() => document.querySelector('{MAP}').dataset.drawnAt")  # noqa: E731
    for _ in range(40):
        before = drawn()
        page.wait_for_timeout(settle_ms)
        if drawn() == before:
            return


def pixels_of(page, rows) -> list[list[float]]:
    """Client pixels ``[x, y]`` of table rows on the map."""
    return page.evaluate(f"(rows) => rows.map(i => document.querySelector('{MAP}').byornPixelOf(i))", list(rows))


_FRAMES = """() => { window.__frames = []; let last = performance.now();
  const tick = (t) => { window.__frames.push(t - last); last = t; if (window.__frames.length < 100000) window.__raf = requestAnimationFrame(tick); };
  window.__raf = requestAnimationFrame(tick); }"""
_STOP = "() => { cancelAnimationFrame(window.__raf); return window.__frames.slice(1); }"


def start_frames(page) -> None:
    """Start recording frame intervals (``requestAnimationFrame``)."""
    page.evaluate(_FRAMES)


def stop_frames(page) -> list[float]:
    """Stop recording; the frame intervals (ms) since ``start_frames``."""
    return page.evaluate(_STOP)


def trace_lasso(page, cx: float, cy: float, rx: float = 90, ry: float = 70, steps: int = 40) -> None:
    """Press the mouse at (cx + rx, cy) and move it round an ellipse about (cx, cy); the caller releases."""
    page.mouse.move(cx + rx, cy)
    page.mouse.down()
    for k in range(1, steps + 1):
        a = 2 * math.pi * k / steps
        page.mouse.move(cx + rx * math.cos(a), cy + ry * math.sin(a))


def drag(page, x0: float, y0: float, x1: float, y1: float, steps: int) -> None:
    """Press at (x0, y0), move to (x1, y1) in ``steps`` equal steps, release."""
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(1, steps + 1):
        page.mouse.move(x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps)
    page.mouse.up()


def map_mode(page, mode: str) -> None:
    """The map toolbar's mode: ``box``, ``lasso`` or ``pan``."""
    page.click(f"#sample-map .byorn-toolbar button[data-mode={mode}]")


def pan_map(page, row: int, x: float, y: float, dx: float, dy: float, steps: int) -> tuple[list[float], list[float]]:
    """Pan the map by dragging from (x, y) by (dx, dy) in ``steps`` moves.

    Returns the frame intervals (ms) while dragging and how far table row
    ``row``'s point moved ``[dx, dy]`` (px) once the map has redrawn.
    """
    map_mode(page, "pan")
    before = pixels_of(page, [row])[0]
    start_frames(page)
    drag(page, x, y, x + dx, y + dy, steps)
    frames = stop_frames(page)
    page.wait_for_function(f"() => document.querySelector('{MAP}').dataset.redrawMs", timeout=60_000)
    after = pixels_of(page, [row])[0]
    return frames, [after[0] - before[0], after[1] - before[1]]
