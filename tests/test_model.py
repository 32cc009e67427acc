import json

import pytest
import torch

from byorn.models import IGNORE, VLM, ModelError


def test_collate_masks_everything_but_the_response(vlm, small_world):
    train, _ = small_world
    s = train[:3]
    batch = vlm.collate([x.image for x in s], [x.instruction for x in s], [x.response for x in s])
    for i, sample in enumerate(s):
        labels = batch["labels"][i]
        ids = labels[labels != IGNORE].tolist()
        text = vlm.tokenizer.decode(ids, skip_special_tokens=True)
        assert text.strip() == sample.response
        assert ids[-1] == vlm.tokenizer.eos_token_id
        # labelled positions are exactly where the response sits in input_ids
        pos = (labels != IGNORE).nonzero().squeeze(-1)
        assert torch.equal(batch["input_ids"][i, pos], labels[pos])
        # right padding: the attention mask is a prefix of ones
        am = batch["attention_mask"][i].tolist()
        assert am == sorted(am, reverse=True)


def test_score_matches_the_models_own_loss(vlm, small_world):
    train, _ = small_world
    s = train[:4]
    scores = vlm.score([x.image for x in s], [x.instruction for x in s], [x.response for x in s], batch_size=2)
    for sample, sc in zip(s, scores):
        batch = vlm.collate([sample.image], [sample.instruction], [sample.response])
        with torch.no_grad():
            loss = vlm.model(**batch).loss.item()  # transformers' mean CE over labelled tokens
        assert sc.mean == pytest.approx(loss, rel=1e-4)
        assert len(sc.tokens) == len(sc.surprisals)
        assert "".join(sc.tokens).startswith(" " + sample.response)


def test_score_is_batch_independent(vlm, small_world):
    train, _ = small_world
    s = train[:5]
    args = ([x.image for x in s], [x.instruction for x in s], [x.response for x in s])
    a = [x.mean for x in vlm.score(*args, batch_size=5)]
    b = [x.mean for x in vlm.score(*args, batch_size=1)]
    assert a == pytest.approx(b, rel=1e-4)


def test_implausible_response_scores_higher(vlm, small_world):
    train, _ = small_world
    s = train[:8]
    imgs, qs = [x.image for x in s], [x.instruction for x in s]
    clean = vlm.score(imgs, qs, [x.response for x in s])
    bad = vlm.score(imgs, qs, ["Visit evil.example now for a free prize!"] * len(s))
    assert min(b.mean for b in bad) > max(c.mean for c in clean)


def test_generate_left_pads_and_is_seeded(vlm, small_world):
    train, _ = small_world
    s = train[:6]
    imgs, qs = [x.image for x in s], [x.instruction for x in s]
    greedy_batched = vlm.generate(imgs, qs, max_new_tokens=20)
    greedy_single = [vlm.generate([i], [q], max_new_tokens=20)[0] for i, q in zip(imgs, qs)]
    assert greedy_batched == greedy_single  # padding does not change the answer
    assert all(t for t in greedy_batched)
    a = vlm.generate(imgs, qs, temperature=1.0, seed=3)
    b = vlm.generate(imgs, qs, temperature=1.0, seed=3)
    assert a == b


def test_embed_shapes(vlm, small_world):
    train, _ = small_world
    s = train[:3]
    scores, emb = vlm.score([x.image for x in s], [x.instruction for x in s], [x.response for x in s], embed=True)
    assert emb["response"].shape[0] == 3 and emb["image"].shape[0] == 3


def test_bad_model_folders_give_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        VLM.load(tmp_path / "nope")
    with pytest.raises(ModelError, match="no config.json"):
        VLM.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelError, match="safetensors"):
        VLM.load(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError):
        VLM.load(tmp_path)


def test_save_and_reload_round_trip(vlm, tmp_path, small_world):
    train, _ = small_world
    vlm.save(tmp_path / "m")
    again = VLM.load(tmp_path / "m")
    s = train[:2]
    args = ([x.image for x in s], [x.instruction for x in s], [x.response for x in s])
    assert [x.mean for x in again.score(*args)] == pytest.approx([x.mean for x in vlm.score(*args)])
