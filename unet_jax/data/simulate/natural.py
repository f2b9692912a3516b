"""Simulated natural-like scenes: the dead-leaves model (Matheron 1968; Lee, Mumford & Huang
2001, "Occlusion models for natural images"): opaque shapes fall on top of each other, with
radii drawn from p(r) ~ r^-3, which makes the scene statistics scale invariant like those of
photographs. A salient object lies on top of all leaves; its mask is the example's.
"""

import colorsys
import math

import numpy as np
import scipy.ndimage

from unet_jax.data.simulate.grid import grid, smooth_noise, star_radius


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
    y, x = grid(size, size)
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
    y, x = grid(size, size)
    fraction = rng.uniform(0.13, 0.33)
    k = np.arange(2, 6)
    harmonics = np.stack([k, rng.uniform(0, 0.25, 4) / k, rng.uniform(0, 2 * np.pi, 4)], axis=1)
    # Area of r(theta) = R (1 + sum a_k cos(k theta + phi)) is pi R^2 (1 + sum a_k^2 / 2).
    radius = math.sqrt(fraction / (math.pi * (1 + 0.5 * np.sum(harmonics[:, 1] ** 2))))
    centre = 0.5 + rng.uniform(-0.12, 0.12, 2)
    dy, dx = y - centre[0], x - centre[1]
    mask = np.hypot(dy, dx) < radius * star_radius(np.arctan2(dy, dx), harmonics)
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
