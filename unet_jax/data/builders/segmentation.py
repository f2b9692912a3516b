"""What every set's builder shares: its features and how an example is encoded.

Every set has the same features: `image` (PNG, 1 channel for ultrasound and X-ray, 3 for natural
images), `mask` (PNG, 1 channel, values 0/1), `id` (the case name, unique within the set) and,
for breast ultrasound, `label` (benign / malignant / normal).
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from unet_jax.data import imageio

ULTRASOUND_LABELS = ('benign', 'malignant', 'normal')
_VERSION = tfds.core.Version('1.0.0')


class SegmentationBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared features and example encoding of every set."""

    VERSION = _VERSION
    # TFDS looks for a checksums file next to the code (it needs `importlib_resources` to find
    # it in an editable install); these builders download nothing, so there is none.
    code_path = None
    CHANNELS = 1
    LABELS: tuple[str, ...] = ()
    DESCRIPTION = ''
    HOMEPAGE = ''
    CITATION = ''

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            'image': tfds.features.Image(shape=(None, None, self.CHANNELS), encoding_format='png'),
            'mask': tfds.features.Image(shape=(None, None, 1), encoding_format='png'),
            'id': tfds.features.Text(),
        }
        if self.LABELS:
            features['label'] = tfds.features.ClassLabel(names=self.LABELS)
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(features),
            homepage=self.HOMEPAGE or None,
            citation=self.CITATION or None,
        )

    def _example(self, id_: str, image: np.ndarray, mask: np.ndarray, label: str | None) -> dict:
        example = {
            'image': imageio.encode_png(image),
            'mask': imageio.encode_png(mask[..., None]),
            'id': id_,
        }
        if self.LABELS:
            example['label'] = label
        return example
