"""The report's statistics against scipy/statsmodels and cases with known answers."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from unet_jax.report import analysis, stats


def test_one_replicate_is_the_paired_t_over_images():
    rng = np.random.default_rng(0)
    for n in (3, 12, 40):
        d = rng.normal(0.02, 0.1, (1, n))
        ours = stats.crossed_test(d)
        reference = scipy_stats.ttest_1samp(d[0], 0)
        assert ours.t == pytest.approx(reference.statistic)
        assert ours.p == pytest.approx(reference.pvalue)
        assert ours.df == n - 1
        low, high = reference.confidence_interval(0.95)
        assert (ours.low, ours.high) == (pytest.approx(low), pytest.approx(high))
    constant = stats.crossed_test(np.full((1, 5), 0.1))  # no spread: nothing to test
    assert not constant.defined and np.isnan(constant.p) and np.isnan(constant.low)


def test_crossed_variance_from_the_anova_mean_squares_of_statsmodels():
    # A table with a clear seed and image effect (neither component truncated): the variance
    # of the mean is (MS_seed + MS_image - MS_residual) / (S I), df by Satterthwaite.
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    rng = np.random.default_rng(5)
    num_seeds, num_images = 4, 15
    d = (
        rng.normal(0, 0.03, (num_seeds, 1))
        + rng.normal(0, 0.08, (1, num_images))
        + rng.normal(0, 0.01, (num_seeds, num_images))
    )
    frame = pd.DataFrame(
        dict(
            d=d.ravel(),
            seed=np.repeat(np.arange(num_seeds), num_images),
            image=np.tile(np.arange(num_images), num_seeds),
        )
    )
    table = anova_lm(ols('d ~ C(seed) + C(image)', frame).fit())
    ms = table['sum_sq'] / table['df']
    ms_s, ms_i, ms_e = ms['C(seed)'], ms['C(image)'], ms['Residual']
    assert ms_s > ms_e and ms_i > ms_e
    variance = (ms_s + ms_i - ms_e) / (num_seeds * num_images)
    terms = [(ms_s, num_seeds - 1), (ms_i, num_images - 1), (-ms_e, table['df']['Residual'])]
    df = variance**2 / sum((m / (num_seeds * num_images)) ** 2 / k for m, k in terms)
    ours = stats.crossed_test(d)
    assert ours.estimate == pytest.approx(d.mean())
    assert ours.se == pytest.approx(np.sqrt(variance))
    assert ours.df == pytest.approx(df)
    assert ours.p == pytest.approx(2 * scipy_stats.t.sf(abs(d.mean()) / np.sqrt(variance), df))
    # Without a seed effect (MS_seed below MS_residual) it is the t over images of the
    # seed-averaged differences.
    flat = rng.normal(0, 0.08, (1, num_images)) + rng.normal(0, 0.05, (num_seeds, num_images))
    flat -= flat.mean(axis=1, keepdims=True) - flat.mean()  # no spread of the seed means
    reference = scipy_stats.ttest_1samp(flat.mean(axis=0), 0)
    assert stats.crossed_test(flat).p == pytest.approx(reference.pvalue)


def test_outer_folds_are_pooled_blocks():
    rng = np.random.default_rng(6)
    a, b = rng.normal(0.05, 0.1, 30), rng.normal(0.0, 0.2, 10)
    ours = stats.crossed_test(np.r_[a, b][None, :], blocks=[0] * 30 + [1] * 10)
    w = np.array([30, 10]) / 40
    variance = w[0] ** 2 * a.var(ddof=1) / 30 + w[1] ** 2 * b.var(ddof=1) / 10
    assert ours.estimate == pytest.approx(np.r_[a, b].mean())
    assert ours.se == pytest.approx(np.sqrt(variance))
    terms = [(w[0] ** 2 * a.var(ddof=1) / 30, 29), (w[1] ** 2 * b.var(ddof=1) / 10, 9)]
    assert ours.df == pytest.approx(variance**2 / sum(v**2 / k for v, k in terms))
    with pytest.raises(ValueError, match='block labels'):
        stats.crossed_test(np.zeros((1, 4)), blocks=[0, 1])


def test_an_interaction_is_welchs_test_on_independent_test_sets():
    rng = np.random.default_rng(7)
    x, y = rng.normal(0.08, 0.1, 20), rng.normal(0.01, 0.05, 31)
    ours = stats.unpaired_difference(stats.crossed_test(x[None]), stats.crossed_test(y[None]))
    reference = scipy_stats.ttest_ind(x, y, equal_var=False)
    assert ours.estimate == pytest.approx(x.mean() - y.mean())
    assert ours.t == pytest.approx(reference.statistic)
    assert ours.p == pytest.approx(reference.pvalue)
    assert ours.df == pytest.approx(reference.df)


def test_tost_matches_statsmodels():
    from statsmodels.stats.weightstats import ttost_paired

    rng = np.random.default_rng(8)
    for mean in (0.0, 0.01, 0.03):
        a = rng.normal(0.7, 0.05, 25)
        b = a - rng.normal(mean, 0.02, 25)
        ours = stats.crossed_test((a - b)[None], margin=0.02)
        assert ours.p_tost == pytest.approx(ttost_paired(a, b, -0.02, 0.02)[0])


def test_fixed_sequence_stops_at_the_first_hypothesis_not_rejected():
    assert stats.fixed_sequence([0.01, 0.04]) == ['rejected', 'rejected']
    assert stats.fixed_sequence([0.2, 0.001]) == ['not rejected', 'not reached']
    assert stats.fixed_sequence([0.01, float('nan'), 0.001]) == [
        'rejected', 'not reached', 'not reached',
    ]  # fmt: skip


def test_no_p_value_floor():
    # 456 secondary comparisons (the full default sweep): Holm's first threshold 1.1e-4 must
    # be reachable by a clear difference.
    d = np.random.default_rng(9).normal(0.05, 0.05, (3, 130))
    assert stats.crossed_test(d).p < 0.05 / 456


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(1)
    for p in ([0.01, 0.04, 0.03, 0.2], rng.uniform(0, 0.1, 15), [0.5, 0.5, 0.001]):
        expected = multipletests(p, alpha=0.05, method='holm')[1]
        np.testing.assert_allclose(stats.holm(p), expected)
    with_nan = stats.holm([0.01, math.nan, 0.04])  # a comparison that could not be made
    np.testing.assert_allclose(with_nan, [0.02, math.nan, 0.04])


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
    grid, why = stats.common_log_grid(costs_a, costs_b)
    assert grid[0] == pytest.approx(0.01) and grid[-1] == pytest.approx(1.0) and why == ''
    wa = stats.log_interpolation_weights(costs_a, grid)
    wb = stats.log_interpolation_weights(costs_b, grid)
    np.testing.assert_allclose(wa @ line(costs_a) - wb @ (line(costs_b) - 0.05), 0.05)


def test_a_common_cost_range_must_be_2x_wide_and_measured_every_decade():
    assert stats.common_log_grid([0.1, 0.2], [0.3, 0.5]) == (None, 'the cost ranges do not overlap')
    grid, why = stats.common_log_grid([1.0, 1.48], [1.0, 1.48, 3.0])  # 1.48x: too narrow
    assert grid is None and '1.5x wide (at least 2x needed)' in why
    grid, why = stats.common_log_grid([0.001, 1.0], [0.001, 0.01, 0.1, 1.0])  # 1000x unmeasured
    assert grid is None and 'interpolated across 1e+03x without a measured point' in why
    grid, why = stats.common_log_grid([0.001, 0.01, 0.1, 1.0], [0.002, 0.02, 0.2, 1.0])
    assert grid is not None and grid[0] == pytest.approx(0.002) and why == ''


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


def test_cheapest_within_one_point_of_full_is_chosen_on_validation():
    runs = pd.DataFrame(
        [
            ('full', 0.80, 0.81, 1.0, 1.0),
            ('a', 0.79, 0.805, 0.4, 0.5),  # within 1 point of full on validation
            ('b', 0.81, 0.79, 0.2, 0.3),  # better on test, but 2 points below on validation
            ('c', 0.70, 0.70, 0.01, 0.1),
            ('pretrained', 0.30, 0.31, 0.0, 0.0),
        ],
        columns=['configuration', 'dice_mean', 'val_dice_mean', 'trained_fraction', 'train_flops'],
    )
    assert analysis.cheapest_near_full(runs)['configuration'] == 'a'
    no_flops = runs.assign(train_flops=math.nan)  # older results: by trained parameters
    assert analysis.cheapest_near_full(no_flops)['configuration'] == 'a'
    assert analysis.cheapest_near_full(runs[runs['configuration'] != 'full']) is None


def test_outer_folds_pool_every_image_once_per_seed_as_blocks():
    from unet_jax.report import compare
    from unet_jax.report.load import Study

    rng = np.random.default_rng(10)
    rows, images = [], []
    for configuration, shift in (('a', 0.05), ('b', 0.0)):
        for seed in (0, 1, 2):
            for fold in (0, 1, 2):
                dice = 0.7 + shift + rng.normal(0, 0.1, 8)
                rows.append(dict(target='us', num_train=8, configuration=configuration,
                                 seed=seed, fold=fold, status='done', test_dice=dice.mean()))
                images += [
                    dict(target='us', num_train=8, configuration=configuration, seed=seed,
                         fold=fold, image_id=f'case{fold}_{i}', dice=d, lesion=True)
                    for i, d in enumerate(dice)
                ]  # fmt: skip
    study = Study('w', {'pretrain_dirs': ['p']}, pd.DataFrame(rows), pd.DataFrame(images),
                  pd.DataFrame(), [])  # fmt: skip
    scores = compare.Scores(study)
    test = compare.compare(scores, 'us', 8, 'a', 'b', stats.Settings())
    assert (test.num_replicates, test.num_images) == (3, 24)  # every image of every fold
    seeds, ids, (a, b) = scores.labelled('us', 8, ['a', 'b'])
    folds = [int(i[4]) for i in ids]
    expected = stats.crossed_test(a - b, blocks=folds)
    assert test.se == pytest.approx(expected.se) and test.df == pytest.approx(expected.df)
    assert test.se != pytest.approx(stats.crossed_test(a - b).se)  # the folds are blocks
