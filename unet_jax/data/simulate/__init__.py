"""Simulated segmentation data: B-mode breast ultrasound, chest radiographs, natural scenes,
and natural scenes imaged as B-mode ultrasound (with and without speckle).

Pure numpy/scipy and deterministic given a ``np.random.Generator``; example ``i`` of a set
with seed ``s`` uses ``np.random.default_rng([s, i])`` (``simulate_example``). Each simulator
returns ``dict(image=uint8, mask=uint8 in {0, 1})``; ultrasound adds ``label``.

One module per kind of image (ultrasound, xray, natural, natural_b_mode); b_mode holds the
ultrasound image formation they share, grid the normalised coordinates every one draws on.
"""

import numpy as np

from unet_jax.data.simulate.natural import simulate_natural
from unet_jax.data.simulate.natural_b_mode import simulate_natural_imaging, simulate_natural_speckle
from unet_jax.data.simulate.ultrasound import simulate_ultrasound
from unet_jax.data.simulate.xray import simulate_xray

KINDS = ('ultrasound', 'xray', 'natural', 'natural_speckle', 'natural_imaging')


_SIMULATORS = {
    'ultrasound': simulate_ultrasound,
    'xray': simulate_xray,
    'natural': simulate_natural,
    'natural_speckle': simulate_natural_speckle,
    'natural_imaging': simulate_natural_imaging,
}


def simulate_example(kind: str, seed: int, index: int, size: int) -> dict[str, np.ndarray | str]:
    """Example ``index`` of the ``kind`` set with ``seed``: independent of every other example."""
    if kind not in _SIMULATORS:
        raise ValueError(f'simulate_example: kind={kind!r} is unknown; choose one of {KINDS}.')
    if size < 16:
        raise ValueError(f'simulate_example: size={size} is too small to draw anatomy; use >= 16.')
    return _SIMULATORS[kind](np.random.default_rng([seed, index]), size)
