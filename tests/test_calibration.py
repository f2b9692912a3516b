"""The report's test is trusted because simulations at the study's own sizes show its error
rates (unet_jax.report.calibration): false-positive rate at 0.05 within [0.035, 0.065] and at
0.002 at most 0.004, 95% CI coverage within [0.93, 0.97], at 3 seeds x 12 images and at 3 seeds
x 5 outer folds x 130 images, with normal and skewed image effects and a seed-heavy design.
The percentile bootstrap the report used before fails the same check."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from unet_jax.report import calibration, stats

SIMULATIONS = {1: 20_000, 5: 6_000}  # per design, by number of folds (fixed seeds)


@pytest.mark.parametrize('design', calibration.DESIGNS, ids=lambda d: d.name)
def test_false_positive_rate_and_coverage_at_the_study_sizes(design):
    rates = calibration.error_rates(
        design, calibration.crossed_t, name='crossed t',
        simulations=SIMULATIONS[design.folds], effect=0.03, seed=11,
    )  # fmt: skip
    assert 0.035 <= rates.false_positive_05 <= 0.065, rates
    assert rates.false_positive_002 <= 0.004, rates
    assert 0.93 <= rates.coverage <= 0.97, rates


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
        design.sd_replicate**2 / design.replicates
        + design.sd_image**2 / design.images
        + design.sd_residual**2 / (design.replicates * design.images)
    )
    df = design.images - 1  # the image term dominates this design's variance
    mdd = (scipy_stats.t.ppf(0.975, df) + scipy_stats.t.ppf(0.8, df)) * np.sqrt(variance)
    rates = calibration.error_rates(
        design, calibration.crossed_t, name='crossed t', simulations=10_000, effect=mdd, seed=3
    )
    assert 0.75 <= rates.power <= 0.85, rates
    one = stats.crossed_test(design.simulate(np.random.default_rng(0), 1)[0][0])
    assert one.mdd == pytest.approx(
        (scipy_stats.t.ppf(0.975, one.df) + scipy_stats.t.ppf(0.8, one.df)) * one.se
    )


def test_a_design_estimated_from_data_recovers_its_components():
    truth = calibration.Design('truth', 5, 400, sd_replicate=0.02, sd_image=0.08, sd_residual=0.01)
    d = truth.simulate(np.random.default_rng(1), 1)[0][0]
    found = calibration.design_of(d)
    assert (found.replicates, found.images) == (5, 400)
    assert found.sd_image == pytest.approx(0.08, rel=0.1)
    assert found.sd_residual == pytest.approx(0.01, rel=0.05)
    assert 0.005 < found.sd_replicate < 0.05  # 5 replicates say little about their spread
    assert found.skewness < 0.4  # normal image effects
    skewed = calibration.Design('skewed', 1, 2000, sd_replicate=0, sd_residual=0, skewness=1.3)
    assert calibration.design_of(skewed.simulate(np.random.default_rng(2), 1)[0][0]).skewness == (
        pytest.approx(1.3, abs=0.25)
    )


@pytest.mark.parametrize(
    'designs', calibration.INTERACTION_DESIGNS, ids=lambda d: f'{d[0].name} / {d[1].name}'
)
def test_the_target_interaction_holds_its_error_rates_at_the_speckle_study_sizes(designs):
    """The Welch difference of two crossed tests (report.sources' source x direction x target
    interaction, and the primary endpoint's), at the sizes of the :quick and :real speckle
    studies, with their own implementation checked against stats.unpaired_difference.

    Measured (20,000 simulations each): quick 0.0504 at 0.05, 0.0035 at 0.002, coverage 0.950;
    real 0.0511 at 0.05, 0.0049 at 0.002, coverage 0.952. Where 3 seeds carry most of the
    variance (the real design: each seed's pre-trainings differ between sources), the crossed
    test rejects at 0.002 about 2.5x too often, alone as well as in the difference (0.0050 in
    40,000 simulations), so the bound at 0.002 is 3x nominal here, and the sources report
    simulates its own design."""
    a, b = designs
    rates = calibration.interaction_error_rates(a, b, simulations=20_000, effect=0.03, seed=5)
    assert 0.035 <= rates.false_positive_05 <= 0.065, rates
    assert rates.false_positive_002 <= 0.006, rates
    assert 0.93 <= rates.coverage <= 0.97, rates
    rng = np.random.default_rng(0)
    tests = [stats.crossed_test(d.simulate(rng, 1)[0][0], blocks=d.simulate(rng, 1)[1]) for d in (a, b)]
    welch = stats.unpaired_difference(tests[1], tests[0])
    variance = tests[0].se**2 + tests[1].se**2
    assert welch.se**2 == pytest.approx(variance)
    assert welch.df == pytest.approx(
        variance**2 / (tests[0].se**4 / tests[0].df + tests[1].se**4 / tests[1].df)
    )
