"""Layer registry: units, groups, levels, the two depth orders, param counts, FLOPs."""

import jax
import jax.numpy as jnp
import pytest

from unet_jax.models import UNet
from unet_jax.models.layer_registry import build_registry
from unet_jax.models.unet import param_count


@pytest.fixture(scope='module')
def registry():
    return build_registry(UNet(depth=2, base_width=4), image_size=32, in_channels=1)


@pytest.fixture(scope='module')
def classic():
    return build_registry(UNet(), image_size=128, in_channels=1)


def test_classic_has_10_blocks_23_conv_units_and_all_params(classic):
    assert classic.block_names == (
        'enc0',
        'enc1',
        'enc2',
        'enc3',
        'bottleneck',
        'dec3',
        'dec2',
        'dec1',
        'dec0',
        'head',
    )
    assert len(classic.units) == 23
    assert classic.param_count == 31_030_593
    assert sum(b.param_count for b in classic.blocks) == 31_030_593


def test_deep_model_orders_numerically_not_alphabetically():
    registry = build_registry(UNet(depth=11, base_width=1), image_size=2048, in_channels=1)
    blocks = registry.order('forward', 'block')
    assert blocks.index('enc2') < blocks.index('enc10')
    assert blocks.index('dec10') < blocks.index('dec2')
    assert registry.block('enc10').level == 10


def test_units_know_block_group_level_and_index(registry):
    enc1 = registry.unit('enc1/conv0')
    assert (enc1.block, enc1.unit, enc1.group, enc1.level) == ('enc1', 'conv0', 'contracting', 1)
    assert registry.unit('bottleneck/conv1').level == 2
    assert registry.unit('dec1/up').group == 'expanding'
    assert registry.unit('dec1/up').level == 1
    assert registry.unit('head/conv0').level == 0
    assert [u.forward_index for u in registry.units] == list(range(len(registry.units)))
    assert registry.unit('dec0/conv0').input_shape == (32, 32, 8)  # up (4) + skip of enc0 (4)
    assert registry.unit('dec1/up').param_paths == (
        ('dec1', 'up', 'bias'),
        ('dec1', 'up', 'kernel'),
    )
    assert registry.groups['head'] == ('head/conv0',)


def test_unit_param_counts_cover_the_tree_exactly(registry):
    model = UNet(depth=2, base_width=4)
    params = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)
    )['params']
    assert registry.param_count == param_count(params)
    paths = [p for u in registry.units for p in u.param_paths]
    assert len(paths) == len(set(paths)) == len(jax.tree_util.tree_leaves(params))
    assert registry.unit('enc0/conv0').param_count == 3 * 3 * 1 * 4 + 4


def test_orders(registry):
    assert registry.order('forward', 'block') == (
        'enc0',
        'enc1',
        'bottleneck',
        'dec1',
        'dec0',
        'head',
    )
    assert registry.order('level', 'block') == (
        'enc0',
        'dec0',
        'head',
        'enc1',
        'dec1',
        'bottleneck',
    )
    assert registry.order('forward', 'unit')[:3] == ('enc0/conv0', 'enc0/conv1', 'enc1/conv0')
    assert registry.order('forward', 'unit')[-1] == 'head/conv0'
    assert registry.order('level', 'unit') == (
        'enc0/conv0',
        'enc0/conv1',
        'dec0/up',
        'dec0/conv0',
        'dec0/conv1',
        'head/conv0',
        'enc1/conv0',
        'enc1/conv1',
        'dec1/up',
        'dec1/conv0',
        'dec1/conv1',
        'bottleneck/conv0',
        'bottleneck/conv1',
    )
    with pytest.raises(ValueError, match="order='depth' is not one of"):
        registry.order('depth', 'unit')


def _xla_forward_flops(model, size):
    x = jnp.zeros((1, size, size, 1))
    params = model.init(jax.random.key(0), x, train=False)
    cost = jax.jit(lambda p, x: model.apply(p, x, train=False)).lower(params, x).compile()
    cost = cost.cost_analysis()
    return (cost[0] if isinstance(cost, (list, tuple)) else cost)['flops']


@pytest.mark.parametrize('kwargs', [dict(), dict(upsample='bilinear', norm='batch')])
def test_forward_flops_agree_with_xla_cost_analysis(kwargs):
    model = UNet(depth=2, base_width=8, **kwargs)
    analytic = build_registry(model, image_size=32, in_channels=1).forward_flops()
    assert analytic == pytest.approx(_xla_forward_flops(model, 32), rel=0.05)


def test_classic_forward_flops_match_the_measured_figure(classic):
    # XLA's cost analysis gives ~192 GFLOP forward for batch 8 at 128x128 (padding taps counted);
    # without the products with the zero padding it is ~184.
    assert classic.forward_flops() * 8 / 1e9 == pytest.approx(183.6, rel=0.01)


def test_train_step_flop_model(registry):
    forward = registry.forward_flops()
    full = registry.train_step_flops(registry.unit_names)
    assert registry.train_step_flops([]) == forward
    # Full step: forward + input grads of every unit but the first + all weight grads.
    first = registry.units[0].flops
    assert full == pytest.approx(3 * forward - first)
    # Training only the head needs no backward through the rest of the network.
    head = registry.unit('head/conv0').flops
    assert registry.train_step_flops(['head']) == pytest.approx(forward + head)
    # Training enc0 needs activation gradients through the whole network (skips included):
    # only the first unit's input gradient and the other weight gradients are saved.
    enc0 = registry.train_step_flops(['enc0'])
    assert enc0 == pytest.approx(full - sum(u.flops for u in registry.units[2:]))
    # The bottleneck needs the up-path half of dec conv0's input gradient, not the skip half.
    bottleneck = registry.train_step_flops(['bottleneck'])
    assert bottleneck < registry.train_step_flops(['enc1/conv1'])
    assert forward < registry.train_step_flops(['head']) < bottleneck < enc0 < full


def test_image_size_error(registry):
    with pytest.raises(ValueError, match='not divisible by 2\\*\\*depth = 4'):
        build_registry(UNet(depth=2, base_width=4), image_size=30, in_channels=1)
