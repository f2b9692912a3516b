"""The speckle test: a study of several pre-training sources (sources=), the gap per source,
the source x direction and source x direction x target interactions (checked against an
independent computation on fixed data), and the comparison of separately run studies."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from configs import layerwise
from tests.test_study import FakeTrainer
from unet_jax import errors, io_utils, layout
from unet_jax.config import target_sets
from unet_jax.report import contrasts, sources, sources_compare, sources_page
from unet_jax.report.load import load
from unet_jax.study import checks, runner

IMAGES = ['a', 'b', 'c', 'd', 'e']


def source_of(config) -> str:
    """The source a fine-tune starts from (its pre-training folder's study), '' for others."""
    parts = config.init_from.split(os.sep)
    return parts[parts.index(layout.SOURCES_DIR) + 1] if layout.SOURCES_DIR in parts else ''


def fixed_dice(config, image: int) -> float:
    """A made-up, fixed per-image Dice: the speckled source widens the shallow-vs-deep gap on
    us by 0.1 and on xray by 0.04, with seed x image noise so that every test is defined."""
    spec, seed = config.finetune.train, config.seed
    target = 'us' if config.data.name == 'synthetic_ultrasound' else 'xray'
    value = 0.6 + 0.03 * image + 0.01 * ((7 * seed + 3 * image) % 5)
    k = int(spec.split(':')[1]) if ':' in spec else 0
    if spec.startswith('first:'):
        value += 0.05 + 0.01 * k
        if source_of(config) == 'natural_speckle':
            value += 0.1 if target == 'us' else 0.04
            # the change varies by seed, by image and by both
            value += 0.006 * seed + 0.002 * image + 0.004 * ((seed * 5 + image * 2) % 3)
    return value


class SourceTrainer(FakeTrainer):
    """The fake trainer with five test images scored by fixed_dice."""

    def train(self, config, workdir):
        results = super().train(config, workdir)
        if config.init_from and layout.PRETRAIN_DIR not in os.path.basename(workdir):
            dice = [fixed_dice(config, i) for i in range(len(IMAGES))]
            results['test_per_image'] = dict(
                ids=IMAGES, dice=dice, iou=dice, hd95=[1.0] * 5, lesion=[True] * 5,
                pred_pixels=[3] * 5,
            )  # fmt: skip
            results['test']['dice'] = float(np.mean(dice))
            io_utils.write_text_atomically(
                os.path.join(workdir, layout.RESULTS_FILE), json.dumps(results)
            )
        return results


def tiny_sources_config(sources_arg='natural+natural_speckle'):
    config = layerwise.get_config(f'quick,seeds=3,targets=us+xray,sources={sources_arg},ks=1+2+3')
    config.model.depth, config.model.base_width, config.data.image_size = 2, 4, 32
    return config


@pytest.fixture(scope='module')
def sources_study(tmp_path_factory):
    """One study of two sources with the fake trainer: (config, workdir, trainer, outcome)."""
    config = tiny_sources_config()
    workdir = str(tmp_path_factory.mktemp('sources') / 'w')
    trainer = SourceTrainer()
    outcome = runner.main(config, workdir, run_fn=trainer)
    return config, workdir, trainer, outcome


def test_sources_config_pretrains_each_source_three_times_with_one_sweep():
    config = tiny_sources_config('natural+natural_speckle+natural_imaging')
    assert config.study.sources == ('natural', 'natural_speckle', 'natural_imaging')
    assert config.study.pretrain_seeds == 3
    assert config.study.families == ('shallow_to_deep', 'deep_to_shallow')
    checks.check_config(config)
    one = runner.source_config(config, 'natural_imaging')
    assert one.study.pretrain.data.name == 'synthetic_natural_imaging'
    assert one.study.sources == () and one.study.targets.to_dict() == config.study.targets.to_dict()
    real = layerwise.get_config('real,data_root=/data,sources=natural+natural_speckle')
    assert real.study.source_pretrain.natural.data.name == 'synthetic_natural'  # not ECSSD
    assert real.data.outer_folds == 2 and real.data.image_size == 128
    with pytest.raises(errors.ConfigError, match='source= and sources='):
        layerwise.get_config('quick,source=natural,sources=natural+natural_speckle')
    with pytest.raises(errors.ConfigError, match='at least two'):
        layerwise.get_config('quick,sources=natural')
    with pytest.raises(errors.ConfigError, match="'speckle' is not one of"):
        layerwise.get_config('quick,sources=natural+speckle')
    # source= with real pre-trains on that generated source, not on ECSSD
    config = layerwise.get_config('real,data_root=/d,source=natural_speckle')
    assert config.study.pretrain.data.name == 'synthetic_natural_speckle'


def test_a_study_of_sources_runs_every_source_and_compares_their_gaps(sources_study):
    config, workdir, trainer, outcome = sources_study
    assert outcome['failed'] == [] and set(outcome['sources']) == {'natural', 'natural_speckle'}
    plan = json.loads(open(os.path.join(workdir, layout.SOURCES_FILE)).read())
    assert plan['sources'] == ['natural', 'natural_speckle']
    for name in plan['sources']:
        folder = Path(layout.source_dir(workdir, name))
        assert (folder / 'pretrain_2' / layout.RESULTS_FILE).exists()  # three pre-trainings
        assert (folder / 'report' / 'report.html').exists()
        pretrain = json.loads((folder / 'pretrain' / layout.RESULTS_FILE).read_text())
        assert pretrain['config']['data']['name'] == f'synthetic_{name}'
    text = open(outcome['report']).read()
    assert '## Pre-trainings' in text and 'synthetic_natural_speckle' in text
    assert 'Each of the 3 seeds fine-tunes from its own pre-training' in text
    assert 'Source x direction x target' in text and 'k >= 2' in text
    assert f'({sources_page.FIGURE_FILE})' in text
    assert os.path.getsize(os.path.join(workdir, 'report', sources_page.FIGURE_FILE)) > 10_000
    page = open(os.path.join(workdir, 'report', 'sources.html')).read()  # as report.html is
    assert page.startswith('<!DOCTYPE html>') and 'Source x direction x target' in page
    assert 'data:image/png;base64,' in page
    rows = list(csv.DictReader(open(os.path.join(workdir, 'report', 'sources.csv'))))
    assert {r['kind'] for r in rows} == {'source_gap', 'source_change', 'source_target'}
    os.remove(outcome['report'])
    from unet_jax.report import __main__ as report_cli

    assert report_cli.main([workdir]) == 0  # python -m unet_jax.report W re-makes them all
    assert open(outcome['report']).read() == text
    calls = len(trainer.calls)
    assert runner.main(config, workdir, run_fn=trainer)['failed'] == []
    assert len(trainer.calls) == calls  # resumed: nothing trained twice
    with pytest.raises(ValueError, match='runs whole'):
        runner.main(config, workdir, sweep_index='0', run_fn=trainer)


def _crossed(x: np.ndarray) -> tuple[float, float, float]:
    """Mean, variance of the mean and df of x[seed, image] from the variance components of the
    two-way random-effects model, computed with loops (an independent implementation)."""
    r, n = x.shape
    grand = float(np.mean(x))
    rows = [sum(x[i]) / n for i in range(r)]
    cols = [sum(x[:, j]) / r for j in range(n)]
    ss_r = n * sum((m - grand) ** 2 for m in rows)
    ss_i = r * sum((m - grand) ** 2 for m in cols)
    ss_e = sum((x[i, j] - rows[i] - cols[j] + grand) ** 2 for i in range(r) for j in range(n))
    ms_r, ms_i, ms_e = ss_r / (r - 1), ss_i / (n - 1), ss_e / ((r - 1) * (n - 1))
    assert ms_r > ms_e and ms_i > ms_e  # the fixed data keep both components
    s2_r, s2_i, s2_e = (ms_r - ms_e) / n, (ms_i - ms_e) / r, ms_e
    variance = s2_r / r + s2_i / n + s2_e / (r * n)
    terms = [(ms_r / (r * n), r - 1), (ms_i / (r * n), n - 1), (-ms_e / (r * n), (r - 1) * (n - 1))]
    df = variance**2 / sum(t**2 / d for t, d in terms)
    return grand, variance, df


def _paired(u: np.ndarray, x: np.ndarray) -> tuple[float, float, float]:
    """Mean, variance and df of mean(u) - mean(x), two targets' [seed, image] changes whose
    seeds share pre-trainings, with loops: the pre-training component of the difference is
    the variance of the seeds' differences of means less what each target's residual puts
    into them (truncated at 0); the image components are each target's own."""
    r = u.shape[0]
    row_difference = [sum(u[i]) / u.shape[1] - sum(x[i]) / x.shape[1] for i in range(r)]
    spread = sum((v - sum(row_difference) / r) ** 2 for v in row_difference) / (r - 1)
    terms, residual_in_rows, image_part = [], 0.0, []
    for m in (u, x):
        n = m.shape[1]
        grand = float(np.mean(m))
        rows = [sum(m[i]) / n for i in range(r)]
        cols = [sum(m[:, j]) / r for j in range(n)]
        ms_i = r * sum((c - grand) ** 2 for c in cols) / (n - 1)
        ss_e = sum((m[i, j] - rows[i] - cols[j] + grand) ** 2 for i in range(r) for j in range(n))
        ms_e = ss_e / ((r - 1) * (n - 1))
        residual_in_rows += ms_e / n
        image_part.append((ms_i, ms_e, n))
    kept = spread > residual_in_rows
    # each mean square once, with its net coefficient (Satterthwaite over independent ones)
    terms = [(spread / r, r - 1)] if kept else []
    for ms_i, ms_e, n in image_part:
        image = float(ms_i > ms_e)  # the image component kept: s2_i = (ms_i - ms_e) / r
        # V gains s2_i / n, and s2_e / (r n) unless the pre-training term already holds it
        terms += [(image * ms_i / (r * n), n - 1),
                  ((-image + (not kept)) * ms_e / (r * n), (r - 1) * (n - 1))]  # fmt: skip
    variance = sum(t for t, _ in terms)
    df = variance**2 / sum(t**2 / d for t, d in terms if t)
    return float(np.mean(u) - np.mean(x)), variance, df


def _matrix(config, target_name: str, source: str, k_values, seeds=(0, 1, 2)):
    """gap[seed, image] averaged over k_values, from fixed_dice directly."""
    out = np.zeros((len(seeds), len(IMAGES)))
    for s in seeds:
        for i in range(len(IMAGES)):
            run = config.copy_and_resolve_references()
            run.seed = s
            run.data.name = target_sets.SYNTHETIC_TARGETS[target_name]
            run.init_from = os.path.join('w', layout.SOURCES_DIR, source, 'pretrain')
            gap = 0.0
            for k in k_values:
                run.finetune.train = f'first:{k}'
                shallow = fixed_dice(run, i)
                run.finetune.train = f'last:{k}'
                gap += shallow - fixed_dice(run, i)
            out[s, i] = gap / len(k_values)
    return out


def test_the_interactions_equal_an_independent_computation_on_fixed_data(sources_study):
    config, workdir, _, _ = sources_study
    dirs = [layout.source_dir(workdir, n) for n in ('natural', 'natural_speckle')]
    loaded = [load(d) for d in dirs]
    found = sources_compare.compare_studies(loaded, ['natural', 'natural_speckle'])
    ks = sorted({int(c.k_set.split('= ')[1]) for c in found.changes if c.k_set[:3] == 'k ='})
    assert ks == [1, 2, 3]
    by = {(c.target, c.k_set): c for c in found.changes}
    assert {(c.kind, c.a, c.b) for c in found.changes} == {
        ('source_change', 'natural_speckle', 'natural')
    }  # gap with a minus gap with b (the earlier source)
    for label, chosen in ((contrasts.ALL_K, ks), (contrasts.K_FROM_2, ks[1:]), ('k = 2', [2])):
        matrices = []
        for target in ('us', 'xray'):
            d = _matrix(config, target, 'natural_speckle', chosen) - _matrix(
                config, target, 'natural', chosen
            )
            mean, variance, df = _crossed(d)
            c = by[(target, label)].test
            assert c.estimate == pytest.approx(mean, abs=1e-12)
            assert c.se**2 == pytest.approx(variance, rel=1e-9)
            assert c.df == pytest.approx(df, rel=1e-9)
            half = scipy_stats.t.ppf(0.975, df) * np.sqrt(variance)
            assert (c.low, c.high) == pytest.approx((mean - half, mean + half), rel=1e-9)
            matrices.append(d)
        [between] = [i for i in found.between if i.k_set == label]
        assert (between.kind, between.target, between.versus) == ('source_target', 'us', 'xray')
        mean, variance, df = _paired(*matrices)
        t = mean / np.sqrt(variance)
        assert between.test.estimate == pytest.approx(mean, abs=1e-12)
        assert between.test.se**2 == pytest.approx(variance, rel=1e-9)
        assert between.test.df == pytest.approx(df, rel=1e-9)
        assert between.test.p == pytest.approx(2 * scipy_stats.t.sf(abs(t), df), rel=1e-9)
    # the built-in effect: +0.1 on us, +0.04 on xray (+ 0.014 on average from the variation)
    assert by[('us', contrasts.ALL_K)].test.estimate == pytest.approx(0.114, abs=0.002)
    assert by[('xray', contrasts.ALL_K)].test.estimate == pytest.approx(0.054, abs=0.002)


def test_two_studies_run_apart_compare_as_before(tmp_path, capsys):
    from tests.test_study import tiny_study_config

    config = tiny_study_config(families=('shallow_to_deep', 'deep_to_shallow'))
    a, same = str(tmp_path / 'a'), str(tmp_path / 'same')
    runner.main(config, a, run_fn=FakeTrainer())
    runner.main(config, same, run_fn=FakeTrainer())
    found = sources_compare.compare_studies([load(a), load(same)], ['A', 'B'])
    assert all(
        c.test.estimate == 0 and 'untestable' in c.definition.plain(c) for c in found.changes
    )
    sources.main([a, same, '--out', str(tmp_path / 'out.md')])
    text = capsys.readouterr().out
    assert 'Each source was pre-trained once' in text and '| us, n = 16 (forward order' in text
    with pytest.raises(FileNotFoundError, match='not a study of several sources'):
        sources.write_study(a)
