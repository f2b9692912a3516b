"""XLA compiler options that make the U-Net's train step fast on CPU.

jax 0.10's XLA:CPU hands convolutions to YNNPACK by default. YNNPACK computes the forward and
input-gradient convolutions about as fast as XLA's own (Eigen) convolutions, but the
weight-gradient convolution of a 3x3 conv about 10x slower (dec0/conv0 of the classic U-Net,
batch 8 at 128x128: 11.7 s vs 1.1 s on a loaded 2-core EPYC), and it slows down far more than
Eigen when other processes share the cores. Leaving convolutions to XLA and everything else
(dots, reductions, elementwise fusions) to YNNPACK is what `compiler_options` asks for.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# The YNNPACK fusion kinds jax 0.10 enables on CPU, less the convolutions.
_YNN_FUSION_TYPES = ','.join(
    f'LIBRARY_FUSION_TYPE_{kind}' for kind in ('INDIVIDUAL_DOT', 'DOT', 'ELTWISE', 'REDUCE')
)
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
