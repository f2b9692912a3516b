"""Freezing: the spec language, canonical names, labels, and frozen params under optax."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from unet_jax import freeze
from unet_jax.freeze import FreezeSpecError, compile_spec
from unet_jax.models import UNet
from unet_jax.models.layer_registry import build_registry

SIZE = 32


@pytest.fixture(scope='module')
def registry():
    return build_registry(UNet(depth=2, base_width=4), image_size=SIZE, in_channels=1)


def _units(spec, registry, **kwargs):
    return compile_spec(spec, registry, **kwargs).trained_units


# ---------------------------------------------------------------------------- the spec


def test_block_unit_and_group_selectors(registry):
    assert _units('enc1', registry) == ('enc1/conv0', 'enc1/conv1')
    assert _units('dec0/up', registry) == ('dec0/up',)
    assert _units('@contracting', registry) == (
        'enc0/conv0',
        'enc0/conv1',
        'enc1/conv0',
        'enc1/conv1',
    )
    assert _units('@bottleneck', registry) == ('bottleneck/conv0', 'bottleneck/conv1')
    assert _units('@head', registry) == ('head/conv0',)
    assert _units('@expanding', registry) == tuple(
        f'dec{i}/{u}' for i in (1, 0) for u in ('up', 'conv0', 'conv1')
    )
    assert _units('@all', registry) == registry.unit_names
    plan = compile_spec('@none', registry)
    assert plan.trains_nothing and plan.frozen_units == registry.unit_names
    # Selectors are combined in any order and come back in forward order.
    assert _units('head, enc0/conv1', registry) == ('enc0/conv1', 'head/conv0')


def test_ranges_follow_forward_order(registry):
    assert _units('enc1..dec1', registry) == (
        'enc1/conv0',
        'enc1/conv1',
        'bottleneck/conv0',
        'bottleneck/conv1',
        'dec1/up',
        'dec1/conv0',
        'dec1/conv1',
    )
    assert _units('enc0/conv1..enc1/conv0', registry) == ('enc0/conv1', 'enc1/conv0')
    assert _units('bottleneck/conv1..dec1', registry) == (
        'bottleneck/conv1',
        'dec1/up',
        'dec1/conv0',
        'dec1/conv1',
    )
    with pytest.raises(FreezeSpecError, match=r"runs backwards.*write 'enc0..dec1'"):
        compile_spec('dec1..enc0', registry)


def test_subtraction_applies_after_additions(registry):
    assert _units('-enc1,enc1..bottleneck', registry) == ('bottleneck/conv0', 'bottleneck/conv1')
    assert _units('@all,-@expanding,-head', registry) == _units('enc0..bottleneck', registry)
    # Only subtractions: subtract from everything.
    assert _units('-enc0', registry) == registry.unit_names[2:]


def test_regex_matches_full_unit_names(registry):
    assert _units(r're:dec\d/up', registry) == ('dec1/up', 'dec0/up')
    assert _units('re:enc1/.*,re:head/conv0', registry) == (
        'enc1/conv0',
        'enc1/conv1',
        'head/conv0',
    )
    with pytest.raises(FreezeSpecError, match="'re:up' .* matches no unit"):
        compile_spec('re:up', registry)  # 'up' alone is no full unit name
    with pytest.raises(FreezeSpecError, match='Bad regex'):
        compile_spec('re:(', registry)


def test_first_last_forward_order(registry):
    assert _units('first:3', registry) == ('enc0/conv0', 'enc0/conv1', 'enc1/conv0')
    assert _units('last:2', registry) == ('dec0/conv1', 'head/conv0')
    assert _units('first:2', registry, granularity='block') == _units('@contracting', registry)
    assert _units('last:2', registry, granularity='block') == (
        'dec0/up',
        'dec0/conv0',
        'dec0/conv1',
        'head/conv0',
    )


def test_first_last_level_order(registry):
    # Level order: enc0, dec0, head (level 0) ... bottleneck (deepest).
    assert _units('first:3', registry, order='level', granularity='block') == (
        'enc0/conv0',
        'enc0/conv1',
        'dec0/up',
        'dec0/conv0',
        'dec0/conv1',
        'head/conv0',
    )
    assert _units('last:1', registry, order='level', granularity='block') == (
        'bottleneck/conv0',
        'bottleneck/conv1',
    )
    assert _units('first:3', registry, order='level', granularity='unit') == (
        'enc0/conv0',
        'enc0/conv1',
        'dec0/up',
    )
    assert _units('last:3', registry, order='level', granularity='unit') == (
        'bottleneck/conv0',
        'bottleneck/conv1',
        'dec1/conv1',
    )


@pytest.mark.parametrize(
    'spec,message',
    [
        (
            'enc7',
            r"Unknown layer 'enc7' in freeze spec 'enc7' \(config.finetune.train\)\. "
            r'Valid names: blocks: enc0, enc1, bottleneck, dec1, dec0, head; units: '
            r'enc0/conv0, .*head/conv0; groups: @contracting',
        ),
        ('enc0..dec9', r"Unknown layer 'dec9'.*blocks: enc0"),
        (
            '@decoder',
            r"Unknown group '@decoder'.*groups: @contracting, @bottleneck, @expanding, "
            r'@head, @all, @none',
        ),
        ('first:0', r'N must be an integer from 1 to 13 \(the number of units'),
        ('last:x', r'N must be an integer from 1 to 13'),
        ('enc0,,enc1', r'empty selector'),
        ('', r'empty selector'),
        ('enc0,-enc0', r"trains nothing\. If that is meant .* write exactly '@none'"),
        ('@none,enc0', r'@none trains nothing and must be the whole spec'),
    ],
)
def test_spec_errors_say_what_and_list_valid_names(registry, spec, message):
    with pytest.raises(FreezeSpecError, match=message):
        compile_spec(spec, registry)


def test_bad_order_or_granularity(registry):
    with pytest.raises(FreezeSpecError, match=r"config.finetune.order='depth'"):
        compile_spec('first:1', registry, order='depth')
    with pytest.raises(FreezeSpecError, match=r"config.finetune.granularity='layer'"):
        compile_spec('first:1', registry, granularity='layer')


@pytest.mark.parametrize(
    'spec,canonical',
    [
        ('@all', '@all'),
        ('enc0..head', '@all'),
        ('@none', '@none'),
        ('enc0..enc1', '@contracting'),
        ('dec1,dec0', '@expanding'),
        ('enc1,enc0', '@contracting'),
        ('enc0', 'enc0'),
        ('enc1/conv0', 'enc1/conv0'),
        ('@head', 'head'),
        ('bottleneck', 'bottleneck'),
        ('enc0..enc1,-@contracting,dec0', 'dec0'),
        ('enc1,enc0,-enc0/conv0', 'enc0/conv1..enc1'),
        ('bottleneck/conv1..dec1/conv0', 'bottleneck/conv1..dec1/conv0'),
        ('head, enc0, bottleneck', 'enc0,bottleneck,head'),
        (r're:dec\d/up', 'dec1/up,dec0/up'),
        ('-enc0', 'enc1..head'),
    ],
)
def test_canonical_form_is_stable_and_round_trips(registry, spec, canonical):
    plan = compile_spec(spec, registry)
    assert plan.canonical == canonical
    again = compile_spec(plan.canonical, registry)
    assert again.trained_units == plan.trained_units
    assert again.canonical == plan.canonical


def test_canonical_form_of_first_last_is_independent_of_how_it_was_written(registry):
    a = compile_spec('first:2', registry, granularity='block')
    b = compile_spec('first:4', registry, granularity='unit')
    assert a.canonical == b.canonical == '@contracting'
    c = compile_spec('first:3', registry, order='level', granularity='block')
    assert c.canonical == 'enc0,dec0..head'
    assert compile_spec(c.canonical, registry).trained_units == c.trained_units


# ---------------------------------------------------------------------------- labels


def _init(model):
    return model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)), train=False)


def _shapes(model):
    """Parameter shapes only: enough for labels, splitting and tables, and fast."""
    x = jnp.zeros((1, SIZE, SIZE, 1))
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))['params']


def test_labels_cover_every_param_once_in_the_same_container(registry):
    params = _shapes(UNet(depth=2, base_width=4))
    plan = compile_spec('enc0,dec0/up', registry)
    labels = plan.labels(params)
    assert type(labels) is dict
    assert jax.tree_util.tree_structure(labels) == jax.tree_util.tree_structure(params)
    assert labels['dec0']['up'] == {'kernel': 'train', 'bias': 'train'}
    assert labels['dec0']['conv0']['conv']['kernel'] == 'freeze'
    frozen_labels = plan.labels(flax.core.freeze(params))
    assert type(frozen_labels) is flax.core.FrozenDict
    counts = {'train': 0, 'freeze': 0}
    for leaf, label in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(labels)):
        counts[label] += np.prod(leaf.shape)
    assert counts['train'] == sum(registry.unit(u).param_count for u in plan.trained_units)
    assert counts['train'] + counts['freeze'] == registry.param_count


def test_labels_of_params_from_another_model_fail(registry):
    params = _shapes(UNet(depth=3, base_width=4))
    with pytest.raises(
        ValueError,
        match=r'Parameter (enc|dec)2/conv0/conv/\w+ belongs to no '
        r'unit.*Build both from the same',
    ):
        compile_spec('enc0', registry).labels(params)


def test_split_and_merge(registry):
    params = _shapes(UNet(depth=2, base_width=4))
    labels = compile_spec('enc1,head', registry).labels(params)
    trainable, frozen = freeze.split_trainable(params, labels)
    assert set(trainable) == {'enc1', 'head'}
    assert 'enc1' not in frozen and 'enc0' in frozen
    merged = freeze.merge(trainable, frozen)
    assert jax.tree_util.tree_structure(merged) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(merged), jax.tree_util.tree_leaves(params)):
        assert a is b


def test_parameter_table_lists_blocks_in_forward_order_with_counts(registry):
    params = _shapes(UNet(depth=2, base_width=4))
    plan = compile_spec('enc0,dec0/up', registry)
    sorted_params = jax.tree.map(lambda x: x, params)  # keys now sorted
    table = plan.parameter_table(sorted_params, plan.labels(params))
    lines = table.splitlines()
    assert [line.split()[0] for line in lines[2:-1]] == list(registry.block_names)
    enc0 = registry.block('enc0').param_count
    up = registry.unit('dec0/up').param_count
    assert lines[2].split()[:4] == ['enc0', f'{enc0:,}', '0', f'{enc0:,}']
    assert lines[6].split()[-1] == 'up'
    assert lines[-1].split()[:2] == ['total', f'{enc0 + up:,}']


# ---------------------------------------------------------------------------- under optax


def _loss(model, params, x, y):
    return jnp.mean((model.apply({'params': params}, x, train=False) - y) ** 2)


def _run(model, params, labels, train_tx, steps, zero_grads=False):
    tx = freeze.make_optimizer(train_tx, labels)
    opt_state = tx.init(params)
    x = jax.random.normal(jax.random.key(1), (2, SIZE, SIZE, 1))
    y = jax.random.normal(jax.random.key(2), (2, SIZE, SIZE, 1))
    grad_fn = jax.jit(jax.grad(lambda p: _loss(model, p, x, y)))
    for _ in range(steps):
        grads = grad_fn(params)
        if zero_grads:
            grads = jax.tree.map(jnp.zeros_like, grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    return params, opt_state


def _changed(before, after, labels):
    b, a, lab = (flax.traverse_util.flatten_dict(t) for t in (before, after, labels))
    return (
        {k for k in b if lab[k] == 'freeze' and not np.array_equal(b[k], a[k])},
        {k for k in b if lab[k] == 'train' and np.array_equal(b[k], a[k])},
    )


def test_adam_moves_every_trained_leaf_and_no_frozen_leaf(registry):
    model = UNet(depth=2, base_width=4)
    params = _init(model)['params']
    labels = compile_spec('enc0/conv1,bottleneck,dec0/up,head', registry).labels(params)
    new_params, opt_state = _run(model, params, labels, optax.adam(1e-2), steps=3)
    moved_frozen, still_trained = _changed(params, new_params, labels)
    assert not moved_frozen and not still_trained
    # No optimiser state for frozen leaves: Adam's moments exist for trained leaves only.
    trained = sum(
        leaf.size
        for leaf, lab in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(labels))
        if lab == 'train'
    )
    state_size = sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(opt_state))
    assert 2 * trained <= state_size <= 2 * trained + 4  # mu, nu + step counts
    adam_state = opt_state.inner_states['freeze'].inner_state
    mu = flax.traverse_util.flatten_dict(opt_state.inner_states['train'].inner_state[0].mu)
    for path, label in flax.traverse_util.flatten_dict(labels).items():
        assert isinstance(mu[path], optax.MaskedNode) == (label == 'freeze')
    assert not jax.tree_util.tree_leaves(adam_state)


def test_weight_decay_never_moves_a_frozen_leaf(registry):
    model = UNet(depth=2, base_width=4)
    params = _init(model)['params']
    labels = compile_spec('@expanding', registry).labels(params)
    new_params, _ = _run(
        model, params, labels, optax.adamw(1e-1, weight_decay=0.5), steps=2, zero_grads=True
    )
    moved_frozen, _ = _changed(params, new_params, labels)
    assert not moved_frozen
    # With zero gradients only the decay moves trained kernels (biases start at zero).
    kernel = ('dec1', 'conv0', 'conv', 'kernel')
    before = flax.traverse_util.flatten_dict(params)[kernel]
    after = flax.traverse_util.flatten_dict(new_params)[kernel]
    assert float(jnp.abs(after).sum()) < float(jnp.abs(before).sum())


def test_differentiating_only_the_trainable_half_gives_the_same_step(registry):
    model = UNet(depth=2, base_width=4)
    params = _init(model)['params']
    labels = compile_spec('dec0', registry).labels(params)
    x = jax.random.normal(jax.random.key(1), (2, SIZE, SIZE, 1))
    y = jax.random.normal(jax.random.key(2), (2, SIZE, SIZE, 1))
    trainable, frozen = freeze.split_trainable(params, labels)
    grads = jax.grad(lambda t: _loss(model, freeze.merge(t, frozen), x, y))(trainable)
    full = jax.grad(lambda p: _loss(model, p, x, y))(params)
    full_trainable, _ = freeze.split_trainable(full, labels)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(full_trainable)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_batch_norm_statistics_of_frozen_units_do_not_change():
    model = UNet(depth=2, base_width=4, norm='batch')
    registry = build_registry(model, image_size=SIZE, in_channels=1)
    plan = compile_spec('enc1..bottleneck', registry)
    variables = _init(model)
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(1), (4, SIZE, SIZE, 1))
    _, updates = model.apply(
        variables, x, train=True, frozen_units=plan.frozen_units, mutable=['batch_stats']
    )
    before = flax.traverse_util.flatten_dict(variables['batch_stats'])
    after = flax.traverse_util.flatten_dict(updates['batch_stats'])
    assert before.keys() == after.keys()
    for path in before:
        unit = '/'.join(path[:2])
        same = np.array_equal(before[path], after[path])
        assert same == (unit in plan.frozen_units), path
    # Frozen units use the running statistics in training mode, i.e. behave as at eval.
    frozen_all = compile_spec('@none', registry).frozen_units
    train_out, _ = model.apply(
        variables, x, train=True, frozen_units=frozen_all, mutable=['batch_stats']
    )
    np.testing.assert_allclose(train_out, model.apply(variables, x, train=False), rtol=1e-6)
