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
