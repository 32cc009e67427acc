"""Tests for byorn.defenses.bye: entropies, sensitive layers, scores and
flags with synthetic known answers; attention entropies of the embedded model."""
import copy
import math

import numpy as np
import pytest
import torch

from byorn.defenses.bye import (ByeConfig, attention_entropy, bye_detect, bye_flags, bye_scores, eager_attention,
                                image_attention_entropy, layer_separation, query_positions, sensitive_layers)
from byorn.models import VLM

N_IMAGE_TOKENS = 16  # 32 px / 8 px patches, CLS dropped


# ---------------------------------------------------------------- pure parts

def test_attention_entropy_known_answers():
    assert attention_entropy(np.ones(8)) == pytest.approx(math.log(8))
    assert attention_entropy(np.eye(4)[2]) == pytest.approx(0.0)
    assert attention_entropy([0.5, 0.5, 0.0]) == pytest.approx(math.log(2))
    w = np.array([[1.0, 3.0], [0.1, 0.3]])  # renormalised: both rows are (0.25, 0.75)
    h = attention_entropy(w)
    assert h[0] == pytest.approx(h[1]) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert np.isnan(attention_entropy(np.zeros(3)))
    with pytest.raises(ValueError):
        attention_entropy([-0.1, 1.1])


def synthetic_entropies(n_poison=20, n_clean=80, seed=0):
    """Layer 0 separates poisoned (low entropy) from clean; layers 1-2 do not."""
    rng = np.random.default_rng(seed)
    poisoned = np.r_[np.ones(n_poison, bool), np.zeros(n_clean, bool)]
    e = np.empty((poisoned.size, 3))
    e[:, 0] = np.where(poisoned, rng.normal(0.5, 0.05, poisoned.size), rng.normal(2.5, 0.05, poisoned.size))
    e[:, 1] = rng.normal(2.0, 0.5, poisoned.size)
    e[:, 2] = 1.7  # constant
    return e, poisoned


def test_sensitive_layers_scores_and_flags():
    e, poisoned = synthetic_entropies()
    stats = layer_separation(e)
    assert [d["separated"] for d in stats] == [True, False, False]
    assert stats[2]["ratio"] == 0.0 and sorted(stats[0]["mu"]) == pytest.approx([0.5, 2.5], abs=0.05)
    assert sensitive_layers(e) == [0]
    assert np.allclose(bye_scores(e, [0, 2]), (e[:, 0] + 1.7) / 2)
    with pytest.raises(ValueError):
        bye_scores(e, [])
    assert (bye_flags(bye_scores(e, [0])) == poisoned).all()  # the low-entropy cluster
    assert not bye_flags(np.full(5, 1.0)).any()
    res = bye_detect(e)
    assert res.layers == [0] and not res.fallback and (res.flags == poisoned).all()


def test_bye_falls_back_to_the_most_separated_layer():
    rng = np.random.default_rng(1)  # layer 1: two clusters, overlapping (ratio ~1.4 < 2)
    e = np.stack([rng.normal(2.0, 0.5, 200), np.r_[rng.normal(1.0, 0.3, 100), rng.normal(1.8, 0.3, 100)]], 1)
    assert sensitive_layers(e) == []
    res = bye_detect(e)
    assert res.fallback and res.layers == [1]
    assert np.allclose(res.scores, e[:, 1])
    assert sensitive_layers(e, separation=1.0) == [1]  # a looser bar accepts it
    with pytest.raises(ValueError, match="separation"):
        ByeConfig(separation=0)


def test_query_positions():
    labels = torch.tensor([[-100, -100, -100, 7, 8, -100], [-100, 5, 6, 2, -100, -100]])
    assert query_positions(labels) == [2, 0]
    with pytest.raises(ValueError):
        query_positions(torch.tensor([[-100, -100]]))


# ---------------------------------------------------------------- the embedded model

def test_image_attention_entropy_on_the_embedded_model(vlm, small_world):
    train, _ = small_world
    samples = list(train)[:10]
    before = vlm.model.config._attn_implementation
    e = image_attention_entropy(vlm, samples, batch_size=4)
    n_layers = vlm.model.config.text_config.num_hidden_layers
    assert e.shape == (10, n_layers)
    assert (e >= 0).all() and (e <= math.log(N_IMAGE_TOKENS) + 1e-9).all()
    assert e.std(axis=0).min() > 0  # samples differ
    assert vlm.model.config._attn_implementation == before  # switched back
    assert np.allclose(image_attention_entropy(vlm, samples[:3], batch_size=3), e[:3], atol=1e-6)


def test_uniform_attention_gives_log_n_image_tokens(vlm, small_world):
    """With q_proj = k_proj = 0 every attention score is 0, so attention is
    uniform over the causal prefix and, renormalised over the image tokens,
    its entropy is exactly log(16) in every layer."""
    model = copy.deepcopy(vlm.model)
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            layer.self_attn.q_proj.weight.zero_()
            layer.self_attn.k_proj.weight.zero_()
    flat = VLM(model, vlm.processor)
    e = image_attention_entropy(flat, list(small_world[0])[:3])
    assert np.allclose(e, math.log(N_IMAGE_TOKENS), atol=1e-5)


def test_eager_attention_switches_and_restores(vlm):
    before = vlm.model.config._attn_implementation
    with eager_attention(vlm.model):
        assert vlm.model.config._attn_implementation == "eager"
    assert vlm.model.config._attn_implementation == before
