"""Freezing: a spec names what a run trains; everything else is frozen.

  spec           the spec grammar, resolved against the layer registry into a FreezePlan;
                 canonical names
  plan           the FreezePlan: what trains (whole units, parameter-efficient parts), the
                 label of every parameter, trained parameters and FLOPs of each unit
  optimizer      the optimiser mask: trained and frozen halves of a parameter tree and
                 optax.multi_transform over them
  adapters       low-rank adapters of convolution kernels (`lora:R@SELECTOR`)
  auto_choice    the automatic layer choice (`auto:CRITERION:K`; grammar in
                 unet_jax.config.auto_spec)
  criteria       its criteria (rgn, probe, greedy): each scores every block on the target
  score_scaling  per-block learning rates from scores (`auto:CRITERION:soft`)

What most callers need is re-exported here: `freeze.compile_spec`, `freeze.merge`, ...
"""

from unet_jax.freeze.optimizer import (
    FREEZE,
    TRAIN,
    labels_of,
    make_optimizer,
    merge,
    parameter_table,
    select,
    split_trainable,
)
from unet_jax.freeze.plan import BIAS, LORA, METHODS, NORM, WHOLE, FreezePlan, trains_leaf
from unet_jax.freeze.spec import ALL, NONE, FreezeSpecError, canonical_spec, compile_spec

__all__ = [
    'ALL',
    'BIAS',
    'FREEZE',
    'LORA',
    'METHODS',
    'NONE',
    'NORM',
    'TRAIN',
    'WHOLE',
    'FreezePlan',
    'FreezeSpecError',
    'canonical_spec',
    'compile_spec',
    'labels_of',
    'make_optimizer',
    'merge',
    'parameter_table',
    'select',
    'split_trainable',
    'trains_leaf',
]
