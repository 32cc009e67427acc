import numpy as np
import pytest

from byorn.scoring import aggregate, percentile_threshold, split_by_percentile, split_by_value


def test_aggregate_known_answers():
    s = [[1.0, 2.0, 3.0], [0.5, 0.5, 8.0, 0.5]]
    np.testing.assert_allclose(aggregate(s, "mean"), [2.0, 2.375])
    np.testing.assert_allclose(aggregate(s, "max"), [3.0, 8.0])
    np.testing.assert_allclose(aggregate(s, "topk", k=2), [2.5, 4.25])


def test_max_catches_an_inserted_word_that_the_mean_dilutes():
    plausible = [0.2] * 12
    inserted = [0.2] * 11 + [6.0]  # one implausible word in a long plausible response
    suspicious_long = [1.0] * 12
    mean = aggregate([plausible, inserted, suspicious_long], "mean")
    mx = aggregate([plausible, inserted, suspicious_long], "max")
    assert mean[1] < mean[2]          # the mean ranks the insertion below a merely odd response
    assert mx[1] > mx[2] > mx[0]      # the max ranks it first


def test_aggregate_rejects_empty_and_unknown():
    with pytest.raises(ValueError, match="no tokens"):
        aggregate([[1.0], []])
    with pytest.raises(ValueError, match="score method"):
        aggregate([[1.0]], "median")


def test_percentile_split_flags_top_40_percent():
    scores = np.arange(10, dtype=float)  # 0..9
    mask, thr = split_by_percentile(scores, 0.6)
    assert thr == pytest.approx(5.4)
    assert mask.tolist() == [False] * 6 + [True] * 4


def test_split_ties_count_as_clean_and_value_split():
    mask, _ = split_by_percentile([1.0] * 5, 0.6)
    assert not mask.any()
    assert split_by_value([0.1, 2.0, 3.0], 2.0).tolist() == [False, False, True]


def test_percentile_threshold_checks_inputs():
    with pytest.raises(ValueError):
        percentile_threshold([], 0.6)
    with pytest.raises(ValueError):
        percentile_threshold([1.0, float("nan")], 0.6)
    with pytest.raises(ValueError):
        percentile_threshold([1.0], 1.5)


def test_grounding_known_answers():
    from byorn.scoring import robust_z

    with_image = [[1.0, 1.0, 4.0], [3.0, 3.0], [2.0, 2.0, 2.0, 2.0]]
    blank = [[3.0, 3.0, 3.0], [3.0, 3.0], [1.0, 1.0, 1.0, 1.0]]
    # the image makes the first response likelier (-1 nat/token), the second not at all, the third less likely
    np.testing.assert_allclose(aggregate(with_image, "grounding", blank=blank), [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(robust_z([1.0, 2.0, 3.0, 4.0, 100.0]), [-2.0 / 2 * 1.349, -1.349 / 2, 0.0,
                                                                      1.349 / 2, 97 * 1.349 / 2])
    both = aggregate(with_image, "mean+grounding", blank=blank)
    np.testing.assert_allclose(both, robust_z([2.0, 3.0, 2.0]) + robust_z([-1.0, 0.0, 1.0]))
    assert np.all(np.isfinite(robust_z([5.0, 5.0, 5.0])))  # no spread: no division by zero


def test_grounding_ranks_an_ungrounded_plausible_response_first():
    # a fluent caption of another scene: plausible text (low mean NLL) that the image does not support
    right = ([2.0, 0.5, 0.5, 2.0], [2.0, 2.5, 2.5, 2.0])    # the image helps the content words
    wrong = ([2.0, 1.5, 1.5, 2.0], [2.0, 1.2, 1.2, 2.0])    # the image argues against them
    odd = ([3.0, 3.0, 3.0, 3.0], [3.0, 3.0, 3.0, 3.0])      # unusual wording, indifferent to the image
    s, b = zip(right, wrong, odd)
    assert np.argmax(aggregate(s, "mean")) == 2            # the mean ranks the odd wording first
    assert np.argmax(aggregate(s, "grounding", blank=b)) == 1


def test_grounding_needs_blank_surprisals_of_the_same_tokens():
    with pytest.raises(ValueError, match="blank"):
        aggregate([[1.0]], "grounding")
    with pytest.raises(ValueError, match="response 0"):
        aggregate([[1.0, 2.0]], "grounding", blank=[[1.0]])
    with pytest.raises(ValueError, match="2 responses but 1"):
        aggregate([[1.0], [2.0]], "mean+grounding", blank=[[1.0]])


def test_mean_plus_grounding_scores_turns_without_an_image_by_the_mean():
    """A turn that sees no image has grounding 0 (blanking changes nothing): it says nothing, so it adds
    nothing, and many such turns do not squash the grounding's scale for the turns that do see one."""
    from byorn.scoring import bulk_z, components, grounded_score, has_image_mask, robust_z

    imaged = [[1.0, 1.0, 4.0], [3.0, 3.0], [2.0, 2.0, 2.0, 2.0], [2.5, 2.5]]
    imaged_blank = [[3.0, 3.0, 3.0], [2.0, 2.0], [1.0, 1.0, 1.0, 1.0], [2.0, 3.0]]
    text = [[2.0, 4.0], [1.0, 1.0], [3.0, 3.0], [2.0, 2.0], [5.0, 5.0], [1.5, 1.5]]  # no image: blank == real
    s, b = imaged + text, imaged_blank + text
    assert has_image_mask(s, b).tolist() == [True] * 4 + [False] * 6
    mean = aggregate(s, "mean")
    g = aggregate(s, "grounding", blank=b)
    both = aggregate(s, "mean+grounding", blank=b)
    _, fit = grounded_score(components(s, b))
    z = bulk_z if fit["units"] == "clean-bulk spreads" else robust_z
    np.testing.assert_allclose(both[4:], z(mean)[4:])         # without an image: the mean's part alone
    assert np.all(both[:4] >= z(mean)[:4] + z(g[:4]) - 1e-12)  # with one: the sum (or raised for its grounding)
    assert not np.allclose(z(g)[:4], z(g[:4]))                # the zeros would have changed the imaged turns'
    # the caller may say which turns see an image instead
    flags = [True] * 4 + [False] * 6
    np.testing.assert_allclose(aggregate(s, "mean+grounding", blank=b, has_image=flags), both)
    with pytest.raises(ValueError, match="has_image"):
        aggregate(s, "mean+grounding", blank=b, has_image=[True])


def test_the_mean_grounding_score_with_responses_is_the_audits():
    """Given each turn's text, ``aggregate`` scores mean+grounding as an audit does, shared responses
    included (a fixed target the images argue against, raised past the split); without it, as before."""
    from byorn.scoring import components
    from byorn.split import grounded_score

    rng = np.random.default_rng(3)
    s, b, texts = [], [], []
    for i in range(400):
        x = rng.normal(4.5, 1.0, 17).clip(0.05)
        poisoned = i >= 360
        s.append(x)
        b.append(x + (rng.normal(-0.5, 0.6) if poisoned else rng.normal(1.0, 0.6)))
        texts.append("a red circle on a blue background." if poisoned else f"caption {i}")
    with_texts = aggregate(s, "mean+grounding", blank=b, responses=texts)
    score, fit = grounded_score(components(s, b, responses=texts))
    assert fit["case"] == "shared response"
    np.testing.assert_allclose(with_texts, score)
    assert not np.allclose(with_texts, aggregate(s, "mean+grounding", blank=b))
    assert (with_texts[360:] > fit["threshold"]).all()
