"""The freeze plan: what a resolved freeze spec trains (whole units and the parameter-efficient
parts of the others), the label of every parameter, and what training it costs (parameter
counts, step FLOPs). unet_jax.freeze.spec resolves a spec into one.

How training uses a plan (unet_jax.train.initial_state, unet_jax.train.steps): the plan labels
every parameter 'train' or 'freeze' (adapters, added by `initial_state.create_train_state`, are
'train', their kernels 'freeze'); the params are split into the trained and the frozen half
(`split_trainable`); the loss is differentiated with respect to the trained half only, the
frozen half being a constant of it, so XLA computes no weight gradients for frozen units; the
optimiser is ``optax.multi_transform({'train': tx, 'freeze': optax.set_to_zero()}, labels)`` on
the whole tree (`make_optimizer`), given the trained half's gradients and zeros for the frozen
leaves: frozen leaves get zero updates and hold no optimiser state, and weight decay inside
``tx`` cannot touch them. Only the trained half's updates are applied (`select`), so a frozen
leaf is never written: it stays bit-identical, and a group of runs shares one copy of it.
"""

from collections.abc import Sequence
import dataclasses
import math
from typing import Any

import jax

from unet_jax.freeze import adapters
from unet_jax.freeze.optimizer import FREEZE, TRAIN, parameter_table
from unet_jax.models.layer_registry import LayerRegistry

# The parts of a unit that a parameter-efficient selector trains (a unit trained whole: WHOLE).
WHOLE = 'whole'
LORA = 'lora'
NORM = 'norm'
BIAS = 'bias'
METHODS = (LORA, NORM, BIAS)  # also the order of their parts in a canonical spec


@dataclasses.dataclass(frozen=True)
class FreezePlan:
    """A compiled spec, made once per group and passed on: the units that train (forward
    order), the canonical name, and what training them costs.

    `trained_units` holds every unit with a trained parameter; `partial` says, for the units a
    parameter-efficient selector trains, which parts ('lora:R', 'norm', 'bias'); a trained unit
    not in it trains whole. `param_counts`, `step_flops_per_image` and `adapter_flops_per_step`
    are computed from the layer registry when the plan is made; `labels(params)` labels a
    parameter tree (state creation does it once, for the tree with its adapters).
    """

    spec: str
    canonical: str
    trained_units: tuple[str, ...]
    frozen_units: tuple[str, ...]
    registry: LayerRegistry = dataclasses.field(repr=False, compare=False)
    partial: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Trained and frozen parameter counts: `total` is the U-Net's (the folded model's),
    # `trained` includes adapters, `frozen` the U-Net's untrained ones.
    param_counts: dict[str, Any] = dataclasses.field(init=False, repr=False, compare=False)
    # The layer registry's model of one training step's FLOPs per image, and the adapters' own
    # FLOPs per step (independent of the batch).
    step_flops_per_image: float = dataclasses.field(init=False, repr=False, compare=False)
    adapter_flops_per_step: float = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        costs = dict(
            param_counts=self._param_counts(),
            step_flops_per_image=self.registry.train_step_flops(
                self.trained_units, kernel_units=self.kernel_units
            ),
            adapter_flops_per_step=self._adapter_flops_per_step(),
        )
        for name, value in costs.items():
            object.__setattr__(self, name, value)  # a frozen dataclass, computed once

    @property
    def trains_nothing(self) -> bool:
        return not self.trained_units

    @property
    def signature(self) -> tuple:
        """What trains, leaf by leaf (whole units and the parts of the others): equal for two
        specs that train the same parameters ('lora:8@head' and 'head': the head has no kernel
        to adapt), whatever their canonical names."""
        partial = dict(self.partial)
        return (tuple(u for u in self.trained_units if u not in partial), self.partial)

    def parts(self, unit: str) -> tuple[str, ...]:
        """What of `unit` trains: (WHOLE,), parameter-efficient parts, or () when frozen."""
        partial = dict(self.partial)
        if unit in partial:
            return partial[unit]
        return (WHOLE,) if unit in self.trained_units else ()

    @property
    def lora_ranks(self) -> dict[str, int]:
        """{unit: rank} of the units whose kernels carry low-rank adapters."""
        return {
            unit: _rank(part) for unit, parts in self.partial for part in parts if is_lora(part)
        }

    @property
    def kernel_units(self) -> tuple[str, ...]:
        """The trained units whose kernel gradient a step computes (whole or adapted)."""
        ranks = self.lora_ranks
        partial = dict(self.partial)
        return tuple(u for u in self.trained_units if u not in partial or u in ranks)

    def labels(self, params: Any) -> Any:
        """'train' / 'freeze' for every leaf of ``params``, in the same container types."""
        parts = {unit: self.parts(unit) for unit in self.registry.unit_names}

        def label(path, _):
            keys = tuple(str(getattr(k, 'key', k)) for k in path)
            unit = '/'.join(keys[:2])
            if unit not in parts:
                raise ValueError(
                    f'Parameter {"/".join(keys)} belongs to no unit of the layer registry '
                    f'({", ".join(self.registry.unit_names)}): the params come from another '
                    'model than the registry. Build both from the same config.model.'
                )
            return TRAIN if trains_leaf(parts[unit], keys) else FREEZE

        return jax.tree_util.tree_map_with_path(label, params)

    def parameter_table(self, params: Any, labels: Any) -> str:
        """The per-block table of trained / frozen parameter counts, blocks in forward order."""
        return parameter_table(params, labels, block_order=self.registry.block_names)

    def _param_counts(self) -> dict[str, Any]:
        trained = frozen = 0
        for unit in self.registry.units:
            parts = self.parts(unit.name)
            for path, shape in zip(unit.param_paths, unit.param_shapes):
                if trains_leaf(parts, path):
                    trained += math.prod(shape)
                else:
                    frozen += math.prod(shape)
                trained += sum(math.prod(s) for s in leaf_adapter_shapes(parts, path, shape))
        total = self.registry.param_count
        return {
            'trained': trained,
            'frozen': frozen,
            'total': total,
            'trained_fraction': trained / max(total, 1),
        }

    def _adapter_flops_per_step(self) -> float:
        ranks = self.lora_ranks
        return float(
            sum(
                adapters.step_flops(shape, ranks[unit.name])
                for unit in self.registry.units
                if unit.name in ranks
                for path, shape in zip(unit.param_paths, unit.param_shapes)
                if adapters.adapts(path, shape)
            )
        )


def trains_leaf(parts: Sequence[str], path: Sequence[str]) -> bool:
    """Whether a leaf (its path: block, unit, ..., name) trains, given its unit's parts."""
    if WHOLE in parts:
        return True
    leaf = path[-1]
    if leaf in adapters.LEAVES:
        return any(is_lora(p) for p in parts)
    return (NORM in parts and NORM in path[2:-1]) or (BIAS in parts and leaf == 'bias')


def is_lora(part: str) -> bool:
    """Whether a part is a low-rank adapter ('lora:R')."""
    return part.startswith(LORA + ':')


def _rank(part: str) -> int:
    """R of a 'lora:R' part."""
    return int(part.split(':')[1])


def leaf_adapter_shapes(parts, path, shape) -> tuple[tuple[int, ...], ...]:
    """The shapes of the adapters a unit with `parts` puts next to the leaf (path, shape)."""
    ranks = [_rank(p) for p in parts if is_lora(p)]
    if WHOLE in parts or not ranks or not adapters.adapts(tuple(path), tuple(shape)):
        return ()
    return adapters.adapter_shapes(tuple(shape), ranks[0])
