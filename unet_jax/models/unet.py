"""The U-Net (Ronneberger et al. 2015) in Flax linen, with named blocks and units.

Parameters are laid out block -> unit -> leaves so that the layer registry and the freeze
spec can address every unit by its path: ``params['enc0']['conv0']['conv']['kernel']``,
``params['dec3']['up']['kernel']``, ``params['head']['conv0']['conv']['kernel']``.

Blocks, on the data path: ``enc0 .. enc{D-1}`` (contracting path, enc0 at full resolution),
``bottleneck``, ``dec{D-1} .. dec0`` (expanding path, dec_i takes the skip of enc_i), ``head``.

The 2x2 stride-2 up-convolution and the 2x2 max-pool are written as an einsum + reshape and a
reshape + max: same parameters and outputs as ``nn.ConvTranspose`` / ``nn.max_pool``, but their
gradients are several times faster on XLA:CPU (a classic U-Net step took 10.0 s with the Flax
layers, 5.0 s with these). Convolutions go through ``ops.conv`` (cheaper forms of the first
and the 1x1 convs, same parameters).
"""

from collections.abc import Sequence
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from unet_jax.models import ops

NORMS = ('none', 'batch', 'group')
UPSAMPLES = ('transpose', 'bilinear')

# The block name prefix says which part of the network a block belongs to.
_GROUP_OF_PREFIX = (
    ('enc', 'contracting'),
    ('bottleneck', 'bottleneck'),
    ('dec', 'expanding'),
    ('head', 'head'),
)
GROUPS = tuple(group for _, group in _GROUP_OF_PREFIX)


def block_group(block: str) -> str:
    """The path a block belongs to: contracting, bottleneck, expanding or head."""
    for prefix, group in _GROUP_OF_PREFIX:
        if block.startswith(prefix):
            return group
    raise ValueError(
        f'Block {block!r} is not a U-Net block (expected enc<i>, bottleneck, dec<i> or head).'
    )


def check_image_size(height: int, width: int, depth: int) -> None:
    """Fails early, with the fix, when the pooling pyramid cannot halve the image depth times."""
    factor = 2**depth
    if height % factor or width % factor:
        bad = height if height % factor else width
        below, above = max(factor, bad // factor * factor), -(-bad // factor) * factor
        raise ValueError(
            f'Image size {height}x{width} is not divisible by 2**depth = {factor} (model.depth='
            f'{depth}): the U-Net halves the image {depth} times. Use an image size that is a '
            f'multiple of {factor} (e.g. data.image_size={below} or {above}) or a smaller '
            'model.depth.'
        )


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool with stride 2 as reshape + max (equal to nn.max_pool, faster gradient)."""
    n, h, w, c = x.shape
    with jax.named_scope('max_pool'):
        return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def conv_transpose_2x2(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """2x2 stride-2 transposed conv as one einsum + reshape.

    Each input pixel writes a disjoint 2x2 output patch, so the transposed convolution is a
    plain matrix product. ``nn.ConvTranspose`` (transpose_kernel=False) applies the kernel
    spatially flipped, hence ``kernel[::-1, ::-1]``: the parameters stay interchangeable.
    """
    n, h, w, _ = x.shape
    y = jnp.einsum('nhwc,abco->nhawbo', x, kernel[::-1, ::-1])
    return y.reshape(n, 2 * h, 2 * w, kernel.shape[-1]) + bias


def _num_groups(features: int, max_groups: int = 32) -> int:
    """Largest group count <= max_groups that divides features (GroupNorm needs a divisor)."""
    return max(g for g in range(1, min(max_groups, features) + 1) if features % g == 0)


class ConvUnit(nn.Module):
    """One 'conv' unit: conv -> optional norm -> optional ReLU -> optional dropout.

    ``frozen`` makes BatchNorm use (and never update) its running statistics, so a frozen
    unit computes the same function it was pre-trained to compute. Dropout has no state and
    stays on in frozen units while training. Before a norm the conv has no bias (the norm's
    shift replaces it).
    """

    features: int
    kernel_size: int = 3
    norm: str = 'none'
    activation: bool = True
    dropout: float = 0.0
    frozen: bool = False
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        k = (self.kernel_size, self.kernel_size)
        use_bias = self.norm == 'none'
        x = nn.Conv(
            self.features,
            k,
            padding='SAME',
            use_bias=use_bias,
            dtype=self.dtype,
            conv_general_dilated=ops.conv,
            name='conv',
        )(x)
        if self.norm == 'batch':
            x = nn.BatchNorm(
                use_running_average=not train or self.frozen,
                momentum=0.9,
                axis_name=self.bn_axis_name,
                dtype=self.dtype,
                name='norm',
            )(x)
        elif self.norm == 'group':
            x = nn.GroupNorm(num_groups=_num_groups(self.features), dtype=self.dtype, name='norm')(
                x
            )
        if self.activation:
            x = nn.relu(x)
        if self.dropout > 0:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return x


class UpUnit(nn.Module):
    """The 'up' unit of an expanding block: doubles the resolution, sets the channel count.

    'transpose' is the classic 2x2 stride-2 up-conv; 'bilinear' resizes and then applies a
    3x3 conv. Both keep their parameters directly under the unit ('kernel', 'bias').
    """

    features: int
    upsample: str = 'transpose'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cin = x.shape[-1]
        size = 2 if self.upsample == 'transpose' else 3
        kernel = self.param(
            'kernel', nn.initializers.lecun_normal(), (size, size, cin, self.features)
        )
        bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
        x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
        if self.upsample == 'transpose':
            return conv_transpose_2x2(x, kernel, bias)
        n, h, w, _ = x.shape
        x = jax.image.resize(x, (n, 2 * h, 2 * w, cin), method='bilinear')
        y = jax.lax.conv_general_dilated(
            x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
        )
        return y + bias


def _two_conv_units(block: nn.Module, x: jax.Array, *, train: bool) -> jax.Array:
    """Units conv0 and conv1 of `block` (called from its compact method, so they are its own)."""
    for unit in ('conv0', 'conv1'):
        frozen = f'{block.name}/{unit}' in block.frozen_units
        x = ConvUnit(block.features, frozen=frozen, name=unit, **block.unit_kwargs)(x, train=train)
    return x


class ConvBlock(nn.Module):
    """A contracting block or the bottleneck: two 3x3 conv units at one resolution."""

    features: int
    unit_kwargs: dict
    frozen_units: Sequence[str] = ()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        return _two_conv_units(self, x, train=train)


class ExpandingBlock(nn.Module):
    """dec_i: up-sample, concatenate the skip of enc_i, two 3x3 conv units."""

    features: int
    upsample: str
    unit_kwargs: dict
    frozen_units: Sequence[str] = ()

    @nn.compact
    def __call__(self, x: jax.Array, skip: jax.Array, *, train: bool) -> jax.Array:
        x = UpUnit(self.features, self.upsample, dtype=self.unit_kwargs['dtype'], name='up')(x)
        x = jnp.concatenate([x, skip], axis=-1)
        return _two_conv_units(self, x, train=train)


class Head(nn.Module):
    """1x1 conv to the output channels: logits, no norm, no activation, always float32."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        unit = ConvUnit(
            self.features, kernel_size=1, activation=False, dtype=self.dtype, name='conv0'
        )
        return unit(x, train=train).astype(jnp.float32)


class UNet(nn.Module):
    """U-Net; the defaults are the classic one (depth 4, base 64, no norm: 31,030,593 params).

    ``dtype`` is the computation dtype (bfloat16 for mixed precision); parameters stay
    float32 and the logits are float32 whatever it is.
    """

    depth: int = 4
    base_width: int = 64
    out_channels: int = 1
    norm: str = 'none'
    dropout: float = 0.0
    upsample: str = 'transpose'
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    def check(self) -> None:
        """Validates the fields with messages that name the config field to fix."""
        if self.norm not in NORMS:
            raise ValueError(f'model.norm={self.norm!r} is not one of {NORMS}.')
        if self.upsample not in UPSAMPLES:
            raise ValueError(f'model.upsample={self.upsample!r} is not one of {UPSAMPLES}.')
        if self.depth < 1 or self.base_width < 1 or self.out_channels < 1:
            raise ValueError(
                f'model.depth={self.depth}, model.base_width={self.base_width} and '
                f'model.out_channels={self.out_channels} must all be >= 1.'
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f'model.dropout={self.dropout} must be in [0, 1).')

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool, frozen_units: tuple[str, ...] = ()
    ) -> jax.Array:
        self.check()
        if x.ndim != 4:
            raise ValueError(f'UNet expects images [N, H, W, C], got shape {x.shape}.')
        check_image_size(x.shape[1], x.shape[2], self.depth)
        frozen_units = tuple(frozen_units)
        unit_kwargs = dict(
            norm=self.norm, dropout=self.dropout, bn_axis_name=self.bn_axis_name, dtype=self.dtype
        )

        def block(cls, name, *args, **kwargs):
            return cls(
                *args, unit_kwargs=unit_kwargs, frozen_units=frozen_units, name=name, **kwargs
            )

        skips = []
        for level in range(self.depth):
            x = block(ConvBlock, f'enc{level}', self.base_width * 2**level)(x, train=train)
            skips.append(x)
            x = max_pool_2x2(x)
        x = block(ConvBlock, 'bottleneck', self.base_width * 2**self.depth)(x, train=train)
        for level in reversed(range(self.depth)):
            x = block(
                ExpandingBlock, f'dec{level}', self.base_width * 2**level, upsample=self.upsample
            )(x, skips[level], train=train)
        x = Head(self.out_channels, dtype=self.dtype, name='head')(x, train=train)
        _check_frozen_units(frozen_units, self.variables['params'])
        return x


def _check_frozen_units(frozen_units: Sequence[str], params) -> None:
    units = [f'{block}/{unit}' for block in params for unit in params[block]]
    unknown = [u for u in frozen_units if u not in units]
    if unknown:
        raise ValueError(
            f'frozen_units {unknown} name no unit of this U-Net; its units are {units}.'
        )


def param_count(params) -> int:
    """Number of scalars in a parameter tree (works on shapes from jax.eval_shape too)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))
