"""Candidate replacements: k sampled per turn, scored by the proposing model, merged, ranked; runs as proposers."""
from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from byorn.data import Sample, Turn, VLDataset
from byorn.models.adapter import TokenScores
from byorn.propose import (Candidate, RunNotReady, propose_candidates, propose_with_run, reference_source,
                           run_model, run_model_folder)


class ScriptedVLM:
    """A stand-in model: draws come from a script per prompt, NLL = 0.1 x the text's length.

    Records every generate / score call so tests can check what the model was shown.
    """

    identity = "scripted"

    def __init__(self, script):
        self.script = script  # last user text -> list of draws (cycled)
        self.generate_calls: list[list] = []
        self.score_calls: list[list] = []
        self.seeds: list[int] = []

    def generate_conversations(self, convs, *, max_new_tokens, temperature, top_p, seed, batch_size):
        assert batch_size >= len(convs)  # one generate call per batch
        self.generate_calls.append(convs)
        self.seeds.append(seed)
        seen: dict[str, int] = {}
        out = []
        for c in convs:
            assert c.turns[-1].role == "user"
            q = c.turns[-1].text
            draws = self.script[q]
            out.append(draws[seen.get(q, 0) % len(draws)])
            seen[q] = seen.get(q, 0) + 1
        return out

    def score_conversations(self, convs, *, batch_size=64):
        self.score_calls.append(convs)
        out = []
        for c in convs:
            n = sum(t.role == "assistant" for t in c.turns)
            scores = [TokenScores(["x"], [0.0]) for _ in range(n)]
            text = c.turns[-1].text
            scores[-1] = TokenScores(["t"] * len(text), [0.1 * len(text)] * len(text))  # mean 0.1 x length
            out.append(scores)
        return out


def two_turn(sid: str) -> Sample:
    turns = [Turn("user", f"{sid} first?"), Turn("assistant", "ORIGINAL-0"),
             Turn("user", f"{sid} second?"), Turn("assistant", "ORIGINAL-1")]
    return Sample(sid, turns)


def test_candidates_are_merged_ranked_and_never_see_the_original():
    ds = VLDataset([two_turn("a"), two_turn("b")])
    vlm = ScriptedVLM({"a first?": ["long answer", "ok", "ok", ""], "a second?": ["yes", "no", "maybe", "yes"],
                       "b second?": ["x", "x", "x", "x"]})
    got = propose_candidates(vlm, ds, [("a", 0), ("a", 1), ("b", 1)], k=4, batch_size=64, seed=5)
    assert [(c.text, c.count) for c in got[("a", 0)]] == [("ok", 2), ("long answer", 1)]  # empty draw dropped
    assert [c.text for c in got[("a", 1)]] == ["no", "yes", "maybe"]  # by NLL (0.2 < 0.3 < 0.5)
    assert got[("a", 1)][1].count == 2
    assert [(c.text, c.count) for c in got[("b", 1)]] == [("x", 4)]
    assert got[("a", 1)][0].nll == pytest.approx(0.2)
    # one generate call held all k draws of every prompt of the batch; prompts end before the turn
    assert len(vlm.generate_calls) == 1 and len(vlm.generate_calls[0]) == 12
    for conv in vlm.generate_calls[0]:
        assert conv.turns[-1].role == "user"
        assert not any(t.text == "ORIGINAL-1" for t in conv.turns)  # turn 1's text is never shown
    second = [c for c in vlm.generate_calls[0] if c.turns[-1].text == "a second?"][0]
    assert [t.text for t in second.turns] == ["a first?", "ORIGINAL-0", "a second?"]  # earlier turns as they were
    # each distinct draw was scored once, as the turn it would replace
    scored = [c.turns[-1].text for c in vlm.score_calls[0]]
    assert sorted(scored) == sorted(["long answer", "ok", "yes", "no", "maybe", "x"])


def test_batches_progress_cancel_and_seeds():
    ds = VLDataset([Sample.single(f"s{i}", None, f"q{i}", "orig") for i in range(5)])
    vlm = ScriptedVLM({f"q{i}": [f"a{i}", f"b{i}"] for i in range(5)})
    seen = []
    got = propose_candidates(vlm, ds, [f"s{i}" for i in range(5)], k=2, batch_size=4, seed=10,
                             progress=lambda d, n: seen.append((d, n)))
    assert list(got) == [(f"s{i}", 0) for i in range(5)]  # plain ids are turn 0
    assert [len(c) for c in vlm.generate_calls] == [4, 4, 2]  # batch_size counts sequences: 2 prompts x k=2
    assert vlm.seeds == [10, 11, 12]
    assert seen == [(2, 5), (4, 5), (5, 5)]
    cancel = threading.Event()
    partial = propose_candidates(vlm, ds, [f"s{i}" for i in range(5)], k=2, batch_size=4, cancel=cancel,
                                 progress=lambda d, n: cancel.set())
    assert list(partial) == [("s0", 0), ("s1", 0)]


def test_bad_arguments_are_refused():
    ds = VLDataset([Sample.single("s", None, "q", "r")])
    vlm = ScriptedVLM({"q": ["a"]})
    with pytest.raises(ValueError, match="turn 1 does not exist"):
        propose_candidates(vlm, ds, [("s", 1)])
    with pytest.raises(ValueError, match="temperature"):
        propose_candidates(vlm, ds, ["s"], k=3, temperature=0)
    with pytest.raises(ValueError, match="k must"):
        propose_candidates(vlm, ds, ["s"], k=0)
    with pytest.raises(KeyError, match="nope"):
        propose_candidates(vlm, ds, ["nope"])


def test_real_model_candidates_score_as_the_turn_and_are_reproducible(vlm):
    from byorn.world import make_captions

    ds = make_captions(6, 0, "train")
    keys = [(s.id, 0) for s in ds]
    got = propose_candidates(vlm, ds, keys, k=4, batch_size=8, max_new_tokens=16, seed=3)
    again = propose_candidates(vlm, ds, keys, k=4, batch_size=8, max_new_tokens=16, seed=3)
    assert got == again
    for (sid, _), cands in got.items():
        assert 1 <= len(cands) <= 4 and sum(c.count for c in cands) <= 4
        assert len({c.text for c in cands}) == len(cands)
        nlls = [c.nll for c in cands]
        assert nlls == sorted(nlls)
        s = ds.by_id(sid)
        direct = vlm.score([s.image] * len(cands), [s.instruction] * len(cands), [c.text for c in cands])
        assert nlls == pytest.approx([d.mean for d in direct], abs=1e-4)  # the audit's score of that text
    assert reference_source(vlm) == f"reference:{vlm.identity}"


# ---------------------------------------------------------------------------------------- runs --

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, vlm):
    """A tiny SFT run (2 steps) with its saved model."""
    from byorn.train import TrainConfig, train
    from byorn.world import make_captions

    ds = make_captions(16, 4, "train")
    out = tmp_path_factory.mktemp("runs") / "sft-tiny"
    train(ds, TrainConfig(method="sft", max_steps=2, batch_size=8, out_dir=str(out)), vlm=vlm)
    return out, ds


def _fake_run(folder, status, *, model=False, lock=None):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"status": status}))
    if model:
        (folder / "model").mkdir()
        (folder / "model" / "config.json").write_text("{}")
        (folder / "model" / "model.safetensors").write_bytes(b"")
    if lock:
        (folder / "run.lock").write_text(lock)
    return folder


def test_runs_without_a_usable_model_are_clear_errors(tmp_path):
    with pytest.raises(RunNotReady, match="does not exist"):
        run_model_folder(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunNotReady, match="not a run folder"):
        run_model_folder(tmp_path / "empty")
    alive = f"pid {os.getpid()} on {socket.gethostname()} since now\n"
    with pytest.raises(RunNotReady, match="still running") as e:
        run_model_folder(_fake_run(tmp_path / "live", "running", lock=alive))
    assert "live" in str(e.value)
    with pytest.raises(RunNotReady, match="stopped before it finished"):
        run_model_folder(_fake_run(tmp_path / "killed", "running", model=True, lock="pid 999999999 on x since y"))
    with pytest.raises(RunNotReady, match="cancelled before it saved"):
        run_model_folder(_fake_run(tmp_path / "early", "cancelled"))
    with pytest.raises(RunNotReady, match="no saved model"):
        run_model_folder(_fake_run(tmp_path / "gone", "finished"))
    folder, source = run_model_folder(_fake_run(tmp_path / "late", "cancelled", model=True))
    assert source == "run:late" and folder == tmp_path / "late" / "model"
    with pytest.raises(RunNotReady, match="cannot be loaded"):
        run_model(tmp_path / "late")  # empty weights file: named, not a traceback from transformers


def test_propose_with_a_finished_run(finished_run):
    run, ds = finished_run
    vlm, source = run_model(run)
    assert source == f"run:{run.name}"
    keys = [(s.id, 0) for s in ds][:5]
    seen = []
    got = propose_with_run(run, ds, keys, k=3, chunk_size=2, max_new_tokens=12, seed=1,
                           progress=lambda d, n: seen.append((d, n)))
    assert list(got) == keys and seen == [(2, 5), (4, 5), (5, 5)]
    assert all(c.source == source for cands in got.values() for c in cands)
    assert all(isinstance(c, Candidate) and c.text for cands in got.values() for c in cands)
    # the same chunks with the model passed in (or sent to a GPU call) give the same candidates
    assert propose_with_run(run, ds, keys, k=3, chunk_size=2, max_new_tokens=12, seed=1, vlm=vlm) == got
    from app import zerogpu

    try:
        via_gpu = propose_with_run(run, ds, keys, k=3, chunk_size=2, max_new_tokens=12, seed=1,
                                   runner=zerogpu.propose_on_gpu)
    finally:
        zerogpu.forget()
    assert via_gpu == got


def test_propose_with_run_cancels_between_chunks(finished_run):
    run, ds = finished_run
    keys = [s.id for s in ds][:6]
    cancel = threading.Event()
    got = propose_with_run(run, ds, keys, k=2, chunk_size=2, max_new_tokens=8, cancel=cancel,
                           progress=lambda d, n: cancel.set())
    assert list(got) == [(keys[0], 0), (keys[1], 0)]
    cancel.set()
    assert propose_with_run(run, ds, keys, k=2, cancel=cancel) == {}
