"""Parameter-efficient freeze specs: `lora:R@`, `norm@`, `bias@` (unet_jax.freeze,
unet_jax.freeze.adapters) in the spec language, in training, in the cost model and in the study."""

from __future__ import annotations

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import layerwise
from tests import tiny
from unet_jax import freeze, models
from unet_jax.config import families
from unet_jax.freeze import FreezeSpecError, adapters, compile_spec
from unet_jax.models import layer_registry, metrics
from unet_jax.study import sweep_points
from unet_jax.train import checkpoint, initial_state, trainer

SIZE = 32


def _registry(norm='none'):
    model = models.create_model(dict(tiny.tiny_config().model, norm=norm))
    return model, layer_registry.build_registry(model, image_size=SIZE, in_channels=1)


@pytest.fixture(scope='module')
def plain():
    return _registry('none')


@pytest.fixture(scope='module')
def batchnorm():
    return _registry('batch')


def _flat(tree):
    return traverse_util.flatten_dict(tree, sep='/')


def _params(model, seed=0):
    x = jnp.zeros((1, SIZE, SIZE, 1))
    return jax.tree.map(np.asarray, model.init(jax.random.key(seed), x, train=False))


# ---------------------------------------------------------------------------- the spec


def test_method_selectors_name_parts_of_units(plain, batchnorm):
    _, registry = plain
    plan = compile_spec('lora:4@enc0..enc1', registry)
    assert plan.canonical == 'lora:4@@contracting'
    assert plan.trained_units == registry.expand(['enc0', 'enc1'])
    assert plan.lora_ranks == dict.fromkeys(registry.expand(['enc0', 'enc1']), 4)
    # The head's 1x1 kernel is not adapted: lora@@all trains the head whole.
    lora = compile_spec('lora:8@@all', registry)
    assert lora.canonical == 'lora:8@@all' and lora.trained_units == registry.unit_names
    assert lora.parts('head/conv0') == (freeze.WHOLE,) and 'head/conv0' not in lora.lora_ranks
    assert compile_spec('lora:2@last:1', registry).trained_units == ('head/conv0',)
    bias = compile_spec('bias@@all', registry)
    assert bias.trained_units == registry.unit_names and bias.frozen_units == ()
    assert bias.parts('enc0/conv0') == ('bias',) and bias.kernel_units == ()
    # Whole units absorb the parts; parts follow in METHODS order; canonical forms recompile.
    mixed = compile_spec('bias@dec0..head, enc0, norm@@all', batchnorm[1])
    assert mixed.canonical == 'enc0,norm@enc1..head,bias@dec0..head'
    assert mixed.parts('enc0/conv0') == (freeze.WHOLE,)
    assert mixed.parts('dec0/conv1') == ('norm', 'bias')
    assert mixed.parts('dec0/up') == ('bias',)  # the up-conv has no norm
    again = compile_spec(mixed.canonical, batchnorm[1])
    assert (again.canonical, again.partial) == (mixed.canonical, mixed.partial)
    # A subtraction removes whole units from every selector.
    assert 'enc0/conv0' not in compile_spec('norm@@all,-enc0', batchnorm[1]).trained_units


@pytest.mark.parametrize(
    'spec, message',
    [
        ('lora:0@@all', r"rank R of 'lora:R@SELECTOR' must be a positive integer"),
        ('lora:x@enc0', r"rank R of 'lora:R@SELECTOR' must be a positive integer"),
        ('lora:2@enc0,lora:4@enc0..enc1', r'two adapter ranks \(lora:2, lora:4\)'),
        ('@all,-norm@enc0', 'a subtraction removes whole units'),
        ('norm@@all', r'--config.model.norm=batch'),
        ('bias@@all,-@all', 'trains nothing'),
        ('bias@enc9', "Unknown layer 'enc9'"),
    ],
)
def test_bad_method_specs_say_what_to_write(plain, spec, message):
    with pytest.raises(FreezeSpecError, match=message):
        compile_spec(spec, plain[1])


def test_labels_and_counts_follow_the_parts(batchnorm):
    model, registry = batchnorm
    params = _params(model)['params']
    norm = _flat(compile_spec('norm@@all', registry).labels(params))
    assert {p for p, label in norm.items() if label == 'train'} == {
        p for p in norm if '/norm/' in p
    }
    bias = _flat(compile_spec('bias@@all', registry).labels(params))
    assert {p for p, label in bias.items() if label == 'train'} == {
        p for p in bias if p.endswith('/bias')
    }
    plan = compile_spec('lora:3@enc0,norm@dec0', registry)
    with_adapters = adapters.add(params, plan.lora_ranks, np.random.default_rng(0))
    labels = _flat(plan.labels(with_adapters))
    trained = sorted(p for p, label in labels.items() if label == 'train')
    assert trained == [
        'dec0/conv0/norm/bias', 'dec0/conv0/norm/scale', 'dec0/conv1/norm/bias',
        'dec0/conv1/norm/scale', 'enc0/conv0/conv/lora_a', 'enc0/conv0/conv/lora_b',
        'enc0/conv1/conv/lora_a', 'enc0/conv1/conv/lora_b',
    ]  # fmt: skip
    # The counts come from the registry alone and equal the leaves of the tree with adapters.
    sizes = {p: np.size(v) for p, v in _flat(with_adapters).items()}
    counts = plan.param_counts
    assert counts['trained'] == sum(sizes[p] for p in trained)
    assert counts['total'] == registry.param_count
    assert counts['frozen'] == registry.param_count - (counts['trained'] - sum(
        sizes[p] for p in trained if 'lora' in p
    ))  # fmt: skip
    # enc0/conv0's kernel is [3, 3, 1, 4]: A [9, 3], B [3, 4].
    assert sizes['enc0/conv0/conv/lora_a'] == 27 and sizes['enc0/conv0/conv/lora_b'] == 12


# ---------------------------------------------------------------------------- adapters


def test_lora_starts_as_the_pretrained_model_and_folds_exactly(plain):
    model, registry = plain
    variables = _params(model)
    plan = compile_spec('lora:4@@all', registry)
    added = initial_state.with_adapters(variables, plan, seed=0)
    flat = _flat(added['params'])
    assert sum(p.endswith('conv/lora_a') for p in flat) == 10  # 4 enc + 2 bottleneck + 4 dec
    assert sum(p.endswith('up/lora_a') for p in flat) == 2
    # B = 0: folding gives back the pre-trained kernels bit for bit.
    folded = _flat(adapters.fold(added['params']))
    assert folded.keys() == _flat(variables['params']).keys()
    for path, value in _flat(variables['params']).items():
        assert np.array_equal(folded[path], value), path
    # With B != 0 the folded kernel is W + reshape(A @ B) / sqrt(R), and the model's output on
    # folded params is the sum of the base conv and the adapter's conv (convolution is linear).
    rng = np.random.default_rng(1)
    changed = {
        p: (rng.standard_normal(v.shape).astype(np.float32) if p.endswith('lora_b') else v)
        for p, v in flat.items()
    }
    tree = traverse_util.unflatten_dict(changed, sep='/')
    kernel = _flat(adapters.fold(tree))['enc1/conv0/conv/kernel']
    a, b = changed['enc1/conv0/conv/lora_a'], changed['enc1/conv0/conv/lora_b']
    w = changed['enc1/conv0/conv/kernel']
    np.testing.assert_allclose(kernel, w + (a @ b).reshape(w.shape) / 2.0, rtol=1e-6, atol=1e-6)
    x = jnp.asarray(rng.standard_normal((2, 16, 16, 4)), jnp.float32)
    conv = lambda k: jax.lax.conv_general_dilated(
        x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )
    np.testing.assert_allclose(
        conv(kernel), conv(w) + conv((a @ b).reshape(w.shape) / 2.0), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize(
    'spec, norm, trains',
    [
        ('lora:2@@all', 'none', lambda p: p.endswith('/kernel') or p.startswith('head/')),
        ('norm@@all', 'batch', lambda p: '/norm/' in p),
        ('bias@@all', 'none', lambda p: p.endswith('/bias')),
    ],
)
def test_training_moves_only_the_selected_parts(tmp_path, spec, norm, trains):
    """The best params (folded) differ from the initial ones exactly where the spec trains;
    every other leaf is bit-identical. The run's evaluation equals `predict` on them."""
    config = tiny.tiny_config(**{'finetune.train': spec, 'model.norm': norm})
    results = trainer.train_and_evaluate(config, str(tmp_path), splits=tiny.disk_splits())
    model = models.create_model(config.model)
    before = _flat(initial_state.initial_variables(model, config)['params'])
    best, _ = checkpoint.load_variables(str(tmp_path))
    after = _flat(best['params'])
    assert after.keys() == before.keys()  # folded: no adapters in the best params
    for path, value in before.items():
        assert np.array_equal(value, after[path]) != trains(path), path
    assert results['params'] == compile_spec(spec, _registry(norm)[1]).param_counts
    # The test Dice of results.json is that of the folded best params.
    variables = {'params': best['params']}
    if norm == 'batch':
        variables['batch_stats'] = best['batch_stats']
    test = tiny.disk_splits()['test']
    logits = model.apply(variables, test.image, train=False)
    counts = metrics.overlap_counts((logits > 0).astype(jnp.float32), test.mask)
    dice = metrics.split_metrics(**{k: np.asarray(v) for k, v in counts.items()},
                                 loss=np.zeros(len(test)))['dice']  # fmt: skip
    assert dice == pytest.approx(results['test']['dice'], abs=1e-6)


# ---------------------------------------------------------------------------- cost model


def _xla_step_flops(model, registry, spec):
    """XLA's FLOP count of the loss and gradient of the trained leaves (adapters folded)."""
    plan = compile_spec(spec, registry)
    split = tiny.disk_split(4, size=SIZE)
    variables = initial_state.with_adapters(_params(model), plan, seed=0)
    params = variables['params']
    trainable, frozen = freeze.split_trainable(params, plan.labels(params))
    stats = variables.get('batch_stats')

    def loss_fn(trainable):
        merged = {'params': adapters.fold(freeze.merge(trainable, frozen))}
        if stats:
            merged['batch_stats'] = stats
        logits = model.apply(
            merged, split.image, train=True, frozen_units=plan.frozen_units,
            mutable=['batch_stats'] if stats else False,
        )  # fmt: skip
        logits = logits[0] if stats else logits
        return metrics.segmentation_loss(logits, split.mask, bce_weight=1.0, dice_weight=1.0).mean()

    compiled = jax.jit(jax.value_and_grad(loss_fn)).lower(trainable).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    modelled = plan.step_flops_per_image * len(split.image) + plan.adapter_flops_per_step
    return cost['flops'], modelled


@pytest.mark.parametrize(
    'spec, norm',
    [('lora:4@@all', 'none'), ('lora:2@dec0..head', 'none'), ('bias@@all', 'none'),
     ('norm@@all', 'batch'), ('norm@@expanding', 'batch')],
)  # fmt: skip
def test_step_flop_model_agrees_with_xla_cost_analysis(spec, norm):
    model, registry = _registry(norm)
    measured, modelled = _xla_step_flops(model, registry, spec)
    assert modelled == pytest.approx(measured, rel=0.15)


def test_parameter_efficient_steps_cost_less_than_full_in_the_model(plain):
    _, registry = plain
    full = registry.train_step_flops(registry.unit_names)
    bias = compile_spec('bias@@all', registry).step_flops_per_image
    lora = compile_spec('lora:8@@all', registry).step_flops_per_image
    assert registry.forward_flops() < bias < lora <= full
    # No kernel gradient: bias-only costs forward + activation gradients (about 2 forwards).
    assert bias == pytest.approx(2 * registry.forward_flops(), rel=0.1)


# ---------------------------------------------------------------------------- study


def test_method_families_enumerate_and_never_alias_full():
    config = layerwise.get_config(
        'quick,families=full+lora+norm+bias+lora-r8-shallow_to_deep,ks=2,seeds=1,targets=us'
    )
    assert config.model.norm == 'batch'  # a norm family: the U-Net has norm layers
    assert config.study.pretrain.model.norm == 'batch'
    assert tuple(config.study.families) == (
        'full', 'lora-r2', 'lora-r8', 'norm', 'bias', 'lora-r8-shallow_to_deep'
    )
    points = {p.configuration: p for p in sweep_points.enumerate_sweep(config).points}
    assert points['lora-r8'].spec == 'lora:8@@all' and points['norm'].spec == 'norm@@all'
    shallow = points['lora-r8-shallow_to_deep-forward-block-k2']
    assert shallow.spec == 'lora:8@first:2' and shallow.k == 2
    aliases = {name for name, p in points.items() if p.is_alias}
    # lora:8@last:1 trains the head whole (no kernel to adapt): deep_to_shallow k=1's run.
    assert aliases == set()  # ks=2 only: no k=1 here
    config.study.k_values = (1,)
    config.study.families = ('deep_to_shallow', 'lora-r8-deep_to_shallow', 'lora-r8')
    points = {p.configuration: p for p in sweep_points.enumerate_sweep(config).points}
    assert points['lora-r8-deep_to_shallow-forward-block-k1'].run_name.endswith(
        'deep_to_shallow-forward-block-k1'
    )
    assert not points['lora-r8'].is_alias
    assert families.get('lora-r8-deep_to_shallow').direction_spec(3) == 'lora:8@last:3'
    # its former name (NAME-deep) still reads on the command line, and set directly it says
    # what it is now called
    assert families.expand(['lora-r8-deep']) == ('lora-r8-deep_to_shallow',)
    with pytest.raises(ValueError, match="now called 'lora-r8-deep_to_shallow'"):
        families.get('lora-r8-deep')


def test_method_families_reach_every_cost_figure_of_the_report(tmp_path):
    """Through config/families.py alone: the report's tables, cost figures (their legends are the
    page's alt text) and Pareto front name the parameter-efficient families."""
    from tests.test_study import FakeTrainer, tiny_study_config
    from unet_jax.study import runner

    config = tiny_study_config(
        families=('full', 'shallow_to_deep', 'lora-r8', 'norm', 'bias', 'lora-r8-shallow_to_deep')
    )
    config.model.norm = 'batch'
    config.study.k_values = (1, 2)
    outcome = runner.main(config, str(tmp_path), run_fn=FakeTrainer())
    assert outcome['failed'] == []
    page = open(outcome['report']).read()
    for label in ('LoRA r=8', 'norm only', 'bias only', 'LoRA r=8, shallow-&gt;deep'):
        assert label in page, label
    assert 'lora-r8-shallow_to_deep-forward-block-k2' in page


def test_the_matched_cost_opponent_is_the_validation_pick_among_cheaper_configurations():
    import pandas as pd

    from unet_jax.report import auto

    cell = pd.DataFrame(
        dict(
            family=['full', 'contracting', 'lora-r8', 'auto', 'pretrained'],
            configuration=['full', 'contracting', 'lora-r8', 'auto-rgn-block-k2', 'pretrained'],
            val_dice_mean=[0.90, 0.80, 0.85, 0.99, 0.95],
            train_flops=[10.0, 6.0, 7.0, 4.0, 0.0],
        )
    )
    assert auto.matched_cost_pick(cell, 7.0) == 'lora-r8'  # full costs more; auto excluded
    assert auto.matched_cost_pick(cell, 6.5) == 'contracting'
    assert auto.matched_cost_pick(cell, 20.0) == 'full'
    assert auto.matched_cost_pick(cell, 5.0) is None  # pretrained trains nothing: not a pick


def test_auto_k_fixed_in_advance_enumerates_only_those_k():
    config = layerwise.get_config('quick,families=full+auto,criteria=rgn+greedy,auto_ks=2+4')
    names = sorted({p.configuration for p in sweep_points.enumerate_sweep(config).points})
    assert names == [
        'auto-greedy-block-k2', 'auto-greedy-block-k4', 'auto-rgn-block-k2', 'auto-rgn-block-k4',
        'full',
    ]  # fmt: skip
    config.study.auto_k_values = (0,)
    with pytest.raises(ValueError, match=r'auto_k_values=\(0,\).*auto_ks=1\+2\+8'):
        sweep_points.enumerate_sweep(config)


def test_the_budget_pick_is_chosen_on_validation_within_the_parameter_share():
    import pandas as pd

    from unet_jax.report import budget

    cell = pd.DataFrame(
        dict(
            family=['full', 'lora-r8', 'bias', 'norm', 'pretrained', 'shallow_to_deep'],
            configuration=['full', 'lora-r8', 'bias', 'norm', 'pretrained', 'shallow_to_deep-k1'],
            val_dice_mean=[0.90, 0.85, 0.70, 0.75, 0.99, 0.80],
            trained_fraction=[1.0, 0.08, 0.002, 0.004, 0.0, 0.011],
        )
    )
    assert budget.budget_pick(cell, 0.10)['configuration'] == 'lora-r8'
    assert budget.budget_pick(cell, 0.01)['configuration'] == 'norm'  # pretrained left out
    assert budget.budget_pick(cell, 0.001) is None


def test_every_family_has_a_colour_of_its_own():
    from unet_jax.report import figures

    names = [n for n in families.NAMES if not families.get(n).is_auto]
    colours = [figures.family_color(n) for n in names]
    assert len(set(colours)) == len(colours), dict(zip(names, colours))


def test_a_family_added_to_the_table_gets_a_colour_of_its_own(monkeypatch):
    """A family is one row of the family table: past the end of the palettes, new references
    and directions still get colours no other family has."""
    from unet_jax.report import figures

    added = tuple(f'new{i}' for i in range(12))
    monkeypatch.setattr(families, 'REFERENCES', families.REFERENCES + added)
    monkeypatch.setattr(families, 'DIRECTIONS', families.DIRECTIONS + tuple(f'd{n}' for n in added))
    names = [*families.REFERENCES, *families.DIRECTIONS]
    colours = [figures.family_color(n) for n in names]
    assert len(set(colours)) == len(colours), dict(zip(names, colours))
