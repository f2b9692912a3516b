"""Simulated segmentation data: B-mode breast ultrasound, chest radiographs, natural scenes.

Pure numpy/scipy and deterministic given a ``np.random.Generator``; example ``i`` of a set
with seed ``s`` uses ``np.random.default_rng([s, i])`` (``simulate_example``). Each simulator
returns ``dict(image=uint8, mask=uint8 in {0, 1})``; ultrasound adds ``label``.

Coordinates are normalised: ``y`` (rows, depth for ultrasound) and ``x`` (columns) in [0, 1],
sampled at pixel centres, so every structure scales with the image size.
"""

import colorsys
import dataclasses
import functools
import math

import numpy as np
import scipy.fft
import scipy.ndimage

KINDS = ('ultrasound', 'xray', 'natural', 'natural_speckle', 'natural_imaging')

# ----------------------------------------------------------------------------------------
# Shared helpers.


def _grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates y [rows, 1] and x [1, cols]."""
    y = ((np.arange(rows, dtype=np.float32) + 0.5) / rows)[:, None]
    x = ((np.arange(cols, dtype=np.float32) + 0.5) / cols)[None, :]
    return y, x


def smooth_noise(rng: np.random.Generator, rows: int, cols: int, cells: int) -> np.ndarray:
    """Zero-mean, roughly unit-variance random field varying over ~1/cells of the image.

    A sum of Gaussian bumps with random weights on a (cells+2)^2 lattice, evaluated as two small
    matrix products (separable basis), which is far cheaper than filtering white noise.
    """
    centres = (np.arange(cells + 2, dtype=np.float32) - 0.5) / cells
    width = 0.6 / cells
    y, x = _grid(rows, cols)
    basis_y = np.exp(-0.5 * ((y - centres[None, :]) / width) ** 2)  # [rows, cells+2]
    basis_x = np.exp(-0.5 * ((x.T - centres[None, :]) / width) ** 2)  # [cols, cells+2]
    weights = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)
    field = basis_y @ weights @ basis_x.T
    # Variance = (sum of squared bumps along each axis)^2 ~ (width * cells * sqrt(pi))^2.
    return field / np.float32(0.6 * math.sqrt(math.pi))


def _star_radius(theta: np.ndarray, harmonics: np.ndarray) -> np.ndarray:
    """1 + sum_k a_k cos(k theta + phi_k) for rows (k, a_k, phi_k) of ``harmonics``."""
    r = np.ones_like(theta)
    for k, amplitude, phase in harmonics:
        r += amplitude * np.cos(k * theta + phase)
    return r


# ----------------------------------------------------------------------------------------
# B-mode ultrasound.
#
# Model (the standard convolution model of B-mode imaging, e.g. Jensen 1991 "A model for the
# propagation and scattering of ultrasound in tissue", and Field II, Jensen 1996): the received
# echo is a field of random point scatterers, whose amplitude follows the local echogenicity,
# convolved with a separable pulse-echo point-spread function, attenuated on the way in and
# out, then envelope-detected, gain-compensated and log-compressed for display.

LABELS = ('benign', 'malignant', 'normal')
# BUSI (Al-Dhabyani et al. 2020): 437 benign, 210 malignant, 133 normal images.
LABEL_PROBABILITIES = (0.57, 0.28, 0.15)

# One-way attenuation in dB per image depth. Breast tissue ~0.75 dB/cm/MHz; at 7.5 MHz over a
# 4 cm field of view that is ~22 dB one way (45 dB round trip), hence the need for TGC.
_ATTENUATION_DB = {'gel': 0.0, 'skin': 20.0, 'fat': 16.0, 'gland': 22.0, 'muscle': 28.0}


@dataclasses.dataclass(frozen=True)
class PulseEcho:
    """Separable pulse-echo PSF, in samples of the simulation grid.

    Axially a Gaussian-modulated cosine (the transmitted pulse convolved with the receive
    impulse response, Field II's usual approximation); laterally a Gaussian beam profile.
    """

    axial_sigma: float  # standard deviation of the axial Gaussian envelope
    wavelength: float  # period of the axial carrier
    lateral_sigma: float

    def kernels(self) -> tuple[np.ndarray, np.ndarray]:
        """The analytic axial kernel and the lateral kernel, each with unit energy.

        The axial kernel is exp(-z^2 / 2 sigma^2) exp(2 pi i z / wavelength): its real part is the
        Gaussian-modulated cosine RF pulse, and since the pulse is narrow-band its imaginary part is
        the pulse's Hilbert transform. Convolving scatterers with it therefore yields the analytic
        (IQ) signal directly, and the envelope is its magnitude. Unit energy makes a homogeneous
        region of unit echogenicity produce unit mean intensity.
        """
        half = math.ceil(3.5 * self.axial_sigma)
        z = np.arange(-half, half + 1, dtype=np.float64)
        axial = np.exp(-0.5 * (z / self.axial_sigma) ** 2 + 2j * np.pi * z / self.wavelength)
        half = math.ceil(3.5 * self.lateral_sigma)
        x = np.arange(-half, half + 1, dtype=np.float64)
        lateral = np.exp(-0.5 * (x / self.lateral_sigma) ** 2)
        return axial / np.linalg.norm(axial), lateral / np.linalg.norm(lateral)


def transducer(size: int) -> tuple[PulseEcho, int]:
    """The PSF and axial up-sampling factor for a ``size`` x ``size`` image.

    Resolution is tied to the field of view (axial FWHM ~1/90, lateral ~1/45 of it, as for a
    7.5 MHz linear probe imaging 4 cm), but never below one output pixel so that speckle stays
    resolved in small images. The pulse has ~1.5 carrier cycles per envelope FWHM; depth is
    simulated on a grid fine enough for 4 samples per carrier wavelength.
    """
    axial_fwhm = max(size / 90, 1.0)  # output pixels
    lateral_fwhm = max(size / 45, 1.5)
    cycles_per_fwhm = 1.5
    upsample = math.ceil(4 * cycles_per_fwhm / axial_fwhm)
    fwhm_to_sigma = 1 / (2 * math.sqrt(2 * math.log(2)))
    psf = PulseEcho(
        axial_sigma=axial_fwhm * upsample * fwhm_to_sigma,
        wavelength=axial_fwhm * upsample / cycles_per_fwhm,
        lateral_sigma=lateral_fwhm * fwhm_to_sigma,
    )
    return psf, upsample


@functools.lru_cache(maxsize=16)
def _psf_spectrum(psf: PulseEcho, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """FFTs of the axial and lateral kernels, zero-padded to ``shape`` and centred at 0."""
    axial, lateral = psf.kernels()
    spectra = []
    for kernel, n in ((axial, shape[0]), (lateral, shape[1])):
        padded = np.zeros(n, np.complex128)
        half = len(kernel) // 2
        padded[: half + 1] = kernel[half:]
        padded[n - half :] = kernel[:half]
        spectra.append(np.fft.fft(padded).astype(np.complex64))
    return spectra[0], spectra[1]


def scatterers(rng: np.random.Generator, amplitude: np.ndarray) -> np.ndarray:
    """Circular complex Gaussian scatterers with E|s|^2 = amplitude^2.

    Many sub-resolution scatterers per resolution cell with random phases sum to a circular
    Gaussian field; its envelope is Rayleigh distributed: fully developed speckle (Goodman 1975;
    Wagner et al. 1983, "Statistics of speckle in ultrasound B-scans").
    """
    noise = rng.standard_normal((2, *amplitude.shape), dtype=np.float32)
    return (noise[0] + 1j * noise[1]) * (amplitude * np.float32(math.sqrt(0.5)))


def two_way_attenuation(attenuation_db: np.ndarray) -> np.ndarray:
    """Round-trip amplitude factor at each depth from a one-way attenuation map.

    ``attenuation_db`` is in dB per image depth; the pulse is attenuated over the path from the
    probe down to each point and back, i.e. twice the depth integral above the point. A strongly
    attenuating lesion therefore darkens everything below it: posterior acoustic shadowing (and a
    weakly attenuating cyst brightens it: posterior enhancement).
    """
    dy = 1.0 / attenuation_db.shape[0]
    above = np.cumsum(attenuation_db, axis=0) * dy - 0.5 * attenuation_db * dy
    return np.power(np.float32(10.0), -2 * above / 20).astype(np.float32)


def envelope(
    rng: np.random.Generator,
    echogenicity: np.ndarray,
    psf: PulseEcho,
    *,
    attenuation_db: np.ndarray | None = None,
    noise: float = 0.0,
) -> np.ndarray:
    """Echo envelope on the simulation grid (before gain compensation and log compression).

    Scatterers (amplitude = ``echogenicity``, rows = depth) are attenuated on the round trip,
    electronic noise (std ``noise``, not attenuated) is added, and the sum is convolved with the
    analytic pulse-echo PSF (one FFT, separable kernel); the envelope is the magnitude of the
    analytic signal. The field is padded by the PSF support so no echo wraps around.
    """
    axial, lateral = psf.kernels()
    pad = (len(axial) // 2, len(lateral) // 2)
    amplitude = echogenicity.astype(np.float32)
    if attenuation_db is not None:
        amplitude = amplitude * two_way_attenuation(attenuation_db)
    amplitude = np.pad(amplitude, ((pad[0], pad[0]), (pad[1], pad[1])), mode='edge')
    field = scatterers(rng, amplitude)
    if noise:
        field += scatterers(rng, np.full(amplitude.shape, noise, np.float32))
    shape = (scipy.fft.next_fast_len(field.shape[0]), scipy.fft.next_fast_len(field.shape[1]))
    axial_spectrum, lateral_spectrum = _psf_spectrum(psf, shape)
    spectrum = scipy.fft.fft2(field, s=shape)
    spectrum *= axial_spectrum[:, None]
    spectrum *= lateral_spectrum[None, :]
    iq = scipy.fft.ifft2(spectrum)
    rows, cols = echogenicity.shape
    return np.abs(iq[pad[0] : pad[0] + rows, pad[1] : pad[1] + cols]).astype(np.float32)


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


def log_compress(
    env: np.ndarray, *, dynamic_range_db: float, gain_db: float, grey_map_gamma: float = 1.0
) -> np.ndarray:
    """Map an envelope to [0, 1]: 20 log10 in dB, shown over ``dynamic_range_db`` below the top.

    ``gain_db`` puts the envelope level 10^(-gain_db/20) at black; levels ``dynamic_range_db``
    higher are white. Scanners show 50-60 dB of the echo's ~100 dB range, then apply a grey map
    (here a power law) that darkens low levels for contrast.
    """
    db = 20 * np.log10(np.maximum(env, 1e-12)) + gain_db
    return np.clip(db / dynamic_range_db, 0.0, 1.0) ** grey_map_gamma


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
    y, x = _grid(rows, cols)
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
        radius = _star_radius(theta, self.harmonics)
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
    y, x = _grid(*echo.shape)
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
        mask = lesion.inside(*_grid(size, size)).astype(np.uint8)
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


# ----------------------------------------------------------------------------------------
# Chest radiograph (PA view, display convention: attenuation is bright, air is dark).
#
# Projection model: image brightness is 1 - exp(-line integral of attenuation), built from
# overlapping structures (soft-tissue thorax, air-filled lungs, mediastinum, heart, spine,
# ribs, clavicles, sub-diaphragmatic abdomen). The patient's right lung is on the image left.


def _lung(
    y: np.ndarray,
    x: np.ndarray,
    *,
    centre_x: float,
    half_width: float,
    apex: float,
    base: float,
    dome: float,
    side: int,
) -> np.ndarray:
    """One lung field: rounded apex, near-vertical walls, a diaphragm dome as its floor.

    ``side`` is -1 for the image-left (patient's right) lung, +1 for the other; the dome peaks
    medially of the centre so the lateral costophrenic angle is the lowest point.
    """
    shoulder = apex + 1.3 * half_width
    rounding = np.sqrt(np.clip(1 - ((shoulder - y) / (shoulder - apex)) ** 2, 0, 1))
    width = np.where(y < shoulder, half_width * rounding, half_width * (1 + 0.15 * (y - shoulder)))
    # The lateral wall bulges out; the medial border is straighter (mediastinum).
    centre = centre_x + side * 0.04 * (y - apex)
    inside_walls = np.abs(x - centre) < width
    dome_centre = centre_x - side * 0.2 * half_width
    diaphragm = base - dome * np.clip(1 - ((x - dome_centre) / (1.1 * half_width)) ** 2, 0, 1)
    return inside_walls & (y > apex) & (y < diaphragm)


def _band(distance: np.ndarray, half_thickness: float) -> np.ndarray:
    """Projected density of a bone of round cross-section: bright cortex, lighter marrow."""
    t = np.clip(1 - (distance / half_thickness) ** 2, 0, None)
    return np.sqrt(t) * (0.6 + 0.4 * (1 - t) ** 2) * 1.3


def simulate_xray(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    """A PA chest radiograph and its lung-field mask (lungs minus the heart, as in SCR/JSRT)."""
    y, x = _grid(size, size)
    scale = rng.uniform(0.9, 1.05)
    mid = 0.5 + rng.uniform(-0.03, 0.03)
    top = rng.uniform(-0.03, 0.03)

    # Thorax outline: neck widening into the shoulders, then chest wall; elliptic cross-section.
    half_body = 0.1 + (0.45 * scale - 0.1) * np.clip((y - top) / 0.17, 0, 1) ** 0.5
    body = np.sqrt(np.clip(1 - ((x - mid) / half_body) ** 2, 0, 1))

    right_w, left_w = 0.175 * scale * rng.uniform(1.0, 1.08), 0.16 * scale
    base = top + rng.uniform(0.76, 0.82) * scale
    right = _lung(
        y,
        x,
        centre_x=mid - 0.21 * scale,
        half_width=right_w,
        apex=top + rng.uniform(0.12, 0.16),
        base=base - 0.02,
        dome=rng.uniform(0.06, 0.1),
        side=-1,
    )
    left = _lung(
        y,
        x,
        centre_x=mid + 0.2 * scale,
        half_width=left_w,
        apex=top + rng.uniform(0.13, 0.17),
        base=base,
        dome=rng.uniform(0.05, 0.09),
        side=1,
    )
    lungs = right | left

    # Heart: a tilted ellipse, mostly left of the midline (image right), apex down and out.
    # Cardiothoracic ratio ~0.4-0.5: the heart is nearly half as wide as the thorax.
    hy, hx = base - rng.uniform(0.11, 0.15), mid + rng.uniform(0.05, 0.08)
    a, b, tilt = rng.uniform(0.17, 0.21) * scale, rng.uniform(0.11, 0.14) * scale, -0.45
    u = ((x - hx) * math.cos(tilt) + (y - hy) * math.sin(tilt)) / a
    v = (-(x - hx) * math.sin(tilt) + (y - hy) * math.cos(tilt)) / b
    heart = np.sqrt(np.clip(1 - u * u - v * v, 0, 1))
    mask = lungs & (heart == 0)

    mediastinum = np.clip(1 - np.abs(x - mid) / 0.07, 0, 1) * (y < base)
    abdomen = np.clip((y - base + 0.1) / 0.05, 0, 1) * ~lungs  # liver, stomach below the domes
    # The lungs thin out towards their borders, so the air path length falls off smoothly.
    air = scipy.ndimage.gaussian_filter(lungs.astype(np.float32), 0.012 * size)
    spine = _band(np.abs(x - mid), 0.035) * (1 + 0.25 * np.cos(2 * np.pi * y / 0.045))
    trachea = np.clip(1 - np.abs(x - mid) / 0.012, 0, 1) * (y < top + 0.33)

    bone = spine.copy()
    for side in (-1, 1):
        d = side * (x - mid)  # distance from the midline on this side
        for k in range(10):
            # Posterior rib: from the spine up and out, then curving down along the chest wall.
            y0 = top + 0.12 + k * rng.normal(0.068, 0.003) * scale
            centre = y0 + 1.3 * (d - 0.12) ** 2 - 1.3 * 0.0144
            bone += _band(np.abs(y - centre), 0.012 * scale) * ((d > 0.03) & (d < half_body - 0.01))
            # Anterior rib (fainter): from the lateral wall down towards the sternum.
            centre = y0 + 0.02 + 0.35 * (0.42 - d)
            bone += 0.5 * _band(np.abs(y - centre), 0.01 * scale) * ((d > 0.12) & (d < 0.42))
        # Clavicle: from the sternal end, laterally and slightly up, gently S-curved.
        t = (d - 0.04) / 0.28
        centre = top + 0.17 - 0.06 * t + 0.015 * np.sin(np.pi * t)
        bone += 1.2 * _band(np.abs(y - centre), 0.014 * scale) * ((t > 0) & (t < 1))

    markings = 0.08 * smooth_noise(rng, size, size, 18) * lungs
    density = (
        1.2 * body * (1 - 0.75 * air)
        + 0.9 * mediastinum
        + 1.1 * heart
        + 1.0 * abdomen * body
        + 0.45 * bone * body
        - 0.25 * trachea
        + markings
    )
    image = 1 - np.exp(-rng.uniform(1.2, 1.8) * np.clip(density, 0, None))
    # Exposure: detector gain, gamma and the anode heel effect (a gradient across the film).
    image = image ** rng.uniform(0.8, 1.25) * (1 + rng.uniform(-0.08, 0.08) * (y - 0.5))
    image = scipy.ndimage.gaussian_filter(image, 0.4 * size / 128)
    image = image + rng.normal(0, rng.uniform(0.005, 0.02), image.shape)  # quantum noise
    image = np.clip(image / max(np.percentile(image, 99.5), 1e-6), 0, 1)
    return dict(image=np.round(255 * image).astype(np.uint8), mask=mask.astype(np.uint8))


# ----------------------------------------------------------------------------------------
# Natural-like scenes: the dead-leaves model (Matheron 1968; Lee, Mumford & Huang 2001,
# "Occlusion models for natural images"): opaque shapes fall on top of each other, with
# radii drawn from p(r) ~ r^-3, which makes the scene statistics scale invariant like those
# of photographs. A salient object lies on top of all leaves.


def _random_colour(rng: np.random.Generator, saturation: float | None = None) -> np.ndarray:
    """An RGB colour: any hue, moderate saturation and brightness unless asked otherwise."""
    hue = rng.uniform()
    saturation = rng.beta(2, 2.5) if saturation is None else saturation
    value = rng.beta(3, 2)
    return np.array(colorsys.hsv_to_rgb(hue, saturation, value), np.float32)


def _texture(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray | None:
    """A multiplicative texture over a window: None (flat), a grating or smooth blotches."""
    draw = rng.uniform()
    if draw < 0.5:
        return None
    if draw < 0.75:
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.02, 0.08)
        phase = (y * math.cos(angle) + x * math.sin(angle)) / period
        return (1 + rng.uniform(0.15, 0.4) * np.sin(2 * np.pi * phase)).astype(np.float32)
    blotches = smooth_noise(rng, y.shape[0], x.shape[1], int(rng.integers(2, 6)))
    return np.exp(rng.uniform(0.1, 0.3) * blotches)


def _leaf(
    rng: np.random.Generator, y: np.ndarray, x: np.ndarray, centre: np.ndarray, radius: float
) -> np.ndarray:
    """Boolean map of one leaf: a disk, an ellipse or a random polygon."""
    dy, dx = y - centre[0], x - centre[1]
    kind = rng.integers(3)
    if kind == 0:
        return dy * dy + dx * dx < radius * radius
    angle = rng.uniform(0, np.pi)
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    if kind == 1:
        ratio = rng.uniform(0.3, 1.0)
        return (u / radius) ** 2 + (v / (ratio * radius)) ** 2 < 1
    # Convex polygon: inside every half-plane through its vertices' edges.
    corners = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 8)))
    inside = np.ones(np.broadcast_shapes(y.shape, x.shape), bool)
    for a0, a1 in zip(corners, np.roll(corners, -1)):
        mid, half = 0.5 * (a0 + a1) + np.pi * (a1 < a0), 0.5 * ((a1 - a0) % (2 * np.pi))
        inside &= u * math.cos(mid) + v * math.sin(mid) < radius * math.cos(half)
    return inside


def dead_leaves(rng: np.random.Generator, size: int) -> np.ndarray:
    """An RGB float image in [0, 1] of occluding leaves over a smooth gradient, slightly blurred.

    The blur (a shallow depth of field) is applied before the salient object is placed, so the
    object stays in focus, as in photographs of salient objects.
    """
    y, x = _grid(size, size)
    c0, c1 = _random_colour(rng), _random_colour(rng)
    ramp = np.clip(0.5 + (y - 0.5) * rng.normal() + (x - 0.5) * rng.normal(), 0, 1)
    image = (c0 + (c1 - c0) * ramp[..., None]).astype(np.float32)
    r_min, r_max = 0.03, 0.5
    count = 170
    # Inverse CDF of p(r) ~ r^-3 on [r_min, r_max].
    u = rng.uniform(size=count)
    radii = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5
    centres = rng.uniform(-0.1, 1.1, (count, 2))
    for radius, centre in zip(radii.tolist(), centres):
        (cy, cx) = centre.tolist()
        top, bottom = max(int((cy - radius) * size), 0), min(int((cy + radius) * size) + 1, size)
        left, right = max(int((cx - radius) * size), 0), min(int((cx + radius) * size) + 1, size)
        if bottom <= top or right <= left:
            continue
        wy, wx = y[top:bottom], x[:, left:right]
        leaf = _leaf(rng, wy, wx, centre, radius)
        colour = _random_colour(rng)
        texture = _texture(rng, wy, wx)
        window = image[top:bottom, left:right]
        if texture is None:
            window[leaf] = colour
        else:
            window[leaf] = np.minimum(colour * texture[..., None], 1)[leaf]
    return scipy.ndimage.gaussian_filter(image, (rng.uniform(0.3, 1.0) * size / 128,) * 2 + (0,))


def salient_object(
    rng: np.random.Generator, size: int, background: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A compact object (RGB, mask) covering 10-40% of the image, contrasting with the scene.

    A smooth star-shaped blob (area fraction drawn in [0.13, 0.33], its radius solved exactly
    from the blob's area), shaded like a lit 3-D body, in the candidate colour farthest from
    the background's mean colour, sometimes striped or blotchy.
    """
    y, x = _grid(size, size)
    fraction = rng.uniform(0.13, 0.33)
    k = np.arange(2, 6)
    harmonics = np.stack([k, rng.uniform(0, 0.25, 4) / k, rng.uniform(0, 2 * np.pi, 4)], axis=1)
    # Area of r(theta) = R (1 + sum a_k cos(k theta + phi)) is pi R^2 (1 + sum a_k^2 / 2).
    radius = math.sqrt(fraction / (math.pi * (1 + 0.5 * np.sum(harmonics[:, 1] ** 2))))
    centre = 0.5 + rng.uniform(-0.12, 0.12, 2)
    dy, dx = y - centre[0], x - centre[1]
    mask = np.hypot(dy, dx) < radius * _star_radius(np.arctan2(dy, dx), harmonics)
    candidates = [_random_colour(rng, rng.uniform(0.5, 1.0)) for _ in range(8)]
    mean = background.reshape(-1, 3).mean(axis=0)
    colour = max(candidates, key=lambda c: float(np.sum((c - mean) ** 2)))
    light = rng.uniform(0, 2 * np.pi)
    shading = 1 + 0.6 * (dx * math.cos(light) + dy * math.sin(light)) / radius
    texture = _texture(rng, y, x)
    shading = np.clip(shading, 0.6, 1.3) * (1 if texture is None else texture)
    rgb = np.clip(colour * shading[..., None], 0, 1)
    return rgb.astype(np.float32), mask


def simulate_natural(rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
    """A natural-like RGB scene and the mask of its salient object."""
    background = dead_leaves(rng, size)
    rgb, mask = salient_object(rng, size, background)
    image = np.where(mask[..., None], rgb, background)  # the object occludes every leaf
    return dict(image=np.round(255 * image).astype(np.uint8), mask=mask.astype(np.uint8))


# ----------------------------------------------------------------------------------------
# Natural scenes imaged as B-mode ultrasound: the speckle source. The study's explanation of
# why shallow layers matter on ultrasound is speckle, a low-level texture natural images lack;
# pre-training on these scenes shows the network speckle without ultrasound anatomy.

# Echogenicity contrast between the darkest and the brightest scene grey (amplitude, in dB):
# about the span from an anechoic cyst to echogenic gland in breast B-mode images.
_SCENE_CONTRAST_DB = 35.0


def b_mode_envelope(rng: np.random.Generator, echogenicity: np.ndarray) -> tuple[np.ndarray, int]:
    """The echo envelope of an image-grid echogenicity map [rows, size], and its upsampling.

    The image formation of `simulate_ultrasound` without its tissue physics (no attenuation,
    no gain compensation): complex Gaussian scatterers with amplitude ``echogenicity`` on a grid
    `upsample` times finer in depth, the pulse-echo PSF of a ``size``-pixel field of view, and
    envelope detection. The envelope is on the fine grid [rows * upsample, size]: a uniform map
    gives fully developed speckle (Rayleigh, mean/std 1.91) of mean intensity echogenicity^2.
    """
    psf, upsample = transducer(echogenicity.shape[1])
    fine = np.repeat(echogenicity.astype(np.float32), upsample, axis=0)
    return envelope(rng, fine, psf, noise=10 ** (-62 / 20)), upsample


def expected_b_mode_envelope(echogenicity: np.ndarray) -> tuple[np.ndarray, int]:
    """`b_mode_envelope` without speckle: the square root of the envelope's expected intensity.

    For circular Gaussian scatterers of amplitude a(y) (and the electronic noise floor), the
    envelope's intensity at x has expectation sum_y a(y)^2 |h(x - y)|^2, h the pulse-echo PSF:
    the same echogenicity map, PSF and grid, but the scatterers' random phases averaged out. Its
    ratio mean/std over a uniform region is far above speckle's 1.91 (no Rayleigh texture).
    """
    psf, upsample = transducer(echogenicity.shape[1])
    axial, lateral = psf.kernels()
    fine = np.repeat(echogenicity.astype(np.float32), upsample, axis=0)
    intensity = np.square(fine) + np.float32(10 ** (-62 / 20)) ** 2
    intensity = scipy.ndimage.convolve1d(intensity, np.abs(axial) ** 2, axis=0, mode='nearest')
    intensity = scipy.ndimage.convolve1d(intensity, np.abs(lateral) ** 2, axis=1, mode='nearest')
    return np.sqrt(intensity).astype(np.float32), upsample


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
