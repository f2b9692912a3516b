"""Custom forms of convolutions and the XLA options: equal to the reference formulation.

The reference is the U-Net as it was written before these ops: every conv a plain
`lax.conv_general_dilated`, compiled with XLA's default options.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import tiny
from unet_jax import freeze, models
from unet_jax.models import layer_registry, metrics, ops

OPTIONS = models.compiler_options()
needs_options = pytest.mark.skipif(OPTIONS is None, reason='no XLA options for this backend/jaxlib')


def _lax_conv(lhs, rhs, window_strides, padding, **kwargs):
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)


def _conv_pair(kernel_shape, image_shape):
    """(ops.conv, reference) of one 'same' NHWC conv, and its input, kernel and cotangent."""
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], image_shape)
    kernel = jax.random.normal(keys[1], kernel_shape)
    g = jax.random.normal(keys[2], image_shape[:3] + kernel_shape[-1:])
    dn = ('NHWC', 'HWIO', 'NHWC')
    fast = lambda x, k: ops.conv(x, k, (1, 1), 'SAME', dimension_numbers=dn)
    reference = lambda x, k: _lax_conv(x, k, (1, 1), 'SAME', dimension_numbers=dn)
    return fast, reference, (x, kernel), g


@pytest.mark.parametrize(
    'kernel_shape,image_shape',
    [((1, 1, 6, 1), (2, 8, 10, 6)), ((1, 1, 5, 3), (1, 4, 4, 5)), ((3, 3, 1, 4), (2, 8, 6, 1))],
    ids=['head 1x1', '1x1 several outputs', 'single-channel 3x3'],
)
def test_custom_conv_equals_lax_conv_in_values_and_gradients(kernel_shape, image_shape):
    fast, reference, args, g = _conv_pair(kernel_shape, image_shape)
    (y, vjp), (ref_y, ref_vjp) = (jax.vjp(f, *args) for f in (fast, reference))
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)
    for grad, ref_grad in zip(vjp(g), ref_vjp(g)):
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('argnums,convolutions', [((0,), 1), ((1,), 1), ((0, 1), 2)])
def test_single_channel_conv_computes_only_the_gradients_asked_for(argnums, convolutions):
    # The forward pass is multiply-adds; each gradient asked for is one convolution.
    fast, _, args, _ = _conv_pair((3, 3, 1, 4), (2, 8, 6, 1))
    grad_fn = jax.jit(jax.grad(lambda *a: fast(*a).sum(), argnums=argnums))
    assert grad_fn.lower(*args).compile().as_text().count(' convolution(') == convolutions


def test_other_convs_are_plain_convolutions():
    fast, reference, (x, kernel), _ = _conv_pair((3, 3, 4, 2), (1, 6, 6, 4))
    assert str(jax.make_jaxpr(fast)(x, kernel)) == str(jax.make_jaxpr(reference)(x, kernel))


def _step_fn(model, spec, image_size=32):
    """Loss and gradients of the trained params of `spec` (tiny U-Net, one tiny batch)."""
    registry = layer_registry.build_registry(model, image_size=image_size, in_channels=1)
    plan = freeze.compile_spec(spec, registry)
    split = tiny.disk_split(4, size=image_size)
    params = model.init(jax.random.key(0), split.image, train=False)['params']
    trainable, frozen = freeze.split_trainable(params, plan.labels(params))

    def loss_fn(trainable, images, masks):
        variables = {'params': freeze.merge(trainable, frozen)}
        logits = model.apply(variables, images, train=False, frozen_units=plan.frozen_units)
        return metrics.segmentation_loss(logits, masks, bce_weight=1.0, dice_weight=1.0).mean()

    args = (trainable, split.image, split.mask)
    return jax.value_and_grad(loss_fn), args, registry, plan


@pytest.mark.parametrize('spec', ['@all', 'first:1', 'dec0,head'])
def test_step_equals_the_reference_and_computes_only_needed_gradients(spec, monkeypatch):
    """Loss and gradients with the custom convs and XLA options equal the plain U-Net's, and
    XLA's FLOP count of the step is the registry's model of it (no unneeded gradients)."""
    model = models.create_model(tiny.tiny_config().model)
    fn, args, registry, plan = _step_fn(model, spec)
    compiled = jax.jit(fn, compiler_options=OPTIONS).lower(*args).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    expected = registry.train_step_flops(plan.trained_units) * len(args[1])
    assert cost['flops'] == pytest.approx(expected, rel=0.1)
    loss, grads = compiled(*args)
    monkeypatch.setattr(ops, 'conv', _lax_conv)
    ref_loss, ref_grads = jax.jit(fn)(*args)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(ref_grads)
    for leaf, ref in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
        np.testing.assert_allclose(leaf, ref, rtol=1e-4, atol=1e-5 * float(np.abs(ref).max()))


def _ynn_fusion_bodies(hlo: str) -> list[str]:
    """The fused computations a compiled HLO module hands to YNNPACK."""
    bodies = dict(re.findall(r'^%([\w.]+) .*\{\n((?:.+\n)*?)\}', hlo, re.MULTILINE))
    return [bodies[name] for name in re.findall(r'calls=%([\w.]+), .*__ynn_fusion', hlo)]


@needs_options
def test_options_leave_convolutions_to_xla():
    model = models.create_model(dict(tiny.tiny_config().model, base_width=32))
    x = jnp.zeros((8, 64, 64, 1))
    params = model.init(jax.random.key(0), x, train=False)['params']
    grad_fn = jax.grad(lambda p: (model.apply({'params': p}, x, train=False) ** 2).sum())
    default = jax.jit(grad_fn).lower(params).compile().as_text()
    assert [body for body in _ynn_fusion_bodies(default) if 'convolution(' in body], (
        'XLA no longer hands convolutions to YNNPACK by default: models.compiler_options() '
        'may be unnecessary; re-measure with benchmarks/vs_pytorch.py --xla_defaults.'
    )
    hlo = jax.jit(grad_fn, compiler_options=OPTIONS).lower(params).compile().as_text()
    assert 'convolution(' in hlo
    assert not [body for body in _ynn_fusion_bodies(hlo) if 'convolution(' in body]
