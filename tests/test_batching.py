import numpy as np
import pytest

from byorn.batching import batches_per_process, plan_batches, shard_batches, token_chunks


def test_batches_are_pure_and_cover_everything_once():
    rng = np.random.default_rng(0)
    boot = list(range(100, 140))
    batches = plan_batches(range(60), boot, 8, rng)
    fixed = [i for b, idx in batches if not b for i in idx]
    booted = [i for b, idx in batches if b for i in idx]
    assert sorted(fixed) == list(range(60))
    assert sorted(booted) == boot
    assert all(len(idx) <= 8 for _, idx in batches)


def test_bootstrap_batches_are_spread_evenly():
    batches = plan_batches(range(80), list(range(1000, 1020)), 10, np.random.default_rng(1))
    kinds = [b for b, _ in batches]
    assert len(kinds) == 10 and sum(kinds) == 2
    assert [i for i, b in enumerate(kinds) if b] == [2, 7]  # floor((k+.5)*10/2)
    batches = plan_batches(range(10), list(range(100, 190)), 10, np.random.default_rng(1))
    kinds = [b for b, _ in batches]
    assert kinds.count(False) == 1 and kinds[0] is True and kinds[-1] is True


def test_no_bootstrap_gives_only_fixed_batches():
    batches = plan_batches(range(5), [], 2, np.random.default_rng(0))
    assert [b for b, _ in batches] == [False] * 3


def test_shards_split_an_epoch_across_processes():
    batches = list(range(7))
    parts = [shard_batches(batches, r, 2) for r in range(2)]
    assert parts == [[0, 2, 4, 6], [1, 3, 5, 0]]  # padded with the first batch: equal step counts
    assert sorted(set(parts[0]) | set(parts[1])) == batches
    assert batches_per_process(7, 2) == 4 and batches_per_process(8, 2) == 4
    assert shard_batches(batches, 0, 1) == batches
    with pytest.raises(ValueError):
        shard_batches(batches, 2, 2)


def test_token_chunks_bound_the_padded_size():
    lengths = [10, 50, 12, 48, 11]
    chunks = token_chunks(lengths, 100)
    assert sorted(i for c in chunks for i in c) == list(range(5))
    assert all(len(c) * max(lengths[i] for i in c) <= 100 for c in chunks)
    assert token_chunks(lengths, None) == [list(range(5))]
    assert token_chunks([300], 100) == [[0]]  # one over-long item stands alone
