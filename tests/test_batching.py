import numpy as np
import pytest

from byorn.batching import plan_batches, resolve_plan
from byorn.decisions import Decision


def test_batches_are_pure_and_cover_everything_once():
    rng = np.random.default_rng(0)
    boot = list(range(100, 140))
    batches = plan_batches(60, boot, 8, rng)
    fixed = [i for b, idx in batches if not b for i in idx]
    booted = [i for b, idx in batches if b for i in idx]
    assert sorted(fixed) == list(range(60))
    assert sorted(booted) == boot
    assert all(len(idx) <= 8 for _, idx in batches)


def test_bootstrap_batches_are_spread_evenly():
    batches = plan_batches(80, list(range(1000, 1020)), 10, np.random.default_rng(1))
    kinds = [b for b, _ in batches]
    assert len(kinds) == 10 and sum(kinds) == 2
    assert [i for i, b in enumerate(kinds) if b] == [2, 7]  # floor((k+.5)*10/2)
    batches = plan_batches(10, list(range(100, 190)), 10, np.random.default_rng(1))
    kinds = [b for b, _ in batches]
    assert kinds.count(False) == 1 and kinds[0] is True and kinds[-1] is True


def test_no_bootstrap_gives_only_fixed_batches():
    batches = plan_batches(5, [], 2, np.random.default_rng(0))
    assert [b for b, _ in batches] == [False] * 3


def test_resolve_plan_methods(small_world):
    train, _ = small_world
    ids = train.ids()
    flags = {i: k < 10 for k, i in enumerate(ids)}
    sft = resolve_plan(train, "sft", flags)
    assert sft.counts() == {"fixed": 60, "bootstrap": 0, "dropped": 0}
    f = resolve_plan(train, "byorn-f", flags)
    assert f.counts() == {"fixed": 50, "bootstrap": 0, "dropped": 10}
    b = resolve_plan(train, "byorn", flags)
    assert b.counts() == {"fixed": 50, "bootstrap": 10, "dropped": 0}
    assert b.bootstrap == list(range(10))
    with pytest.raises(ValueError, match="flags"):
        resolve_plan(train, "byorn", None)


def test_decisions_override_the_method(small_world):
    train, _ = small_world
    ids = train.ids()
    flags = {i: k < 4 for k, i in enumerate(ids)}
    decisions = {
        (ids[0], 0): Decision(ids[0], "approved", "a red circle in the middle."),
        (ids[1], 0): Decision(ids[1], "rejected"),
        (ids[2], 0): Decision(ids[2], "dropped"),
        (ids[5], 0): Decision(ids[5], "edited", "my own text."),
        (ids[6], 0): Decision(ids[6], "pending"),
    }
    plan = resolve_plan(train, "byorn", flags, decisions)
    fixed = dict(plan.fixed)
    assert fixed[0] == "a red circle in the middle."
    assert fixed[1] == train[1].response       # rejected: the original is fine
    assert fixed[5] == "my own text."
    assert fixed[6] == train[6].response       # pending and not flagged
    assert plan.bootstrap == [3]               # pending and flagged
    assert plan.dropped == {ids[2]: "dropped by review"}
