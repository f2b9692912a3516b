"""Natural scenes imaged as B-mode ultrasound: the speckle source, and its control.

The study's explanation of why shallow layers matter on ultrasound is speckle, a low-level
texture natural images lack; pre-training on these scenes shows the network speckle without
ultrasound anatomy. The control (`natural_imaging`) is the same imaging chain without speckle.
"""

import numpy as np

from unet_jax.data.simulate.b_mode import b_mode_envelope, expected_b_mode_envelope, log_compress
from unet_jax.data.simulate.natural import simulate_natural

# Echogenicity contrast between the darkest and the brightest scene grey (amplitude, in dB):
# about the span from an anechoic cyst to echogenic gland in breast B-mode images.
_SCENE_CONTRAST_DB = 35.0


def simulate_natural_speckle(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    """A natural-like scene as a grey B-mode image, and the scene's salient-object mask.

    The scene (`simulate_natural`, drawn first from ``rng``, so the mask is that of the natural
    set with the same seed and index) gives the echogenicity: its luminance in [0, 1] is mapped
    to amplitude 10^(35 (L - 1) / 20), so the log-compressed display keeps the scene's grey
    levels, under speckle. Then `b_mode_envelope`, the scan conversion of `simulate_ultrasound`
    (mean intensity over each pixel's depth samples) and log compression with a random dynamic
    range, gain and grey map, as for the simulated breast images: the same speckle texture.
    """
    return _natural_b_mode(rng, size, speckle=True)


def simulate_natural_imaging(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    """The imaging-chain control of `simulate_natural_speckle`: the same scene, echogenicity
    mapping, PSF, envelope, scan conversion, log compression and grey map, with the envelope
    replaced by its speckle-free expectation (`expected_b_mode_envelope`).

    It draws the same random numbers in the same order (the speckle field is drawn and
    discarded), so example i of seed s has the speckled example's mask, scene, dynamic range,
    gain and grey map: the two sets differ in speckle alone.
    """
    return _natural_b_mode(rng, size, speckle=False)


def _natural_b_mode(rng: np.random.Generator, size: int, *, speckle: bool) -> dict[str, np.ndarray]:
    scene = simulate_natural(rng, size)
    luminance = scene['image'].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    echogenicity = 10 ** (_SCENE_CONTRAST_DB * (luminance / 255 - 1) / 20)
    env, upsample = b_mode_envelope(rng, echogenicity)  # drawn in both: the same later draws
    if not speckle:
        env, upsample = expected_b_mode_envelope(echogenicity)
    env = np.sqrt(np.mean(np.square(env).reshape(size, upsample, size), axis=1))
    dynamic_range_db = rng.uniform(50, 60)
    image = log_compress(
        env,
        dynamic_range_db=dynamic_range_db,
        # The brightest tissue (0 dB mean intensity) shows at 80-90% of white.
        gain_db=dynamic_range_db * rng.uniform(0.8, 0.9),
        grey_map_gamma=rng.uniform(1.2, 1.5),
    )
    return dict(image=np.round(255 * image).astype(np.uint8), mask=scene['mask'])
