"""U-Net: fast up-conv and pooling equal the Flax layers; parameter counts; errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unet_jax.models import UNet, create_model, metrics
from unet_jax.models.unet import conv_transpose_2x2, max_pool_2x2, param_count


def _param_shapes(model, size, channels=1):
    x = jnp.zeros((1, size, size, channels))
    return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))['params']


def test_fast_up_conv_equals_conv_transpose_with_the_same_params():
    x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
    layer = nn.ConvTranspose(4, (2, 2), strides=(2, 2))
    variables = layer.init(jax.random.key(1), x)
    variables = jax.tree_util.tree_map(  # a non-zero bias, so the bias is checked too
        lambda v: v + 0.1 * jax.random.normal(jax.random.key(2), v.shape), variables
    )
    p = variables['params']
    with jax.default_matmul_precision('highest'):  # no TF32 on accelerators
        fast = conv_transpose_2x2(x, p['kernel'], p['bias'])
        reference = layer.apply(variables, x)
    np.testing.assert_allclose(fast, reference, atol=1e-5, rtol=1e-5)


def test_up_unit_params_have_conv_transpose_names_and_shapes():
    params = _param_shapes(UNet(depth=2, base_width=4), 32)
    reference = jax.eval_shape(
        nn.ConvTranspose(8, (2, 2), strides=(2, 2)).init,
        jax.random.key(0),
        jnp.zeros((1, 8, 8, 16)),
    )['params']
    got = jax.tree_util.tree_map(lambda a: a.shape, params['dec1']['up'])
    assert got == jax.tree_util.tree_map(lambda a: a.shape, reference)


def test_fast_max_pool_equals_nn_max_pool():
    x = jax.random.normal(jax.random.key(0), (2, 8, 12, 3))
    np.testing.assert_array_equal(max_pool_2x2(x), nn.max_pool(x, (2, 2), strides=(2, 2)))


@pytest.mark.parametrize('base_width,expected', [(64, 31_030_593), (32, 7_759_521)])
def test_classic_param_count(base_width, expected):
    assert param_count(_param_shapes(UNet(base_width=base_width), 64)) == expected


def test_param_count_is_the_same_at_two_image_sizes():
    model = UNet(depth=2, base_width=4, norm='batch', upsample='bilinear')
    assert param_count(_param_shapes(model, 32)) == param_count(_param_shapes(model, 64))


def test_param_tree_is_block_unit_leaves():
    params = _param_shapes(UNet(depth=2, base_width=4, norm='group'), 32)
    assert set(params) == {'enc0', 'enc1', 'bottleneck', 'dec1', 'dec0', 'head'}
    assert set(params['dec0']) == {'up', 'conv0', 'conv1'}
    assert set(params['enc0']['conv0']) == {'conv', 'norm'}
    assert params['head']['conv0']['conv']['kernel'].shape == (1, 1, 4, 1)
    assert set(params['dec1']['up']) == {'kernel', 'bias'}


@pytest.mark.parametrize(
    'norm,upsample', [('none', 'bilinear'), ('batch', 'transpose'), ('group', 'bilinear')]
)
def test_forward_shapes_and_finite(norm, upsample):
    model = UNet(depth=2, base_width=4, out_channels=2, norm=norm, upsample=upsample, dropout=0.1)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = model.init(jax.random.key(1), x, train=False)
    y, _ = model.apply(
        variables, x, train=True, mutable=['batch_stats'], rngs={'dropout': jax.random.key(2)}
    )
    assert y.shape == (2, 32, 32, 2)
    assert bool(jnp.isfinite(y).all())


def test_dropout_is_deterministic_when_not_training():
    model = UNet(depth=2, base_width=4, dropout=0.5)
    x = jax.random.normal(jax.random.key(0), (1, 32, 32, 1))
    variables = model.init(jax.random.key(1), x, train=False)
    np.testing.assert_array_equal(
        model.apply(variables, x, train=False), model.apply(variables, x, train=False)
    )
    a = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(2)})
    b = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(3)})
    assert not np.allclose(a, b)


def test_image_size_not_divisible_by_two_to_the_depth_says_what_and_how():
    model = UNet(depth=3, base_width=4)
    with pytest.raises(ValueError, match=r'36x36 is not divisible by 2\*\*depth = 8') as e:
        model.init(jax.random.key(0), jnp.zeros((1, 36, 36, 1)), train=False)
    assert 'data.image_size=32 or 40' in str(e.value) and 'model.depth' in str(e.value)


def test_unknown_frozen_unit_lists_the_units():
    model = UNet(depth=2, base_width=4)
    x = jnp.zeros((1, 32, 32, 1))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    with pytest.raises(ValueError, match=r"\['enc0/conv7'\].*'dec0/up'"):
        jax.eval_shape(
            lambda v: model.apply(v, x, train=False, frozen_units=('enc0/conv7',)), variables
        )


def test_create_model_from_config():
    config = dict(
        depth=3,
        base_width=8,
        in_channels=3,
        out_channels=2,
        norm='batch',
        dropout=0.1,
        upsample='bilinear',
    )
    model = create_model(config)
    assert (
        model.depth,
        model.base_width,
        model.out_channels,
        model.norm,
        model.dropout,
        model.upsample,
    ) == (3, 8, 2, 'batch', 0.1, 'bilinear')
    with pytest.raises(ValueError, match=r"model.norm='layer' is not one of"):
        create_model(dict(config, norm='layer'))


def _tiny_loss_and_grads(model, params, x, masks):
    def loss_fn(p):
        logits = model.apply({'params': p}, x, train=False)
        return metrics.segmentation_loss(logits, masks, bce_weight=1.0, dice_weight=1.0).mean()

    return jax.jit(jax.value_and_grad(loss_fn))(params)


def test_half_precision_keeps_float32_params_and_logits_and_a_close_loss():
    config = dict(depth=2, base_width=4)
    full, half = create_model(config), create_model(config, half_precision=True)
    assert half.dtype == jnp.bfloat16
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 1))
    masks = (jax.random.uniform(jax.random.key(1), (2, 16, 16, 1)) > 0.7).astype(jnp.float32)
    params = jax.jit(full.init, static_argnames='train')(jax.random.key(2), x, train=False)[
        'params'
    ]
    half_params = jax.eval_shape(half.init, jax.random.key(2), x, train=False)['params']
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(half_params))
    assert jax.eval_shape(half.apply, {'params': params}, x, train=False).dtype == jnp.float32

    loss, grads = _tiny_loss_and_grads(full, params, x, masks)
    half_loss, half_grads = _tiny_loss_and_grads(half, params, x, masks)
    assert half_loss == pytest.approx(float(loss), rel=1e-2)
    flat, half_flat = (
        jnp.concatenate([g.ravel() for g in jax.tree_util.tree_leaves(t)])
        for t in (grads, half_grads)
    )
    assert half_flat.dtype == jnp.float32
    cosine = flat @ half_flat / (jnp.linalg.norm(flat) * jnp.linalg.norm(half_flat))
    assert cosine > 0.95
