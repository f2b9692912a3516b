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
        ours = stats.design_test(d)
        reference = scipy_stats.ttest_1samp(d[0], 0)
        assert ours.t == pytest.approx(reference.statistic)
        assert ours.p == pytest.approx(reference.pvalue)
        assert ours.df == n - 1
        low, high = reference.confidence_interval(0.95)
        assert (ours.low, ours.high) == (pytest.approx(low), pytest.approx(high))
    constant = stats.design_test(np.full((1, 5), 0.1))  # no spread: nothing to test
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
    ours = stats.design_test(d)
    assert ours.estimate == pytest.approx(d.mean())
    assert ours.se == pytest.approx(np.sqrt(variance))
    assert ours.df == pytest.approx(df)
    assert ours.p == pytest.approx(2 * scipy_stats.t.sf(abs(d.mean()) / np.sqrt(variance), df))
    # Without a seed effect (MS_seed below MS_residual) it is the t over images of the
    # seed-averaged differences.
    flat = rng.normal(0, 0.08, (1, num_images)) + rng.normal(0, 0.05, (num_seeds, num_images))
    flat -= flat.mean(axis=1, keepdims=True) - flat.mean()  # no spread of the seed means
    reference = scipy_stats.ttest_1samp(flat.mean(axis=0), 0)
    assert stats.design_test(flat).p == pytest.approx(reference.pvalue)


def _frame(d: np.ndarray) -> pd.DataFrame:
    """d[p, f, i] as a long table (image ids i within each fold)."""
    p, f, i = np.meshgrid(*(np.arange(n) for n in d.shape), indexing='ij')
    return pd.DataFrame(dict(d=d.ravel(), p=p.ravel(), f=f.ravel(), i=i.ravel()))


def _mean_squares(formula: str, frame: pd.DataFrame) -> pd.Series:
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    table = anova_lm(ols(formula, frame).fit())
    return table['sum_sq'] / table['df'], table['df']


def _satterthwaite(terms, n):
    variance = sum(m for m, _ in terms) / n
    return variance, variance**2 / sum((m / n) ** 2 / k for m, k in terms)


def test_outer_folds_nested_design_against_statsmodels_mean_squares():
    """Images nested in folds, a pre-training effect shared by every fold, a fold effect shared
    by every pre-training: with every component present, the variance of the mean is
    (MS_p + MS_f - MS_pf) / (P F I) from statsmodels' ANOVA of the nested model, which is
    the crossed analysis of the pre-training x fold table of run means."""
    rng = np.random.default_rng(6)
    num_p, num_f, num_i = 4, 5, 12
    d = (
        rng.normal(0, 0.05, (num_p, 1, 1)) + rng.normal(0, 0.15, (1, num_f, 1))
        + rng.normal(0, 0.03, (num_p, num_f, 1)) + rng.normal(0, 0.1, (1, num_f, num_i))
        + rng.normal(0, 0.1, (num_p, num_f, num_i))
    )  # fmt: skip
    ms, df = _mean_squares('d ~ C(p) + C(f) + C(p):C(f) + C(f):C(i)', _frame(d))
    ms_p, ms_f, ms_pf = ms['C(p)'], ms['C(f)'], ms['C(p):C(f)']
    ms_i, ms_e = ms['C(f):C(i)'], ms['Residual']
    assert ms_p > ms_pf and ms_pf > ms_e and ms_i > ms_e and ms_f > ms_pf + ms_i - ms_e
    variance, satterthwaite = _satterthwaite(
        [(ms_p, df['C(p)']), (ms_f, df['C(f)']), (-ms_pf, df['C(p):C(f)'])], num_p * num_f * num_i
    )
    folds = np.repeat(np.arange(num_f), num_i)
    ours = stats.design_test(d.reshape(num_p, -1), folds=folds)
    assert (ours.num_replicates, ours.num_folds, ours.num_images) == (num_p, num_f, num_f * num_i)
    assert ours.estimate == pytest.approx(d.mean())
    assert ours.se**2 == pytest.approx(variance)
    assert ours.df == pytest.approx(satterthwaite)
    # the same as the crossed analysis of the pre-training x fold table of run means
    table = d.mean(axis=2)
    ms_rows = num_f * table.mean(axis=1).var(ddof=1)
    ms_columns = num_p * table.mean(axis=0).var(ddof=1)
    residual = table - table.mean(1, keepdims=True) - table.mean(0, keepdims=True) + table.mean()
    ms_residual = np.sum(residual**2) / ((num_p - 1) * (num_f - 1))
    assert ours.se**2 == pytest.approx((ms_rows + ms_columns - ms_residual) / (num_p * num_f))
    names = dict(ours.components)
    assert names['pre-training'] == pytest.approx((ms_p - ms_pf) / (num_f * num_i))
    assert names['fold'] == pytest.approx((ms_f - ms_pf - ms_i + ms_e) / (num_p * num_i))
    assert names['run'] == pytest.approx((ms_pf - ms_e) / num_i)
    assert names['image'] == pytest.approx((ms_i - ms_e) / num_p)
    assert names['residual'] == pytest.approx(ms_e)
    # A fold effect shared by every pre-training is counted once: blocks added as if
    # independent (the replaced test) give a much smaller variance here.
    from unet_jax.report import calibration

    _, blocked, _ = calibration.blocked_crossed_moments(d.reshape(num_p, -1), folds)
    assert blocked < 0.5 * ours.se**2


def test_a_component_estimated_at_or_below_zero_weighs_nothing():
    rng = np.random.default_rng(16)
    num_p, num_f, num_i = 3, 4, 10
    d = rng.normal(0, 0.1, (num_p, num_f, num_i))  # no pre-training, fold or run effect
    d -= d.mean(axis=(1, 2), keepdims=True) - d.mean()  # pre-training means equal: MS_p = 0
    ms, df = _mean_squares('d ~ C(p) + C(f) + C(p):C(f) + C(f):C(i)', _frame(d))
    ours = stats.design_test(d.reshape(num_p, -1), folds=np.repeat(np.arange(num_f), num_i))
    names = dict(ours.components)
    assert names['pre-training'] == 0.0
    kept = {
        'fold': (ms['C(f)'] - ms['C(p):C(f)'] - ms['C(f):C(i)'] + ms['Residual']) > 0,
        'run': ms['C(p):C(f)'] > ms['Residual'],
        'image': ms['C(f):C(i)'] > ms['Residual'],
    }
    levels = {'fold': num_f, 'run': num_p * num_f, 'image': num_f * num_i}
    expected = sum(names[k] / levels[k] for k in kept if kept[k]) + names['residual'] / d.size
    assert ours.se**2 == pytest.approx(expected)


def test_folds_of_unequal_size_use_every_image_for_the_estimate():
    rng = np.random.default_rng(17)
    d = rng.normal(0.03, 0.1, (3, 31))
    folds = np.r_[[0] * 11, [1] * 10, [2] * 10]
    ours = stats.design_test(d, folds=folds)
    assert ours.estimate == pytest.approx(d.mean())
    trimmed = np.r_[0:10, 11:31]  # the variance from 10 images per fold (the first of fold 0)
    assert ours.se == pytest.approx(stats.design_test(d[:, trimmed], folds=folds[trimmed]).se)
    with pytest.raises(ValueError, match='fold labels'):
        stats.design_test(np.zeros((1, 4)), folds=[0, 1])


def test_an_external_set_is_crossed_with_every_run_against_statsmodels():
    """Every fold's run scores every external image: pre-training, fold and image crossed;
    with every component present V = (MS_p + MS_f + MS_i - MS_pf - MS_pi - MS_fi + MS_e) /
    (P F I)."""
    rng = np.random.default_rng(18)
    num_p, num_f, num_i = 3, 4, 9
    d = (
        rng.normal(0, 0.05, (num_p, 1, 1)) + rng.normal(0, 0.05, (1, num_f, 1))
        + rng.normal(0, 0.1, (1, 1, num_i)) + rng.normal(0, 0.03, (num_p, num_f, 1))
        + rng.normal(0, 0.03, (num_p, 1, num_i)) + rng.normal(0, 0.03, (1, num_f, num_i))
        + rng.normal(0, 0.01, (num_p, num_f, num_i))
    )  # fmt: skip
    ms, df = _mean_squares(
        'd ~ C(p) + C(f) + C(i) + C(p):C(f) + C(p):C(i) + C(f):C(i)', _frame(d)
    )
    signs = {'C(p)': 1, 'C(f)': 1, 'C(i)': 1, 'C(p):C(f)': -1, 'C(p):C(i)': -1,
             'C(f):C(i)': -1, 'Residual': 1}  # fmt: skip
    variance, satterthwaite = _satterthwaite(
        [(sign * ms[k], df[k]) for k, sign in signs.items()], d.size
    )
    ours = stats.design_test(d)
    assert all(v > 0 for _, v in ours.components)  # every component kept here
    assert ours.layout == 'crossed' and ours.num_folds == num_f
    assert ours.se**2 == pytest.approx(variance)
    assert ours.df == pytest.approx(satterthwaite)


def test_two_targets_sharing_pre_trainings_are_paired_by_pre_training():
    rng = np.random.default_rng(19)
    shared = rng.normal(0, 0.2, (5, 1))  # the pre-trainings' effect, the same on both targets
    own = lambda sd, n: rng.normal(0, sd, (5, 1)) + rng.normal(0, 0.1, (1, n))  # + image effects
    x = shared + own(0.05, 30) + rng.normal(0.05, 0.1, (5, 30))
    y = shared + own(0.05, 20) + rng.normal(0.0, 0.05, (5, 20))
    a, b = (stats.design_test(m, replicates=range(5)) for m in (x, y))
    paired = stats.difference_of_gaps(a, b)
    assert paired.layout == 'difference'
    assert paired.estimate == pytest.approx(x.mean() - y.mean())
    # by hand: the pre-trainings' differences of means, plus each target's image component
    ms = [_mean_squares('d ~ C(p) + C(i)', _frame(m[:, None, :]))[0] for m in (x, y)]
    image = [max(0.0, (m['C(i)'] - m['Residual']) / 5) / n for m, n in zip(ms, (30, 20))]
    row_difference = x.mean(axis=1) - y.mean(axis=1)
    assert dict(paired.components)['pre-training'] > 0  # kept: the formula below
    assert paired.se**2 == pytest.approx(row_difference.var(ddof=1) / 5 + sum(image))
    independent = stats.unpaired_difference(a, b)  # counts the shared effect twice
    assert paired.se < 0.5 * independent.se
    # without shared replicates: the independent (Welch) difference
    other = stats.design_test(y, replicates=range(5, 10))
    assert stats.difference_of_gaps(a, other).se == pytest.approx(
        stats.unpaired_difference(a, other).se
    )


def test_an_interaction_is_welchs_test_on_independent_test_sets():
    rng = np.random.default_rng(7)
    x, y = rng.normal(0.08, 0.1, 20), rng.normal(0.01, 0.05, 31)
    ours = stats.unpaired_difference(stats.design_test(x[None]), stats.design_test(y[None]))
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
        ours = stats.design_test((a - b)[None], margin=0.02)
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
    assert stats.design_test(d).p < 0.05 / 456


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


def test_outer_folds_nest_every_image_in_the_fold_that_tested_it():
    from unet_jax.report import compare
    from unet_jax.report.load import Study
    from unet_jax.report.scores import Scores

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
            # an external set: every fold's run of the seed scores the same 5 images
            for fold in (0, 1, 2):
                images += [
                    dict(target='us_on_ext', num_train=8, configuration=configuration,
                         seed=seed, fold=fold, image_id=f'ext{i}', dice=0.6 + shift + d,
                         lesion=True)
                    for i, d in enumerate(rng.normal(0, 0.1, 5))
                ]  # fmt: skip
    study = Study('w', {'pretrain_dirs': ['p0', 'p1', 'p2'], 'seeds': [0, 1, 2]},
                  pd.DataFrame(rows), pd.DataFrame(images), pd.DataFrame(), [])  # fmt: skip
    scores = Scores(study)
    test = compare.compare(scores, 'us', 8, 'a', 'b', stats.Settings())
    assert (test.num_replicates, test.num_folds, test.num_images) == (3, 3, 24)
    found = scores.labelled('us', 8, ['a', 'b'])
    assert not found.crossed and [int(i[4]) for i in found.images] == list(found.folds)
    a, b = found.values
    expected = stats.design_test(a - b, folds=found.folds)
    assert test.se == pytest.approx(expected.se) and test.df == pytest.approx(expected.df)
    assert test.se != pytest.approx(stats.design_test(a - b).se)  # the folds count
    assert dict(test.components).keys() >= {'pre-training', 'fold', 'run', 'image', 'residual'}
    external = scores.labelled('us_on_ext', 8, ['a', 'b'])
    assert external.crossed and external.values[0].shape == (3, 3, 5)
    ext = compare.compare(scores, 'us_on_ext', 8, 'a', 'b', stats.Settings())
    assert ext.layout == 'crossed' and ext.num_folds == 3


def test_the_dice_table_counts_every_outer_folds_lesion_images():
    from unet_jax.report import tables
    from unet_jax.report.load import Study

    images = pd.DataFrame(
        [dict(target='us', num_train=8, configuration='a', seed=s, fold=f,
              image_id=f'case{f}_{i}', dice=0.5, lesion=i < 7)
         for s in (0, 1) for f in (0, 1, 2) for i in range(8)]
    )  # fmt: skip
    study = Study('w', {}, pd.DataFrame(), images, pd.DataFrame(), [])
    cell = pd.DataFrame(dict(num_lesion=[7.0]))  # what one fold's run recorded
    assert tables._lesion_images(study, 'us', 8, cell) == 21  # 3 folds x 7 lesion images
    empty = Study('w', {}, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), [])
    assert tables._lesion_images(empty, 'us', 8, cell) == 7
