"""The benchmarks' JAX side (and PyTorch side, where installed) at toy size: the step they time
is the project's step, the profile attributes its operations, and the PyTorch U-Net computes
the same first step from the same weights (else the comparison refuses to time)."""

from __future__ import annotations

import os
import sys

import jax
import numpy as np
import pytest

from unet_jax import freeze, metrics, models

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'benchmarks'))

import profile_step  # noqa: E402
import project_step  # noqa: E402
import vs_pytorch  # noqa: E402

TINY = dict(depth=2, base_width=4, image_size=32, batch_size=4)


def first_step_loss(config, step: project_step.JaxStep) -> float:
    """The loss of the benchmark's batch under its initial params, computed apart from it."""
    model = models.create_model(config.model)
    logits = model.apply({'params': step.initial_params}, step.batch['image'][0], train=False)
    loss = config.loss
    per_image = metrics.segmentation_loss(
        logits, step.batch['mask'][0], bce_weight=loss.bce_weight, dice_weight=loss.dice_weight
    )
    return float(per_image.mean())


@pytest.mark.parametrize('spec', ['@all', 'first:1'])
def test_project_step_is_the_training_step(spec):
    config = project_step.benchmark_config(**TINY, augment=False)
    step = project_step.JaxStep(config, spec)
    assert step.compiler_options == models.compiler_options()
    frozen_before = jax.tree.map(np.array, step.frozen)
    trained_before = jax.tree.map(np.array, step.state.trainable)
    loss, grad_norm = step()
    np.testing.assert_allclose(loss, first_step_loss(config, step), rtol=1e-5)
    assert grad_norm > 0
    step()  # the first step's learning rate is 0 (warm-up), the second's is not
    moved = jax.tree.map(
        lambda a, b: not np.array_equal(a, b), trained_before, step.state.trainable
    )
    assert all(jax.tree.leaves(moved))
    jax.tree.map(np.testing.assert_array_equal, frozen_before, step.frozen)
    assert 0 < step.flop_ratio() <= 1


def test_profile_attributes_convolutions():
    step = project_step.JaxStep(project_step.benchmark_config(**TINY), '@all')
    per_step, times = profile_step.profile(step, 1)
    categories = profile_step.by_category(per_step, step.compiled.as_text())
    assert len(times) == 1 and sum(per_step.values()) > 0
    assert set(categories) <= set(profile_step.CATEGORIES)
    for kind in ('conv forward', 'conv backward-input', 'conv backward-filter', 'optimiser'):
        assert categories[kind] > 0, kind


def test_pytorch_computes_the_same_step():
    pytest.importorskip('torch')
    steps = vs_pytorch.implementations(TINY, 'first:1', torch_compile=False)
    assert list(steps) == [vs_pytorch.JAX, vs_pytorch.EAGER]
    medians = vs_pytorch.compare(steps, 1, 'tiny')
    assert set(medians) == set(steps) and min(medians.values()) > 0
    table = vs_pytorch.table([('quick', 'first block only', medians)])
    assert 'JAX / eager' in table.splitlines()[0] and len(table.splitlines()) == 3


def test_comparison_refuses_different_networks():
    torch = pytest.importorskip('torch')
    steps = vs_pytorch.implementations(TINY, '@all', torch_compile=False)
    torch_step = steps[vs_pytorch.EAGER].func
    with torch.no_grad():
        torch_step.params[0].mul_(1.5)  # a different U-Net: same shapes, other weights
    with pytest.raises(SystemExit, match='the two U-Nets differ'):
        vs_pytorch.compare(steps, 1, 'tiny')


def test_frozen_modules_get_no_gradient():
    pytest.importorskip('torch')
    import torch_unet

    config = project_step.benchmark_config(**TINY, augment=False)
    step = project_step.JaxStep(config, 'last:1')
    model = torch_unet.TorchUNet(TINY['depth'], TINY['base_width'])
    torch_unet.load_jax_params(model, step.initial_params)
    torch_unet.TorchStep(model, step.plan.trained_units, compiled=False)
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trained == {'blocks.head.conv0.weight', 'blocks.head.conv0.bias'}
    assert freeze.merge({}, step.frozen).keys() == step.initial_params.keys() - {'head'}
