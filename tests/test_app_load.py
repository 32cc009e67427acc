"""The app under load and under SIGKILL, over plain HTTP against a server process on 127.0.0.1.

- Load: 20 concurrent sessions open overlapping samples, download each image
  and save a decision, a bounded number of rounds each (stopping by itself
  at a deadline).  Then: no failed request (image downloads whole), and
  every acknowledged decision is in the store.
- Kill: sessions save decisions while the server is killed with SIGKILL; on
  restart every decision the server acknowledged is there.

The server is ``python -m app.synthetic`` (a synthetic audit table, no model), started by
``served_app.ServerProcess``; each session speaks the page's queue protocol (``served_app.Session``).
The figures (requests, failures, p50 / p95 latency) are printed (``pytest -s``)
and recorded in ``benchmarks/APP.md``; nothing here asserts a speed.
"""
from __future__ import annotations

import json
import threading
import time

from served_app import Latencies, ServerProcess, image_of

from byorn.decisions import DecisionStore

N_SESSIONS = 20
ROUNDS = 5            # per session: open a sample, download its image, save a decision
SHARED_SAMPLES = 6    # every session works on these: maximal overlap
DEADLINE_S = 90.0     # sessions stop by themselves at this point, finished or not


def sample_ids(n: int) -> list[str]:
    return [f"s{i:05d}" for i in range(n)]  # the synthetic workspace's ids


# -- the tests ----------------------------------------------------------------------------
def test_twenty_sessions_on_the_same_samples(tmp_path):
    server = ServerProcess(tmp_path / "data", tmp_path / "server.log")
    stats = Latencies()
    acked: list[tuple[str, str]] = []  # (sample id, text) the server acknowledged
    ids = sample_ids(SHARED_SAMPLES)
    end = time.time() + DEADLINE_S
    start = threading.Barrier(N_SESSIONS)

    def visitor(k: int) -> None:
        s = server.session(stats=stats)
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
    server = ServerProcess(data, tmp_path / "server1.log")
    acked: dict[int, list[tuple[str, str]]] = {k: [] for k in range(6)}
    stop = threading.Event()
    ids = sample_ids(60)

    def writer(k: int) -> None:
        s = server.session()
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

    restarted = ServerProcess(data, tmp_path / "server2.log")  # opens the same store (WAL recovery)
    try:
        s = restarted.session()
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
