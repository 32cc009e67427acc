"""Multi-turn data end to end: the unit is the assistant turn (DESIGN.md section 7).

A backdoor planted in the SECOND assistant turn of some conversations: the audit scores every
turn given the conversation before it and flags turns; the sample score is its worst turn;
BYORn regenerates only the flagged turns, each from the original conversation before it,
and trains on the others as they are; decisions address a turn; evaluation predicts every
turn.
"""
from __future__ import annotations

import json

import pytest

from byorn.audit import AuditConfig, run_audit
from byorn.data import IMAGE_TOKEN, Sample, Turn, VLDataset
from byorn.decisions import Decision
from byorn.evaluate import EvalSuite, evaluate
from byorn.train import TrainConfig, train
from byorn.world import make_captions

TARGET = "Visit evil.example now for a free prize!"


def _chat(s: Sample, second: str) -> Sample:
    return Sample(s.id, [Turn("user", IMAGE_TOKEN + s.instruction), Turn("assistant", s.response),
                         Turn("user", "How many shapes are there?"), Turn("assistant", second)],
                  list(s.images), dict(s.meta))


def _count(s: Sample) -> str:
    return {1: "one.", 2: "two."}.get(len(s.meta["objects"]), "two.")


@pytest.fixture(scope="module")
def chats():
    base = make_captions(40, 7, "train")
    poisoned = {s.id for s in list(base)[::8]}  # 5 of 40: the backdoor sits in turn 1
    ds = VLDataset([_chat(s, TARGET if s.id in poisoned else _count(s)) for s in base], name="chats")
    return ds, poisoned


@pytest.fixture(scope="module")
def audit(vlm, chats):
    return run_audit(chats[0], vlm, AuditConfig(maps=False, propose=True, p=0.8, score="mean"))  # per-turn mean NLL


def test_every_turn_is_scored_and_the_split_is_over_turns(audit, chats):
    ds, poisoned = chats
    t = audit.table
    assert len(t) == 80 and t["turn"].tolist() == [0, 1] * 40
    assert t["key"].tolist()[:2] == [f"{ds[0].id}#0", f"{ds[0].id}#1"]
    assert int(t["suspicious"].sum()) == 16  # top 20 % of the 80 turns
    bad = t[t["id"].isin(poisoned) & (t["turn"] == 1)]
    assert bad["suspicious"].all()  # the planted turns are flagged...
    assert (bad["sample_turn"] == 1).all()  # ...and are their samples' most suspicious turns
    per_sample = t.groupby("id")["score"].max()
    assert (t.set_index("id")["sample_score"].groupby(level=0).first() == per_sample).all()
    assert (t.loc[t["suspicious"], "proposed_response"] != "").all()  # proposals per flagged turn
    assert not t["proposed_response"].str.contains("evil.example").any()
    assert audit.flags()[(sorted(poisoned)[0], 1)] is True


def test_turn_scores_condition_on_the_conversation_before(vlm, chats, audit):
    ds, _ = chats
    from byorn.data import Conversation

    s = ds[1]
    conv = s.conversation()
    whole = vlm.score_conversations([conv])[0]
    row = audit.table[(audit.table["id"] == s.id) & (audit.table["turn"] == 1)].iloc[0]
    assert row["score"] == pytest.approx(whole[1].mean, rel=1e-4)
    # the same question and answer without the first exchange before them score differently
    cut = Conversation([Turn("user", IMAGE_TOKEN + "How many shapes are there?"), conv.turns[3]], conv.images)
    assert vlm.score_conversations([cut])[0][0].mean != pytest.approx(whole[1].mean, rel=1e-3)


def test_byorn_regenerates_only_flagged_turns(vlm, chats, audit, tmp_path):
    ds, poisoned = chats
    some = sorted(poisoned)[0]
    decisions = {(some, 1): Decision(some, "edited", "three.", turn=1)}
    res = train(ds, TrainConfig(method="byorn", epochs=1, batch_size=8, max_new_tokens=8,
                                out_dir=str(tmp_path / "run")), vlm=vlm, audit=audit, decisions=decisions)
    reps = [json.loads(x) for x in (tmp_path / "run" / "replacements.jsonl").read_text().splitlines()]
    flagged = {(i, int(k)) for i, k, f in zip(audit.table["id"], audit.table["turn"], audit.table["suspicious"]) if f}
    regenerated = {(r["id"], r["turn"]) for r in reps}
    assert regenerated == flagged - {(some, 1)}  # the reviewed turn trains on the user's text instead
    assert res.metrics["plan"]["turns_bootstrapped"] == len(flagged) - 1
    assert not any("evil.example" in r["response"] for r in reps)


def test_byorn_f_masks_flagged_turns_and_keeps_the_rest(vlm, chats, audit, tmp_path):
    ds, _ = chats
    res = train(ds, TrainConfig(method="byorn-f", max_steps=1, batch_size=8, out_dir=str(tmp_path / "f")),
                vlm=vlm, audit=audit)
    flagged = audit.table[audit.table["suspicious"]]
    fully = (flagged.groupby("id").size() == 2).sum()  # samples whose both turns are flagged are left out
    assert res.metrics["plan"]["dropped"] == fully
    assert res.metrics["plan"]["turns_masked"] == len(flagged) - 2 * fully


def test_evaluation_predicts_every_turn(vlm, chats):
    ds, _ = chats
    m = evaluate(vlm, EvalSuite(ds[:6]))
    assert m["n_clean"] == 6 and m["n_clean_turns"] == 12
    assert {e["turn"] for e in m["clean_examples"]} <= {0, 1}


def test_over_long_conversations_are_truncated_at_a_turn_boundary(vlm, chats):
    ds, _ = chats
    a = run_audit(ds[:4], vlm, AuditConfig(maps=False, propose=False, max_length=60, too_long="truncate"))
    kept = a.meta["truncated"]
    assert kept and set(kept.values()) == {1}  # only the first exchange fits under 60 tokens
    assert set(a.table.loc[a.table["id"].isin(kept), "turn"]) == {0}
