"""On-device augmentation, run inside the jitted train step.

The host only gathers a batch of in-memory arrays; flips, a small random affine warp and
intensity/gamma changes happen on the accelerator, so a 2-core host never limits the step.
Every random draw comes from a key folded from the step number, so a resumed run sees exactly
the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp


def random_flip(key: jax.Array, image: jax.Array, mask: jax.Array, probability=0.5):
    """Left-right flip with `probability` (1/2; anatomy is not mirror-symmetric up/down; chest
    X-ray targets switch flips off, config.augment.flip, as the heart is on one side). The
    probability may be traced: one program then serves targets with and without flips."""
    flip = jax.random.bernoulli(key, probability)
    return (jnp.where(flip, image[:, ::-1], image), jnp.where(flip, mask[:, ::-1], mask))


def _affine_coordinates(key: jax.Array, height: int, width: int, cfg: Mapping[str, Any]):
    """Sampling grid of a random rotation/scale/translation about the image centre."""
    k_rot, k_scale, k_shift = jax.random.split(key, 3)
    angle = jnp.deg2rad(cfg['max_rotation_deg']) * jax.random.uniform(k_rot, minval=-1, maxval=1)
    scale = 1.0 + cfg['max_scale'] * jax.random.uniform(k_scale, minval=-1, maxval=1)
    shift = cfg['max_shift'] * jax.random.uniform(k_shift, (2,), minval=-1, maxval=1)
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing='ij')
    centre_r, centre_c = (height - 1) / 2, (width - 1) / 2
    r, c = rows - centre_r, cols - centre_c
    cos, sin = jnp.cos(angle) / scale, jnp.sin(angle) / scale
    src_r = cos * r - sin * c + centre_r + shift[0] * height
    src_c = sin * r + cos * c + centre_c + shift[1] * width
    return src_r, src_c


def random_affine(key: jax.Array, image: jax.Array, mask: jax.Array, cfg: Mapping[str, Any]):
    """Warps image (bilinear, edge values outside) and mask (nearest) with one random affine."""
    height, width = image.shape[:2]
    src_r, src_c = _affine_coordinates(key, height, width, cfg)

    def warp(channel, order):
        return jax.scipy.ndimage.map_coordinates(
            channel, [src_r, src_c], order=order, mode='nearest'
        )

    image = jnp.stack([warp(image[..., c], 1) for c in range(image.shape[-1])], axis=-1)
    mask = warp(mask[..., 0], 0)[..., None]
    return image, mask


def random_intensity(key: jax.Array, image: jax.Array, cfg: Mapping[str, Any]) -> jax.Array:
    """Gamma on the image rescaled to [0, 1] and re-standardised, then contrast and brightness.

    Contrast and brightness come after the standardisation (a standardisation after them would
    undo any scale and shift): the output's std is 1 +- max_contrast and its mean 0 +-
    max_brightness, a model input still standardised to within those bounds.
    """
    k_gamma, k_contrast, k_bright = jax.random.split(key, 3)
    low, high = image.min(), image.max()
    unit = (image - low) / jnp.maximum(high - low, 1e-6)
    log_gamma = cfg['max_log_gamma'] * jax.random.uniform(k_gamma, minval=-1, maxval=1)
    unit = unit ** jnp.exp(log_gamma)
    standard = (unit - unit.mean()) / jnp.maximum(unit.std(), 1e-6)
    contrast = 1.0 + cfg['max_contrast'] * jax.random.uniform(k_contrast, minval=-1, maxval=1)
    bright = cfg['max_brightness'] * jax.random.uniform(k_bright, minval=-1, maxval=1)
    return standard * contrast + bright


def augment_example(
    key: jax.Array, image: jax.Array, mask: jax.Array, cfg: Mapping[str, Any], flip=None
):
    """One image [H,W,C] and mask [H,W,1]; each transform is switched by its config flag, the
    flip by `flip` (its probability, possibly traced) when given, else by cfg['flip']."""
    k_flip, k_affine, k_intensity = jax.random.split(key, 3)
    if flip is not None:
        image, mask = random_flip(k_flip, image, mask, flip)
    elif cfg['flip']:
        image, mask = random_flip(k_flip, image, mask)
    if cfg['affine']:
        image, mask = random_affine(k_affine, image, mask, cfg)
    if cfg['intensity']:
        image = random_intensity(k_intensity, image, cfg)
    return image, mask


def augment_batch(
    key: jax.Array, images: jax.Array, masks: jax.Array, cfg: Mapping[str, Any], flip=None
):
    """Independent augmentation of every example of a batch [N,H,W,C]. `flip` [N]: each
    example's flip probability as an input (the train step's: 0.5 or 0, so that one compiled
    step serves targets with and without flips, with the same draws as cfg['flip'] gives),
    else cfg['flip'] decides."""
    keys = jax.random.split(key, images.shape[0])
    if flip is not None:
        return jax.vmap(lambda k, x, y, p: augment_example(k, x, y, cfg, p))(
            keys, images, masks, flip
        )
    if not (cfg['flip'] or cfg['affine'] or cfg['intensity']):
        return images, masks
    return jax.vmap(lambda k, x, y: augment_example(k, x, y, cfg))(keys, images, masks)
