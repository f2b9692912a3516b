"""Simulated B-mode breast ultrasound: the tissue layers, a lesion with the BI-RADS shape cues
of its class (benign, malignant, or none for a normal image), and the scanner's settings; the
image formation is unet_jax.data.simulate.b_mode's.
"""

import dataclasses
import math

import numpy as np

from unet_jax.data.simulate.b_mode import envelope, log_compress, transducer
from unet_jax.data.simulate.grid import grid, smooth_noise, star_radius

LABELS = ('benign', 'malignant', 'normal')
# BUSI (Al-Dhabyani et al. 2020): 437 benign, 210 malignant, 133 normal images.
LABEL_PROBABILITIES = (0.57, 0.28, 0.15)

# One-way attenuation in dB per image depth. Breast tissue ~0.75 dB/cm/MHz; at 7.5 MHz over a
# 4 cm field of view that is ~22 dB one way (45 dB round trip), hence the need for TGC.
_ATTENUATION_DB = {'gel': 0.0, 'skin': 20.0, 'fat': 16.0, 'gland': 22.0, 'muscle': 28.0}


def time_gain_compensation(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Depth gain (amplitude factor per row) that only roughly undoes tissue attenuation.

    The operator's TGC sliders assume a nominal attenuation that differs from the tissue's, and
    the slider curve is not smooth: a residual depth trend plus a few dB of random variation.
    """
    y = (np.arange(rows, dtype=np.float32) + 0.5) / rows
    nominal = _ATTENUATION_DB['gland'] * rng.uniform(0.75, 1.05)
    sliders = rng.normal(0.0, 2.0, size=8)
    error_db = np.interp(y, np.linspace(0, 1, 8), sliders)
    return np.power(10.0, (2 * nominal * y + error_db) / 20).astype(np.float32)


def _layer_depth(
    rng: np.random.Generator, x: np.ndarray, depth: float, wiggle: float
) -> np.ndarray:
    """A wavy tissue interface at mean ``depth``: a few low-frequency sinusoids across x."""
    y = np.full_like(x, depth)
    for k in (1, 2, 3):
        y = y + wiggle / k * np.sin(2 * np.pi * (k * x + rng.uniform()))
    return y


def breast_tissue(rng: np.random.Generator, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Echogenicity (scatterer amplitude) and one-way attenuation (dB/depth) of breast tissue.

    From the probe down: coupling gel, a bright skin line, hypoechoic subcutaneous fat crossed
    by echogenic Cooper's ligaments, echogenic fibroglandular tissue with fat lobules, thin
    retromammary fat, the pectoralis muscle band with bright fibre striations, and the chest
    wall. Multiplicative smooth variation makes every region non-uniform.
    """
    y, x = grid(rows, cols)
    skin_top = rng.uniform(0.005, 0.02)
    skin_bottom = skin_top + rng.uniform(0.015, 0.03)
    fat_bottom = _layer_depth(rng, x, rng.uniform(0.15, 0.3), 0.03)
    gland_bottom = _layer_depth(rng, x, rng.uniform(0.62, 0.75), 0.04)
    muscle_top = gland_bottom + rng.uniform(0.02, 0.05)
    muscle_bottom = muscle_top + rng.uniform(0.08, 0.15)

    fat_level = rng.uniform(0.25, 0.4)
    echo = np.full((rows, cols), fat_level, np.float32)
    attenuation = np.full((rows, cols), _ATTENUATION_DB['fat'], np.float32)
    gland = (y >= fat_bottom) & (y < gland_bottom)
    # Fat lobules inside the glandular layer: where a smooth field is low, tissue stays fat.
    lobules = smooth_noise(rng, rows, cols, 8) < rng.uniform(-1.2, -0.5)
    gland &= ~lobules
    echo[gland] = rng.uniform(0.8, 1.2)
    attenuation[gland] = _ATTENUATION_DB['gland']
    muscle = (y >= muscle_top) & (y < muscle_bottom)
    angle = rng.uniform(-0.5, 0.5)
    fibres = np.cos(2 * np.pi * rng.uniform(25, 45) * (y * math.cos(angle) + x * math.sin(angle)))
    echo = np.where(muscle, 0.35 * (1 + 2.5 * np.maximum(fibres, 0) ** 6), echo)
    attenuation[muscle] = _ATTENUATION_DB['muscle']
    below = y >= muscle_bottom
    echo = np.where(below, rng.uniform(0.15, 0.3), echo)
    # Cooper's ligaments: thin echogenic curves running obliquely through the fat.
    for _ in range(rng.integers(2, 5)):
        curve = _layer_depth(rng, x, rng.uniform(0.06, 0.25), 0.04) + rng.uniform(-0.1, 0.1) * x
        echo = np.where((np.abs(y - curve) < 0.006) & (y < fat_bottom), 1.3, echo)
    echo = np.where(y < skin_bottom, rng.uniform(1.5, 2.2), echo)
    echo = np.where(y < skin_top, 0.02, echo)
    attenuation = np.where(y < skin_bottom, _ATTENUATION_DB['skin'], attenuation)
    attenuation = np.where(y < skin_top, _ATTENUATION_DB['gel'], attenuation)
    echo *= np.exp(0.25 * smooth_noise(rng, rows, cols, 4))
    return echo.astype(np.float32), attenuation.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Lesion:
    """A star-shaped lesion around an ellipse; ``harmonics`` rows are (k, amplitude, phase)."""

    label: str
    centre: tuple[float, float]  # (y, x)
    semi_axes: tuple[float, float]  # (vertical, horizontal) before rotation
    angle: float
    harmonics: np.ndarray
    spicules: np.ndarray  # rows (angle, length, angular width)
    echogenicity: float  # relative to the surrounding tissue
    attenuation_db: float  # one-way, per image depth

    def inside(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Boolean map of the lesion at normalised coordinates ``y`` [rows, 1], ``x`` [1, cols]."""
        # Only evaluate the polar shape within the lesion's bounding square (the costly part).
        reach = max(self.semi_axes) * (
            1
            + np.abs(self.harmonics[:, 1]).sum()
            + (self.spicules[:, 1].max() if len(self.spicules) else 0)
        )
        rows = np.flatnonzero(np.abs(y[:, 0] - self.centre[0]) < reach)
        cols = np.flatnonzero(np.abs(x[0] - self.centre[1]) < reach)
        result = np.zeros((y.shape[0], x.shape[1]), bool)
        if not len(rows) or not len(cols):
            return result
        window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        dy, dx = y[window[0]] - self.centre[0], x[:, window[1]] - self.centre[1]
        c, s = math.cos(self.angle), math.sin(self.angle)
        u = (c * dx + s * dy) / self.semi_axes[1]
        v = (-s * dx + c * dy) / self.semi_axes[0]
        rho = np.sqrt(u * u + v * v)
        theta = np.arctan2(v, u)
        radius = star_radius(theta, self.harmonics)
        for angle, length, width in self.spicules:
            offset = np.abs((theta - angle + np.pi) % (2 * np.pi) - np.pi)  # wrapped angle
            radius += length * np.maximum(0.0, 1 - offset / width) ** 2
        result[window] = rho < radius
        return result


def sample_lesion(rng: np.random.Generator, label: str) -> Lesion:
    """A lesion with the BI-RADS shape cues of its class.

    Benign (fibroadenoma, cyst): oval, circumscribed, parallel to the skin (wider than tall),
    markedly hypoechoic to anechoic, little attenuation (posterior enhancement).
    Malignant (carcinoma): irregular, spiculated margin, often not parallel, hypoechoic and
    heterogeneous, strongly attenuating (posterior acoustic shadowing).
    """
    centre = (rng.uniform(0.32, 0.55), rng.uniform(0.3, 0.7))
    if label == 'benign':
        width = rng.uniform(0.08, 0.2)
        height = width / rng.uniform(1.35, 2.0)
        k = np.arange(2, 5)
        harmonics = np.stack([k, rng.uniform(0, 0.04, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1)
        return Lesion(
            label,
            centre,
            (height, width),
            rng.uniform(-0.2, 0.2),
            harmonics,
            np.zeros((0, 3)),
            echogenicity=rng.uniform(0.02, 0.12),
            attenuation_db=rng.uniform(0.0, 10.0),
        )
    width = rng.uniform(0.07, 0.16)
    height = width / rng.uniform(0.75, 1.3)
    k = np.arange(3, 11)
    harmonics = np.stack(
        [k, rng.uniform(0, 0.06, 8) / np.sqrt(k / 3), rng.uniform(0, 2 * np.pi, 8)], axis=1
    )
    count = rng.integers(5, 14)
    spicules = np.stack(
        [
            rng.uniform(0, 2 * np.pi, count),
            rng.uniform(0.2, 0.6, count),
            rng.uniform(0.06, 0.15, count),
        ],
        axis=1,
    )
    # Shadow strength: 15-30 dB round trip through the lesion's thickness.
    shadow_db = rng.uniform(15, 30)
    return Lesion(
        label,
        centre,
        (height, width),
        rng.uniform(-0.6, 0.6),
        harmonics,
        spicules,
        echogenicity=rng.uniform(0.12, 0.3),
        attenuation_db=_ATTENUATION_DB['gland'] + shadow_db / (4 * height),
    )


def add_lesion(
    rng: np.random.Generator, echo: np.ndarray, attenuation: np.ndarray, lesion: Lesion
) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``lesion`` into tissue maps on the simulation grid."""
    y, x = grid(*echo.shape)
    inside = lesion.inside(y, x)
    level = lesion.echogenicity * np.exp(0.3 * smooth_noise(rng, *echo.shape, 12))
    echo = np.where(inside, level, echo)
    if lesion.label == 'malignant' and rng.uniform() < 0.5:
        # Echogenic halo: the desmoplastic rim around an invasive carcinoma.
        grown = dataclasses.replace(lesion, semi_axes=tuple(a * 1.15 for a in lesion.semi_axes))
        echo = np.where(grown.inside(y, x) & ~inside, echo * 1.6, echo)
    attenuation = np.where(inside, lesion.attenuation_db, attenuation)
    return echo.astype(np.float32), attenuation.astype(np.float32)


def simulate_ultrasound(
    rng: np.random.Generator, size: int, *, label: str | None = None
) -> dict[str, np.ndarray | str]:
    """A B-mode breast ultrasound image, its lesion mask and label (benign|malignant|normal).

    ``label`` forces the class; by default it is drawn with BUSI's class frequencies.
    """
    if label is None:
        label = LABELS[rng.choice(len(LABELS), p=LABEL_PROBABILITIES)]
    elif label not in LABELS:
        raise ValueError(f'simulate_ultrasound: label={label!r} is not one of {LABELS}.')
    psf, upsample = transducer(size)
    rows = size * upsample
    echo, attenuation = breast_tissue(rng, rows, size)
    mask = np.zeros((size, size), np.uint8)
    if label != 'normal':
        lesion = sample_lesion(rng, label)
        echo, attenuation = add_lesion(rng, echo, attenuation, lesion)
        mask = lesion.inside(*grid(size, size)).astype(np.uint8)
    env = envelope(rng, echo, psf, attenuation_db=attenuation, noise=10 ** (-62 / 20))
    env *= time_gain_compensation(rng, rows)[:, None]
    # Scan conversion to the output grid: average intensity over the fine depth samples.
    env = np.sqrt(np.mean(np.square(env).reshape(size, upsample, size), axis=1))
    image = log_compress(
        env,
        dynamic_range_db=rng.uniform(50, 60),
        gain_db=rng.uniform(34, 39),
        grey_map_gamma=rng.uniform(1.2, 1.5),
    )
    return dict(image=np.round(255 * image).astype(np.uint8), mask=mask, label=label)
