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


# --------------------------------------------------- the conversation API

def test_embedded_scores_and_answers_are_unchanged(vlm, small_world):
    """Known answers of the shipped reference model (world 2; benchmarks/RESULTS.md relies on them)."""
    import os

    if "BYORN_EMBEDDED_MODEL" in os.environ:
        pytest.skip("another embedded model is configured")
    s = small_world[0][:4]
    imgs, qs = [x.image for x in s], [x.instruction for x in s]
    scores = vlm.score(imgs, qs, [x.response for x in s])
    assert [x.mean for x in scores] == pytest.approx([3.023908, 4.888638, 4.363387, 9.746819], abs=1e-5)
    assert scores[0].tokens == [" a", " small", " green", " triangle", " in", " the", " middle", ".", "</s>"]
    # its own words, and right: "a small green triangle in the middle.", "a small blue square next to a
    # large yellow triangle.", "a small purple circle next to a small blue circle.", "two small yellow
    # circles side by side."
    assert vlm.generate(imgs, qs, max_new_tokens=20) == [
        "a picture of a small green triangle.", "a picture of a small blue square and a large yellow triangle.",
        "a picture of a small purple circle and a small blue circle.", "a picture of two small yellow circles."]


def _two_turn(sample):
    from byorn.data import Conversation
    from byorn.data.sample import Turn

    return Conversation([Turn("user", "<image>" + sample.instruction), Turn("assistant", sample.response),
                         Turn("user", "Say it again."), Turn("assistant", sample.response)], [sample.image])


def test_encode_marks_turns_and_trains_the_chosen_ones(vlm, small_world):
    from byorn.models import Batch

    s = small_world[0][:2]
    convs = [_two_turn(s[0]), _two_turn(s[1])]
    batch = vlm.encode(convs, train_turns=[{1}, None])
    assert isinstance(batch, Batch) and batch.n_turns == [2, 2]
    labels, turn_ids = batch.inputs["labels"], batch.turn_ids
    assert turn_ids.shape == labels.shape
    assert torch.equal(labels[0] != IGNORE, turn_ids[0] == 1)  # only turn 1 trained in conversation 0
    assert torch.equal(labels[1] != IGNORE, turn_ids[1] >= 0)  # every turn in conversation 1
    assert batch.lengths == batch.inputs["attention_mask"].sum(1).tolist() == vlm.token_lengths(convs)
    scores = vlm.score_batch(batch)
    assert [len(c) for c in scores] == [2, 2]
    assert scores[0][0].tokens == scores[0][1].tokens  # the same answer twice, scored twice


def test_collate_is_encode_of_single_exchanges(vlm, small_world):
    from byorn.data import Conversation

    s = small_world[0][:3]
    a = vlm.collate([x.image for x in s], [x.instruction for x in s], [x.response for x in s])
    b = vlm.encode([Conversation.single(x.image, x.instruction, x.response) for x in s]).inputs
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_too_long_for_the_embedded_context(vlm, small_world):
    from byorn.models import SequenceTooLong

    x = small_world[0][0]
    assert vlm.max_length == 256
    with pytest.raises(SequenceTooLong) as e:
        vlm.collate([x.image], [x.instruction + " and more" * 120], [x.response])
    assert (e.value.index, e.value.limit) == (0, 256) and e.value.length > 256
    assert isinstance(e.value, ValueError)


def test_generation_answers_each_conversation(vlm, small_world):
    from byorn.data import Conversation

    x = small_world[0][0]
    first = vlm.generate([x.image], [x.instruction], max_new_tokens=20)[0]
    conv = _two_turn(x)
    follow = vlm.generate_conversations([Conversation(conv.turns[:3], conv.images)], max_new_tokens=20)
    assert first == vlm.generate_conversations([Conversation(conv.turns[:1], conv.images)], max_new_tokens=20)[0]
    assert len(follow) == 1 and isinstance(follow[0], str)


def test_generation_with_swapped_in_weights(vlm, small_world):
    import copy

    x = small_world[0][:2]
    imgs, qs = [s.image for s in x], [s.instruction for s in x]
    ema = copy.deepcopy(vlm.model)
    own = vlm.generate(imgs, qs, max_new_tokens=12)
    assert vlm.generate(imgs, qs, model=ema, max_new_tokens=12) == own
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.0)
    assert vlm.generate(imgs, qs, model=ema, max_new_tokens=12) != own  # the other weights were used
