"""The report's test is trusted because simulations with every source of variation of the
study's design show its error rates (unet_jax.report.calibration).

Measured (benchmarks/calibration_table.py --simulations 10000, seed 11), the design's test /
the test it replaced (folds as independent blocks), false-positive rate at 0.05, at 0.002:

| design (3 pre-trainings x 5 folds x 130 unless named) | design's test | folds as blocks |
|---|---|---|
| no pre-training or fold component | 0.010, 0.0002 | 0.039, 0.0011 |
| pre-training sd 0.02 (half the run's) | 0.028, 0.0016 | 0.096, 0.0074 |
| pre-training sd 0.06 (1.5x the run's) | 0.058, 0.0078 | 0.277, 0.0633 |
| fold sd 0.04 (the run's) | 0.030, 0.0016 | 0.229, 0.0342 |
| JSRT-like (pre-training 0.01, image 0.02, residual 0.03) | 0.016, 0.0002 | 0.052, 0.0014 |
| 5 pre-trainings, pre-training sd 0.06 | 0.045, 0.0023 | 0.288, 0.0829 |

What holds in every design: the false-positive rate at 0.05 at most 0.065 and 95% CI coverage
at least 0.93 (the test allows for every component). What does not: with 3 pre-trainings a
test that allows for a pre-training and a fold component it cannot see is conservative where
they are absent (0.010 at 0.05 with neither: the price of 2 and 4 degrees of freedom for
them), and where 3 pre-trainings carry most of the variance it rejects at 0.002 about 3x too
often (Satterthwaite's df of a sum dominated by a 2-df mean square); with 5 pre-trainings both
come back towards nominal. The lower bound at 0.05 is asserted where the design's components
are present, the bound at 0.002 (0.004) everywhere but there (0.010). Pooling components
that test non-significant at 0.25 (Bancroft) raised the no-component rate to 0.036 but
rejected at 0.077 (0.029 at 0.002) with the larger pre-training component, so it is not used.
"""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from unet_jax.report import calibration, stats

SIMULATIONS = {1: 20_000, 2: 10_000, 5: 10_000}  # per design, by number of folds (fixed seeds)
LIMITS_002 = {'3 x 5 folds x 130, pre-training sd 0.06': 0.010}
# designs whose components are all present: the rate at 0.05 is at least 0.035 there
NOMINAL = {d.name for d in calibration.DESIGNS} | {
    '3 x 5 folds x 130, pre-training sd 0.06', '5 x 5 folds x 130, pre-training sd 0.06'
}


@pytest.mark.parametrize(
    'design', calibration.DESIGNS + calibration.FOLD_DESIGNS, ids=lambda d: d.name
)
def test_false_positive_rate_and_coverage_with_every_source_of_variation(design):
    rates = calibration.error_rates(
        design, calibration.design_t, name='design t',
        simulations=SIMULATIONS[design.folds], effect=0.03, seed=11,
    )  # fmt: skip
    assert rates.false_positive_05 <= 0.065, rates
    if design.name in NOMINAL:
        assert rates.false_positive_05 >= 0.035, rates
    assert rates.false_positive_002 <= LIMITS_002.get(design.name, 0.004), rates
    assert rates.coverage >= 0.93, rates
    assert rates.coverage <= 0.97 or design.name not in NOMINAL, rates


@pytest.mark.parametrize('index', [1, 2, 3], ids=['pre-training 0.02', '0.06', 'fold 0.04'])
def test_the_test_with_folds_as_independent_blocks_fails_the_same_check(index):
    """The report's test before: a pre-training shared by every fold counted once per fold,
    the fold effect not estimated."""
    design = calibration.FOLD_DESIGNS[index]
    rates = calibration.error_rates(
        design, calibration.folds_as_blocks_t, name='folds as blocks',
        simulations=6_000, effect=0.03, seed=11,
    )  # fmt: skip
    assert rates.false_positive_05 > 0.065 and rates.coverage < 0.93, rates


def test_the_percentile_bootstrap_it_replaced_fails_the_same_check():
    design = calibration.DESIGNS[0]  # 3 seeds x 12 images, the medium study's structure
    rates = calibration.error_rates(
        design, calibration.percentile_bootstrap(resamples=2000), name='bootstrap',
        simulations=1500, effect=0.03, seed=11,
    )  # fmt: skip
    assert rates.false_positive_05 > 0.065 and rates.coverage < 0.93, rates


def test_power_at_the_minimum_detectable_difference_is_80_percent():
    design = calibration.DESIGNS[0]
    variance = (
        design.sd_run**2 / design.replicates
        + design.sd_image**2 / design.images
        + design.sd_residual**2 / (design.replicates * design.images)
    )
    df = design.images - 1  # the image term dominates this design's variance
    mdd = (scipy_stats.t.ppf(0.975, df) + scipy_stats.t.ppf(0.8, df)) * np.sqrt(variance)
    rates = calibration.error_rates(
        design, calibration.design_t, name='design t', simulations=10_000, effect=mdd, seed=3
    )
    assert 0.75 <= rates.power <= 0.85, rates
    one = stats.design_test(design.simulate(np.random.default_rng(0), 1)[0][0])
    assert one.mdd == pytest.approx(
        (scipy_stats.t.ppf(0.975, one.df) + scipy_stats.t.ppf(0.8, one.df)) * one.se
    )


def test_a_design_estimated_from_a_test_recovers_its_components():
    truth = calibration.Design(
        'truth', 6, 300, folds=5, sd_pretraining=0.03, sd_fold=0.02, sd_run=0.04,
        sd_image=0.08, sd_residual=0.1,
    )  # fmt: skip
    d, folds = truth.simulate(np.random.default_rng(1), 1)
    found = calibration.design_of(stats.design_test(d[0], folds=folds))
    assert (found.replicates, found.folds, found.images) == (6, 5, 300)
    assert found.sd_image == pytest.approx(0.08, rel=0.1)
    assert found.sd_residual == pytest.approx(0.1, rel=0.05)
    assert found.sd_run == pytest.approx(0.04, rel=0.25)
    assert 0.005 < found.sd_pretraining < 0.08  # 6 pre-trainings say little about their spread
    assert found.skewness < 0.4  # normal image effects
    skewed = calibration.Design('skewed', 1, 2000, sd_run=0, sd_residual=0, skewness=1.3)
    one = stats.design_test(skewed.simulate(np.random.default_rng(2), 1)[0][0])
    assert calibration.design_of(one).skewness == pytest.approx(1.3, abs=0.25)
    assert 'pre-training' in calibration.describe(found)


@pytest.mark.parametrize(
    'designs', calibration.INTERACTION_DESIGNS, ids=lambda d: f'{d[0].name} / {d[1].name}'
)
def test_a_target_interaction_paired_by_pre_training_holds_its_error_rates(designs):
    """The difference of two targets' gaps (the primary endpoint's interaction and the
    sources report's source x direction x target), both fine-tuned from the same
    pre-trainings (shared effects): paired by pre-training it holds 0.05; the Welch
    difference of two tests taken as independent is not what the design is, and with
    pre-training effects of different sizes on the two targets it is not trusted."""
    a, b = designs
    rates = calibration.interaction_error_rates(a, b, simulations=10_000, effect=0.03, seed=5)
    assert rates.false_positive_05 <= 0.065, rates
    assert rates.false_positive_002 <= 0.010, rates
    assert rates.coverage >= 0.93, rates
