"""The sweep enumerator and the in-process runner (skip, resume after a kill, failures)."""

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time

import ml_collections
import numpy as np
import pytest

from configs import layerwise
from tests import tiny
from unet_jax import io_utils, layout
from unet_jax.config import families
from unet_jax.study import loop, run_configs, runner
from unet_jax.study.sweep_points import enumerate_sweep, registry_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_FAMILIES = '+'.join(families.DEFAULTS)  # scratch included


def tiny_study_config(
    *, seeds=2, orders='forward', granularities='block', targets='us', families=None,
    pretrain_seeds=1,
) -> ml_collections.ConfigDict:
    """A tiny study; one pre-training unless asked (the config's default, one per seed, is
    tested in test_every_seed_has_its_own_pre_training_by_default): fewer runs to train.
    Every k and every default family, `scratch` included (`quick` itself sweeps fewer)."""
    config = layerwise.get_config(
        f'quick,seeds={seeds},orders={orders},granularities={granularities},targets={targets},'
        f'ks=,families={DEFAULT_FAMILIES}'
    )
    config.study.pretrain_seeds = pretrain_seeds
    config.model.depth = 2
    config.model.base_width = 4
    config.data.image_size = 32
    if families is not None:
        config.study.families = tuple(families)
    return config


def fake_dice(config: ml_collections.ConfigDict) -> float:
    """A made-up Dice that depends on what trains and the seed (the report tests know it)."""
    spec, seed = config.finetune.train, config.seed
    base = {'@none': 0.5, '@contracting': 0.8, '@expanding': 0.6, '@all': 0.7}.get(spec, 0.65)
    slope = 0.01 if spec == '@contracting' else 0.02  # seeds differ, differences vary
    if config.init_from == '':
        base, slope = 0.4, 0.03
    return base + slope * seed + (0.02 if spec.startswith('first:') else 0.0)


class FakeTrainer:
    """Stands in for train.train_group: writes, for each unfinished run of a group, a
    results.json of the contract's schema (atomically, last) and predictions.npz; records every
    run it trains; can fail a run or be 'killed' at its n-th run."""

    def __init__(self, fail_on=(), kill_on_call=None):
        self.calls = []
        self.groups = []
        self.fail_on = set(fail_on)
        self.kill_on_call = kill_on_call

    def __call__(self, runs, group_dir, name):
        self.groups.append((name, [r.workdir for r in runs]))
        os.makedirs(group_dir, exist_ok=True)  # where train keeps a group's checkpoint
        outcome = {}
        for run in runs:
            if not layout.is_finished(run.workdir):
                outcome[run.workdir] = self.train(run.config, run.workdir)
        return outcome

    def train(self, config, workdir):
        self.calls.append(workdir)
        os.makedirs(workdir, exist_ok=True)
        if self.kill_on_call is not None and len(self.calls) == self.kill_on_call:
            raise KeyboardInterrupt  # like SIGINT mid-run: no results.json
        if any(workdir.endswith(name) for name in self.fail_on):
            raise RuntimeError(f'made-up failure in {workdir}')
        dice, spec = fake_dice(config), config.finetune.train
        metrics = dict(
            loss=1 - dice,
            dice=dice,
            dice_pooled=dice,
            iou=dice / (2 - dice),
            precision=dice,
            recall=dice,
            hd95=10 * (1 - dice),
            num_lesion=1,
            num_normal=0,
            normal_fp_rate=None,
        )
        rng = np.random.default_rng(len(self.calls))
        masks = (rng.random((3, 8, 8, 1)) > 0.5).astype(np.float32)
        np.savez(
            os.path.join(workdir, 'predictions.npz'),
            image=rng.random((3, 8, 8, 1)),
            mask=masks,
            prob=np.clip(masks + 0.3 * rng.standard_normal(masks.shape), 0, 1),
            ids=np.array(['a', 'b', 'c']),
        )
        results = dict(
            name=workdir,
            config=config.to_dict(),
            spec=config.finetune.train,
            trained_units=[],
            best_step=1,
            num_train_examples=config.data.num_train,
            val=metrics,
            test=metrics,
            test_per_image=dict(
                ids=['a'], dice=[dice], iou=[dice], hd95=[1.0], lesion=[True], pred_pixels=[3]
            ),
            val_curve=dict(step=[1], dice=[dice]),
            params=dict(trained=1, frozen=1, total=2, trained_fraction=0.5),
            step_time_s=0.01,
            wall_time_s=1.0,
        )
        if spec.startswith('auto:'):  # a made-up choice: the first k blocks (all when soft)
            k = int(spec.split(':')[2]) if spec.split(':')[2] != 'soft' else 3
            results['trained_units'] = [f'block{i}/conv' for i in range(k)]
            results['auto'] = dict(criterion=spec.split(':')[1], k=k, chosen=['enc0'])
            results['cost'] = dict(train_flops=1e9 * k, probe_flops=1e8)
        io_utils.write_text_atomically(
            os.path.join(workdir, layout.RESULTS_FILE), json.dumps(results)
        )
        return results


# ----------------------------------------------------------------------------- enumeration


def test_counts_per_family_and_duplicates_follow_the_registry():
    config = tiny_study_config(seeds=2, orders='forward+level', granularities='block+unit')
    registry = registry_for(config)
    sweep = enumerate_sweep(config, registry=registry)
    per_cell = collections.Counter(p.family for p in sweep.points if p.seed == 0)
    steps = sum(len(registry.order(o, g)) for o in ('forward', 'level') for g in ('block', 'unit'))
    assert per_cell == {
        'scratch': 1,
        'pretrained': 1,
        'full': 1,
        'contracting': 1,
        'expanding': 1,
        'shallow_to_deep': steps,
        'deep_to_shallow': steps,
    }
    assert len(sweep.points) == 2 * (5 + 2 * steps)
    # k = N trains everything: an alias of `full` in both directions, orders and granularities.
    for p in sweep.points:
        if p.family in families.DIRECTIONS and p.k == len(registry.order(p.order, p.granularity)):
            assert sweep.aliases[p.name] == p.name.rsplit('/', 1)[0] + '/full'
    # Runs are unique per trained-unit set (and initialisation); aliases train what their run does.
    runs = {p.name: p for p in sweep.runs}
    keys = [
        (p.seed, p.family in ('scratch', 'pretrained') and p.family, frozenset(p.trained_units))
        for p in sweep.runs
    ]
    assert len(set(keys)) == len(keys)
    for alias, run in sweep.aliases.items():
        point = next(p for p in sweep.points if p.name == alias)
        assert set(point.trained_units) == set(runs[run].trained_units)
        assert point.index == runs[run].index
    assert [p.index for p in sweep.runs] == list(range(len(sweep.runs)))
    # The depth-2 forward block order is enc0, enc1, bottleneck, ...: first:2 is `contracting`.
    assert sweep.aliases['us/n16/s0/shallow_to_deep-forward-block-k2'] == 'us/n16/s0/contracting'
    scratch = next(p for p in sweep.runs if p.family == 'scratch')
    assert set(scratch.trained_units) == set(registry.unit_names)


def test_names_are_stable_and_do_not_depend_on_what_else_is_swept():
    small = enumerate_sweep(tiny_study_config(seeds=1))
    large = enumerate_sweep(
        tiny_study_config(seeds=3, targets='us+xray', orders='forward+level')
    )
    assert [p.name for p in small.points] == [
        p.name for p in enumerate_sweep(tiny_study_config(seeds=1)).points
    ]
    assert {p.name for p in small.points} <= {p.name for p in large.points}
    assert 'xray/n16/s2/deep_to_shallow-level-block-k3' in {p.name for p in large.points}
    assert large.runs[0].seed == 0 and large.runs[-1].seed == 2  # one replicate at a time


def test_bad_study_fields_name_the_field_and_the_valid_values():
    config = tiny_study_config()
    config.study.orders = ('forward', 'depthwise')
    with pytest.raises(ValueError, match=r"config\.study\.orders: 'depthwise'.*forward"):
        enumerate_sweep(config)
    with pytest.raises(ValueError, match='unknown target'):
        layerwise.get_config('quick,targets=us+mri')
    with pytest.raises(ValueError, match='data_root'):
        layerwise.get_config('targets=busi')


def test_point_config_modifies_the_base_config():
    config = tiny_study_config()
    config.optimizer.learning_rate = 0.123
    sweep = enumerate_sweep(config)
    point = next(p for p in sweep.points if p.name == 'us/n16/s1/deep_to_shallow-forward-block-k2')
    run = run_configs.point_config(config, point, '/w')
    assert 'study' not in run
    assert (run.finetune.train, run.finetune.order, run.seed) == ('last:2', 'forward', 1)
    assert run.data.name == 'synthetic_ultrasound' and run.data.num_train == 16
    assert run.optimizer.learning_rate == 0.123 and run.model.depth == 2
    assert run.init_from == os.path.abspath('/w/pretrain')
    pretrained = next(p for p in sweep.points if p.family == 'pretrained')
    assert run_configs.point_config(config, pretrained, '/w').num_train_steps == 0
    scratch = next(p for p in sweep.points if p.family == 'scratch')
    assert run_configs.point_config(config, scratch, '/w').init_from == ''
    # Model and image size are shared with pre-training through field references.
    assert run_configs.pretrain_config(config).model.depth == 2
    assert run_configs.pretrain_config(config).data.name == 'synthetic_natural'


def test_pretrained_is_one_run_per_target_size_and_pretraining():
    config = tiny_study_config(seeds=3, families=('pretrained', 'full'))
    sweep = enumerate_sweep(config)
    pretrained = [p for p in sweep.points if p.family == 'pretrained']
    assert [p.run_name for p in pretrained] == ['us/n16/s0/pretrained'] * 3
    assert len([p for p in sweep.runs if p.family == 'pretrained']) == 1
    assert len([p for p in sweep.runs if p.family == 'full']) == 3  # trained runs stay per seed

    config.study.pretrain_seeds = 2
    sweep = enumerate_sweep(config)
    runs = {p.name: p.run_name for p in sweep.points if p.family == 'pretrained'}
    assert runs == {
        'us/n16/s0/pretrained': 'us/n16/s0/pretrained',
        'us/n16/s1/pretrained': 'us/n16/s1/pretrained',
        'us/n16/s2/pretrained': 'us/n16/s0/pretrained',  # seed 2 uses pre-training 2 mod 2 = 0
    }


def test_seeds_are_paired_with_pretrainings(tmp_path):
    config = tiny_study_config(seeds=3, families=('scratch', 'pretrained', 'contracting'))
    config.study.pretrain_seeds = 2
    fake = FakeTrainer()
    runner.main(config, str(tmp_path), run_fn=fake)
    dirs = run_configs.pretrain_dirs(config, str(tmp_path))
    assert dirs == [str(tmp_path / 'pretrain'), str(tmp_path / 'pretrain_1')]
    assert fake.groups[0] == ('pretrain', dirs)  # both pre-trainings in one group
    assert [run_configs.pretrain_config(config, i).seed for i in (0, 1)] == [0, 1]
    plan = json.loads((tmp_path / 'study.json').read_text())
    assert plan['pretrain_dirs'] == dirs
    for point in plan['points']:
        with open(tmp_path / point['dir'] / 'results.json') as f:
            init_from = json.load(f)['config']['init_from']
        if point['family'] == 'scratch':
            assert point['pretrain_index'] is None and init_from == ''
        else:
            assert point['pretrain_index'] == point['seed'] % 2
            assert init_from == dirs[point['seed'] % 2]


def test_groups_hold_the_seeds_of_one_configuration(tmp_path):
    config = tiny_study_config(seeds=5, families=('scratch', 'pretrained', 'full'))
    config.study.group_size = 2
    sweep = enumerate_sweep(config)
    assert [(g.name, len(g.runs)) for g in sweep.groups] == [
        ('us/n16/scratch/s0-1', 2),
        ('us/n16/pretrained/s0', 1),
        ('us/n16/full/s0-1', 2),
        ('us/n16/scratch/s2-3', 2),
        ('us/n16/full/s2-3', 2),
        ('us/n16/scratch/s4', 1),
        ('us/n16/full/s4', 1),
    ]
    assert sorted(p.name for g in sweep.groups for p in g.runs) == sorted(
        p.name for p in sweep.runs
    )
    assert all(p.group for p in sweep.points)
    config.study.group_size = 0  # automatic: every seed fits the default memory budget
    assert len(enumerate_sweep(config).groups) == 3
    config.study.group_memory_mb = 0
    assert len(enumerate_sweep(config).groups) == 11  # nothing fits: one run at a time

    fake = FakeTrainer()
    runner.main(config, str(tmp_path), run_fn=fake, sweep_index=None)
    assert not os.path.exists(tmp_path / loop.GROUPS_DIR / 'us')  # state removed once written


def test_outer_folds_make_fold_x_seed_the_replication_unit(tmp_path):
    """With data.outer_folds=3 every (target, size, seed) runs on each fold: the names carry the
    fold, a group and a `pretrained` alias never cross folds, each run tests its fold, and the
    3 runs of one seed test every case once, every size on the same fold."""
    from unet_jax.data import split_assignment

    config = tiny_study_config(seeds=2, families=('scratch', 'pretrained', 'full'))
    config.data.outer_folds = 3
    config.study.num_train = (8, 16)
    config.study.group_size = 2
    sweep = enumerate_sweep(config)
    assert len(sweep.points) == 2 * 3 * 2 * 3  # seeds x folds x sizes x families
    assert sweep.points[0].name == 'us/n8/s0/f0/scratch' and sweep.points[0].fold == 0
    pretrained = {p.name: p.run_name for p in sweep.points if p.family == 'pretrained'}
    assert pretrained['us/n8/s1/f2/pretrained'] == 'us/n8/s0/f2/pretrained'
    assert len({p.run_name for p in sweep.points if p.family == 'pretrained'}) == 2 * 3
    for group in sweep.groups:
        assert len({p.fold for p in group.runs}) == 1
        assert f'/f{group.runs[0].fold}/' in group.name
    assert ('us/n8/f1/full/s0-1', 2) in [(g.name, len(g.runs)) for g in sweep.groups]

    ids = {'train': [f'case{i:03d}' for i in range(60)]}
    tested = collections.defaultdict(list)
    test_of = {}
    for point in sweep.runs:
        run = run_configs.point_config(config, point, str(tmp_path))
        assert run.data.outer_fold == point.fold
        splits = split_assignment.assign_splits(ids, run.data)
        test_of.setdefault((point.seed, point.fold), set()).add(tuple(splits['test']))
        if point.family == 'full' and point.num_train == 16:
            tested[point.seed] += splits['test']
    assert all(len(tests) == 1 for tests in test_of.values())  # every size: the same fold
    for seed in (0, 1):
        assert sorted(tested[seed]) == ids['train']  # every case once per seed
    run_configs.write_plan(config, str(tmp_path), sweep)
    plan = json.loads((tmp_path / 'study.json').read_text())
    assert plan['outer_folds'] == [0, 1, 2] and plan['points'][0]['fold'] == 0
    config.data.outer_folds = 0
    assert enumerate_sweep(config).points[0].name == 'us/n8/s0/scratch'


def test_scratch_gets_its_own_step_budget():
    config = tiny_study_config(seeds=1, families=('scratch', 'full'))
    config.num_train_steps, config.study.scratch_steps_factor = 100, 2.5
    sweep = enumerate_sweep(config)
    steps = {
        p.family: run_configs.point_config(config, p, '/w').num_train_steps for p in sweep.runs
    }
    assert steps == {'scratch': 250, 'full': 100}


def test_study_json_of_a_folder_target_is_plain_json(tmp_path):
    config = tiny_study_config(seeds=1, families=('scratch',))
    folder = config.data.folder.copy_and_resolve_references()
    folder.images = '/data/mine/images'
    config.study.targets = ml_collections.ConfigDict(
        {'mine': {'data': {'name': 'folder', 'folder': folder.to_dict()}}}
    )
    sweep = enumerate_sweep(config)
    plan = json.loads(open(run_configs.write_plan(config, str(tmp_path), sweep)).read())
    assert plan['targets']['mine'] == config.study.targets.mine.to_dict()
    assert plan['targets']['mine']['data']['folder']['images'] == '/data/mine/images'
    run = run_configs.point_config(config, sweep.runs[0], str(tmp_path))
    assert run.data.name == 'folder' and run.data.folder.images == '/data/mine/images'


# ----------------------------------------------------------------------------- the runner


def test_kill_and_rerun_finishes_with_nothing_run_twice(tmp_path):
    config = tiny_study_config(
        seeds=1, families=('scratch', 'pretrained', 'full', 'shallow_to_deep')
    )
    sweep = enumerate_sweep(config)
    killed = FakeTrainer(kill_on_call=4)  # pre-training, two runs, then killed in the third
    with pytest.raises(KeyboardInterrupt):
        runner.main(config, str(tmp_path), run_fn=killed)
    assert not os.path.exists(os.path.join(killed.calls[-1], layout.RESULTS_FILE))

    rerun = FakeTrainer()
    outcome = runner.main(config, str(tmp_path), run_fn=rerun)
    run_dirs = [layout.run_dir(str(tmp_path), p.run_name) for p in sweep.runs]
    assert rerun.calls == run_dirs[2:]  # the killed run again, then the rest; no pre-training
    assert all(layout.is_finished(d) for d in run_dirs)
    assert os.path.exists(outcome['report'])

    again = FakeTrainer()
    runner.main(config, str(tmp_path), run_fn=again)
    assert again.calls == []


def test_a_failed_point_is_recorded_and_the_study_goes_on(tmp_path):
    config = tiny_study_config(seeds=1, families=('pretrained', 'full', 'contracting', 'expanding'))
    failing = FakeTrainer(fail_on=('us/n16/s0/contracting',))
    with pytest.raises(runner.RunsFailedError) as failed:  # after the report: exit 1
        runner.main(config, str(tmp_path), run_fn=failing)
    error_file = tmp_path / 'points/us/n16/s0/contracting' / runner.ERROR_FILE
    assert str(failed.value).startswith(f'1 of 4 runs failed: see {error_file} ')
    outcome = failed.value.outcome
    assert outcome['failed'] == ['us/n16/s0/contracting']
    assert len(outcome['done']) == 3
    error = (tmp_path / 'points/us/n16/s0/contracting' / layout.ERROR_FILE).read_text()
    assert 'Traceback' in error and 'made-up failure' in error
    summary = (tmp_path / 'report/summary.md').read_text()
    assert 'contracting: failed' in (tmp_path / 'report/report.html').read_text()
    assert '| expanding path | 1/1 |' in summary

    retry = FakeTrainer()
    outcome = runner.main(config, str(tmp_path), run_fn=retry)
    assert retry.calls == [str(tmp_path / 'points/us/n16/s0/contracting')]
    assert outcome['failed'] == []
    assert not (tmp_path / 'points/us/n16/s0/contracting' / layout.ERROR_FILE).exists()


def test_sweep_index_runs_one_point_pretraining_or_the_report(tmp_path):
    config = tiny_study_config(seeds=1, families=('scratch', 'full'))
    workdir = str(tmp_path)
    fake = FakeTrainer()
    with pytest.raises(FileNotFoundError, match='--sweep_index=pretrain first'):
        runner.main(config, workdir, sweep_index='1', run_fn=fake)  # `full` needs pre-training
    runner.main(config, workdir, sweep_index='0', run_fn=fake)  # scratch does not
    prepared = []
    runner.main(
        config,
        workdir,
        sweep_index='pretrain',
        run_fn=fake,
        prepare_fn=lambda data: prepared.append(data.name),
    )
    assert prepared == ['synthetic_ultrasound']  # every target built before any fan-out
    runner.main(config, workdir, sweep_index=1, run_fn=fake)
    runner.main(config, workdir, sweep_index=1, run_fn=fake)  # finished: not run again
    assert fake.calls == [
        layout.run_dir(workdir, 'us/n16/s0/scratch'),
        run_configs.pretrain_dirs(config, workdir)[0],
        layout.run_dir(workdir, 'us/n16/s0/full'),
    ]
    with pytest.raises(ValueError, match=r'out of range.*2 groups'):
        runner.main(config, workdir, sweep_index='7', run_fn=fake)
    with pytest.raises(ValueError, match="'pretrain' or 'report'"):
        runner.main(config, workdir, sweep_index='all', run_fn=fake)
    assert runner.main(config, workdir, sweep_index='report')['report'].endswith('report.html')


def test_a_tiny_real_study_end_to_end(tmp_path, monkeypatch):
    """Real pre-training, groups of two seeds and the report (train.train_group), at toy size."""
    monkeypatch.setenv('UNET_JAX_DATA_DIR', str(tmp_path / 'data'))
    config = layerwise.get_config(
        'quick,seeds=2,targets=us,sizes=8,families=scratch+pretrained+full+contracting+expanding'
    )
    config.model.depth, config.model.base_width, config.data.image_size = 2, 4, 32
    for run in (config, config.study.pretrain):
        run.data.num_examples, run.batch_size = 40, 4
        run.num_train_steps = run.eval_every_steps = run.checkpoint_every_steps = 3
        run.log_every_steps, run.warmup_steps = 3, 1
    config.study.scratch_steps_factor = 2.0
    workdir = str(tmp_path / 'study')
    outcome = runner.main(config, workdir)
    # pretrained: one run per pre-training
    assert outcome['failed'] == [] and len(outcome['done']) == 10
    change = json.loads(
        (tmp_path / 'study/points/us/n8/s1/full/representation_change.json').read_text()
    )
    assert change['units'] and all(u['trained'] for u in change['units'])
    assert os.path.exists(os.path.join(workdir, 'report', 'representation_change.png'))
    results = {}
    for name in ('scratch', 'contracting', 'expanding'):
        with open(os.path.join(layout.run_dir(workdir, f'us/n8/s1/{name}'), 'results.json')) as f:
            results[name] = json.load(f)
    pretrained = json.loads(
        (tmp_path / 'study/points/us/n8/s0/pretrained/results.json').read_text()
    )
    # one pretrained run per pre-training (seed s from pre-training s): a group of two
    assert (tmp_path / 'study/points/us/n8/s1/pretrained/results.json').exists()
    assert pretrained['params']['trained'] == 0 and pretrained['group']['size'] == 2
    assert results['scratch']['params']['trained_fraction'] == 1.0
    assert results['scratch']['cost']['num_steps'] == 6 and results['scratch']['best_step'] > 0
    assert results['contracting']['num_train_examples'] == 8
    assert results['contracting']['group'] == {'name': 'us/n8/contracting/s0-1', 'size': 2}
    assert results['contracting']['pretrain'] == {  # seed 1 from pre-training 1
        'dir': os.path.join(workdir, 'pretrain_1'),
        'index': 1,
    }
    assert 0 < results['contracting']['params']['trained'] < results['scratch']['params']['trained']
    assert not os.path.exists(os.path.join(workdir, loop.GROUPS_DIR))  # all written: state gone
    page = open(outcome['report']).read()
    figures = [f for f in os.listdir(os.path.join(workdir, 'report')) if f.endswith('.png')]
    assert page.count('data:image/png;base64,') == len(figures) >= 3  # all embedded
    assert outcome['trained'] == outcome['done']
    assert runner.main(config, workdir)['trained'] == []  # a re-run trains nothing


def test_auto_family_enumerates_every_k_and_soft_and_the_report_shows_it(tmp_path):
    config = tiny_study_config(families=('full', 'shallow_to_deep', 'auto'))
    config.study.auto_criteria = ('rgn',)
    sweep = enumerate_sweep(config)
    n = len(registry_for(config).order('forward', 'block'))
    names = [p.configuration for p in sweep.points if p.seed == 0 and p.family == 'auto']
    assert names == [f'auto-rgn-block-k{k}' for k in range(1, n + 1)] + ['auto-rgn-block-soft']
    by_name = {p.configuration: p for p in sweep.points if p.seed == 0}
    assert by_name[f'auto-rgn-block-k{n}'].run_name.endswith('/full')  # all blocks: full's run
    assert by_name['auto-rgn-block-k1'].spec == 'auto:rgn:1'
    assert by_name['auto-rgn-block-soft'].run_name.endswith('auto-rgn-block-soft')
    outcome = runner.main(config, str(tmp_path), run_fn=FakeTrainer())
    assert outcome['failed'] == []
    run = json.loads((tmp_path / 'points/us/n16/s0/auto-rgn-block-k2/results.json').read_text())
    assert run['auto']['k'] == 2
    page = open(outcome['report']).read()
    assert 'Automatic choice vs the sweep' in page and 'auto-rgn-block-k2' in page
    assert 'with k chosen on validation' in page


def test_auto_criteria_are_checked():
    config = tiny_study_config(families=('auto',))
    config.study.auto_criteria = ('rgn', 'guess')
    with pytest.raises(ValueError, match='auto_criteria'):
        enumerate_sweep(config)


# A grouped study that runs as a process: two seeds per group, checkpoints every other step.
KILL_ARGS = [
    '--config=configs/layerwise.py:quick,seeds=2,targets=us,sizes=8,'
    'families=scratch+pretrained+contracting',
    *tiny.TINY_STUDY_FLAGS,
    '--config.study.pretrain.num_train_steps=4',
    '--config.num_train_steps=16',
    '--config.warmup_steps=1',
    '--config.eval_every_steps=4',
    '--config.checkpoint_every_steps=2',
    '--config.log_every_steps=2',
    '--config.study.checkpoint_every_secs=0',
    '--config.study.scratch_steps_factor=1',
]


def start_study(workdir: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
    cache = os.environ.get('JAX_COMPILATION_CACHE_DIR', '')
    command = [sys.executable, '-m', 'unet_jax.main', *KILL_ARGS, f'--workdir={workdir}']
    return subprocess.Popen(
        [*command, f'--compilation_cache={cache}'],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished_results(workdir: str) -> dict[str, tuple[int, int]]:
    """results.json files of a study: run folder -> (inode, mtime); a rewrite changes both."""
    found = {}
    for folder, _, files in os.walk(os.path.join(workdir, 'points')):
        if layout.RESULTS_FILE in files:
            info = os.stat(os.path.join(folder, layout.RESULTS_FILE))
            found[os.path.relpath(folder, workdir)] = (info.st_ino, info.st_mtime_ns)
    return found


def progress_marks(workdir: str) -> int:
    """Group checkpoint steps and results written so far: each is a moment to kill at."""
    marks = 0
    for folder, dirs, files in os.walk(workdir):
        marks += layout.RESULTS_FILE in files
        if os.path.basename(folder) == 'checkpoints':
            marks += sum(d.isdigit() for d in dirs)
    return marks


def test_a_grouped_study_killed_at_random_moments_does_every_run_once(tmp_path, monkeypatch):
    """SIGKILL soon after a random checkpoint or results.json appears, three times; then
    the study finishes, no finished run was written twice, and every result equals an
    uninterrupted study's."""
    monkeypatch.setenv('UNET_JAX_DATA_DIR', str(tmp_path / 'data'))
    reference = str(tmp_path / 'reference')
    process = start_study(reference)
    assert process.wait(timeout=600) == 0, process.stderr.read()[-3000:]

    killed, seen, rng, kills = str(tmp_path / 'killed'), {}, random.Random(0), 0
    for _ in range(3):
        process = start_study(killed)
        target = progress_marks(killed) + rng.randint(1, 3)
        while process.poll() is None and progress_marks(killed) < target:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.3))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        now = finished_results(killed)
        assert all(now[run] == stamp for run, stamp in seen.items()), 'a finished run re-ran'
        seen = now
    assert kills >= 2
    process = start_study(killed)
    assert process.wait(timeout=600) == 0, process.stderr.read()[-3000:]
    final = finished_results(killed)
    assert all(final[run] == stamp for run, stamp in seen.items()), 'a finished run re-ran'
    assert not [f for _, _, files in os.walk(killed) for f in files if f == layout.ERROR_FILE]
    assert sorted(final) == sorted(finished_results(reference))
    for run in final:
        expected, got = (
            json.loads(open(os.path.join(root, run, 'results.json')).read())
            for root in (reference, killed)
        )
        for key in ('best_step', 'test', 'val', 'val_curve', 'test_per_image'):
            assert got[key] == expected[key], f'{run}: {key}'


def test_every_seed_has_its_own_pre_training_by_default():
    """No default answer rests on one pre-trained model: seed s fine-tunes from pre-training s."""
    for arguments in ('quick', 'quick,seeds=5', 'medium'):
        config = layerwise.get_config(arguments)
        assert config.study.pretrain_seeds == len(config.study.seeds), arguments
    points = enumerate_sweep(layerwise.get_config('quick,seeds=3,targets=us')).runs
    assert {(p.seed, p.pretrain_index) for p in points if p.family != 'scratch'} == {
        (0, 0), (1, 1), (2, 2)
    }
