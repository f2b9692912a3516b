"""B-mode ultrasound image formation: scatterers, the pulse-echo PSF, attenuation, envelope
detection and log compression; the breast images and the natural scenes as B-mode share it.

Model (the standard convolution model of B-mode imaging, e.g. Jensen 1991 "A model for the
propagation and scattering of ultrasound in tissue", and Field II, Jensen 1996): the received
echo is a field of random point scatterers, whose amplitude follows the local echogenicity,
convolved with a separable pulse-echo point-spread function, attenuated on the way in and
out, then envelope-detected, gain-compensated (the breast scanner's time gain compensation,
in unet_jax.data.simulate.ultrasound) and log-compressed for display.
"""

import dataclasses
import functools
import math

import numpy as np
import scipy.fft
import scipy.ndimage


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
