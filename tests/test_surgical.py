"""Automatic layer choice: auto: specs, the RGN and probe criteria, the soft variant's scales
(the greedy criterion: tests/test_greedy.py)."""

import json
import math
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests import tiny
from unet_jax import freeze
from unet_jax.config import auto_spec
from unet_jax.freeze import auto_choice, score_scaling
from unet_jax.models import UNet, metrics
from unet_jax.models.layer_registry import build_registry

SIZE = 32
AUTO = auto_spec.default_auto_config()
AUTO.num_examples = 6
AUTO.batch_size = 4  # two batches of 4 and 2: the accumulation over unequal batches is tested
AUTO.probe_steps = 3


@pytest.fixture(scope='module')
def setup():
    model = UNet(depth=2, base_width=4)
    registry = build_registry(model, image_size=SIZE, in_channels=1)
    variables = model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)), train=False)
    split = tiny.disk_split(8, SIZE)
    return model, registry, flax.core.unfreeze(variables), split


def _choose(setup, spec, granularity='block', **kwargs):
    model, registry, variables, split = setup
    return auto_choice.choose(
        spec,
        model=model,
        registry=registry,
        variables=variables,
        images=split.image,
        masks=split.mask,
        granularity=granularity,
        auto=AUTO,
        **kwargs,
    )


def _loss(model, params, images, masks):
    logits = model.apply({'params': params}, images, train=False)
    return metrics.segmentation_loss(logits, masks, bce_weight=1.0, dice_weight=1.0).mean()


# ---------------------------------------------------------------------------- specs


def test_auto_specs_parse_and_bad_ones_say_how_to_write_them():
    assert auto_spec.is_auto(' auto:rgn:3') and not auto_spec.is_auto('enc0..enc2')
    assert auto_spec.parse_auto('auto:rgn:3', 6) == auto_spec.AutoSpec('rgn', 3)
    assert auto_spec.parse_auto('auto:probe:soft', 6).soft
    with pytest.raises(auto_spec.AutoSpecError, match=re.escape(f'valid: {auto_spec.CRITERIA}')):
        auto_spec.parse_auto('auto:fisher:2', 6)
    with pytest.raises(auto_spec.AutoSpecError, match='from 1 to 6'):
        auto_spec.parse_auto('auto:rgn:7', 6)
    with pytest.raises(auto_spec.AutoSpecError, match='from 1 to 6'):
        auto_spec.parse_auto('auto:rgn:0', 6)
    with pytest.raises(auto_spec.AutoSpecError, match='whole spec'):
        auto_spec.parse_auto('auto:rgn:2,head', 6)
    with pytest.raises(auto_spec.AutoSpecError, match='auto:CRITERION:K'):
        auto_spec.parse_auto('auto:rgn', 6)


# ---------------------------------------------------------------------------- RGN


def test_rgn_is_gradient_norm_over_weight_norm_of_each_block(setup):
    model, registry, variables, split = setup
    choice = _choose(setup, 'auto:rgn:2')
    # Independently: the gradient of the mean loss over the probe images, in one batch.
    images, masks = auto_choice.probe_set(split.image, split.mask, AUTO.num_examples, AUTO.seed)
    grads = jax.jit(jax.grad(lambda p: _loss(model, p, images, masks)))(variables['params'])
    flat_grads = flax.traverse_util.flatten_dict(grads)
    flat_params = flax.traverse_util.flatten_dict(variables['params'])
    for block in registry.blocks:
        g = math.sqrt(sum(float(jnp.sum(flat_grads[p] ** 2)) for p in block.param_paths))
        w = math.sqrt(sum(float(jnp.sum(flat_params[p] ** 2)) for p in block.param_paths))
        assert choice.raw_scores[block.name] == pytest.approx(g / w, rel=1e-3)
    assert list(choice.scores) == list(registry.block_names)  # forward order
    assert max(choice.scores.values()) == 1.0
    # Batches of 4 and 2 + 2 padding: 8 image passes, each a full gradient step.
    assert choice.cost['image_passes'] == 8
    assert choice.cost['flops'] == 8 * registry.train_step_flops(registry.unit_names)
    assert choice.cost['seconds'] > choice.cost['compile_s'] > 0


def test_auto_k_trains_the_k_highest_scoring_blocks_through_compile_spec(setup):
    _, registry, _, _ = setup
    choice = _choose(setup, 'auto:rgn:2')
    top = sorted(choice.scores, key=choice.scores.get, reverse=True)[:2]
    assert choice.chosen == tuple(top) and choice.k == 2 and not choice.soft
    plan = freeze.compile_spec(choice.spec, registry)
    assert plan.trained_units == registry.expand(top)
    record = json.loads(json.dumps(choice.to_dict()))
    assert record['chosen'] == top and record['spec'] == choice.spec
    assert auto_choice.Choice.from_dict(record) == choice


def test_unit_granularity_scores_units(setup):
    _, registry, _, _ = setup
    choice = _choose(setup, 'auto:rgn:3', granularity='unit')
    assert list(choice.scores) == list(registry.unit_names)
    assert freeze.compile_spec(choice.spec, registry).trained_units == tuple(
        n for n in registry.unit_names if n in choice.chosen
    )


def test_soft_variant_trains_all_with_scores_as_scales(setup):
    choice = _choose(setup, 'auto:rgn:soft')
    assert choice.spec == freeze.ALL and choice.soft
    assert choice.scales == choice.scores
    assert len(choice.chosen) == len(choice.scores)


def test_choice_is_recorded_and_reused_on_resume(setup, tmp_path):
    model, registry, variables, split = setup
    kwargs = dict(
        model=model,
        registry=registry,
        variables=variables,
        images=split.image,
        masks=split.mask,
        granularity='block',
        auto=AUTO,
    )
    first = auto_choice.load_or_choose(str(tmp_path), 'auto:rgn:2', **kwargs)
    assert (tmp_path / auto_choice.CHOICE_FILE).exists()
    # A resumed run reads the recorded choice (no model needed), whatever the weights are now.
    again = auto_choice.load_or_choose(str(tmp_path), 'auto:rgn:2', **dict(kwargs, model=None))
    assert again == first
    # Another spec is chosen afresh.
    other = auto_choice.load_or_choose(str(tmp_path), 'auto:rgn:1', **kwargs)
    assert other.k == 1 and other.chosen == first.chosen[:1]


# ---------------------------------------------------------------------------- probe


def test_probe_score_is_the_loss_drop_of_training_that_block_alone(setup):
    model, registry, variables, split = setup
    lr = 1e-2
    choice = _choose(setup, 'auto:probe:1', learning_rate=lr)
    images, masks = auto_choice.probe_set(split.image, split.mask, AUTO.num_examples, AUTO.seed)
    batches = [(images[:4], masks[:4]), (images[4:], masks[4:])]

    def loss(p):
        return sum(float(_loss(model, p, i, m)) * len(i) for i, m in batches) / len(images)

    before = loss(variables['params'])
    grad_fn = jax.jit(jax.grad(lambda p, i, m: _loss(model, p, i, m)))
    for block in ('enc0', 'dec0'):
        # Independently: the ordinary frozen-training path (labels + multi_transform).
        params = variables['params']
        tx = freeze.make_optimizer(
            optax.adam(lr), freeze.compile_spec(block, registry).labels(params)
        )
        state = tx.init(params)
        for s in range(AUTO.probe_steps):
            i, m = batches[s % 2]
            grads = grad_fn(params, i, m)
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        expected = (before - loss(params)) / before
        assert choice.raw_scores[block] == pytest.approx(expected, rel=1e-3, abs=1e-6)
    assert any(v > 0 for v in choice.raw_scores.values())
    n = len(registry.block_names)
    # Per block 3 steps of 4 images (the second batch is padded), then the loss on 2 batches.
    assert choice.cost['image_passes'] == n * 3 * 4 + (n + 1) * 8


# ---------------------------------------------------------------------------- soft scales


def test_scale_by_score_scales_each_block_and_new_scales_need_no_recompile(setup):
    _, registry, variables, _ = setup
    params = variables['params']
    scales = {b: 0.5 for b in registry.block_names} | {'enc0': 1.0, 'head': 0.0}
    tx = optax.chain(optax.sgd(1.0), score_scaling.scale_by_score(scales))
    traces = []

    @jax.jit
    def update(grads, state):
        traces.append(1)
        return tx.update(grads, state, params)

    grads = jax.tree.map(jnp.ones_like, params)
    state = tx.init(params)
    updates, state = update(grads, state)
    assert np.all(np.asarray(updates['enc0']['conv0']['conv']['kernel']) == -1.0)
    assert np.all(np.asarray(updates['dec1']['up']['kernel']) == -0.5)
    assert np.all(np.asarray(updates['head']['conv0']['conv']['bias']) == 0.0)

    state = score_scaling.set_scales(state, {b: 2.0 for b in registry.block_names} | {'enc0': 0.0})
    updates, state = update(grads, state)
    assert len(traces) == 1  # the scales are data: the same compiled update ran again
    assert np.all(np.asarray(updates['enc0']['conv1']['conv']['kernel']) == 0.0)
    assert np.all(np.asarray(updates['head']['conv0']['conv']['kernel']) == -2.0)


def test_scale_by_score_inside_the_freeze_optimizer_and_unit_scales(setup):
    _, registry, variables, _ = setup
    params = variables['params']
    labels = freeze.compile_spec('enc0,head', registry).labels(params)
    scales = {u: 1.0 for u in registry.unit_names} | {'enc0/conv1': 0.25}
    scaled_sgd = optax.chain(optax.sgd(1.0), score_scaling.scale_by_score(scales))
    tx = freeze.make_optimizer(scaled_sgd, labels)
    state = tx.init(params)
    state = score_scaling.set_scales(state, scales | {'head/conv0': 3.0})
    updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    assert np.all(np.asarray(updates['enc0']['conv1']['conv']['kernel']) == -0.25)
    assert np.all(np.asarray(updates['head']['conv0']['conv']['kernel']) == -3.0)
    assert np.all(np.asarray(updates['enc1']['conv0']['conv']['kernel']) == 0.0)  # frozen


def test_scales_must_cover_every_parameter(setup):
    _, _, variables, _ = setup
    with pytest.raises(
        auto_spec.AutoSpecError, match='No score for parameter .*give one per block'
    ):
        score_scaling.scale_by_score({'enc0': 1.0}).init(variables['params'])
