"""Models: the U-Net and its construction from a config."""

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from unet_jax.models.ops import compiler_options
from unet_jax.models.unet import UNet

__all__ = ['UNet', 'compiler_options', 'create_model']

_FIELDS = ('depth', 'base_width', 'out_channels', 'norm', 'dropout', 'upsample')


def create_model(
    model_config: Mapping[str, Any], *, half_precision: bool = False, **overrides: Any
) -> UNet:
    """Builds the U-Net from ``config.model`` (a ConfigDict or a dict).

    ``in_channels`` is not a model field (Flax infers it from the input); callers use it for
    init shapes. ``half_precision`` (``config.half_precision``) computes in bfloat16 with
    float32 parameters and float32 logits, so the loss and the optimiser stay float32.
    ``overrides`` set fields outside the config, e.g. ``bn_axis_name='data'``.
    """
    config = dict(model_config)
    fields = {k: config[k] for k in _FIELDS if k in config}
    if half_precision:
        fields['dtype'] = jnp.bfloat16
    fields.update(overrides)
    model = UNet(**fields)
    model.check()
    return model
