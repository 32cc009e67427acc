"""Poison-aware minibatches (pure functions).

:func:`plan_batches` builds one epoch of minibatches over a defense's
:class:`~byorn.defenses.Plan`: every batch is all-clean or all-suspicious,
and the suspicious (bootstrapped) batches are spread evenly over the epoch
(the paper: mixing them at random made BYORn > 6x slower than SFT, grouping
brought it to ~2.2x).  :func:`shard_batches` gives each of several training
processes its share of an epoch.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _chunks(idx: np.ndarray, size: int) -> list[list[int]]:
    return [idx[k:k + size].tolist() for k in range(0, len(idx), size)]


def plan_batches(fixed: Sequence[int], bootstrap: Sequence[int], batch_size: int,
                 rng: np.random.Generator) -> list[tuple[bool, list[int]]]:
    """One epoch of minibatches as ``(is_bootstrap, positions)``.

    ``fixed`` and ``bootstrap`` are the positions (in ``Plan.items``) of the
    samples trained as given and of those with a bootstrapped turn.  Both
    groups are shuffled separately and cut into batches; the ``m`` bootstrap
    batches go to positions ``floor((k + 0.5) * n / m)`` of the ``n`` batches,
    i.e. evenly spread over the epoch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    fixed_batches = _chunks(rng.permutation(np.asarray(fixed, dtype=int)), batch_size)
    boot_batches = _chunks(rng.permutation(np.asarray(bootstrap, dtype=int)), batch_size)
    n, m = len(fixed_batches) + len(boot_batches), len(boot_batches)
    boot_pos = {int((k + 0.5) * n / m) for k in range(m)} if m else set()
    out: list[tuple[bool, list[int]]] = []
    fi = bi = 0
    for pos in range(n):
        if pos in boot_pos:
            out.append((True, boot_batches[bi]))
            bi += 1
        else:
            out.append((False, fixed_batches[fi]))
            fi += 1
    return out


def batches_per_process(n_batches: int, num_processes: int) -> int:
    """Batches each process takes from an epoch of ``n_batches`` (see :func:`shard_batches`)."""
    return -(-n_batches // num_processes)


def shard_batches(batches: Sequence, rank: int, num_processes: int) -> list:
    """Process ``rank``'s share of one epoch: batches ``rank, rank + P, ...``.

    Every process must take the same number of optimizer steps (their
    gradients are averaged at each step), so when ``P`` does not divide the
    number of batches the epoch is padded with its first batches: at most
    ``P - 1`` batches of an epoch are seen twice.  Together the processes see
    every batch of the epoch once, not once each.
    """
    if not 0 <= rank < num_processes:
        raise ValueError(f"rank {rank} is not in [0, {num_processes})")
    batches = list(batches)
    if not batches:
        return []
    total = batches_per_process(len(batches), num_processes) * num_processes
    padded = batches + [batches[i % len(batches)] for i in range(total - len(batches))]
    return padded[rank::num_processes]


def token_chunks(lengths: Sequence[int], max_tokens: int | None) -> list[list[int]]:
    """Split a batch into groups whose padded size (group size x longest) stays within ``max_tokens``.

    Indices are grouped by length (short with short); a single item above the
    bound forms its own group.  Without a bound: one group, in order.
    """
    idx = list(range(len(lengths)))
    if not idx or not max_tokens or len(lengths) * max(lengths) <= max_tokens:
        return [idx] if idx else []
    chunks, cur = [], []
    for i in sorted(idx, key=lambda i: lengths[i]):
        if cur and (len(cur) + 1) * lengths[i] > max_tokens:
            chunks.append(cur)
            cur = []
        cur.append(i)
    chunks.append(cur)
    return chunks
