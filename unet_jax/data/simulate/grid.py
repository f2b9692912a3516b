"""The normalised image grid the simulations draw on, and the shapes and fields drawn on it.

Coordinates are normalised: ``y`` (rows, depth for ultrasound) and ``x`` (columns) in [0, 1],
sampled at pixel centres, so every structure scales with the image size.
"""

import math

import numpy as np


def grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
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
    y, x = grid(rows, cols)
    basis_y = np.exp(-0.5 * ((y - centres[None, :]) / width) ** 2)  # [rows, cells+2]
    basis_x = np.exp(-0.5 * ((x.T - centres[None, :]) / width) ** 2)  # [cols, cells+2]
    weights = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)
    field = basis_y @ weights @ basis_x.T
    # Variance = (sum of squared bumps along each axis)^2 ~ (width * cells * sqrt(pi))^2.
    return field / np.float32(0.6 * math.sqrt(math.pi))


def star_radius(theta: np.ndarray, harmonics: np.ndarray) -> np.ndarray:
    """1 + sum_k a_k cos(k theta + phi_k) for rows (k, a_k, phi_k) of ``harmonics``."""
    r = np.ones_like(theta)
    for k, amplitude, phase in harmonics:
        r += amplitude * np.cos(k * theta + phase)
    return r
