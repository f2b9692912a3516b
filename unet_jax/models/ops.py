"""Where XLA:CPU runs the U-Net's train step slowly, and what the model does about it.

Measured with benchmarks/profile_step.py and benchmarks/vs_pytorch.py (docs/performance.md):

* jax 0.10's XLA:CPU hands convolutions to YNNPACK by default. YNNPACK computes forward and
  input-gradient convolutions about as fast as XLA's own (Eigen) ones, but the weight
  gradient of a 3x3 conv about 10x slower (dec0/conv0 of the classic U-Net, batch 8 at
  128x128: 11.7 s vs 1.1 s), and it slows down far more when other processes share the
  cores. `compiler_options` keeps convolutions with XLA; only matrix products go to YNNPACK.
* `conv` replaces the two convolutions XLA runs poorly by equal cheaper forms.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Matrix products (the up-convolutions) stay with YNNPACK; everything else is XLA's own.
_YNN_FUSION_TYPES = 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'
CPU_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': _YNN_FUSION_TYPES}


def compiler_options() -> dict[str, str] | None:
    """`compiler_options` for `jax.jit` of the train and eval steps; None where none apply.

    Only on the CPU backend, and only where this jaxlib knows the option (other versions
    compile with their defaults instead of failing).
    """
    if jax.default_backend() != 'cpu' or not _cpu_options_supported():
        return None
    return dict(CPU_OPTIONS)


@functools.cache
def _cpu_options_supported() -> bool:
    try:
        jax.jit(jnp.negative, compiler_options=CPU_OPTIONS).lower(jnp.zeros(())).compile()
    except Exception:  # jaxlib rejects unknown options with a plain XlaRuntimeError
        return False
    return True


def conv(lhs, rhs, window_strides, padding, **kwargs):
    """`lax.conv_general_dilated` for `nn.Conv`, with cheaper forms of two U-Net convs.

    A 1x1 convolution (the head) is a matrix product: XLA:CPU's convolution weight gradient
    for it is 4x slower than the product's. A 3x3 'same' convolution of a single-channel
    image (the first conv) is nine broadcast multiply-adds, which XLA fuses into one loop
    (8x faster than its convolution on one channel); its gradients stay XLA's convolutions.
    Anything else, or any stride, dilation or grouping, is the plain convolution.
    """
    plain = (
        lhs.ndim == 4
        and tuple(window_strides) == (1, 1)
        and padding == 'SAME'
        and all(tuple(kwargs.get(k) or (1, 1)) == (1, 1) for k in ('lhs_dilation', 'rhs_dilation'))
        and kwargs.get('feature_group_count', 1) == 1
        and _is_nhwc_hwio(lhs, rhs, kwargs.get('dimension_numbers'))
    )
    if plain and rhs.shape[:2] == (1, 1):
        return jnp.einsum('nhwc,co->nhwo', lhs, rhs[0, 0], precision=kwargs.get('precision'))
    if plain and rhs.shape[:3] == (3, 3, 1):
        return single_channel_conv(lhs, rhs)
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, **kwargs)


def _is_nhwc_hwio(lhs, rhs, dimension_numbers) -> bool:
    expected = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, ('NHWC', 'HWIO', 'NHWC'))
    return jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == expected


def _same_conv(x, kernel):
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )


@jax.custom_vjp
def single_channel_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """3x3 'same' conv of [N, H, W, 1] with [3, 3, 1, C] as nine fused multiply-adds."""
    _, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    taps = [padded[:, a : a + h, b : b + w] * kernel[a, b, 0] for a in range(3) for b in range(3)]
    return sum(taps[1:], taps[0])


def _single_channel_conv_fwd(x, kernel):
    return single_channel_conv(x, kernel), (x, kernel)


def _single_channel_conv_bwd(residuals, g):
    _, vjp = jax.vjp(_same_conv, *residuals)
    return vjp(g)


single_channel_conv.defvjp(_single_channel_conv_fwd, _single_channel_conv_bwd)
