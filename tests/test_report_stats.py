"""The report's statistics against scipy/statsmodels and cases with known answers."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from unet_jax.report import analysis, stats


def test_paired_t_matches_scipy():
    rng = np.random.default_rng(0)
    for n in (3, 5, 12):
        a, b = rng.normal(0.7, 0.05, n), rng.normal(0.68, 0.05, n)
        ours = stats.paired_t(a, b)
        reference = scipy_stats.ttest_rel(a, b)
        assert ours.t == pytest.approx(reference.statistic)
        assert ours.p == pytest.approx(reference.pvalue)
        assert ours.df == n - 1
    single = stats.paired_t([0.9], [0.5])
    assert single.mean == pytest.approx(0.4) and math.isnan(single.t) and math.isnan(single.p)
    constant = stats.paired_t([0.8, 0.9, 1.0], [0.7, 0.8, 0.9])  # equal differences
    assert math.isnan(constant.t) and constant.df == 2


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(1)
    for p in ([0.01, 0.04, 0.03, 0.2], rng.uniform(0, 0.1, 15), [0.5, 0.5, 0.001]):
        expected = multipletests(p, alpha=0.05, method='holm')[1]
        np.testing.assert_allclose(stats.holm(p), expected)
    with_nan = stats.holm([0.01, math.nan, 0.04])  # a comparison that could not be made
    np.testing.assert_allclose(with_nan, [0.02, math.nan, 0.04])


def test_bootstrap_spread_of_an_additive_table_is_known():
    # x[s, i] = seed effect + image effect: a resampled mean is mean(a over drawn seeds) +
    # mean(b over drawn images), whose variance is var(a)/S + var(b)/I (population variances).
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 0.03, 5), rng.normal(0, 0.1, 40)
    x = 0.7 + a[:, None] + b[None, :]
    means = stats.bootstrap_means(x, resamples=40_000, seed=3)
    assert means.mean() == pytest.approx(x.mean(), abs=1e-3)
    expected = math.sqrt(a.var() / a.size + b.var() / b.size)
    assert means.std() == pytest.approx(expected, rel=0.03)


def test_bootstrap_interval_covers_the_true_mean():
    # 10 seeds x 100 images crossed, with a seed effect, an image effect and noise around a
    # known mean: the 95% CI covers it in about 95% of simulated studies (with fewer seeds
    # and a large seed effect it covers less: the module doc gives the numbers).
    rng = np.random.default_rng(4)
    trials, covered = 400, 0
    for _ in range(trials):
        x = (
            0.05
            + rng.normal(0, 0.02, (10, 1))
            + rng.normal(0, 0.08, (1, 100))
            + rng.normal(0, 0.05, (10, 100))
        )
        interval = stats.bootstrap_interval(x, resamples=1000, seed=5)
        covered += interval.low <= 0.05 <= interval.high
    assert 0.91 <= covered / trials <= 0.98


def test_paired_difference_p_tost_and_t():
    rng = np.random.default_rng(6)
    big = 0.08 + rng.normal(0, 0.05, (4, 50))
    d = stats.paired_difference(big, margin=0.02, resamples=4000)
    assert d.interval.low > 0 and d.p < 0.01 and d.p_tost > 0.5  # clear difference
    per_seed = big.mean(axis=1)
    assert d.t_test.t == pytest.approx(scipy_stats.ttest_1samp(per_seed, 0).statistic)

    tiny = 0.002 + rng.normal(0, 0.01, (4, 50))
    e = stats.paired_difference(tiny, margin=0.02, resamples=4000)
    assert e.p_tost < 0.01  # equivalent within 0.02
    # TOST at 0.05 decides as the 90% interval inside (-margin, margin) does.
    means = stats.bootstrap_means(tiny, resamples=4000)
    low, high = np.percentile(means, [5, 95])
    assert (e.p_tost < 0.05) == (-0.02 < low and high < 0.02)

    zero = stats.paired_difference(np.zeros((3, 10)), resamples=1000)
    assert zero.p == 1.0 and zero.interval.low == zero.interval.high == 0.0


def test_bootstrap_is_reproducible_and_seeded():
    x = np.random.default_rng(7).normal(size=(3, 20))
    first = stats.bootstrap_interval(x, resamples=500, seed=1)
    assert stats.bootstrap_interval(x, resamples=500, seed=1) == first
    assert stats.bootstrap_interval(x, resamples=500, seed=2) != first


def test_share_ranked_first():
    rng = np.random.default_rng(8)
    base = rng.normal(0.6, 0.1, (3, 30))
    x = np.stack([base + 0.2, base, base - 0.1])  # the first is always best
    np.testing.assert_allclose(stats.share_ranked_first(x, resamples=500), [1, 0, 0])


def test_log_interpolation_on_a_fixed_table():
    costs, dice = [1.0, 10.0, 100.0], np.array([0.2, 0.5, 0.8])
    grid = [1.0, 10**0.5, 10.0, 10**1.5, 100.0]
    weights = stats.log_interpolation_weights(costs, grid)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    np.testing.assert_allclose(weights @ dice, [0.2, 0.35, 0.5, 0.65, 0.8])
    with pytest.raises(ValueError, match='outside'):
        stats.log_interpolation_weights(costs, [0.5])


def test_matched_budget_difference_of_two_known_curves():
    # A: Dice = 0.1 + 0.1 log10(cost) at its own k costs; B: the same line lowered by 0.05,
    # at other costs. At equal cost A - B is 0.05 everywhere on the common range.
    costs_a, costs_b = np.array([0.01, 0.1, 1.0]), np.array([0.003, 0.05, 0.4, 1.0])
    line = lambda c: 0.1 + 0.1 * np.log10(c)
    grid = stats.common_log_grid(costs_a, costs_b)
    assert grid[0] == pytest.approx(0.01) and grid[-1] == pytest.approx(1.0)
    wa = stats.log_interpolation_weights(costs_a, grid)
    wb = stats.log_interpolation_weights(costs_b, grid)
    np.testing.assert_allclose(wa @ line(costs_a) - wb @ (line(costs_b) - 0.05), 0.05)
    assert stats.common_log_grid([0.1, 0.2], [0.3, 0.5]) is None  # no overlap


def test_pareto_front_on_a_fixed_table():
    costs = [1, 2, 2, 3, 4, 5, 0.5]
    dice = [0.5, 0.4, 0.6, 0.55, 0.7, 0.7, math.nan]
    # cost 1 (0.5), then cost 2's better point (0.6), then cost 4 (0.7); cost 5 does not beat
    # it, cost 3 does not beat 0.6, nan is never on the front.
    assert stats.pareto_front(costs, dice).tolist() == [0, 2, 4]


def test_still_improving_rule():
    steps = np.arange(0, 101, 10)
    plateau = np.r_[np.linspace(0, 0.8, 5), np.full(6, 0.8)]
    assert stats.still_improving(steps, plateau, 100) == (False, pytest.approx(0.0))
    rising = plateau.copy()
    rising[-1] = 0.82  # step 100 > 80: the last 20% beats the best before by 0.02
    flag, gain = stats.still_improving(steps, rising, 100)
    assert flag and gain == pytest.approx(0.02)
    rising[-1] = 0.803  # within the 0.005 tolerance
    assert stats.still_improving(steps, rising, 100)[0] is False
    flag, gain = stats.still_improving([0, 20], [0.1, 0.5], 100)  # no evaluation after 80
    assert flag is None and math.isnan(gain)


def test_cheapest_within_one_point_of_full_on_a_fixed_table():
    runs = pd.DataFrame(
        [
            ('full', 0.80, 0.795, 1.0, 1.0),
            ('a', 0.797, 0.77, 0.4, 0.5),  # within 1 point and inside full's CI
            ('b', 0.791, 0.76, 0.2, 0.3),  # within 1 point but below full's CI (0.795)
            ('c', 0.70, 0.68, 0.01, 0.1),
            ('pretrained', 0.30, math.nan, 0.0, 0.0),
        ],
        columns=['configuration', 'dice_mean', 'dice_ci_low', 'trained_fraction', 'train_flops'],
    )
    assert analysis.cheapest_near_full(runs)['configuration'] == 'a'
    wide = runs.assign(dice_ci_low=runs['dice_ci_low'] - 0.1)  # full's CI reaches below 0.79
    assert analysis.cheapest_near_full(wide)['configuration'] == 'b'
    no_flops = runs.assign(train_flops=math.nan)  # older results: by trained parameters
    assert analysis.cheapest_near_full(no_flops)['configuration'] == 'a'
    assert analysis.cheapest_near_full(runs[runs['configuration'] != 'full']) is None
