"""Nearest neighbours and clusters: known answers on synthetic blobs, and poisoned samples finding each other."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from byorn.neighbors import (NOISE, cluster_members, clusters, cosine_to, default_min_cluster_size,
                             joint_embeddings, nearest)


def brute_force(x: np.ndarray, i: int, k: int) -> list[int]:
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = u @ u[i]
    sims[i] = -np.inf
    return sorted(range(len(x)), key=lambda j: (-sims[j], j))[:k]


def test_nearest_matches_brute_force_and_excludes_itself():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 32)).astype(np.float32)
    for i in (0, 7, 499):
        got = nearest(x, i, k=10)
        assert [j for j, _ in got] == brute_force(x, i, 10)
        assert i not in [j for j, _ in got]
        sims = [s for _, s in got]
        assert sims == sorted(sims, reverse=True) and all(-1.0 <= s <= 1.0 + 1e-6 for s in sims)


def test_nearest_is_the_same_across_chunk_boundaries():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 8))
    whole = cosine_to(x, x[3], chunk=10_000)
    chunked = cosine_to(x, x[3], chunk=37)
    np.testing.assert_allclose(whole, chunked, atol=1e-6)


def test_nearest_known_answer_and_edge_cases():
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [0.0, 0.0]])
    got = nearest(x, 0, k=3)
    assert [j for j, _ in got] == [1, 2, 4]  # rows 2 and 4 (zero) tie at 0: lower row first
    assert got[0][1] == pytest.approx(0.9 / np.hypot(0.9, 0.1), abs=1e-6)
    assert [j for j, _ in nearest(x, 0, k=10)] == [1, 2, 4, 3]  # k larger than the rest: all of them
    assert [j for j, _ in nearest(x, 0, k=2, exclude=[1])] == [2, 4]
    with pytest.raises(ValueError, match="index"):
        nearest(x, 5)
    with pytest.raises(ValueError, match="k must"):
        nearest(x, 0, k=0)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="row 3"):
        nearest(bad, 0)


def blobs(n_per: int, centers: np.ndarray, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pts = np.concatenate([c + spread * rng.normal(size=(n_per, centers.shape[1])) for c in centers])
    return pts, np.repeat(np.arange(len(centers)), n_per)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labelings group the points the same way (label names aside)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_clusters_recover_blobs_and_mark_outliers_as_noise():
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    pts, truth = blobs(60, centers, 0.5, seed=0)
    outliers = np.array([[30.0, 30.0], [-30.0, 25.0], [25.0, -30.0]])
    labels = clusters(np.concatenate([pts, outliers]))
    assert same_partition(labels[:len(pts)], truth)
    assert (labels[len(pts):] == NOISE).all()
    assert set(labels[:len(pts)]) == {0, 1, 2}  # numbered from 0


def test_clusters_are_numbered_by_size():
    centers = np.array([[0.0, 0.0], [20.0, 0.0]])
    small, _ = blobs(30, centers[:1], 0.5, seed=1)
    large, _ = blobs(90, centers[1:], 0.5, seed=2)
    labels = clusters(np.concatenate([small, large]))
    assert (labels[:30] == 1).all() and (labels[30:] == 0).all()


def test_subsampled_fit_assigns_every_point_to_its_blob():
    centers = np.array([[0.0, 0.0], [15.0, 0.0], [0.0, 15.0], [15.0, 15.0]])
    pts, truth = blobs(1500, centers, 0.7, seed=3)
    labels = clusters(pts, fit_max=800, seed=0)
    assert (labels != NOISE).mean() > 0.97
    kept = labels != NOISE
    assert same_partition(labels[kept], truth[kept])
    again = clusters(pts, fit_max=800, seed=0)
    np.testing.assert_array_equal(labels, again)  # seeded


def test_cluster_members_and_noise_point():
    labels = np.array([0, 1, 0, NOISE, 1, 0])
    np.testing.assert_array_equal(cluster_members(labels, 2), [0, 2, 5])
    np.testing.assert_array_equal(cluster_members(labels, 3), [3])  # noise: itself only
    with pytest.raises(ValueError, match="index"):
        cluster_members(labels, 6)


def test_clusters_reject_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        clusters(np.zeros(5))
    with pytest.raises(ValueError, match="not finite"):
        clusters(np.array([[0.0, 1.0], [np.inf, 0.0]]))
    assert (clusters(np.zeros((3, 2))) == NOISE).all()  # fewer points than a cluster needs
    assert default_min_cluster_size(800) == 10 and default_min_cluster_size(20_000) == 100


def test_poisoned_samples_are_each_others_nearest_neighbours(vlm):
    """A poisoned world: in the joint embedding, a poisoned turn's neighbours are mostly poisoned."""
    from byorn.attacks import Target, get_attack, poison
    from byorn.world import make_captions

    pr = poison(make_captions(120, 3, "train"), get_attack("vl-trojan"), rate=0.1, target=Target(), seed=0)
    convs = [s.conversation() for s in pr.train]
    _, emb = vlm.score_conversations(convs, embed=True)
    joint = joint_embeddings(emb["response"], emb["image"])
    poisoned = np.array([pr.mask[s.id] for s in pr.train])
    assert poisoned.sum() == 12
    precision = [poisoned[[j for j, _ in nearest(joint, int(i), k=5)]].mean() for i in np.flatnonzero(poisoned)]
    # joint = mean of the response and image cosines: the response side agrees, the scenes do not
    assert np.mean(precision) >= 0.6, precision  # base rate 0.1; measured 0.75
    assert min(precision) > 0  # each has a poisoned sibling among its 5 nearest
    clean = np.flatnonzero(~poisoned)[:12]
    assert np.mean([poisoned[[j for j, _ in nearest(joint, int(i), k=5)]].mean() for i in clean]) <= 0.2


def test_poisoned_samples_form_a_cluster_on_the_demo_map():
    """The shipped demo (VL-Trojan, 10 %): the cluster of a poisoned sample on the joint map is poisoned."""
    from byorn.models import ASSETS

    demo = ASSETS / "demo"
    table = pd.read_parquet(demo / "audit" / "audit.parquet", columns=["id", "umap_joint_x", "umap_joint_y"])
    truth = json.loads((demo / "ground_truth.json").read_text())
    poisoned = np.array([truth[i] for i in table["id"]])
    labels = clusters(table[["umap_joint_x", "umap_joint_y"]].to_numpy())
    largest = max(set(labels[poisoned].tolist()) - {NOISE}, key=lambda c: (labels[poisoned] == c).sum())
    members = cluster_members(labels, int(np.flatnonzero(poisoned & (labels == largest))[0]))
    assert poisoned[members].mean() >= 0.9  # what a bulk decision would select is poisoned
    assert poisoned[members].sum() >= 0.5 * poisoned.sum()  # and catches most of them at once
