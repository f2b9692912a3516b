"""The confirmatory real-data study's design (configs/layerwise.py:real_v2) and what it needs:
fresh seeds with seed s from pre-training s, a larger size run only where its hypothesis is,
the collapse guard of the plateau rule, the registered power plan, and the primary's size
change in the report."""

from __future__ import annotations

import collections
import json
import os

import numpy as np
import pytest

from configs import layerwise
from tests import report_fixture
from unet_jax import layout
from unet_jax.config import registration
from unet_jax.report import analysis, power
from unet_jax.report import registration as report_registration
from unet_jax.report.load import load
from unet_jax.study import sweep_points
from unet_jax.train import ledger

REAL_V2 = 'real_v2,data_root=/data'


def test_real_v2_declares_new_pre_trainings_the_curve_and_the_larger_size():
    config = layerwise.get_config(REAL_V2)
    study = config.study
    assert study.seeds == (10, 11, 12, 13, 14) and study.pretrain_seeds == 5
    assert study.pretrain.seed == 10  # pre-training i has seed 10 + i: seed s from s
    assert study.k_values == (1, 2, 4, 7) and study.num_train == (20, 100)
    assert study.primary.larger == 100 and study.power.effect == 0.04
    assert config.early_stopping.min_dice > 0 and study.pretrain.early_stopping.patience_steps
    assert study.pretrain.optimizer.schedule == 'constant'  # a plateau, not a decayed rate
    found = sweep_points.enumerate_sweep(config)
    trained = collections.Counter(
        (p.target, p.num_train) for p in found.runs if p.family != 'pretrained'
    )
    folds = config.data.outer_folds
    per_cell = 5 * folds  # pre-trainings x folds
    assert trained == {('busi', 20): 9 * per_cell, ('jsrt', 20): 9 * per_cell,
                       ('busi', 100): 3 * per_cell}  # fmt: skip
    for point in found.points:
        assert point.pretrain_index == point.seed - 10  # seed s from pre-training s
        if point.num_train == 100:
            assert point.target == 'busi' and point.k in (0, 4)
    with pytest.raises(ValueError, match='choose one'):
        layerwise.get_config(f'real,{REAL_V2}')


def test_pretraining_of_counts_from_the_first_seed():
    assert [sweep_points.pretraining_of((4, 5, 6, 7), s, 2) for s in (4, 5, 6, 7)] == [0, 1, 0, 1]
    assert [sweep_points.pretraining_of(range(3), s, 3) for s in range(3)] == [0, 1, 2]


def test_size_subsets_name_a_size_and_configurations_of_the_study():
    config = layerwise.get_config('quick,sizes=8+16,ks=1+2')
    config.study.size_subsets = {'n16': dict(targets=('us',), configurations=('full',))}
    found = sweep_points.enumerate_sweep(config)
    at_16 = {(p.target, p.configuration) for p in found.points if p.num_train == 16}
    assert at_16 == {('us', 'full')}
    assert {p.target for p in found.points if p.num_train == 8} == {'us', 'xray'}
    config.study.size_subsets = {'n32': dict(targets=('us',), configurations=('full',))}
    with pytest.raises(ValueError, match=r"size_subsets.n32: .*one of \['n8', 'n16'\]"):
        sweep_points.enumerate_sweep(config)
    config.study.size_subsets = {'n16': dict(targets=('us',), configurations=('fll',))}
    with pytest.raises(ValueError, match=r"\['fll'\]: list targets among"):
        sweep_points.enumerate_sweep(config)


def test_a_curve_flat_at_zero_is_not_a_plateau():
    steps, flat = list(range(0, 400, 20)), [0.0] * 20
    rule = ledger.EarlyStopping(patience_steps=60, min_delta=0.005, min_steps=120, smoothing=2)
    assert rule.plateaued(steps, flat)  # without the guard: a collapse taken for a plateau
    guarded = ledger.EarlyStopping(60, 0.005, 120, 2, min_dice=0.05)
    assert not guarded.plateaued(steps, flat)
    learnt = [min(0.6, 0.05 * i) for i in range(20)]  # rises, then flat at 0.6
    assert guarded.plateaued(steps, learnt) and rule.plateaued(steps, learnt)


def test_registration_records_the_power_plan_once(tmp_path, monkeypatch):
    monkeypatch.setattr(power, 'PLAN_SIMULATIONS', 300)
    config = layerwise.get_config(REAL_V2)
    entry = registration.register(
        str(tmp_path), config, total_runs=10, power_fn=power.simulated_power
    )
    declared, planned = entry['declaration'], entry['power']
    assert declared['primary_endpoint']['larger'] == 100
    assert declared['size_subsets']['n100']['targets'] == ['busi']
    assert declared['power_plan']['sd_run'] == pytest.approx(0.0403)
    folds = config.data.outer_folds
    assert (planned['pretrainings'], planned['folds']) == (5, folds)
    assert planned['images_per_fold'] == 647 // folds and 0 < planned['power'] < 1
    assert planned['effect_with_power'] > 0.04 or planned['power'] >= 0.8
    lines = report_registration.lines(registration.read(str(tmp_path)))
    assert 'Power planned at registration: 5 pre-trainings' in lines[1]
    assert 'then each gap at n = 20 minus its gap at n = 100' in lines[0]
    # the same start again: nothing written, no second simulation
    assert registration.register(
        str(tmp_path), config, total_runs=10, power_fn=power.simulated_power
    ) is None


def test_a_power_plan_that_never_reaches_the_target_says_so(tmp_path, monkeypatch):
    """With 2 outer folds the fold component has one degree of freedom: even +0.2 Dice lacks
    0.8 power with these components, and the record says so instead of naming +0.2."""
    monkeypatch.setattr(power, 'PLAN_SIMULATIONS', 300)
    config = layerwise.get_config(f'{REAL_V2},folds=2')
    config.study.power.sd_fold = 0.05
    entry = registration.register(
        str(tmp_path), config, total_runs=10, power_fn=power.simulated_power
    )
    assert entry['power']['folds'] == 2 and entry['power']['effect_with_power'] is None
    line = report_registration.lines(registration.read(str(tmp_path)))[1]
    assert 'no effect up to +0.2 has 0.8 power' in line


def test_an_older_declaration_without_the_size_fields_is_unchanged():
    """A study registered before `larger`, size subsets and power plans existed resumes."""
    config = layerwise.get_config('quick')
    declared = registration.declaration(config)
    assert 'larger' not in declared['primary'] and 'larger' not in declared['primary_endpoint']
    assert 'size_subsets' not in declared and 'power_plan' not in declared


@pytest.fixture(scope='module')
def two_sizes(tmp_path_factory):
    """A made-up study at 16 and 64 images, its primary declaring the size change."""
    workdir = str(tmp_path_factory.mktemp('sizes'))
    report_fixture.make_study(workdir, sizes=(16, 64), num_test=20, orders=('forward',),
                              failed=(), pending=())  # fmt: skip
    path = os.path.join(workdir, layout.PLAN_FILE)
    with open(path) as f:
        plan = json.load(f)
    plan['primary'] = dict(larger=64)
    with open(path, 'w') as f:
        json.dump(plan, f)
    return workdir, plan


def _gap(workdir, plan, num_train, ks):
    """Mean over seeds and lesion images of shallow->deep minus deep->shallow, over ks."""
    def per_image(family, k):
        point = next(p for p in plan['points'] if p['target'] == 'us' and p['family'] == family
                     and p['k'] == k and p['num_train'] == num_train)  # fmt: skip
        rows = []
        for seed in plan['seeds']:
            name = point['name'].replace('/s0/', f'/s{seed}/')
            run = next(p for p in plan['points'] if p['name'] == name)['run']
            results = layout.read_results(layout.run_dir(workdir, run))
            images = results['test_per_image']
            rows.append([d for d, lesion in zip(images['dice'], images['lesion']) if lesion])
        return np.array(rows)

    return np.mean([per_image('shallow_to_deep', k) - per_image('deep_to_shallow', k)
                    for k in ks])  # fmt: skip


def test_the_primary_tests_the_gaps_change_with_size_last(two_sizes):
    workdir, plan = two_sizes
    result = analysis.analyse(load(workdir))
    primary = result.comparisons.primary
    assert [c.kind for c in primary] == ['directions', 'interaction', 'size']
    change = primary[-1]
    ks = change.ks
    assert change.target == 'us' and change.num_train == 16 and change.larger == 64
    expected = _gap(workdir, plan, 16, ks) - _gap(workdir, plan, 64, ks)
    assert change.test.estimate == pytest.approx(expected, abs=1e-9)
    assert change.test.num_replicates == 3 and change.role == 'primary' and change.decision
    from unet_jax.report import conclusions

    sentence = conclusions.primary_sentence(result)
    assert 'the gap on us with 16 images minus with 64 images' in sentence
    assert 'then each gap at n = 16 minus its gap at n = 64' in sentence


def test_a_size_drawn_for_one_target_is_no_cell_of_the_others(tmp_path):
    """`size_subsets` runs the larger size on BUSI only: the other target has no such cell, so
    no empty panel, table or 'Not drawn' note stands for it."""
    workdir = str(tmp_path)
    report_fixture.make_study(workdir, sizes=(16, 64), num_test=12, orders=('forward',),
                              failed=(), pending=())  # fmt: skip
    path = os.path.join(workdir, layout.PLAN_FILE)
    with open(path) as f:
        plan = json.load(f)
    plan['points'] = [
        p for p in plan['points'] if not (p['target'] == 'xray' and p['num_train'] == 64)
    ]
    with open(path, 'w') as f:
        json.dump(plan, f)
    study = load(workdir)
    assert study.cells == [('us', 16), ('us', 64), ('xray', 16)]
    from unet_jax.report import write_report

    write_report(workdir)
    with open(os.path.join(workdir, layout.REPORT_DIR, 'summary.md')) as f:
        summary = f.read()
    assert 'xray), n = 64' not in summary and 'xray, n = 64' not in summary
    caption = summary.split('(dice_vs_units.png)')[1].split('\n\n')[1]
    assert caption.startswith('*Test Dice against k') and 'Not drawn' not in caption


def test_the_k_a_gap_is_averaged_over_are_named_as_they_ran():
    """k = 1, 2, 4, 7 is not '1..7' (a range would claim k = 3, 5, 6)."""
    from unet_jax.report import kinds

    assert kinds.k_list([1, 2, 4, 7]) == '1, 2, 4, 7'
    assert kinds.k_list(range(1, 8)) == '1..7' and kinds.k_list([4]) == '4'
    assert kinds.k_list([1, 2]) == '1, 2'
