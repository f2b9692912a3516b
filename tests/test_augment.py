"""On-device augmentation: intensity changes survive, flips follow config.augment.flip."""

import jax
import numpy as np
import pytest

from unet_jax.config import defaults
from unet_jax.data import augment


def _cfg(**overrides):
    cfg = defaults.default_config().augment.to_dict()
    cfg.update(overrides)
    return cfg


def _standardised_images(n=16, size=24, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.gamma(2.0, 1.0, (n, size, size, 1)).astype(np.float32)
    images = (images - images.mean((1, 2, 3), keepdims=True)) / images.std((1, 2, 3), keepdims=True)
    masks = (rng.uniform(size=(n, size, size, 1)) > 0.5).astype(np.float32)
    return images, masks


def test_contrast_and_brightness_change_the_image_and_keep_it_nearly_standardised():
    """A standardisation after contrast/brightness would undo them; the output's std must be
    1 +- max_contrast and its mean 0 +- max_brightness (and not exactly 1 and 0)."""
    images, masks = _standardised_images()
    cfg = _cfg(flip=False, affine=False, max_contrast=0.2, max_brightness=0.3)
    key = jax.random.key(3)
    out, _ = augment.augment_batch(key, images, masks, cfg)
    plain, _ = augment.augment_batch(
        key, images, masks, _cfg(**{**cfg, 'max_contrast': 0.0, 'max_brightness': 0.0})
    )
    out, plain = np.asarray(out), np.asarray(plain)
    means, stds = out.mean(axis=(1, 2, 3)), out.std(axis=(1, 2, 3))
    # Gamma alone leaves the image standardised; contrast and brightness move it within bounds.
    np.testing.assert_allclose(plain.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(plain.std(axis=(1, 2, 3)), 1, atol=1e-4)
    assert np.all(np.abs(means) <= 0.3 + 1e-5) and np.all(np.abs(stds - 1) <= 0.2 + 1e-4)
    assert np.abs(means).max() > 0.05 and np.abs(stds - 1).max() > 0.05
    # The same key draws the same gamma: the difference is the contrast and brightness alone.
    np.testing.assert_allclose(
        out, plain * stds[:, None, None, None] + means[:, None, None, None], atol=1e-4
    )
    assert np.abs(out - plain).max() > 0.1


@pytest.mark.parametrize('flip', [False, True])
def test_flips_follow_the_config(flip):
    images, masks = _standardised_images(n=32)
    cfg = _cfg(flip=flip, affine=False, intensity=False)
    out, out_masks = augment.augment_batch(jax.random.key(0), images, masks, cfg)
    out, out_masks = np.asarray(out), np.asarray(out_masks)
    mirrored = [np.array_equal(o, x[:, ::-1]) for o, x in zip(out, images)]
    unchanged = [np.array_equal(o, x) for o, x in zip(out, images)]
    assert all(m or u for m, u in zip(mirrored, unchanged))
    assert any(mirrored) == flip and all(unchanged) != flip
    np.testing.assert_array_equal(
        [np.array_equal(m, x[:, ::-1]) for m, x in zip(out_masks, masks)], mirrored
    )


@pytest.mark.parametrize('flip', [False, True])
def test_a_flip_probability_input_draws_as_the_config_does(flip):
    """The train step passes the flip as a traced probability (0.5 or 0), so that one program
    serves targets with and without flips: it must give exactly what cfg['flip'] gives."""
    images, masks = _standardised_images(n=16)
    key = jax.random.key(5)
    by_config = jax.jit(lambda k, x, y: augment.augment_batch(k, x, y, _cfg(flip=flip)))(
        key, images, masks
    )  # both compiled: eager and compiled affine warps differ in the last bits
    static = {k: v for k, v in _cfg().items() if k != 'flip'}
    probability = np.full(len(images), 0.5 if flip else 0.0, np.float32)
    traced = jax.jit(lambda k, x, y, p: augment.augment_batch(k, x, y, static, flip=p))
    by_input = traced(key, images, masks, probability)
    for a, b in zip(by_config, by_input):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
