"""The builders of the simulated sets (unet_jax.data.simulate), built on first use.

A synthetic set is defined by its image size, its number of examples and its seed; example i of
seed s is the same whatever the set's size.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from unet_jax.data.builders.segmentation import ULTRASOUND_LABELS, SegmentationBuilder


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
    """A synthetic set is defined by its image size, its number of examples and its seed."""

    image_size: int = 128
    num_examples: int = 200
    seed: int = 0


def synthetic_config(*, image_size: int, num_examples: int, seed: int) -> SyntheticConfig:
    return SyntheticConfig(
        name=f'size{image_size}_n{num_examples}_seed{seed}',
        image_size=image_size,
        num_examples=num_examples,
        seed=seed,
    )


class SyntheticBuilder(SegmentationBuilder, skip_registration=True):
    SIMULATE = ''
    BUILDER_CONFIGS: ClassVar[list] = [synthetic_config(image_size=128, num_examples=200, seed=0)]

    def _split_generators(self, dl_manager):
        del dl_manager
        return {'train': self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[str, dict]]:
        from unet_jax.data import simulate  # Imported late: only synthetic builds need it.

        config = self.builder_config
        simulate_fn = getattr(simulate, self.SIMULATE)
        for i in range(config.num_examples):
            # Example i of seed s is the same whatever the set size (unet_jax.data.simulate).
            example = simulate_fn(np.random.default_rng([config.seed, i]), config.image_size)
            image = np.asarray(example['image'], np.uint8)
            if image.ndim == 2:
                image = image[..., None]
            mask = (np.asarray(example['mask']) > 0).astype(np.uint8)
            id_ = f'{self.name}_{i:06d}'
            yield id_, self._example(id_, image, mask, example.get('label'))


class SyntheticUltrasound(SyntheticBuilder, skip_registration=True):
    """Simulated B-mode breast ultrasound with a lesion mask (benign, malignant or none)."""

    name = 'synthetic_ultrasound'
    SIMULATE = 'simulate_ultrasound'
    LABELS = ULTRASOUND_LABELS
    DESCRIPTION = 'Simulated B-mode breast ultrasound (speckle physics) with lesion masks.'


class SyntheticXray(SyntheticBuilder, skip_registration=True):
    """Synthetic chest radiographs with both lung fields as the mask."""

    name = 'synthetic_xray'
    SIMULATE = 'simulate_xray'
    DESCRIPTION = 'Synthetic chest radiographs with lung-field masks.'


class SyntheticNatural(SyntheticBuilder, skip_registration=True):
    """Dead-leaves scenes with one salient object, for pre-training."""

    name = 'synthetic_natural'
    SIMULATE = 'simulate_natural'
    CHANNELS = 3
    DESCRIPTION = 'Dead-leaves natural-like scenes with a salient-object mask.'


class SyntheticNaturalSpeckle(SyntheticBuilder, skip_registration=True):
    """The natural scenes imaged as B-mode ultrasound (speckle), for pre-training with speckle.

    Example i of seed s has the mask of synthetic_natural's example i of seed s.
    """

    name = 'synthetic_natural_speckle'
    SIMULATE = 'simulate_natural_speckle'
    DESCRIPTION = (
        'Dead-leaves natural-like scenes as grey B-mode ultrasound images (the scene as '
        'echogenicity, Rayleigh speckle, pulse-echo PSF, log compression), salient-object masks.'
    )


class SyntheticNaturalImaging(SyntheticBuilder, skip_registration=True):
    """The speckled scenes' imaging chain without speckle: the control of the speckle source.

    Example i of seed s has the mask, scene and display settings of synthetic_natural_speckle's
    example i of seed s; only the speckle differs (its expected envelope instead).
    """

    name = 'synthetic_natural_imaging'
    SIMULATE = 'simulate_natural_imaging'
    DESCRIPTION = (
        'Dead-leaves natural-like scenes through the B-mode imaging chain of '
        'synthetic_natural_speckle (echogenicity, pulse-echo PSF, envelope, log compression) '
        'without speckle (the expected envelope), salient-object masks.'
    )
