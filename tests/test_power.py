"""The power simulation that sizes a study before it runs (unet_jax.report.power)."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from unet_jax.report import calibration, power


def test_one_replicate_power_is_the_one_sample_t_tests():
    """One replicate, one fold: the design's test is the t over images, whose power is known
    (noncentral t): an independent check of the simulation."""
    design = calibration.Design('t', 1, 20, sd_run=0.0, sd_image=0.1, sd_residual=0.0)
    effect, n = 0.05, 20
    df, shift = n - 1, effect / (0.1 / np.sqrt(n))
    critical = scipy_stats.t.ppf(0.975, df)
    exact = scipy_stats.nct.sf(critical, df, shift) + scipy_stats.nct.cdf(-critical, df, shift)
    found = power.power(design, effect, simulations=20_000, seed=1)
    assert found == pytest.approx(exact, abs=0.015)


def test_power_grows_with_pre_trainings_and_effect_and_is_alpha_at_none():
    design = calibration.Design('busi', 3, 129, folds=5, sd_fold=0.009, sd_run=0.04,
                                sd_image=0.129, sd_residual=0.164)  # fmt: skip
    rows = power.power_table(design, [(3, 5), (6, 5)], [0.0, 0.04, 0.07], simulations=2000,
                             total_images=647)  # fmt: skip
    three, six = rows
    assert three.power[0] <= 0.065 and six.power[0] <= 0.065  # no effect: the error rate
    assert three.power[1] < three.power[2] and six.power[1] > three.power[1] + 0.15
    assert three.smallest([0.0, 0.04, 0.07]) == 0.07 and np.isnan(three.smallest([0.0], 0.99))


def test_the_command_prints_a_table_per_arrangement(capsys):
    power.main(['--pretrainings=3+5', '--folds=5', '--effects=0.05', '--simulations=200',
                '--sd_run=0.04', '--total_images=400'])  # fmt: skip
    out = capsys.readouterr().out
    assert '| 3 x 5 |' in out and '| 5 x 5 |' in out and '400 in all' in out
    with pytest.raises(SystemExit, match='numbers joined by'):
        power.main(['--pretrainings=three'])


def test_a_finished_study_gives_its_components(tmp_path, capsys):
    from tests import report_fixture

    workdir = str(tmp_path / 'study')
    report_fixture.make_study(workdir, num_test=24)
    design, images = power.design_of_study(workdir)
    assert design.replicates == 3 and 0 < images <= 24 and design.sd_residual > 0  # lesion images
    power.main([f'--study={workdir}', '--pretrainings=3', '--folds=2', '--effects=0.05',
                '--simulations=200'])  # fmt: skip
    out = capsys.readouterr().out
    assert 'first primary comparison' in out and f'{images} in all' in out and '| 3 x 2 |' in out
