"""End-to-end tests of train_and_evaluate on a tiny U-Net and tiny synthetic data."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types

from flax import traverse_util
import jax
import numpy as np
import optax
import pytest

from tests import tiny
from unet_jax import freeze, io_utils, models
from unet_jax.data import augment, pipeline
from unet_jax.models import layer_registry, metrics
from unet_jax.train import checkpoint, groups, initial_state, ledger, steps, trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def best_variables(workdir: str, collection: str = 'params') -> dict:
    """The run's best params (or BatchNorm statistics), as written into its best/ folder."""
    variables, _ = checkpoint.load_variables(workdir)
    return traverse_util.flatten_dict(variables[collection], sep='/')


def latest_trained(workdir: str) -> dict:
    """The trained params of the group checkpoint's last step (run axis first)."""
    manager = checkpoint.create_manager(os.path.join(workdir, checkpoint.LATEST_DIR))
    tree, _ = checkpoint.restore_numpy(manager)
    manager.close()
    return traverse_util.flatten_dict(tree['state']['trainable'], sep='/')


def initial_params(config) -> dict:
    model = models.create_model(config.model)
    variables = initial_state.initial_variables(model, config)
    return traverse_util.flatten_dict(variables['params'], sep='/')


def test_run_writes_results_and_freezes_exactly(tmp_path):
    config = tiny.tiny_config(**{'finetune.train': 'enc0,dec0'})
    results = trainer.train_and_evaluate(config, str(tmp_path), splits=tiny.disk_splits())

    on_disk = json.loads((tmp_path / 'results.json').read_text())
    assert on_disk['spec'] == results['spec']
    for split in ('val', 'test'):
        assert set(on_disk[split]) >= {
            'loss',
            'dice',
            'dice_pooled',
            'iou',
            'precision',
            'recall',
            'hd95',
        }
    assert len(on_disk['test_per_image']['dice']) == 5
    assert on_disk['best_step'] in (3, 6)
    assert 0 < on_disk['params']['trained_fraction'] < 1
    assert on_disk['params']['trained'] + on_disk['params']['frozen'] == on_disk['params']['total']
    assert (tmp_path / 'metrics.jsonl').exists() and (tmp_path / 'predictions.npz').exists()
    assert any(name.startswith('events.out.tfevents') for name in os.listdir(tmp_path))
    assert np.load(tmp_path / 'predictions.npz')['prob'].shape == (2, 32, 32, 1)

    assert on_disk['test']['num_lesion'] == 5 and on_disk['test']['normal_fp_rate'] is None
    assert on_disk['test_per_image']['lesion'] == [True] * 5
    assert on_disk['val_curve']['step'] == [3, 6] and len(on_disk['val_curve']['dice']) == 2
    assert on_disk['pretrain'] is None and on_disk['group'] == {'name': tmp_path.name, 'size': 1}
    time = on_disk['time']
    assert set(time) == {f'{k}_s' for k in ledger.TIME_SECTIONS + ('wall',)}
    assert sum(v for k, v in time.items() if k != 'wall_s') <= time['wall_s']
    assert on_disk['wall_time_s'] == time['wall_s']

    before, after = initial_params(config), best_variables(str(tmp_path))
    trained_blocks = {'enc0', 'dec0'}
    for path, value in before.items():
        if path.split('/')[0] in trained_blocks:
            assert not np.array_equal(value, after[path]), f'{path} should have trained'
        else:
            assert np.array_equal(value, after[path]), f'{path} should be bit-identical'


def test_training_flops_are_the_registry_model_times_batch_and_steps(tmp_path):
    config = tiny.tiny_config(**{'finetune.train': 'dec0,head', 'num_train_steps': 4})
    results = trainer.train_and_evaluate(config, str(tmp_path / 'a'), splits=tiny.disk_splits())
    cost = results['cost']
    registry = layer_registry.build_registry(
        models.create_model(config.model), image_size=32, in_channels=1
    )
    units = registry.expand(['dec0', 'head'])
    assert cost['step_flops_per_image'] == registry.train_step_flops(units)
    assert cost['forward_flops_per_image'] == registry.forward_flops()
    assert cost['train_flops'] == registry.train_step_flops(units) * 4 * 4  # batch 4, 4 steps
    assert cost['step_flops_per_image'] < registry.train_step_flops(registry.unit_names)

    none = tiny.tiny_config(**{'finetune.train': '@none', 'num_train_steps': 0})
    cost = trainer.train_and_evaluate(none, str(tmp_path / 'b'), splits=tiny.disk_splits())['cost']
    assert cost['train_flops'] == 0 and cost['num_steps'] == 0


def test_adamw_weight_decay_never_moves_frozen_leaves(tmp_path):
    config = tiny.tiny_config(
        **{'finetune.train': '@head', 'optimizer.name': 'adamw', 'optimizer.weight_decay': 0.5}
    )
    trainer.train_and_evaluate(config, str(tmp_path), splits=tiny.disk_splits())
    before, after = initial_params(config), best_variables(str(tmp_path))
    for path, value in before.items():
        assert np.array_equal(value, after[path]) == (not path.startswith('head/')), path


def test_batchnorm_statistics_of_frozen_units_stay(tmp_path):
    config = tiny.tiny_config(**{'finetune.train': 'dec0,head', 'model.norm': 'batch'})
    trainer.train_and_evaluate(config, str(tmp_path), splits=tiny.disk_splits())
    stats = best_variables(str(tmp_path), 'batch_stats')
    model = models.create_model(config.model)
    initial = traverse_util.flatten_dict(
        initial_state.initial_variables(model, config)['batch_stats'], sep='/'
    )
    for path, value in initial.items():
        moved = not np.array_equal(value, stats[path])
        assert moved == path.startswith('dec0/'), path


def test_pretrained_only_point_evaluates_without_training(tmp_path):
    config = tiny.tiny_config(**{'finetune.train': '@none', 'num_train_steps': 0})
    results = trainer.train_and_evaluate(config, str(tmp_path), splits=tiny.disk_splits())
    assert results['best_step'] == 0 and results['params']['trained'] == 0
    assert results['spec'] == '@none'


def test_nan_loss_stops_with_step_and_advice(tmp_path):
    splits = tiny.disk_splits()
    splits['train'].image[:] = np.nan
    with pytest.raises(ledger.NonFiniteLossError, match=r'step 0: loss=nan.*learning_rate'):
        trainer.train_and_evaluate(tiny.tiny_config(), str(tmp_path), splits=splits)
    assert not (tmp_path / 'results.json').exists()


def test_batch_not_divisible_by_devices_is_explained():
    two_devices = types.SimpleNamespace(size=2)
    steps.check_batch_size(4, two_devices)
    with pytest.raises(
        ValueError, match=r'batch_size=5 must be a positive multiple of the 2 device'
    ):
        steps.check_batch_size(5, two_devices)
    with pytest.raises(ValueError, match=r'batch_size=0 must be a positive multiple'):
        steps.check_batch_size(0, two_devices)


def test_batch_order_is_keyed_by_step():
    a = [groups.batch_indices(s, 4, 10, seed=1) for s in range(6)]
    b = [groups.batch_indices(s, 4, 10, seed=1) for s in reversed(range(6))][::-1]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    seen = np.concatenate(a[:5])  # 20 positions = two epochs, each a permutation of 0..9
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))


def test_init_from_is_strict_and_dont_load_is_respected(tmp_path):
    pre = tmp_path / 'pre'
    trainer.train_and_evaluate(tiny.tiny_config(), str(pre), splits=tiny.disk_splits())

    ft = tiny.tiny_config(
        **{'init_from': str(pre), 'finetune.train': '@head', 'num_train_steps': 2}
    )
    trainer.train_and_evaluate(ft, str(tmp_path / 'ft'), splits=tiny.disk_splits())
    best, _ = checkpoint.load_variables(str(pre))
    loaded = traverse_util.flatten_dict(best['params'], sep='/')
    after = best_variables(str(tmp_path / 'ft'))
    assert all(np.array_equal(loaded[p], after[p]) for p in loaded if not p.startswith('head/'))

    wider = tiny.tiny_config(**{'init_from': str(pre), 'model.base_width': 8})
    with pytest.raises(checkpoint.CheckpointMismatchError, match='Shape mismatch'):
        trainer.train_and_evaluate(wider, str(tmp_path / 'wider'), splits=tiny.disk_splits())

    deeper = tiny.tiny_config(**{'init_from': str(pre), 'model.depth': 3})
    with pytest.raises(checkpoint.CheckpointMismatchError) as error:
        trainer.train_and_evaluate(deeper, str(tmp_path / 'deeper'), splits=tiny.disk_splits())
    assert 'Missing from the checkpoint' in str(error.value) and 'enc2/conv0' in str(error.value)
    assert 'config.dont_load' in str(error.value)

    two_classes = tiny.tiny_config(
        **{
            'init_from': str(pre),
            'model.out_channels': 2,
            'dont_load': ('params/head/.*',),
            'num_train_steps': 0,
            'finetune.train': '@none',
        }
    )
    model = models.create_model(two_classes.model)
    init = initial_state.load_init_from(
        initial_state.initial_variables(model, two_classes), two_classes
    )
    assert init['params']['head']['conv0']['conv']['kernel'].shape[-1] == 2


RUN_SCRIPT = textwrap.dedent("""
    import os, sys
    from tests import tiny
    from unet_jax.train import groups, trainer
    workdir, steps, seeds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    def config(seed):
        return tiny.tiny_config(**{{'num_train_steps': steps, 'checkpoint_every_steps': {every},
                                    'eval_every_steps': {every}, 'log_every_steps': {every},
                                    'finetune.train': 'enc0..bottleneck,head', 'seed': seed}})
    if seeds == 1:
        trainer.train_and_evaluate(config(0), workdir, splits=tiny.disk_splits())
    else:  # a group of seeds in one vmapped step
        runs = [groups.Member(config(s), os.path.join(workdir, f's{{s}}')) for s in range(seeds)]
        trainer.train_group(runs, workdir, name='g', splits_fn=lambda c: tiny.disk_splits(),
                          vectorize='vmap')
""")


def run_tiny(workdir, steps, *, every=4, devices=1, wait=True, seeds=1):
    env = dict(
        os.environ,
        PYTHONPATH=REPO,
        JAX_PLATFORMS='cpu',
        XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
    )
    script = RUN_SCRIPT.format(every=every)
    command = [sys.executable, '-c', script, str(workdir), str(steps), str(seeds)]
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if wait:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    return process


def test_two_devices_give_the_same_params_as_one(tmp_path):
    """A vmapped group of two seeds: the batch axis sharded over 2 devices, the run axis not."""
    run_tiny(tmp_path / 'one', 6, devices=1, seeds=2)
    run_tiny(tmp_path / 'two', 6, devices=2, seeds=2)
    for seed in ('s0', 's1'):
        one = best_variables(str(tmp_path / 'one' / seed))
        two = best_variables(str(tmp_path / 'two' / seed))
        assert one.keys() == two.keys()
        for path in one:
            np.testing.assert_allclose(one[path], two[path], atol=1e-5, err_msg=f'{seed} {path}')


def test_resume_after_sigkill_gives_identical_params(tmp_path):
    steps = 150
    run_tiny(tmp_path / 'straight', steps, every=10)

    process = run_tiny(tmp_path / 'killed', steps, every=10, wait=False)
    latest = tmp_path / 'killed' / checkpoint.LATEST_DIR
    deadline = time.time() + 240
    while time.time() < deadline:
        done = [int(d) for d in os.listdir(latest) if d.isdigit()] if latest.exists() else []
        if any(10 <= s <= steps - 60 for s in done):
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / 'killed' / 'results.json').exists(), 'run ended before the kill'
    manager = checkpoint.create_manager(str(latest))
    killed_wall = checkpoint.restore_numpy(manager)[1]['time']['wall_s']
    manager.close()

    run_tiny(tmp_path / 'killed', steps, every=10)
    for read in (best_variables, latest_trained):
        straight, resumed = read(str(tmp_path / 'straight')), read(str(tmp_path / 'killed'))
        for path in straight:
            assert np.array_equal(straight[path], resumed[path]), path
    results = [
        json.loads((tmp_path / run / 'results.json').read_text()) for run in ('straight', 'killed')
    ]
    assert results[0]['test'] == results[1]['test']
    assert results[1]['val_curve'] == results[0]['val_curve']  # kept across the resume
    # The wall time counts the killed process (up to its last checkpoint) and the resumed one.
    assert results[1]['time']['wall_s'] > killed_wall > 0


def seeded_splits(config) -> dict:
    """Disk data whose training subset depends on data.subset_seed, as the pipeline's does."""
    splits = tiny.disk_splits()
    train_split = tiny.disk_split(12, seed=0)
    keep = np.random.default_rng(config.data.subset_seed).permutation(12)[:8]
    splits['train'] = pipeline.Split(
        train_split.image[keep], train_split.mask[keep], [train_split.ids[i] for i in keep]
    )
    return splits


@pytest.mark.parametrize('spec,num_pretrain', [('@all', 0), ('dec0,head', 1), ('dec0,head', 2)])
def test_a_run_trained_in_a_group_ends_as_trained_alone(tmp_path, spec, num_pretrain):
    """Scratch (everything trains, nothing shared), a pre-trained frozen spec (the frozen
    params shared by the group) and two pre-trainings (frozen params per run): each seed's
    best params within 1e-5 of its run alone."""
    pretrained = [str(tmp_path / f'pre{i}') for i in range(num_pretrain)]
    for i, directory in enumerate(pretrained):
        trainer.train_and_evaluate(tiny.tiny_config(seed=i), directory, splits=tiny.disk_splits())

    def config(seed):
        overrides = {'seed': seed, 'data.subset_seed': seed, 'finetune.train': spec}
        overrides['init_from'] = pretrained[seed % num_pretrain] if pretrained else ''
        return tiny.tiny_config(**overrides)

    seeds = (0, 1, 2)
    runs = [
        groups.Member(config(s), str(tmp_path / 'group' / f's{s}'), name=f's{s}') for s in seeds
    ]
    outcome = trainer.train_group(
        runs, str(tmp_path / 'group_state'), name='g', splits_fn=seeded_splits, vectorize='vmap'
    )
    assert all(isinstance(outcome[r.workdir], dict) for r in runs)
    for s, run in zip(seeds, runs):
        alone = str(tmp_path / 'alone' / f's{s}')
        expected = trainer.train_and_evaluate(config(s), alone, splits=seeded_splits(config(s)))
        grouped = json.loads((tmp_path / 'group' / f's{s}' / 'results.json').read_text())
        assert grouped['group'] == {'name': 'g', 'size': 3} and expected['group']['size'] == 1
        assert grouped['best_step'] == expected['best_step']
        np.testing.assert_allclose(
            grouped['val_curve']['dice'], expected['val_curve']['dice'], atol=1e-5
        )
        one, many = best_variables(alone), best_variables(run.workdir)
        assert one.keys() == many.keys()
        for path in one:
            np.testing.assert_allclose(one[path], many[path], atol=1e-5, err_msg=f's{s} {path}')
    # Seeds differ (own init or subset, order and augmentation): the runs are not copies.
    first, second = best_variables(runs[0].workdir), best_variables(runs[1].workdir)
    assert any(not np.allclose(first[p], second[p]) for p in first)


def _trained_half_step(state, frozen, batch, rngs, *, model, tx, frozen_units, config):
    """The train step as it was before the optimiser covered the whole tree (one run, no
    batch statistics): `tx` of the trained half only, updated with its own gradients."""
    trainable, opt_state = jax.tree.map(lambda x: x[0], (state.trainable, state.opt_state))
    augment_rng, dropout_rng = jax.random.split(jax.random.fold_in(rngs[0], state.step))
    images, masks = augment.augment_batch(
        augment_rng, batch['image'][0], batch['mask'][0], config.augment
    )

    def loss_fn(trainable):
        logits = model.apply(
            {'params': freeze.merge(trainable, frozen)},
            images,
            train=True,
            frozen_units=frozen_units,
            rngs={'dropout': dropout_rng},
        )
        return metrics.segmentation_loss(
            logits, masks, bce_weight=config.loss.bce_weight, dice_weight=config.loss.dice_weight
        ).mean()

    grads = jax.grad(loss_fn)(trainable)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    return state.replace(
        step=state.step + 1,
        trainable=jax.tree.map(lambda x: x[None], trainable),
        opt_state=jax.tree.map(lambda x: x[None], opt_state),
    )


def test_the_whole_tree_optimiser_steps_as_the_trained_half_one_did():
    """A fixed fine-tune (AdamW with weight decay, gradient clipping, a soft spec's per-block
    scales) through optax.multi_transform on the whole tree: the trained leaves end within
    1e-6 of the trained-half optimiser's, and no frozen leaf is written."""
    config = tiny.tiny_config(
        **{
            'optimizer.name': 'adamw',
            'optimizer.weight_decay': 0.1,
            'optimizer.grad_clip_norm': 0.5,
        }
    )
    model = models.create_model(config.model)
    registry = layer_registry.build_registry(model, image_size=32, in_channels=1)
    plan = freeze.compile_spec('enc0,dec0', registry)
    scales = {'enc0': 0.5, 'dec0': 1.0}
    state, frozen, frozen_axis, _ = initial_state.create_train_state(
        [config], model=model, plan=plan, scales=scales
    )
    assert frozen_axis is None and set(state.trainable) == {'enc0', 'dec0'}
    frozen_before = jax.tree.map(np.array, frozen)
    new_step = jax.jit(
        functools.partial(
            steps.train_step,
            model=model,
            config=steps.StepConfig.of(config, per_block_scales=True),
            frozen_units=plan.frozen_units,
            frozen_axis=frozen_axis,
        )
    )
    half_tx = steps.create_train_tx(config, scales)
    half_state = half_tx.init(jax.tree.map(lambda x: x[0], state.trainable))
    old_state = state.replace(opt_state=jax.tree.map(lambda x: x[None], half_state))
    old_step = jax.jit(
        functools.partial(
            _trained_half_step,
            model=model,
            tx=half_tx,
            frozen_units=plan.frozen_units,
            config=config,
        )
    )
    split = tiny.disk_split(8)
    rngs = jax.random.key(0)[None]
    for step in range(4):
        picks = groups.batch_indices(step, 4, 8, seed=0)
        batch = steps.train_batch(split.image[picks][None], split.mask[picks][None], [config])
        state, _ = new_step(state, frozen, batch, rngs)
        old_state = old_step(old_state, frozen, batch, rngs)
    initial = initial_params(config)
    trained = traverse_util.flatten_dict(state.trainable, sep='/')
    for path, old in traverse_util.flatten_dict(old_state.trainable, sep='/').items():
        assert not np.array_equal(trained[path][0], initial[path]), f'{path} should have trained'
        np.testing.assert_allclose(trained[path], old, atol=1e-6, rtol=0, err_msg=path)
    for before, after in zip(jax.tree.leaves(frozen_before), jax.tree.leaves(frozen)):
        assert np.array_equal(before, after)
    trained_state = [x for x in jax.tree.leaves(state.opt_state) if x.ndim > 1]
    num_trained = sum(x.size for x in jax.tree.leaves(state.trainable))
    assert sum(x.size for x in trained_state) == 2 * num_trained  # Adam's moments, nothing frozen


def test_programs_are_keyed_by_their_inputs_half_precision_included():
    """Two groups that differ only in half_precision have the same argument signature (params
    stay float32) but not the same model: they get different executables; the same inputs
    again get the cached one."""
    watch = io_utils.Stopwatch()
    split = tiny.disk_split(4)
    programs = []
    for half_precision in (False, True, False):
        config = tiny.tiny_config(half_precision=half_precision)
        model = models.create_model(config.model, half_precision=half_precision)
        registry = layer_registry.build_registry(model, image_size=32, in_channels=1)
        plan = freeze.compile_spec('enc0,dec0', registry)
        state, frozen, frozen_axis, _ = initial_state.create_train_state(
            [config], model=model, plan=plan
        )
        batch = steps.train_batch(split.image[None], split.mask[None], [config])
        inputs = dict(
            model=model,
            config=steps.StepConfig.of(config),
            frozen_units=plan.frozen_units,
            frozen_axis=frozen_axis,
        )
        args = (state, frozen, batch, jax.random.key(0)[None])
        programs.append(steps.compiled(steps.train_step, inputs, args, watch, donate_argnums=(0,)))
    assert programs[0] is not programs[1] and programs[2] is programs[0]
    assert 'bf16' in programs[1].as_text() and 'bf16' not in programs[0].as_text()
    with pytest.raises(TypeError, match='config cannot be hashed'):
        steps.compiled(steps.train_step, dict(inputs, config=config), args, watch)


def test_targets_that_differ_only_in_flips_share_the_step_program():
    """The flip is an input of the step (steps.train_batch), not part of its key: an
    ultrasound target (flips) and an X-ray target (none) with the same model, spec and shapes
    run one compiled program; any other augmentation setting still keys its own."""
    watch = io_utils.Stopwatch()
    split = tiny.disk_split(4)
    found = []
    for overrides in (dict(flip=True), dict(flip=False), dict(flip=False, affine=False)):
        config = tiny.tiny_config()
        config.augment.update(overrides)
        model = models.create_model(config.model)
        registry = layer_registry.build_registry(model, image_size=32, in_channels=1)
        plan = freeze.compile_spec('enc0,dec0', registry)
        state, frozen, frozen_axis, _ = initial_state.create_train_state(
            [config], model=model, plan=plan
        )
        batch = steps.train_batch(split.image[None], split.mask[None], [config])
        assert batch[steps.FLIP].tolist() == [[0.5 if overrides['flip'] else 0.0] * 4]
        inputs = dict(model=model, config=steps.StepConfig.of(config),
                      frozen_units=plan.frozen_units, frozen_axis=frozen_axis)  # fmt: skip
        args = (state, frozen, batch, jax.random.key(0)[None])
        found.append(steps.compiled(steps.train_step, inputs, args, watch))
    assert found[0] is found[1] and found[2] is not found[0]


def test_init_compiled_for_speed_gives_the_default_compiles_params_bit_for_bit():
    """initial_state.initial_variables compiles the init at a low XLA:CPU optimisation level
    (initial_state.INIT_CPU_OPTIONS; about 10x faster to compile): the params must equal XLA's
    default build (measured: at level 0 they differ in the last bit, at 1 and 2 they do not)."""
    config = tiny.tiny_config()
    model = models.create_model(config.model)
    size = config.data.image_size
    dummy = jax.numpy.zeros((1, size, size, config.model.in_channels))
    default = jax.jit(functools.partial(model.init, train=False))
    for seed in (0, 5):
        config.seed = seed
        fast = initial_state.initial_variables(model, config)
        slow = default(jax.random.key(seed), dummy)
        pairs = zip(jax.tree.leaves(fast), jax.tree.leaves(slow), strict=True)
        assert all(np.array_equal(a, np.asarray(b)) for a, b in pairs)


def test_a_group_makes_its_freeze_plan_once_and_passes_it_on(tmp_path, monkeypatch):
    """One group's life asks for its freeze plan once: the spec is compiled once, the
    parameters labelled once (at state creation) and the step FLOPs modelled once (when the
    plan is made); the write-out reads them from the plan."""
    calls = {'compile_spec': 0, 'labels': 0, 'train_step_flops': 0}

    def counted(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(freeze, 'compile_spec', counted('compile_spec', freeze.compile_spec))
    monkeypatch.setattr(
        freeze.FreezePlan, 'labels', counted('labels', freeze.FreezePlan.labels)
    )
    monkeypatch.setattr(
        layer_registry.LayerRegistry,
        'train_step_flops',
        counted('train_step_flops', layer_registry.LayerRegistry.train_step_flops),
    )
    runs = [
        groups.Member(
            tiny.tiny_config(seed=s, **{'finetune.train': 'dec0,head'}),
            str(tmp_path / f's{s}'),
            name=f's{s}',
        )
        for s in (0, 1)
    ]
    outcome = trainer.train_group(
        runs, str(tmp_path / 'state'), name='g', splits_fn=lambda c: tiny.disk_splits()
    )
    assert all(isinstance(outcome[r.workdir], dict) for r in runs)
    assert calls == {'compile_spec': 1, 'labels': 1, 'train_step_flops': 1}
    # ... and each run's results carry the plan's numbers.
    registry = layer_registry.build_registry(
        models.create_model(runs[1].config.model),
        image_size=runs[1].config.data.image_size,
        in_channels=runs[1].config.model.in_channels,
    )
    plan = freeze.compile_spec('dec0,head', registry, order='forward', granularity='block')
    written = json.loads((tmp_path / 's1' / 'results.json').read_text())
    assert written['trained_units'] == list(plan.trained_units)
    assert written['params'] == plan.param_counts
    assert written['cost']['step_flops_per_image'] == plan.step_flops_per_image
