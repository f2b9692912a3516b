"""Tiny configurations and data shared by the tests (importable from subprocesses too)."""

from __future__ import annotations

import numpy as np

from unet_jax.config import defaults
from unet_jax.data import pipeline

# A study run as a command at tiny size: tiny_config's U-Net and image size, and 40 generated
# images for the pre-training and for each target.
TINY_STUDY_FLAGS = (
    '--config.model.depth=2',
    '--config.model.base_width=4',
    '--config.data.image_size=32',
    '--config.data.num_examples=40',
    '--config.study.pretrain.data.num_examples=40',
)


def tiny_config(**overrides):
    """A depth-2, base-4 U-Net at 32x32 that trains a step in milliseconds on CPU."""
    config = defaults.default_config()
    config.model.depth = 2
    config.model.base_width = 4
    config.data.image_size = 32
    config.batch_size = 4
    config.num_train_steps = 6
    config.warmup_steps = 1
    config.log_every_steps = 2
    config.eval_every_steps = 3
    config.checkpoint_every_steps = 2
    config.num_saved_predictions = 2
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split('.')
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def disk_split(num: int, size: int = 32, seed: int = 0, channels: int = 1) -> pipeline.Split:
    """Bright disks on noise: a segmentation task a tiny U-Net learns within a few steps."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(num):
        r, c = rng.uniform(size * 0.3, size * 0.7, 2)
        radius = rng.uniform(size * 0.1, size * 0.25)
        mask = ((rows - r) ** 2 + (cols - c) ** 2 < radius**2).astype(np.float32)
        image = mask + 0.3 * rng.standard_normal((size, size))
        image = (image - image.mean()) / image.std()
        images.append(np.repeat(image[..., None], channels, -1))
        masks.append(mask[..., None])
    return pipeline.Split(
        image=np.asarray(images, np.float32),
        mask=np.asarray(masks, np.float32),
        ids=[f'disk{i}' for i in range(num)],
    )


def disk_splits(size: int = 32, channels: int = 1) -> dict[str, pipeline.Split]:
    return {
        'train': disk_split(8, size, 0, channels),
        'val': disk_split(4, size, 1, channels),
        'test': disk_split(5, size, 2, channels),
    }
