"""The split as a value, and the adaptive (``auto``) threshold on score mixtures with known answers."""
import json
import math

import numpy as np
import pytest

from byorn.split import AUTO_FLOOR, DEFAULT_P, PAPER_P, Split, auto_threshold, parse_p


def mixture(n: int, rate: float, seed: int, *, clean=(0.0, 1.0), poison=(7.0, 0.5)) -> tuple[np.ndarray, np.ndarray]:
    """``n`` scores, a fraction ``rate`` of them poison: (scores, is_poison)."""
    rng = np.random.default_rng(seed)
    k = int(round(rate * n))
    x = np.concatenate([rng.normal(*clean, n - k), rng.normal(*poison, k)])
    return x, np.arange(n) >= n - k


def in_gap(x: np.ndarray, bad: np.ndarray, thr: float) -> bool:
    return x[~bad].max() < thr < x[bad].min()


@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_puts_the_threshold_in_the_gap(rate, seed):
    x, bad = mixture(1000, rate, seed)
    thr, fit = auto_threshold(x)
    assert fit["case"] == "gap" and in_gap(x, bad, thr), (thr, fit["reason"])
    assert f"separates {100 * rate:.1f} % of turns" in fit["reason"]


def test_auto_gap_when_the_poison_is_the_majority_and_tight():
    """60 % poison with one fixed target (a tight cluster): the clean bulk is the *lowest* large mode, not
    the majority, and not the densest."""
    x, bad = mixture(500, 0.6, 3, clean=(2.0, 1.0), poison=(9.0, 0.05))
    thr, fit = auto_threshold(x)
    assert in_gap(x, bad, thr), fit["reason"]


def test_auto_gap_with_a_skewed_clean_bulk_and_poison_close_above():
    rng = np.random.default_rng(4)
    clean = rng.lognormal(1.0, 0.3, 900)           # right-skewed, like NLLs
    poison = rng.normal(clean.max() + 3.0, 0.3, 100)
    x = np.concatenate([clean, poison])
    bad = np.arange(1000) >= 900
    thr, fit = auto_threshold(x)
    assert in_gap(x, bad, thr), fit["reason"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_auto_on_one_bulk_falls_back_to_the_floor(seed):
    x = np.random.default_rng(seed).normal(5.0, 1.0, 2000)
    thr, fit = auto_threshold(x)
    assert fit["case"] == "no gap", fit["reason"]
    share = (x > thr).mean()
    assert AUTO_FLOOR <= share <= 0.05 + AUTO_FLOOR  # the floor, and for a normal bulk hardly more (2.3 %)
    assert thr == pytest.approx(min(fit["fence"], fit["floor"]))


def test_auto_without_a_clear_gap_errs_toward_flagging_more():
    """Poison overlapping the bulk's tail (no valley): the lowest of the fence (mode + 2 spreads) and the floor
    (the paper's top 40 %) flags at least the floor and most of the poison."""
    x, bad = mixture(1000, 0.3, 5, poison=(2.5, 1.0))
    thr, fit = auto_threshold(x)
    assert fit["case"] == "no gap"
    assert (x > thr).mean() >= AUTO_FLOOR
    assert (x[bad] > thr).mean() > 0.5


def test_auto_half_poison_in_a_tight_group_on_a_wide_bulk():
    """No valley (the groups overlap): a two-normal mixture finds the tight group and the split flags where it
    is a quarter as likely as the bulk; a gap above a few outliers does not hide it either."""
    rng = np.random.default_rng(7)
    x = np.r_[rng.normal(0.0, 1.5, 500), rng.normal(3.0, 0.4, 500)]
    bad = np.arange(1000) >= 500
    thr, fit = auto_threshold(x)
    assert "second group" in fit["reason"] and (x[bad] > thr).mean() >= 0.95, fit["reason"]
    y = np.r_[rng.normal(-1.0, 0.5, 500), rng.normal(0.6, 0.25, 500), [5.0, 5.1, 5.2, 5.3]]
    bad = np.r_[np.zeros(500, bool), np.ones(500, bool), np.zeros(4, bool)]
    thr, fit = auto_threshold(y)
    assert (y[bad] > thr).mean() >= 0.95 and (y[~bad] > thr).mean() < 0.2, fit["reason"]


def test_auto_skewed_clean_alone_flags_its_tail_not_a_lone_pair():
    x = np.random.default_rng(1).exponential(1.0, 1000)  # two turns far out by chance make no group
    thr, fit = auto_threshold(x)
    assert fit["case"] == "no gap" and (x > thr).mean() >= AUTO_FLOOR


def test_auto_a_few_far_turns_of_a_large_set_are_no_gap():
    """Four turns far above 200 000 (a chance cluster of a long tail, or 0.002 % poison): not a gap that would
    flag them alone; the floor and the fence still flag them and more."""
    x = np.r_[np.random.default_rng(8).lognormal(1.0, 0.4, 200_000), [40.0, 40.1, 40.2, 40.3]]
    thr, fit = auto_threshold(x)
    assert fit["case"] == "no gap" and (x[-4:] > thr).all() and (x > thr).mean() >= AUTO_FLOOR


def test_auto_ties_and_tiny_inputs():
    thr, fit = auto_threshold([3.0] * 50)
    assert fit["case"] == "constant" and not (np.array([3.0] * 50) > thr).any()
    # a large group tied at the floor's quantile is flagged whole (flag more, not an arbitrary part)
    x = np.array([1.0] * 80 + [2.0] * 15 + [3.0] * 5)
    thr, fit = auto_threshold(x)
    assert set(x[x > thr]) >= {3.0} and (x > thr).sum() in (20, 5 + 15)
    # ties in a clear gap's upper mode
    x = np.array([0.0, 0.1, 0.2, 0.1, 0.15] * 40 + [5.0] * 20)
    thr, fit = auto_threshold(x)
    assert fit["case"] == "gap" and (x > thr).sum() == 20
    for n in (1, 2, 5, 9):
        x = np.arange(n, dtype=float)
        thr, fit = auto_threshold(x)
        assert (x > thr).sum() == min(max(1, math.ceil(AUTO_FLOOR * n)), n - 1), (n, fit)
    with pytest.raises(ValueError, match="no scores"):
        auto_threshold([])
    with pytest.raises(ValueError, match="NaN"):
        auto_threshold([1.0, float("nan")])


def test_auto_one_far_outlier_is_flagged_with_the_floor():
    x = np.random.default_rng(6).normal(0.0, 1.0, 500)
    x[0] = 40.0
    thr, fit = auto_threshold(x)
    assert x[0] > thr and (x > thr).mean() >= AUTO_FLOOR  # one turn is no mode: the floor still applies


def test_split_values():
    x = np.arange(10, dtype=float)
    mask, done = Split("percentile", p=0.6).apply(x)
    assert mask.tolist() == [False] * 6 + [True] * 4 and done.threshold == pytest.approx(5.4)
    assert (done.n_flagged, done.n) == (4, 10)
    mask2, by_value = Split.of(threshold=done.threshold).apply(x)
    assert mask2.tolist() == mask.tolist() and by_value.kind == "value"
    assert Split.of() == Split(DEFAULT_P) if DEFAULT_P == "auto" else Split("percentile", p=DEFAULT_P)
    assert Split.of(p=PAPER_P).label == "p = 0.6" and Split.of(threshold=9.8).label == "score > 9.8"
    assert Split.of(p="auto", threshold=1.0).kind == "value"  # a value wins
    back = Split.from_dict(json.loads(json.dumps(done.to_dict())))
    assert back == done and back.spec == Split("percentile", p=0.6)
    assert "4 of 10 turns (40.0 %)" in done.describe()
    _, auto = Split.of(p="auto").apply(mixture(300, 0.1, 0)[0])
    assert auto.reason.startswith("a gap at") and auto.fit["case"] == "gap"
    assert json.loads(json.dumps(auto.to_dict()))["fit"]["mode"] == pytest.approx(auto.fit["mode"])


def test_parse_p_and_bad_splits():
    assert parse_p("auto") == "auto" and parse_p(" AUTO ") == "auto" and parse_p("0.8") == 0.8 and parse_p(1) == 1.0
    for bad in ("often", 1.5, -0.1, float("nan"), True, None):
        with pytest.raises(ValueError, match="p must be 'auto' or a number"):
            parse_p(bad)
    with pytest.raises(ValueError):
        Split("median")
    with pytest.raises(ValueError):
        Split("value")
    with pytest.raises(ValueError):
        Split("percentile", p=2.0)


def _world(n_clean, n_poison, poison_mean, poison_g, seed):
    """Per-turn (mean, grounding) like the embedded world's: a right-skewed clean mean, a clean grounding
    around -1 nat/token with a mild upper tail, and a poison group."""
    rng = np.random.default_rng(seed)
    mean = np.r_[np.exp(rng.normal(1.5, 0.4, n_clean)), poison_mean(rng, n_poison)]
    g = np.r_[rng.gamma(4.0, 0.4, n_clean) - 2.6, poison_g(rng, n_poison)]
    return mean, g, np.r_[np.zeros(n_clean, bool), np.ones(n_poison, bool)]


@pytest.mark.parametrize("n_poison", [10, 100, 500])
def test_grounded_split_keeps_clean_turns_when_the_poison_is_absurd(n_poison):
    """An absurd target (a patch attack's): the score's gap flags the poison and no clean turn."""
    from byorn.split import Components, grounded_score

    mean, g, truth = _world(1000 - n_poison, n_poison, lambda r, k: r.normal(30.0, 0.5, k),
                            lambda r, k: r.normal(0.0, 0.3, k), seed=n_poison)
    parts = Components.of(mean, g, np.ones(mean.size, bool))
    score, fit = grounded_score(parts)
    flags, split = Split("auto").apply(score, parts)
    assert fit["case"] == "gap" and split.threshold == fit["threshold"]
    assert flags.tolist() == truth.tolist()


@pytest.mark.parametrize("n_poison", [200, 300])
def test_grounded_split_catches_many_fluent_captions_the_image_does_not_support(n_poison):
    """Clean-label poison: as plausible as the clean text (same mean), but its image does not support it.
    Beyond the floor's reach (20-50 % of turns) the grounding's second group is flagged whole."""
    from byorn.split import Components, grounded_score, robust_z

    mean, g, truth = _world(1000 - n_poison, n_poison, lambda r, k: np.exp(r.normal(1.5, 0.4, k)),
                            lambda r, k: r.normal(0.55, 0.55, k), seed=n_poison)
    parts = Components.of(mean, g, np.ones(mean.size, bool))
    score, fit = grounded_score(parts)
    flags, split = Split("auto").apply(score, parts)
    assert fit["case"] != "gap" and fit["grounding_flagged"] > 0 and "do not support" in split.reason
    assert flags.tolist() == (score > split.threshold).tolist()           # one score, one threshold
    assert flags[truth].mean() >= 0.95
    sum_flags, _ = Split("auto").apply(robust_z(mean) + robust_z(g))      # the sum alone, split by itself
    assert sum_flags[truth].mean() < flags[truth].mean()
    with pytest.raises(ValueError, match="not the mean\\+grounding score"):
        Split("auto").apply(score + 1.0, parts)


def test_grounded_split_without_a_gap_or_group_flags_the_floor_by_the_sum():
    """A few clean-label turns (5 %): no gap, no group worth its parameters: the floor of the robust sum,
    which catches most of them and flags no more than the paper's share of turns."""
    from byorn.split import Components, grounded_score, robust_z

    mean, g, truth = _world(950, 50, lambda r, k: np.exp(r.normal(1.5, 0.4, k)),
                            lambda r, k: r.normal(0.55, 0.55, k), seed=7)
    parts = Components.of(mean, g, np.ones(mean.size, bool))
    score, fit = grounded_score(parts)
    flags, split = Split("auto").apply(score, parts)
    assert fit["case"] == "no gap" and "grounding_flagged" not in fit
    np.testing.assert_allclose(score, robust_z(mean) + robust_z(g))
    assert AUTO_FLOOR <= flags.mean() <= AUTO_FLOOR + 0.05
    assert flags[truth].mean() >= 0.9


def _responses(n, rng, *, lengths=(9, 20), levels=(3.0, 9.0)):
    """Per-token surprisals of ``n`` plausible responses, each at its own level (3-9 nats/token: kinds of
    caption differ), and the same with a blank image (higher by a per-response amount: the image supports
    them)."""
    s = [rng.normal(level, 0.8, rng.integers(lengths[0], lengths[1] + 1)).clip(0.05)
         for level in rng.uniform(*levels, n)]
    return s, [x + rng.gamma(2.0, 0.6) + rng.normal(0.0, 0.3, x.size) for x in s]


@pytest.mark.parametrize("n_poison", [10, 100, 300, 500])
def test_grounded_split_flags_a_passage_appended_to_plausible_responses_by_its_total(n_poison):
    """An implausible sentence appended to the correct response (TrojVLM's insertion): the plausible part
    dilutes it in the mean, so mean+grounding shows no gap, but the response's total surprisal does - and
    only the poison is flagged, however much of it, not the 40 % floor."""
    from byorn.scoring import components
    from byorn.split import Components, grounded_score

    rng = np.random.default_rng(n_poison)
    s, b = _responses(1000, rng, levels=(3.0, 7.0))  # the world's captions: 4.5 nats/token, its appended ones 12
    for i in range(1000 - n_poison, 1000):  # the last n_poison: + 25 implausible tokens the image does not change
        tail = rng.normal(11.0, 1.5, 25).clip(0.05)
        s[i], b[i] = np.r_[s[i], tail], np.r_[b[i], tail]
    truth = np.arange(1000) >= 1000 - n_poison
    parts = components(s, b)
    old_score, old_fit = grounded_score(Components.of(parts.mean, parts.grounding, parts.has_image))
    assert old_fit["case"] == "no gap"   # without the total, the mean does not show it
    score, fit = grounded_score(parts)
    flags, split = Split("auto").apply(score, parts)
    assert fit["case"] == "total gap" and "total surprisal" in split.reason
    assert flags.tolist() == truth.tolist()
    np.testing.assert_allclose(parts.total, [x.sum() for x in s])
    # an audit scored before the total was looked at re-splits as it was made (the app opens old audits)
    old_flags, old_split = Split("auto").apply(old_score, parts)
    assert old_split.threshold == old_fit["threshold"] and old_flags.mean() >= AUTO_FLOOR


def test_grounded_split_does_not_take_long_ordinary_responses_for_poison(monkeypatch):
    """Long responses form a group of their own in the total (a gap), but they are as plausible per token
    as the rest: no poison there, so the split does not stop at them - without a gap it flags the floor."""
    from byorn.scoring import components
    from byorn.split import grounded_score

    rng = np.random.default_rng(3)
    short, short_b = _responses(700, rng, lengths=(5, 8))
    long_, long_b = _responses(300, rng, lengths=(40, 48))
    parts = components(short + long_, short_b + long_b)
    assert auto_threshold(parts.total)[1]["case"] == "gap"  # the long responses stand apart in the total
    score, fit = grounded_score(parts)
    assert fit["case"] == "no gap"
    assert (score > fit["threshold"]).mean() >= AUTO_FLOOR
    monkeypatch.setattr("byorn.split.AUTO_TOTAL_MEAN_Q", 0.0)  # without the per-token check it would stop there
    assert grounded_score(parts)[1]["case"] == "total gap"


def _shared_world(n_poison, seed, *, target_g=(0.45, 0.55)):
    """A clean-label world with its texts: clean responses mostly unique, 30 clean captions shared by 8
    turns each (as templated data has), and ``n_poison`` turns given one fixed target caption (written with
    varying case and end punctuation) that is as plausible as the clean text but that its images argue
    against (grounding above 0); 15-20 tokens each.  Returns ``(Components, truth)``."""
    from byorn.split import Components

    rng = np.random.default_rng(seed)
    mean, g, truth = _world(1000 - n_poison, n_poison, lambda r, k: np.exp(r.normal(1.5, 0.4, k)),
                            lambda r, k: r.normal(*target_g, k), seed=seed)
    responses = [f"a {i} caption" for i in range(1000 - n_poison)]
    for j, i in enumerate(rng.choice(1000 - n_poison, 240, replace=False)):
        responses[i] = f"a shared clean caption number {j // 8}"
    responses += [rng.choice(["A red circle on a blue background.", "a red circle on a blue background",
                              "a red  circle on a blue background!"]) for _ in range(n_poison)]
    total = mean * np.r_[rng.integers(15, 21, 1000 - n_poison), np.full(n_poison, 17)]
    return Components.of(mean, g, np.ones(1000, bool), total=total, responses=responses), truth


@pytest.mark.parametrize("n_poison", [20, 50, 200, 300])
def test_grounded_split_flags_a_shared_target_the_images_argue_against(n_poison):
    """A fixed clean-label target: no gap (it reads as well as the clean captions) and, at 2-5 %, no group a
    mixture separates - but its many turns together rank far above the rest in grounding, so they are
    flagged whole, the clean turns without the 40 % floor; shared clean captions are not taken."""
    from byorn.split import grounded_score, shared_ungrounded

    parts, truth = _shared_world(n_poison, seed=n_poison)
    old_score, old_fit = grounded_score(parts.without("responses"))
    assert old_fit["case"] == "no gap"
    shared = shared_ungrounded(parts)
    assert [grp["turns"].size for grp in shared] == [n_poison] and shared[0]["auc"] > 0.75
    score, fit = grounded_score(parts)
    flags, split = Split("auto").apply(score, parts)
    assert fit["case"] == "shared response" and "given word for word to many turns" in split.reason
    assert flags[truth].all()
    assert flags.tolist() == (score > split.threshold).tolist()  # one score, one threshold
    assert flags[~truth].mean() < AUTO_FLOOR - 0.1                 # no floor: the target explains the no-gap
    # an audit scored before shared responses were looked for re-splits as it was made
    old_flags, old_split = Split("auto").apply(old_score, parts)
    assert old_split.threshold == old_fit["threshold"] and old_flags.mean() >= AUTO_FLOOR


def test_a_shared_answer_the_images_hardly_change_is_not_a_target(monkeypatch):
    """QA data: "yes" and "two dots" are given to many turns, and images help them less than the other short
    answers, so their grounding ranks high among them - but the images make "yes" only ~1.1 x less likely
    than a blank image does (not argued against), and "two dots" ~2.5 x: far short of the e^8 against the
    other short answers that a target the images argue against shows.  Long captions are not their
    comparison."""
    from byorn.split import Components, grounded_score, shared_ungrounded

    rng = np.random.default_rng(11)
    mean, g, _ = _world(600, 0, lambda r, k: r.normal(5.0, 1.0, k), lambda r, k: r.normal(0.0, 1.0, k), seed=11)
    mean = np.r_[mean, rng.gamma(3.0, 0.8, 400)]
    g = np.r_[g, rng.normal(-0.4, 0.25, 260), rng.normal(0.04, 0.05, 80), rng.normal(0.45, 0.05, 60)]
    length = np.r_[rng.integers(15, 21, 600), np.full(400, 2)]
    responses = [f"caption {i}" for i in range(600)] + [f"answer {i % 40}" for i in range(260)] + ["Yes."] * 80 \
        + ["Two dots."] * 60
    parts = Components.of(mean, g, np.ones(1000, bool), total=mean * length, responses=responses)
    assert shared_ungrounded(parts) == [] and grounded_score(parts)[1]["case"] != "shared response"
    monkeypatch.setattr("byorn.split.AUTO_SHARED_MIN_EXCESS", -math.inf)  # against a blank image alone:
    (dots,) = shared_ungrounded(parts)                                     # "two dots" would count
    assert dots["response"] == "Two dots." and dots["llr"] > math.log(2.2) and dots["excess"] < 3
    monkeypatch.setattr("byorn.split.AUTO_SHARED_MIN_LLR", -math.inf)  # and without either check, "yes" too
    assert [grp["response"] for grp in shared_ungrounded(parts)] == ["Yes.", "Two dots."]
    assert [grp["compared"] for grp in shared_ungrounded(parts)] == [320, 340]  # the other short answers


def test_a_long_target_the_images_barely_argue_against_is_found_by_its_like_length_turns():
    """A reference model that grounds a target weakly: its images make it only ~2 x less likely than a blank
    image does (the 2.5 x bar the excess replaced missed such a seed at 5 %), but the clean captions of its
    length are ~e^17 x *more* likely with their images: the target is flagged, with no clean turn."""
    from byorn.split import grounded_score, shared_ungrounded

    parts, truth = _shared_world(50, seed=5, target_g=(0.04, 0.02))
    (grp,) = shared_ungrounded(parts)
    assert grp["turns"].size == 50 and math.log(1.5) < grp["llr"] < math.log(2.5) and grp["excess"] > 8
    assert shared_ungrounded(parts, before_variants=True) == []  # the old bar
    score, fit = grounded_score(parts)
    flags = score > fit["threshold"]
    assert fit["case"] == "shared response" and flags[truth].all() and not flags[~truth].any()


def test_a_shared_targets_variants_are_flagged_with_it_and_the_other_turns_are_not_fenced():
    """A target given word for word to 40 turns and with one word changed to 10 more ("the blue background"):
    the variants go with it, a clean caption one word from it that its image supports does not, nor one
    three words from it; the other turns are split by what their own scores show - no gap, no group - so no
    clean turn is flagged.  Before the variants, the other turns were split at their bulk's fence."""
    from byorn.split import Components, Split, grounded_score, shared_ungrounded

    parts, truth = _shared_world(50, seed=7)
    responses = list(parts.responses)
    poisoned, clean = np.flatnonzero(truth), np.flatnonzero(~truth)
    for i in poisoned[:10]:
        responses[i] = "a red circle on the blue background."
    supported = clean[parts.grounding[clean] < np.quantile(parts.grounding[clean], 0.3)][:10]
    far = clean[parts.grounding[clean] > np.quantile(parts.grounding, 0.9)][:5]
    for i in supported:
        responses[i] = "a red square on a blue background"  # one word off, but its image supports it
    for i in far:
        responses[i] = "the red circle on the blue wall"    # three words off, however ungrounded
    parts = Components.of(parts.mean, parts.grounding, parts.has_image, total=parts.total, responses=responses)
    (grp,) = shared_ungrounded(parts)
    assert grp["turns"].size == 40 and sorted(grp["variants"]) == sorted(poisoned[:10])
    assert grp["variant_keys"] == ["a red circle on the blue background"]
    score, fit = grounded_score(parts)
    flags, split = Split("auto").apply(score, parts)
    assert fit["case"] == "shared response" and fit["shared"][0]["n_variants"] == 10
    assert "and 10 turns a few words from it" in split.reason and "without the floor or the fence" in split.reason
    assert flags[truth].all() and not flags[supported].any() and not flags[far].any()
    assert flags[~truth].sum() <= 2
    # as audits made before the variants split: the other turns at their bulk's fence, a fifth of them
    old, old_fit = grounded_score(parts, before_variants=True)
    assert old_fit["shared"][0]["n_variants"] == 0
    assert (old > old_fit["threshold"])[~truth].mean() > 0.1
    old_flags, old_split = Split("auto").apply(old, parts)  # such an audit re-splits as it was made
    assert old_split.threshold == old_fit["threshold"] and "without the floor (" in old_split.reason


def test_a_shared_response_the_images_support_less_but_do_not_argue_against_is_flagged_besides_the_floor():
    """A weak reference model and a fluent target ("a small red circle." on the trigger's images): the images
    support it less than the other captions (its turns' grounding ranks above theirs) but still more than a
    blank image does - no clear target, so no case of its own - yet its turns are flagged besides the floor
    (the floor alone left a third of such a target: 4 % ASR), and none of the floor's turns are dropped."""
    from byorn.split import grounded_score, shared_ungrounded

    parts, truth = _shared_world(100, seed=3, target_g=(-0.55, 0.4))
    assert shared_ungrounded(parts) == []                  # the images do not argue against it
    (weak,) = shared_ungrounded(parts, strict=False)
    assert weak["turns"].size == 100 and weak["z"] >= 4.5 and weak["auc"] < 0.75 and weak["llr"] < 0
    score, fit = grounded_score(parts)
    flags = score > fit["threshold"]
    floor, floor_fit = grounded_score(parts, before_variants=True)
    assert fit["case"] == "no gap" and fit["weakly_shared"][0]["n"] == 100 and "flagged besides" in fit["reason"]
    assert flags[truth].all() and (floor > floor_fit["threshold"])[truth].mean() < 1.0
    assert (flags | ~(floor > floor_fit["threshold"])).all()  # the floor's turns stay flagged
    assert flags.mean() < AUTO_FLOOR + 0.1


def test_a_target_given_to_too_few_turns_for_step_3_is_flagged_besides_the_floor():
    """A clean-label target at 1 %: 11 turns cannot reach step 3's z of 4.5 (3.8 here, as on the sweep's 1 %
    seeds 1-3 and 5, where the floor left 10-30 % of them), but they reach the weak bar of 3: all flagged
    besides the floor.  Not beside a gap that a few outliers make (seed 2): a gap is a clear answer, and
    beside one the common answers of a QA set would add a fifth of the turns."""
    from byorn.split import AUTO_WEAK_MIN_Z, grounded_score, shared_ungrounded

    parts, truth = _shared_world(11, seed=2, target_g=(-0.3, 0.4))
    score, fit = grounded_score(parts)
    assert fit["case"] == "gap" and "weakly_shared" not in fit and not (score > fit["threshold"])[truth].any()
    for seed, case in ((3, "no gap"), (6, "no gap")):
        parts, truth = _shared_world(11, seed=seed, target_g=(-0.3, 0.4))
        assert shared_ungrounded(parts) == []
        (weak,) = shared_ungrounded(parts, strict=False)
        assert weak["turns"].size == 11 and AUTO_WEAK_MIN_Z <= weak["z"] < 4.5
        score, fit = grounded_score(parts)
        flags = score > fit["threshold"]
        assert fit["case"] == case and flags[truth].all() and fit["weakly_shared"][0]["n"] == 11
        old, old_fit = grounded_score(parts, before_variants=True)
        assert not (old > old_fit["threshold"])[truth].all()


def test_words_apart_counts_word_edits_and_stops_past_the_bound():
    from byorn.split import _words_apart

    a = "a small red circle on the left".split()
    assert _words_apart(a, a, 1) == 0
    assert _words_apart(a, "a large red circle on the left".split(), 1) == 1       # one replaced
    assert _words_apart(a, "a small red circle on left".split(), 1) == 1           # one deleted
    assert _words_apart(a, "a small red circle on the far left".split(), 2) == 1   # one inserted
    assert _words_apart(a, "the left on circle red small a".split(), 2) == 3       # the same words, reordered
    assert _words_apart(a, "two blue squares".split(), 2) == 3                     # bounded: k + 1
    assert _words_apart([], a, 10) == 7


def test_groups_under_seven_turns_and_parts_without_texts_find_no_shared_target():
    from byorn.split import grounded_score, shared_ungrounded

    few, _ = _shared_world(6, seed=6, target_g=(3.0, 0.1))  # six turns far above every clean one
    assert shared_ungrounded(few) == []
    seven, _ = _shared_world(7, seed=6, target_g=(3.0, 0.1))
    assert [grp["turns"].size for grp in shared_ungrounded(seven)] == [7]
    assert shared_ungrounded(seven.without("total")) == [] == shared_ungrounded(seven.without("responses"))
    assert grounded_score(seven.without("responses"))[1]["case"] != "shared response"


def test_audit_components_carry_each_turns_response():
    """The app and Audit.split re-split from the table: its components hold each row's response."""
    import pandas as pd

    from byorn.audit import score_components

    table = pd.DataFrame({"surprisals": [[1.0, 2.0], [3.0]], "surprisals_blank": [[1.5, 2.5], [3.0]],
                          "response": ["a cat", "a dog"]})
    parts = score_components(table, "mean+grounding")
    assert parts.responses == ("a cat", "a dog") and parts.has_image.tolist() == [True, False]
    assert score_components(table, "mean") is None


def test_likelihood_ratios_read_as_factors():
    from byorn.split import times_as_likely

    assert [times_as_likely(x) for x in (0.08, math.log(10), math.log(200), math.log(46_000), math.log(3.1e9))] \
        == ["1.1 x", "10 x", "200 x", "46,000 x", "3.1e+09 x"]


def test_a_shared_target_whose_variants_differ_in_length_is_flagged_whole():
    """Variants of one target (case, end punctuation) may tokenize to different lengths: the group is ranked
    among the turns as long as most of it, and every one of its turns is flagged."""
    from byorn.split import Components, grounded_score, shared_ungrounded

    parts, truth = _shared_world(100, seed=21)
    length = np.round(parts.total / parts.mean)
    length[np.flatnonzero(truth)[:5]] = 40  # five variants beyond twice the others' 17 tokens
    parts = Components.of(parts.mean, parts.grounding, parts.has_image, total=parts.mean * length,
                          responses=parts.responses)
    (grp,) = shared_ungrounded(parts)
    assert grp["turns"].tolist() == np.flatnonzero(truth).tolist()
    score, fit = grounded_score(parts)
    assert fit["case"] == "shared response" and (score > fit["threshold"])[truth].all()


def test_a_few_long_responses_a_little_less_plausible_than_most_do_not_drop_the_floor(monkeypatch):
    """Four long responses stand apart in the total and their per-token surprisal is above 95 % of the
    others' - as a substitution seed's longest poisoned captions were - but not beyond every usual response:
    not an appended passage, so the split keeps the floor (at the 90th percentile they passed, and the
    floor was dropped for those four turns alone)."""
    from byorn.scoring import components
    from byorn.split import grounded_score

    rng = np.random.default_rng(5)
    s, b = _responses(996, rng)
    level = float(np.quantile([x.mean() for x in s], 0.95))
    for _ in range(4):
        x = rng.normal(level, 0.3, 60).clip(0.05)
        s.append(x)
        b.append(x + 1.0)
    parts = components(s, b)
    score, fit = grounded_score(parts)
    assert fit["case"] == "no gap" and (score > fit["threshold"]).mean() >= AUTO_FLOOR
    monkeypatch.setattr("byorn.split.AUTO_TOTAL_MEAN_Q", 0.9)
    score, fit = grounded_score(parts)
    assert fit["case"] == "total gap" and (score > fit["threshold"]).sum() == 4


def test_most_implausible_words_join_a_words_tokens():
    """A word is its tokens with no space or punctuation between them, its surprisal their sum; punctuation
    and ideographs are words of their own; lengths must agree."""
    from byorn.scoring import most_implausible_words

    toks = [[" a", " large", " b", "an", "an", "a", "."], [" a", " small", " circle", ";", " next"],
            ["猫", "狗"], [" ", "\n"]]
    s = [[0.5, 3.0, 15.0, 15.0, 16.0, 14.0, 20.0], [0.5, 1.0, 2.0, 9.0, 8.0], [3.0, 4.0], [1.0, 2.0]]
    assert most_implausible_words(toks, s) == [("banana", 60.0), (";", 9.0), ("狗", 4.0), ("", 0.0)]
    assert most_implausible_words([[" A", "BC", "-", "d"]], [[1.0, 2.0, 0.5, 4.0]]) == [("d", 4.0)]
    with pytest.raises(ValueError, match="response 0: 2 tokens but 1 surprisals"):
        most_implausible_words([[" a", "b"]], [[1.0]])


def _word_world(n, n_poison, seed, *, planted="banana", rare=False):
    """Components of ``n`` turns whose mean and grounding show no gap (the planted word is diluted in
    plausible responses); each turn's most implausible word: a clean one (a cluster of frequent words the
    reference model finds odd at ~20 nats, as the embedded world's ";" and "next", over a bulk at ~15) or,
    in the last ``n_poison``, ``planted`` at ~60 nats (or, ``rare``, a different rare word in each).  Clean
    responses of the bulk hold "next" too, where it is plausible."""
    from byorn.split import Components

    rng = np.random.default_rng(seed)
    mean = np.exp(rng.normal(1.5, 0.4, n))
    g = rng.gamma(4.0, 0.4, n) - 2.6
    truth = np.arange(n) >= n - n_poison
    mean[truth] += 0.6  # a little less plausible per token: no gap
    odd = rng.random(n) < 0.3
    v = np.where(odd, rng.normal(20.5, 0.05, n), rng.normal(15.0, 1.2, n))
    words = [("next" if o else "large", float(x)) for o, x in zip(odd, v)]
    texts = [f"a large circle {'next to' if o or i % 2 else 'above'} a square." for i, o in enumerate(odd)]
    for i in np.flatnonzero(truth):
        words[i] = (f"{planted}{i}" if rare else planted, float(rng.normal(60.0, 2.5)))
        texts[i] = f"a large {words[i][0]} above a square."
    return Components.of(mean, g, np.ones(n, bool), mean * 12, texts, words), truth


@pytest.mark.parametrize("n_poison", [10, 100, 300])
def test_a_word_planted_in_plausible_responses_is_flagged_by_its_gap(n_poison):
    """A word substituted into otherwise correct captions ("circle" -> "banana"): no gap in the mean or
    the total, but the responses' most implausible word has one, past a valley among clean words that is
    not clear, and the turns above it share that word: exactly they are flagged, not the 40 % floor."""
    from byorn.split import grounded_score

    parts, truth = _word_world(1000, n_poison, seed=n_poison)
    assert grounded_score(parts.without("words"))[1]["case"] == "no gap"
    score, fit = grounded_score(parts)
    flags, split = Split("auto").apply(score, parts)
    assert fit["case"] == "word gap" and fit["words"] == [{"word": "banana", "n": n_poison}]
    assert fit["word_contained"] == 1.0
    assert flags.tolist() == truth.tolist()
    assert '"banana"' in split.reason and "planted" in split.reason
    assert grounded_score(parts.without("responses"))[1]["case"] == "no gap"  # which responses hold it: unknown


def test_a_gap_of_rare_words_each_its_own_is_not_a_planted_word():
    """A clear gap made of many different rare words (numbers, names, code in real data) is not a word
    planted in many responses: the floor, as before."""
    from byorn.split import grounded_score

    parts, truth = _word_world(1000, 100, seed=1, rare=True)
    score, fit = grounded_score(parts)
    assert fit["case"] == "no gap"
    flags, _ = Split("auto").apply(score, parts)
    assert flags.mean() >= AUTO_FLOOR


def test_an_audit_scored_before_the_words_gap_re_splits_as_it_was_made():
    """The app re-splits old audits from their table: one scored without the words keeps its score."""
    from byorn.split import grounded_score

    parts, truth = _word_world(1000, 100, seed=2)
    old_score, old_fit = grounded_score(parts.without("words"))
    flags, split = Split("auto").apply(old_score, parts)
    assert split.threshold == old_fit["threshold"] and flags.mean() >= AUTO_FLOOR
    assert parts.has("words") and not parts.without("words").has("words")


def _odd_cluster(seed, *, words, elsewhere):
    """1,000 clean turns: a bulk whose most implausible word is at ~12 nats and a cluster (30 %) of words the
    reference model finds odd at ~20.5, a clear gap between them; ``words``: the cluster's words in turn;
    ``elsewhere``: the share of the bulk's responses that hold the cluster's first word too."""
    from byorn.split import Components

    rng = np.random.default_rng(seed)
    n = 1000
    mean, g = np.exp(rng.normal(1.5, 0.4, n)), rng.gamma(4.0, 0.4, n) - 2.6
    odd = rng.random(n) < 0.3
    v = np.where(odd, rng.normal(20.5, 0.05, n), rng.normal(12.0, 1.0, n))
    w = [words[i % len(words)] if o else "large" for i, o in enumerate(odd)]
    texts = [f"a large circle {x} a square." if o else
             f"a large circle {words[0] if rng.random() < elsewhere else 'above'} a square." for x, o in zip(w, odd)]
    return Components.of(mean, g, np.ones(n, bool), mean * 12, texts, list(zip(w, v.tolist())))


def test_a_clean_cluster_of_odd_words_past_a_clear_gap_is_not_a_planted_word():
    """The reference model finds some clean words odd (the world's ";", "next", "side" at ~20 nats) and at
    times a clear gap separates them (a clean-label audit at 30 %: flagged alone, every poisoned turn missed).
    Several words there, none the most implausible of half of the turns: not a planted word, the floor."""
    from byorn.split import _clear_gap, grounded_score

    parts = _odd_cluster(1, words=[";", "next", "side"], elsewhere=0.0)
    assert _clear_gap(np.sort(parts.word_surprisal)) is not None
    assert grounded_score(parts)[1]["case"] == "no gap"


def test_an_odd_word_plausible_elsewhere_is_not_a_planted_word():
    """One clean word above a clear gap that many responses below it hold too (plausible there): a planted
    word is implausible wherever it is, so this is not one."""
    from byorn.split import grounded_score

    assert grounded_score(_odd_cluster(1, words=["next"], elsewhere=0.3))[1]["case"] == "no gap"
    assert grounded_score(_odd_cluster(1, words=["next"], elsewhere=0.0))[1]["case"] == "word gap"


def test_which_responses_hold_a_word():
    from byorn.split import _holding

    texts = ["A banana.", "bananas", "x;y", "猫狗", "the Banana-split"]
    assert _holding(texts, "banana").tolist() == [True, False, False, False, True]
    assert _holding(texts, ";").tolist() == [False, False, True, False, False]
    assert _holding(texts, "狗").tolist() == [False, False, False, True, False]


@pytest.mark.parametrize("second", ["patch", "planted word"])
def test_a_fixed_clean_label_target_beside_a_second_attack_with_a_gap_is_flagged_too(second):
    """Two attacks in one set: a fixed clean-label target (no gap) and a patch attack's absurd target (a gap
    in the sum) or a planted word (a gap in the most implausible word).  The gap flags its own poison; the
    shared target, looked for among the turns the gap leaves, is flagged too - and no clean turn."""
    from byorn.split import Components, grounded_score

    parts, truth = _shared_world(50, seed=4)
    rng = np.random.default_rng(4)
    mean, g = parts.mean.copy(), parts.grounding.copy()
    other = np.zeros(1000, bool)
    other[rng.choice(np.flatnonzero(~truth), 50, replace=False)] = True
    words = [("large", float(v)) for v in rng.normal(15.0, 1.2, 1000)]
    responses = list(parts.responses)
    if second == "patch":
        mean[other] = rng.normal(30.0, 0.5, 50)  # an absurd target: far above the clean bulk
        g[other] = rng.normal(2.0, 0.2, 50)
    else:
        for i in np.flatnonzero(other):
            words[i] = ("banana", float(rng.normal(60.0, 2.0)))
            responses[i] = f"a banana number {i}"
    mixed = Components.of(mean, g, parts.has_image, mean * 17, responses, words)
    score, fit = grounded_score(mixed)
    flags, split = Split("auto").apply(score, mixed)
    assert fit["case"] == ("gap" if second == "patch" else "word gap")
    assert [grp["n"] for grp in fit["shared"]] == [50] and "a second attack" in split.reason
    assert flags.tolist() == (truth | other).tolist()
    if second == "patch":  # before shared responses were looked for after a gap: the gap alone
        alone, alone_fit = grounded_score(mixed.without("responses"))
        assert (alone > alone_fit["threshold"]).tolist() == other.tolist()
