"""The layer registry: every unit and block of a U-Net, its group, level, order and cost.

Everything here is derived from the model itself, never from hand-written name lists:
the parameter tree (``jax.eval_shape`` of ``init``) gives the units, their parameter paths and
counts; one traced forward pass, with the units' ``__call__`` intercepted, gives the data-path
order and each unit's input and output shapes (hence its resolution level and FLOPs).
Dictionary keys are never sorted to get an order (``enc10`` < ``enc2`` alphabetically).

The two definitions of "shallow to deep" (the journal version of the study uses two; these
are the two readings of "depth" in a U-Net):
  * ``forward``: position on the data path: enc0/conv0 first, head last;
  * ``level``: resolution level, i.e. distance from the image in down-samplings: enc0, dec0
    and head at level 0 (shallow), the bottleneck at level ``depth`` (deepest); ties are
    broken by forward position.
"""

from collections.abc import Iterable, Sequence
import dataclasses
import math

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from unet_jax.models.unet import UNet, block_group, check_image_size

ORDERS = ('forward', 'level')
GRANULARITIES = ('block', 'unit')

# Elementwise FLOPs per output element of a norm layer at inference (normalise, scale, shift).
_NORM_FLOPS_PER_ELEMENT = {'none': 0, 'batch': 4, 'group': 8}

ParamPath = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Unit:
    """One trainable unit (a conv with its norm, or an up-sampling), addressed 'block/unit'.

    ``flops`` is the forward cost of the unit on one image of the registry's size (a
    multiply-add counts 2). ``input_shape``/``output_shape`` are [H, W, C] for one image.
    """

    name: str
    block: str
    unit: str
    group: str
    level: int
    forward_index: int
    param_paths: tuple[ParamPath, ...]
    param_shapes: tuple[tuple[int, ...], ...]  # of each leaf of param_paths
    param_count: int
    flops: float
    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class Block:
    """A named block (enc<i>, bottleneck, dec<i>, head): the units it holds, aggregated."""

    name: str
    group: str
    level: int
    forward_index: int
    units: tuple[str, ...]
    param_paths: tuple[ParamPath, ...]
    param_count: int
    flops: float


class LayerRegistry:
    """Units and blocks of one U-Net at one image size, in data-path order."""

    def __init__(self, units: Sequence[Unit], *, depth: int, image_size: int, in_channels: int):
        self.units = tuple(units)
        self.depth = depth
        self.image_size = image_size
        self.in_channels = in_channels
        self._unit = {u.name: u for u in self.units}
        blocks = {}
        for u in self.units:
            blocks.setdefault(u.block, []).append(u)
        self.blocks = tuple(
            Block(
                name=name,
                group=us[0].group,
                level=us[-1].level,
                forward_index=i,
                units=tuple(u.name for u in us),
                param_paths=tuple(p for u in us for p in u.param_paths),
                param_count=sum(u.param_count for u in us),
                flops=sum(u.flops for u in us),
            )
            for i, (name, us) in enumerate(blocks.items())
        )
        self._block = {b.name: b for b in self.blocks}

    @property
    def unit_names(self) -> tuple[str, ...]:
        """Unit names in forward (data-path) order."""
        return tuple(u.name for u in self.units)

    @property
    def block_names(self) -> tuple[str, ...]:
        """Block names in forward (data-path) order."""
        return tuple(b.name for b in self.blocks)

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        """Group name -> its units in forward order (only groups present in the model)."""
        groups = {}
        for u in self.units:
            groups.setdefault(u.group, []).append(u.name)
        return {g: tuple(us) for g, us in groups.items()}

    @property
    def param_count(self) -> int:
        return sum(u.param_count for u in self.units)

    def unit(self, name: str) -> Unit:
        return self._unit[name]

    def block(self, name: str) -> Block:
        return self._block[name]

    def order(self, order: str = 'forward', granularity: str = 'unit') -> tuple[str, ...]:
        """Names from shallow to deep in the given order ('forward' | 'level')."""
        if order not in ORDERS:
            raise ValueError(f'order={order!r} is not one of {ORDERS} (config.finetune.order).')
        if granularity not in GRANULARITIES:
            raise ValueError(
                f'granularity={granularity!r} is not one of {GRANULARITIES} '
                '(config.finetune.granularity).'
            )
        items = self.units if granularity == 'unit' else self.blocks
        if order == 'level':
            items = sorted(items, key=lambda item: (item.level, item.forward_index))
        return tuple(item.name for item in items)

    def expand(self, names: Iterable[str]) -> tuple[str, ...]:
        """Block and unit names -> the unit names they cover, in forward order."""
        selected = set()
        for name in names:
            if name in self._block:
                selected.update(self._block[name].units)
            elif name in self._unit:
                selected.add(name)
            else:
                raise KeyError(
                    f'{name!r} is neither a block {self.block_names} nor a unit {self.unit_names}.'
                )
        return tuple(n for n in self.unit_names if n in selected)

    def forward_flops(self) -> float:
        """FLOPs of one forward pass on one image (convolutions, biases, norms, activations)."""
        return float(sum(u.flops for u in self.units))

    def train_step_flops(
        self, trained_units: Iterable[str], *, kernel_units: Iterable[str] | None = None
    ) -> float:
        """FLOPs of one training step on one image when only ``trained_units`` train.

        Model: the whole forward pass; then the backward pass computes activation gradients
        only for tensors that depend on a trained parameter (everything on the data path after
        the shallowest trained unit, including skip connections from a trained encoder unit into
        the decoder), and weight gradients only for trained units. The gradient with respect to
        a unit's input and the gradient with respect to its weights each cost about as much as
        its forward pass; an input gradient that is only partly needed (the skip half of a
        decoder conv0 when nothing at or before that skip trains) costs its channel share.

        ``kernel_units`` (default: all of ``trained_units``) are the trained units whose kernel
        gradient is needed (trained whole, or through a low-rank adapter of the kernel); the
        others train only vectors (norm scale and shift, biases: freeze spec `norm@`, `bias@`),
        whose gradients are a sum over the unit's output, 2 FLOPs per output element.
        """
        trained = set(self.expand(trained_units))
        kernels = trained if kernel_units is None else set(self.expand(kernel_units))
        flops = self.forward_flops()
        if not trained:
            return flops
        shallowest = min(self._unit[n].forward_index for n in trained)
        for u in self.units:
            if u.name in kernels:
                flops += u.flops
            elif u.name in trained:
                flops += 2 * math.prod(u.output_shape)
            for producer, channels in self._inputs(u):
                if producer is not None and self._unit[producer].forward_index >= shallowest:
                    flops += u.flops * channels / u.input_shape[-1]
        return float(flops)

    def _inputs(self, u: Unit) -> list[tuple[str | None, int]]:
        """(producing unit or None for the image, channels) of each part of a unit's input.

        The U-Net's data path is the forward order, except that the first conv of expanding
        block dec_i also reads the skip, i.e. the output of the contracting block at its level.
        """
        if u.forward_index == 0:
            return [(None, u.input_shape[-1])]
        previous = self.units[u.forward_index - 1]
        block = self._block[u.block]
        if u.group == 'expanding' and u.name == block.units[1]:
            skip = next(b for b in self.blocks if b.group == 'contracting' and b.level == u.level)
            return [
                (previous.name, previous.output_shape[-1]),
                (skip.units[-1], self._unit[skip.units[-1]].output_shape[-1]),
            ]
        return [(previous.name, u.input_shape[-1])]


def build_registry(model: UNet, *, image_size: int, in_channels: int) -> LayerRegistry:
    """The registry of ``model`` at ``image_size`` x ``image_size`` x ``in_channels``."""
    model.check()
    check_image_size(image_size, image_size, model.depth)
    x = jax.ShapeDtypeStruct((1, image_size, image_size, in_channels), jnp.float32)
    calls = []

    def record_units(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == '__call__' and len(module.path) == 2:
            calls.append((tuple(module.path), module, args[0].shape[1:], out.shape[1:]))
        return out

    def init(x):
        with nn.intercept_methods(record_units):
            return model.init(jax.random.key(0), x, train=False)

    params = jax.eval_shape(init, x)['params']
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    units = []
    for index, ((block, unit), module, in_shape, out_shape) in enumerate(calls):
        paths = tuple(p for p in flat if p[:2] == (block, unit))
        kernel = next(flat[p].shape for p in paths if p[-1] == 'kernel')
        units.append(
            Unit(
                name=f'{block}/{unit}',
                block=block,
                unit=unit,
                group=block_group(block),
                level=round(math.log2(image_size // out_shape[0])),
                forward_index=index,
                param_paths=paths,
                param_shapes=tuple(tuple(flat[p].shape) for p in paths),
                param_count=sum(math.prod(flat[p].shape) for p in paths),
                flops=float(_unit_flops(module, kernel, tuple(in_shape), tuple(out_shape))),
                input_shape=tuple(in_shape),
                output_shape=tuple(out_shape),
            )
        )
    missing = set(p[:2] for p in flat) - set(c[0] for c in calls)
    if missing:
        raise ValueError(
            f'Parameters of {sorted(missing)} belong to no unit called on the data '
            'path: the registry expects the layout block -> unit -> leaves.'
        )
    return LayerRegistry(units, depth=model.depth, image_size=image_size, in_channels=in_channels)


def _unit_flops(module: nn.Module, kernel: tuple[int, ...], in_shape, out_shape) -> int:
    """Forward FLOPs of one unit for one image; a multiply-add counts 2.

    A 2x2 stride-2 up-conv touches each input pixel once per kernel tap; a 'same' conv
    touches each output pixel once per tap that falls inside the image (products with the
    zero padding are not work, and XLA's cost analysis does not count them either).
    Bilinear resizing is done by jax.image.resize as one dense contraction per spatial axis.
    """
    out_elements = math.prod(out_shape)
    taps = math.prod(kernel)  # kh * kw * cin * cout
    if getattr(module, 'upsample', None) == 'transpose':
        return 2 * in_shape[0] * in_shape[1] * taps + out_elements
    kh, kw = kernel[:2]
    flops = 2 * _same_taps(kh, out_shape[0]) * _same_taps(kw, out_shape[1]) * taps // (kh * kw)
    if getattr(module, 'upsample', None) == 'bilinear':
        (hi, wi, c), (ho, wo) = in_shape, out_shape[:2]
        return flops + out_elements + 2 * hi * ho * wi * c + 2 * wi * wo * ho * c
    flops += (1 if module.norm == 'none' else _NORM_FLOPS_PER_ELEMENT[module.norm]) * out_elements
    if module.activation:
        flops += out_elements
    return flops


def _same_taps(kernel: int, size: int) -> int:
    """In-image (output position, tap) pairs along one axis of a stride-1 'same' conv."""
    low = (kernel - 1) // 2
    high = kernel - 1 - low
    return kernel * size - low * (low + 1) // 2 - high * (high + 1) // 2
