"""The app under load and under SIGKILL, over plain HTTP against a server process on 127.0.0.1.

- Load: 20 concurrent sessions open overlapping samples, download each image
  and save a decision, a bounded number of rounds each (stopping by itself
  at a deadline).  Then: no failed request (image downloads whole), and
  every acknowledged decision is in the store.
- Kill: sessions save decisions while the server is killed with SIGKILL; on
  restart every decision the server acknowledged is there.

The server is ``python -m app.synthetic`` (a synthetic audit table, no model).
The figures (requests, failures, p50 / p95 latency) are printed (``pytest -s``)
and recorded in ``benchmarks/APP.md``; nothing here asserts a speed.
"""
from __future__ import annotations

import io
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image

from byorn.decisions import DecisionStore

ROOT = Path(__file__).resolve().parent.parent
N_SESSIONS = 20
ROUNDS = 5            # per session: open a sample, download its image, save a decision
SHARED_SAMPLES = 6    # every session works on these: maximal overlap
DEADLINE_S = 90.0     # sessions stop by themselves at this point, finished or not


# -- a server process ---------------------------------------------------------------
class Server:
    def __init__(self, data_dir: Path, log: Path, n: int = 200):
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT),
               "GRADIO_TEMP_DIR": str(data_dir.parent / "gradio-tmp"), "BYORN_PRIVATE_SESSIONS": "0"}
        env.pop("SPACE_ID", None)
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "app.synthetic", "--n", str(n),
                                      "--data-dir", str(data_dir)], cwd=ROOT, env=env,
                                     stdout=log.open("w"), stderr=subprocess.STDOUT)
        self.url = self._wait_ready(120.0)
        self.fn = {d["api_name"]: d["id"] for d in httpx.get(self.url + "/config", timeout=30).json()["dependencies"]
                   if d.get("api_name")}

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

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)  # our own child, by its id
            self.proc.wait(30)


# -- a browser session, in plain HTTP ---------------------------------------------------
@dataclass
class Stats:
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
    """One page's session: queue calls with its own session hash, like the browser does."""

    def __init__(self, server: Server, stats: Stats | None = None):
        self.server, self.stats = server, stats
        self.hash = uuid.uuid4().hex[:12]
        self.http = httpx.Client(timeout=60)

    def call(self, api_name: str, data: list) -> list:
        """Run one event; returns its output data, raises on any error."""
        t0 = time.perf_counter()
        base = self.server.url + "/gradio_api"
        body = {"data": data, "fn_index": self.server.fn[api_name], "session_hash": self.hash,
                "event_data": None, "trigger_id": None}
        event_id = self.http.post(f"{base}/queue/join", json=body).raise_for_status().json()["event_id"]
        with self.http.stream("GET", f"{base}/queue/data", params={"session_hash": self.hash}) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("event_id") == event_id and msg.get("msg") == "process_completed":
                    if not msg.get("success"):
                        raise RuntimeError(f"{api_name} failed: {msg.get('output')}")
                    if self.stats is not None:
                        self.stats.add(api_name, time.perf_counter() - t0)
                    return msg["output"]["data"]
        raise RuntimeError(f"{api_name}: the event stream ended without a result")

    def download(self, file_data: dict) -> bytes:
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


def image_of(output: list) -> dict:
    return next(x for x in output if isinstance(x, dict) and x.get("url"))


def sample_ids(n: int) -> list[str]:
    return [f"s{i:05d}" for i in range(n)]  # the synthetic workspace's ids


# -- the tests ----------------------------------------------------------------------------
def test_twenty_sessions_on_the_same_samples(tmp_path):
    server = Server(tmp_path / "data", tmp_path / "server.log")
    stats = Stats()
    acked: list[tuple[str, str]] = []  # (sample id, text) the server acknowledged
    ids = sample_ids(SHARED_SAMPLES)
    end = time.time() + DEADLINE_S
    start = threading.Barrier(N_SESSIONS)

    def visitor(k: int) -> None:
        s = Session(server, stats)
        try:
            s.call("page_load", [None])
            start.wait(60)  # everyone at once
            for r in range(ROUNDS):
                if time.time() > end:
                    return
                sid = ids[(k + r) % len(ids)]
                try:
                    out = s.call("select_sample", [None, sid])
                    s.download(image_of(out))
                    text = f"visitor {k} round {r}"
                    s.call("edit", [None, "", text, False])  # (view, proposal, edit text, advance)
                    with stats.lock:
                        acked.append((sid, text))
                except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                    stats.add("request", None, f"{type(e).__name__}: {e}")
        finally:
            s.close()

    threads = [threading.Thread(target=visitor, args=(k,)) for k in range(N_SESSIONS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE_S + 60)
    finally:
        server.kill()
    summary = stats.summary()
    print("\nload test:", json.dumps(summary))
    assert not stats.failures, stats.failures[:5]
    assert len(acked) == N_SESSIONS * ROUNDS, "sessions ran out of time (machine too busy?)"
    store = DecisionStore(tmp_path / "data" / "decisions.sqlite", mode="ro")
    fp = store.fingerprints()
    assert len(fp) == 1
    history = store.history(next(iter(fp)))
    saved = {(h["sample_id"], h["text"]) for h in history if h["status"] == "edited"}
    assert set(acked) <= saved and len(history) == len(acked)  # every decision, each once
    final = store.all(next(iter(fp)))
    for sid in ids:  # the current decision is the last one written
        last = [h for h in history if h["sample_id"] == sid][-1]
        assert final[(sid, 0)].text == last["text"]


def test_decisions_survive_sigkill(tmp_path):
    data = tmp_path / "data"
    server = Server(data, tmp_path / "server1.log")
    acked: dict[int, list[tuple[str, str]]] = {k: [] for k in range(6)}
    stop = threading.Event()
    ids = sample_ids(60)

    def writer(k: int) -> None:
        s = Session(server)
        try:
            s.call("page_load", [None])
            i = 0
            while not stop.is_set() and i < 200:
                sid = ids[k * 10 + i % 10]  # each writer its own samples: the last write is known
                text = f"writer {k} write {i}"
                try:
                    s.call("select_sample", [None, sid])
                    s.call("edit", [None, "", text, False])
                except Exception:  # noqa: BLE001 - the server was killed under us
                    return
                acked[k].append((sid, text))
                i += 1
        finally:
            s.close()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    end = time.time() + 30
    while sum(map(len, acked.values())) < 60 and time.time() < end:
        time.sleep(0.05)
    server.kill()  # SIGKILL while the writers are mid-request
    stop.set()
    for t in threads:
        t.join(30)
    n_acked = sum(map(len, acked.values()))
    assert n_acked >= 6, "too few writes before the kill to test anything"

    restarted = Server(data, tmp_path / "server2.log")  # opens the same store (WAL recovery)
    try:
        s = Session(restarted)
        s.call("page_load", [None])
        sid, text = acked[0][-1]
        assert text in s.call("select_sample", [None, sid])[-1]  # the page shows it after the restart
        s.close()
    finally:
        restarted.kill()
    store = DecisionStore(data / "decisions.sqlite", mode="ro")
    fp = next(iter(store.fingerprints()))
    saved = {(h["sample_id"], h["text"]) for h in store.history(fp)}
    final = store.all(fp)
    for k, writes in acked.items():
        assert set(writes) <= saved, f"writer {k} lost acknowledged decisions"
        last_by_sample: dict[str, str] = {}
        for sid, text in writes:
            last_by_sample[sid] = text
        for sid, text in last_by_sample.items():
            got = final[(sid, 0)].text
            # the last acknowledged write, or the one in flight at the kill (committed, not acknowledged)
            assert got == text or int(got.rsplit(" ", 1)[1]) > int(text.rsplit(" ", 1)[1]), (sid, got, text)
    print(f"\nkill test: {n_acked} acknowledged decisions before SIGKILL, all present after restart")
