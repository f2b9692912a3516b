"""Low-rank adapters of convolution kernels (freeze spec `lora:R@SELECTOR`; ConvLoRA).

A kernel W of shape [kh, kw, cin, cout] of a selected unit is trained as

    W + scale * reshape(A @ B, W.shape),   A: [kh * kw * cin, R],  B: [R, cout],

with W frozen and A, B trained. B starts at zero, so the adapted model is the pre-trained one at
step 0. A is drawn from a standard normal and scale = 1 / sqrt(R) (rank-stabilised scaling,
Kalajdzievski 2023): an entry of the product then moves at about the rate of a kernel entry
trained directly with Adam, whatever R, so one learning rate serves every rank and `full`.

Every 3x3 conv and up-convolution kernel is adapted; 1x1 kernels (the head) are not (their
[cin, cout] matrix is smaller than an adapter of it): the freeze plan trains such a unit
whole. A and B sit next to their kernel in the params tree
(`.../conv/lora_a`, `.../conv/lora_b`), so they belong to the kernel's unit for the freeze plan;
`fold` merges them into the kernels, which gives the plain U-Net tree that evaluation, the best
params, checkpoints of them and `predict` use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import math
from typing import Any

import flax
import numpy as np

LORA_A = 'lora_a'
LORA_B = 'lora_b'
LEAVES = (LORA_A, LORA_B)
KERNEL = 'kernel'


def adapts(path: tuple[str, ...], shape: tuple[int, ...]) -> bool:
    """Whether the leaf at `path` is a kernel that `lora:` adapts (a conv kernel wider than 1x1)."""
    return path[-1] == KERNEL and len(shape) == 4 and tuple(shape[:2]) != (1, 1)


def adapter_shapes(kernel_shape: tuple[int, ...], rank: int) -> tuple[tuple[int, int], ...]:
    """The shapes of A and B for a kernel [kh, kw, cin, cout] at `rank`."""
    return (math.prod(kernel_shape[:3]), rank), (rank, kernel_shape[3])


def scale(rank: int) -> float:
    return 1.0 / math.sqrt(rank)


def step_flops(kernel_shape: tuple[int, ...], rank: int) -> float:
    """FLOPs of one adapter per training step (not per image): the product A @ B in the
    forward pass, and the gradients of A and B from the kernel's gradient (2 FLOPs a
    multiply-add; the scale and the sum with W are elementwise and counted once each)."""
    (fan_in, _), (_, cout) = adapter_shapes(kernel_shape, rank)
    return 3 * 2 * fan_in * rank * cout + 2 * fan_in * cout


def add(params: Any, ranks: Mapping[str, int], rng: np.random.Generator) -> dict:
    """`params` with A and B next to every adapted kernel of the units in `ranks` ({unit
    'block/unit': rank}); A ~ N(0, 1), B = 0. Kernels of other units are left alone."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    for path in sorted(flat):
        rank = ranks.get('/'.join(path[:2]))
        value = flat[path]
        if rank is None or not adapts(path, np.shape(value)):
            continue
        shape_a, shape_b = adapter_shapes(np.shape(value), rank)
        flat[path[:-1] + (LORA_A,)] = rng.standard_normal(shape_a).astype(np.float32)
        flat[path[:-1] + (LORA_B,)] = np.zeros(shape_b, np.float32)
    return flax.traverse_util.unflatten_dict(flat)


def has_adapters(params: Any) -> bool:
    return any(p[-1] == LORA_A for p in _paths(params))


def fold(params: Any) -> Any:
    """The plain U-Net params: every adapter merged into its kernel and removed (a tree without
    adapters comes back as it is). Differentiable, so training goes through it."""
    if not has_adapters(params):
        return params
    flat = dict(flax.traverse_util.flatten_dict(flax.core.unfreeze(params)))
    owners = [p[:-1] for p in flat if p[-1] == LORA_A]
    for owner in owners:
        a, b = flat.pop(owner + (LORA_A,)), flat.pop(owner + (LORA_B,))
        kernel = flat[owner + (KERNEL,)]
        delta = (a @ b).reshape(kernel.shape) * scale(a.shape[-1])
        flat[owner + (KERNEL,)] = kernel + delta.astype(kernel.dtype)
    return flax.traverse_util.unflatten_dict(flat)


def _paths(params: Any) -> Iterable[tuple[str, ...]]:
    return flax.traverse_util.flatten_dict(flax.core.unfreeze(params)).keys()
