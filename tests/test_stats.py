"""The statistics behind the verdicts: McNemar, the paired bootstrap, the t-interval over seeds, the verdict words."""

import itertools
import math

import numpy as np
import pytest
import scipy.stats

from vggedu.stats import judge, mcnemar, paired_bootstrap, paired_over_images, seed_paired_interval, verdict


def _vectors(both, a_only, b_only, neither):
    """Correctness vectors with the given counts of (both right, only A, only B, both wrong) images."""
    a = [1] * both + [1] * a_only + [0] * b_only + [0] * neither
    b = [1] * both + [0] * a_only + [1] * b_only + [0] * neither
    return np.array(a), np.array(b)


def _exact_p(b, c):
    """Two-sided exact McNemar p-value by hand: twice the smaller binomial tail, at most 1."""
    n = b + c
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n)


# --- McNemar -------------------------------------------------------------------------------------------------------


def test_mcnemar_tiny_case_by_hand():
    a, b = _vectors(both=10, a_only=1, b_only=6, neither=3)
    result = mcnemar(a, b)
    assert (result["a_only"], result["b_only"], result["n"]) == (1, 6, 20)
    assert result["p_value"] == pytest.approx(2 * (math.comb(7, 0) + math.comb(7, 1)) / 2**7)  # 0.125
    assert result["p_value"] == pytest.approx(0.125)


@pytest.mark.parametrize("counts", [(50, 3, 12, 5), (0, 20, 9, 1), (100, 7, 7, 0), (5, 0, 4, 2), (30, 40, 1, 9)])
def test_mcnemar_p_value_matches_scipy_and_hand(counts):
    a, b = _vectors(*counts)
    a_only, b_only = counts[1], counts[2]
    result = mcnemar(a, b)
    assert (result["a_only"], result["b_only"]) == (a_only, b_only)
    assert result["p_value"] == pytest.approx(scipy.stats.binomtest(a_only, a_only + b_only, 0.5).pvalue)
    assert result["p_value"] == pytest.approx(_exact_p(a_only, b_only))


def test_mcnemar_counts_on_shuffled_images_and_bools():
    rng = np.random.default_rng(1)
    a, b = rng.random(500) < 0.7, rng.random(500) < 0.8
    result = mcnemar(a, b)
    assert result["a_only"] == int(np.sum(a & ~b)) and result["b_only"] == int(np.sum(~a & b))
    assert result["difference"] == pytest.approx(b.mean() - a.mean())


def test_mcnemar_no_discordant_images_gives_p_one():
    a, b = _vectors(both=8, a_only=0, b_only=0, neither=4)
    result = mcnemar(a, b)
    assert result == {"a_only": 0, "b_only": 0, "n": 12, "p_value": 1.0, "difference": 0.0}


def test_mcnemar_difference_is_b_minus_a():
    a, b = _vectors(both=10, a_only=1, b_only=6, neither=3)
    assert mcnemar(a, b)["difference"] == pytest.approx(5 / 20)
    assert mcnemar(b, a)["difference"] == pytest.approx(-5 / 20)
    assert (mcnemar(b, a)["a_only"], mcnemar(b, a)["b_only"]) == (6, 1)


@pytest.mark.parametrize(
    ("a", "b", "words"),
    [
        ([1, 0, 1], [1, 0], "same images"),
        ([1, 2, 0], [1, 0, 0], "only 0/1"),
        ([1, 0.5, 0], [1, 0, 0], "only 0/1"),
        ([1, np.nan], [1, 0], "only 0/1"),
        (["right", "wrong"], [1, 0], "only 0/1"),
        ([], [], "non-empty"),
        ([[1, 0], [0, 1]], [[1, 0], [0, 1]], "1-D"),
    ],
)
def test_correctness_vectors_are_checked(a, b, words):
    with pytest.raises(ValueError, match=words):
        mcnemar(a, b)
    with pytest.raises(ValueError, match=words):
        paired_bootstrap(a, b, n_resamples=10)


# --- Paired bootstrap ----------------------------------------------------------------------------------------------


def test_bootstrap_is_deterministic_for_a_seed():
    a, b = _vectors(both=60, a_only=8, b_only=15, neither=17)
    first = paired_bootstrap(a, b, n_resamples=2000, seed=3)
    assert paired_bootstrap(a, b, n_resamples=2000, seed=3) == first
    assert paired_bootstrap(a, b, n_resamples=2000, seed=4) != first


def test_bootstrap_interval_contains_the_observed_difference():
    a, b = _vectors(both=60, a_only=8, b_only=15, neither=17)
    result = paired_bootstrap(a, b, n_resamples=2000, confidence=0.9)
    assert result["difference"] == pytest.approx(0.07)
    assert result["low"] < result["difference"] < result["high"]
    assert result["confidence"] == 0.9


def test_bootstrap_interval_matches_the_normal_approximation():
    # Var of the mean of per-image differences (+1, -1, 0) is (p_b + p_c - (p_c - p_b)^2) / n.
    a, b = _vectors(both=600, a_only=80, b_only=150, neither=170)
    result = paired_bootstrap(a, b, n_resamples=4000)
    p_a, p_b = 0.08, 0.15
    half = 1.96 * math.sqrt((p_a + p_b - (p_b - p_a) ** 2) / 1000)
    assert result["high"] - result["low"] == pytest.approx(2 * half, rel=0.1)


def test_bootstrap_is_narrower_with_more_images():
    small = paired_bootstrap(*_vectors(both=60, a_only=8, b_only=15, neither=17), n_resamples=2000)
    large = paired_bootstrap(*_vectors(both=6000, a_only=800, b_only=1500, neither=1700), n_resamples=200)
    assert large["difference"] == pytest.approx(small["difference"])
    assert large["high"] - large["low"] < (small["high"] - small["low"]) / 5  # sqrt(100) = 10 in theory


def test_bootstrap_of_identical_vectors_is_zero():
    a = np.random.default_rng(0).random(300) < 0.6
    assert paired_bootstrap(a, a.copy(), n_resamples=500) == {
        "difference": 0.0,
        "low": 0.0,
        "high": 0.0,
        "confidence": 0.95,
    }


def test_bootstrap_arguments_are_checked():
    a, b = _vectors(both=5, a_only=1, b_only=2, neither=2)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(a, b, confidence=95)
    with pytest.raises(ValueError, match="n_resamples"):
        paired_bootstrap(a, b, n_resamples=0)


# --- Per seed over images ------------------------------------------------------------------------------------------


def test_paired_over_images_per_seed_rows_and_agreement():
    better = [_vectors(50, 2, 9, 9), _vectors(50, 3, 7, 10), _vectors(50, 1, 12, 7)]
    result = paired_over_images(better, n_resamples=300, seed=5)
    assert result["agree"] is True
    assert [row["b_only"] for row in result["per_seed"]] == [9, 7, 12]
    for (a, b), row in zip(better, result["per_seed"]):
        assert {k: row[k] for k in ("a_only", "b_only", "n", "p_value", "difference")} == mcnemar(a, b)
        assert row["low"] <= row["difference"] <= row["high"]
    third = paired_bootstrap(*better[2], n_resamples=300, seed=7)  # seed i uses seed + i
    assert (result["per_seed"][2]["low"], result["per_seed"][2]["high"]) == (third["low"], third["high"])


def test_seeds_disagree_when_one_goes_the_other_way_or_is_level():
    reversed_seed = [_vectors(50, 2, 9, 9), _vectors(50, 9, 2, 9)]
    level_seed = [_vectors(50, 2, 9, 9), _vectors(50, 4, 4, 12)]
    assert paired_over_images(reversed_seed, n_resamples=100)["agree"] is False
    assert paired_over_images(level_seed, n_resamples=100)["agree"] is False
    assert paired_over_images([_vectors(50, 9, 2, 9), _vectors(50, 5, 1, 14)], n_resamples=100)["agree"] is True
    with pytest.raises(ValueError, match="empty"):
        paired_over_images([])


# --- t-interval over seeds -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "confidence"),
    [
        ([0.90, 0.91, 0.89], [0.92, 0.925, 0.90], 0.95),
        ([88.1, 87.5, 88.9, 88.0, 87.7], [89.0, 88.1, 89.5, 88.2, 88.6], 0.95),
        ([0.80, 0.82], [0.81, 0.86], 0.90),
        ([0.5, 0.6, 0.7, 0.55], [0.45, 0.62, 0.61, 0.50], 0.99),
    ],
)
def test_seed_interval_matches_scipy_t_interval(a, b, confidence):
    d = np.array(b) - np.array(a)
    sem = d.std(ddof=1) / math.sqrt(d.size)
    low, high = scipy.stats.t.interval(confidence, d.size - 1, loc=d.mean(), scale=sem)
    result = seed_paired_interval(a, b, confidence=confidence)
    assert result["low"] == pytest.approx(low) and result["high"] == pytest.approx(high)
    assert result["mean"] == pytest.approx(d.mean()) and result["sd"] == pytest.approx(d.std(ddof=1))
    assert result["n_seeds"] == d.size and result["differences"] == pytest.approx(d.tolist())


def test_three_seeds_use_t_4_303_and_say_so():
    result = seed_paired_interval([0.90, 0.91, 0.89], [0.92, 0.925, 0.90])
    half = 4.303 * result["sd"] / math.sqrt(3)
    assert (result["high"] - result["low"]) / 2 == pytest.approx(half, rel=1e-3)
    assert result["note"] == "only 3 seeds: the interval is wide and its t quantile large (4.30 at 95 %)"
    assert "12.71" in seed_paired_interval([1, 2], [2, 4])["note"]
    assert seed_paired_interval([1, 2, 3, 4, 5], [2, 4, 3, 5, 7])["note"] == "5 seeds: t quantile 2.78 at 95 %"


def test_seed_interval_sign_is_b_minus_a():
    result = seed_paired_interval([0.90, 0.91, 0.89], [0.92, 0.925, 0.90])
    flipped = seed_paired_interval([0.92, 0.925, 0.90], [0.90, 0.91, 0.89])
    assert result["mean"] > 0
    assert (flipped["low"], flipped["high"]) == pytest.approx((-result["high"], -result["low"]))


def test_identical_differences_give_a_point_interval():
    for a, b in [([0.1, 0.2, 0.3], [0.2, 0.3, 0.4]), ([88.0, 90.5], [89.5, 92.0]), ([1, 2, 3], [1, 2, 3])]:
        result = seed_paired_interval(a, b)  # 0.3 - 0.2 != 0.2 - 0.1 in floats: rounding is not spread
        assert result["sd"] == 0.0
        assert result["low"] == result["high"] == result["mean"] == pytest.approx(b[0] - a[0])


@pytest.mark.parametrize(
    ("a", "b", "words"),
    [
        ([0.9], [0.91], "at least 2 seeds"),
        ([0.9, 0.8], [0.91, 0.82, 0.7], "same seeds"),
        ([[0.9, 0.8]], [[0.91, 0.82]], "1-D"),
        ([0.9, np.nan], [0.91, 0.82], "finite"),
    ],
)
def test_seed_interval_inputs_are_checked(a, b, words):
    with pytest.raises(ValueError, match=words):
        seed_paired_interval(a, b)


# --- Verdicts ------------------------------------------------------------------------------------------------------

GRID = [-2.0, -1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0, 2.0]
INTERVALS = [(low, high) for low, high in itertools.product(GRID, GRID) if low <= high]
SUPPORTS, CONTRADICTS, UNRESOLVED = "supports the paper", "contradicts the paper", "not resolved at this size"


@pytest.mark.parametrize(
    ("low", "high", "words"),
    [(0.1, 2.0, SUPPORTS), (-2.0, -0.1, CONTRADICTS), (-0.1, 0.5, UNRESOLVED), (0.0, 1.0, UNRESOLVED)],
)
def test_verdict_greater_cases(low, high, words):
    assert verdict(low, high, expected="greater") == words
    assert verdict(low, high) == words  # "greater" is the default


@pytest.mark.parametrize("margin", [0.0, 0.1, 0.5, 1.0])
def test_verdicts_are_symmetric(margin):
    flip = {SUPPORTS: CONTRADICTS, CONTRADICTS: SUPPORTS, UNRESOLVED: UNRESOLVED}
    seen = set()
    for low, high in INTERVALS:
        greater = verdict(low, high, expected="greater", margin=margin)
        seen.add(greater)
        assert greater == verdict(-high, -low, expected="less", margin=margin)
        assert verdict(-high, -low, expected="greater", margin=margin) == flip[greater]
        assert verdict(low, high, expected="less", margin=margin) == flip[greater]
        if margin > 0:
            assert verdict(low, high, expected="equal", margin=margin) == verdict(
                -high, -low, expected="equal", margin=margin
            )
    assert seen == {SUPPORTS, CONTRADICTS, UNRESOLVED}


@pytest.mark.parametrize(
    ("low", "high", "words"),
    [
        (-0.4, 0.3, SUPPORTS),  # any gain is below the 0.5 margin
        (-3.0, -1.0, SUPPORTS),  # clearly worse: still "does not improve"
        (-0.2, 0.6, UNRESOLVED),  # a gain of 0.5 or more is not ruled out
        (0.6, 1.0, CONTRADICTS),  # a gain larger than the margin
        (0.2, 0.5, UNRESOLVED),  # touching the margin is not below it
    ],
)
def test_a_no_gain_claim_is_tested_one_sided(low, high, words):
    assert verdict(low, high, expected="not greater", margin=0.5) == words
    with pytest.raises(ValueError, match="needs margin > 0"):
        verdict(low, high, expected="not greater")


@pytest.mark.parametrize(
    ("low", "high", "words"),
    [
        (-0.4, 0.3, SUPPORTS),  # inside ±0.5: level
        (-0.6, 0.3, UNRESOLVED),  # reaches past the margin
        (-0.6, 0.6, UNRESOLVED),
        (0.6, 1.0, CONTRADICTS),  # wholly above the margin
        (-2.0, -0.7, CONTRADICTS),  # wholly below it
        (0.2, 0.8, UNRESOLVED),  # straddles the margin
        (-0.5, 0.2, UNRESOLVED),  # touching the margin is not inside it
    ],
)
def test_verdict_equal_is_equivalence_within_margin(low, high, words):
    assert verdict(low, high, expected="equal", margin=0.5) == words


def test_verdict_margin_for_a_direction():
    assert verdict(0.2, 0.8, expected="greater", margin=0.1) == SUPPORTS
    assert verdict(0.05, 0.8, expected="greater", margin=0.1) == UNRESOLVED
    assert verdict(-0.8, -0.05, expected="greater", margin=0.1) == UNRESOLVED
    assert verdict(-0.8, -0.2, expected="greater", margin=0.1) == CONTRADICTS


@pytest.mark.parametrize(
    ("low", "high", "kwargs", "words"),
    [
        (0.5, 0.1, {}, "lower end first"),
        (0.0, 0.1, {"expected": "bigger"}, "'greater', 'less', 'equal' or 'not greater'"),
        (0.0, 0.1, {"expected": "equal"}, "margin > 0"),
        (0.0, 0.1, {"margin": -0.1}, "margin"),
        (float("nan"), 0.1, {}, "finite"),
        (0.0, float("inf"), {}, "finite"),
    ],
)
def test_verdict_errors(low, high, kwargs, words):
    with pytest.raises(ValueError, match=words):
        verdict(low, high, **kwargs)


def test_judge_writes_one_line():
    assert judge(0.009, 0.038, expected="greater", estimate=0.024) == "supports the paper: +2.4 points [+0.9, +3.8]"
    assert judge(-0.038, -0.009, expected="greater") == "contradicts the paper: [-3.8, -0.9] points"
    assert (
        judge(-0.004, 0.003, expected="equal", margin=0.01)
        == "supports the paper (level within ±1.0 points): [-0.4, +0.3] points"
    )
    assert (
        judge(-1.2, 0.4, expected="less", estimate=-0.4, unit="%", scale=1)
        == "not resolved at this size: -0.4 % [-1.2, +0.4]"
    )


def test_judge_over_images_gives_a_verdict_per_seed_and_one_for_all():
    from vggedu.stats import judge_over_images

    better = [_vectors(400, 5, 40, 55), _vectors(400, 6, 38, 56)]
    result = judge_over_images(better, n_resamples=500)
    assert [row["verdict"] for row in result["per_seed"]] == ["supports the paper"] * 2
    assert result["verdict"] == "supports the paper" and result["line"].startswith("supports the paper: per seed +")
    assert math.isclose(result["mean"], ((40 - 5) / 500 + (38 - 6) / 500) / 2)
    # swapped, the same evidence contradicts the paper; "less" mirrors "greater"
    swapped = [(b, a) for a, b in better]
    assert judge_over_images(swapped, n_resamples=500)["verdict"] == "contradicts the paper"
    assert judge_over_images(swapped, expected="less", n_resamples=500)["verdict"] == "supports the paper"
    # one seed level: the seeds do not agree, so nothing is decided
    mixed = [better[0], _vectors(400, 20, 20, 60)]
    result = judge_over_images(mixed, n_resamples=500)
    assert [row["verdict"] for row in result["per_seed"]] == ["supports the paper", "not resolved at this size"]
    assert result["verdict"] == "not resolved at this size"
    with pytest.raises(ValueError, match="'greater' or 'less'"):
        judge_over_images(better, expected="equal")


def test_a_claim_that_is_not_the_papers_gets_its_own_three_words():
    from vggedu.stats import CHANGE_WORDS

    assert verdict(0.01, 0.03, words=CHANGE_WORDS) == "helps"
    assert verdict(-0.03, -0.01, words=CHANGE_WORDS) == "hurts"
    assert verdict(-0.01, 0.03, words=CHANGE_WORDS) == "not resolved at this size"
    assert (
        judge(-0.03, -0.01, expected="greater", estimate=-0.02, words=CHANGE_WORDS) == "hurts: -2.0 points [-3.0, -1.0]"
    )
    assert verdict(0.01, 0.03) == "supports the paper"  # the default stays the paper's words
