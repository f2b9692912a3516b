"""Simulated chest radiographs (PA view, display convention: attenuation is bright, air is dark).

Projection model: image brightness is 1 - exp(-line integral of attenuation), built from
overlapping structures (soft-tissue thorax, air-filled lungs, mediastinum, heart, spine,
ribs, clavicles, sub-diaphragmatic abdomen). The patient's right lung is on the image left.
"""

import math

import numpy as np
import scipy.ndimage

from unet_jax.data.simulate.grid import grid, smooth_noise


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
    y, x = grid(size, size)
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
