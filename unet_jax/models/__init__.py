"""Models: the U-Net and its construction from a config."""

from collections.abc import Mapping
from typing import Any

from unet_jax.models.unet import UNet

__all__ = ['UNet', 'create_model']

_FIELDS = ('depth', 'base_width', 'out_channels', 'norm', 'dropout', 'upsample')


def create_model(model_config: Mapping[str, Any], **overrides: Any) -> UNet:
    """Builds the U-Net from ``config.model`` (a ConfigDict or a dict).

    ``in_channels`` is not a model field (Flax infers it from the input); callers use it for
    init shapes. ``overrides`` set fields outside the config, e.g. ``bn_axis_name='data'``.
    """
    config = dict(model_config)
    fields = {k: config[k] for k in _FIELDS if k in config}
    fields.update(overrides)
    model = UNet(**fields)
    model.check()
    return model
