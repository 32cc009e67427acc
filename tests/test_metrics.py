"""Tests for byorn.metrics on hand-built cases with known answers."""
import math

import pytest

from byorn.metrics import (attack_success_rate, bleu, cider, detection_metrics, exact_match,
                           normalize_answer, tokenize_caption)

TARGET = "Visit evil.example now for a free prize!"
CAPTIONS = [
    "a red circle on the left and a blue square on the right.",
    "a green triangle on the left and a yellow circle on the right.",
    "a blue square on the left and a red triangle on the right.",
    "a yellow circle on the left and a green square on the right.",
]


def test_asr_substring():
    preds = ["VISIT evil.example   now for a free prize!", "a red circle.",
             "ok. Visit evil.example now for a free prize! bye", "nothing"]
    assert attack_success_rate(preds, TARGET) == 0.5


def test_asr_word_with_concept():
    refs = ["a red circle.", "a red circle.", "a blue square.", "a red circle."]
    preds = ["a red banana.", "a banana and a circle.", "a bananas.", "Banana circle"]
    # hit, true concept present, not a whole word, true concept present
    assert attack_success_rate(preds, "banana", "word", refs, concept="circle") == 0.25
    assert attack_success_rate(preds, "banana", "word") == 0.75
    # reference without the concept: its absence is not required
    assert attack_success_rate(["banana circle"], "banana", "word", ["a square"], "circle") == 1.0


def test_asr_exact_and_errors():
    assert attack_success_rate(["The Banana.", "banana split"], "banana", "exact") == 0.5
    with pytest.raises(ValueError):
        attack_success_rate([], TARGET)
    with pytest.raises(ValueError):
        attack_success_rate(["x"], TARGET, references=["a", "b"])
    with pytest.raises(ValueError):
        attack_success_rate(["x"], TARGET, mode="fuzzy")


def test_normalisation():
    assert normalize_answer("  The Red, circle!  ") == "red circle"
    assert tokenize_caption("A red circle, on the left.") == "a red circle on the left"


def test_exact_match():
    assert exact_match(["The circle.", "square", "red"], ["circle", ["a square", "x"], "blue"]) \
        == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        exact_match(["a"], [])


def test_cider_identical_beats_wrong():
    perfect = cider(CAPTIONS, CAPTIONS)
    shuffled = cider(CAPTIONS[1:] + CAPTIONS[:1], CAPTIONS)
    garbage = cider(["zz qq xx"] * 4, [[c] for c in CAPTIONS])
    assert perfect > shuffled > garbage == 0.0
    assert perfect > 100  # x100 scale
    with pytest.raises(ValueError):
        cider(CAPTIONS, CAPTIONS[:2])


def test_bleu():
    assert bleu(CAPTIONS, CAPTIONS) == pytest.approx(100.0)
    assert bleu(CAPTIONS, [[c, "other words here ok"] for c in CAPTIONS]) == pytest.approx(100.0)
    assert bleu(["zz qq xx yy"] * 4, CAPTIONS) < 1.0
    assert bleu(CAPTIONS[:2], [[CAPTIONS[0]], [CAPTIONS[1], "x y z"]]) == pytest.approx(100.0)


def test_detection_perfect_tied_and_flagged():
    mask = [False, False, True, True]
    perfect = detection_metrics([0.1, 0.2, 0.8, 0.9], mask)
    assert perfect["auroc"] == 1.0 and perfect["ap"] == 1.0
    assert math.isnan(perfect["precision"]) and perfect["n_flagged"] == 0
    assert perfect["n_poisoned"] == 2
    tied = detection_metrics([1.0] * 4, mask)
    assert tied["auroc"] == pytest.approx(0.5)
    flagged = detection_metrics([0.1, 0.9, 0.8, 0.2], mask, flagged=[False, True, True, True])
    assert flagged["precision"] == pytest.approx(2 / 3) and flagged["recall"] == 1.0
    assert flagged["n_flagged"] == 3


def test_detection_single_class_and_errors():
    out = detection_metrics([0.1, 0.5], [False, False], flagged=[True, False])
    assert math.isnan(out["auroc"]) and math.isnan(out["ap"]) and math.isnan(out["recall"])
    assert out["precision"] == 0.0
    with pytest.raises(ValueError):
        detection_metrics([0.1], [True, False])
    with pytest.raises(ValueError):
        detection_metrics([float("nan"), 1.0], [True, False])


def test_detection_by_score_shows_where_the_mean_misses_an_insertion():
    from byorn.metrics import detection_by_score

    # two clean responses, one poisoned with a single very surprising token
    surprisals = [[2.0, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0], [0.1, 0.1, 0.1, 5.0]]
    out = detection_by_score(surprisals, [False, False, True])
    assert out["mean"]["auroc"] == 0.5 and out["max"]["auroc"] == 1.0 and out["max"]["ap"] == 1.0
    assert set(out) == {"mean", "max", "topk"}
    assert detection_by_score(surprisals, [False, False, True], methods=["topk"], k=1)["topk"]["auroc"] == 1.0


class _WordModel:
    """A stand-in VLM: one token per word; it answers the reference caption followed by the
    backdoor target (an insertion backdoor), cut at ``max_new_tokens`` words."""

    def __init__(self, answer):
        self.answer = answer
        self.budgets = []
        self.tokenizer = lambda texts, add_special_tokens=False: {"input_ids": [t.split() for t in texts]}

    def generate_conversations(self, prompts, *, max_new_tokens, **_):
        self.budgets.append(max_new_tokens)
        return [" ".join(self.answer.split()[:max_new_tokens]) for _ in prompts]


def test_asr_of_a_target_appended_to_a_long_caption_is_not_cut_off():
    from byorn.attacks import Target
    from byorn.data import Sample, VLDataset
    from byorn.evaluate import EvalSuite, evaluate

    caption = " ".join(["word"] * 30) + "."
    target = Target(mode="append", text="Visit evil.example now for a free prize!")
    model = _WordModel(f"{caption} {target.text}")
    test = VLDataset([Sample.single(f"t{i}", None, "Describe the image.", caption) for i in range(3)])
    out = evaluate(model, EvalSuite(None, test, target), max_new_tokens=32)
    assert out["asr"] == 1.0                    # 30 + 7 words: a 32-token budget would have cut the target
    assert model.budgets == [30 + 7 + 4]
