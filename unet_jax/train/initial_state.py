"""A group's initial train state: each run's variables (its seeded initialisation, or its
`init_from` pre-training's, or random ones of the same statistics), its low-rank adapters, then
every run stacked on the run axis, the parameters labelled once (the freeze plan), the frozen
params shared by the group when equal in every run, and the optimiser state of the whole tree
(unet_jax.train.steps.create_optimizer). The state it makes (TrainState) is what the train step
(unet_jax.train.steps) changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from unet_jax import freeze
from unet_jax.freeze import adapters
from unet_jax.train import checkpoint
from unet_jax.train.steps import TrainState, create_optimizer


class InitialState(NamedTuple):
    """A group's state before its first step, its frozen params and their labels."""

    state: TrainState
    frozen: Any  # the frozen params: shared (frozen_axis None) or with the run axis (0)
    frozen_axis: int | None
    labels: Any  # 'train' / 'freeze' for every leaf of one run's params (adapters included)


# The init runs once per run, so XLA:CPU's default backend optimisation only costs compile
# time there: for the quick study's U-Net its init compiled in 50-65 s at the default level
# and in 10 s at level 1 (3 processes sharing 2 cores), with bit-identical params (tested).
INIT_CPU_OPTIONS = {'xla_backend_optimization_level': 1}


@functools.lru_cache(maxsize=8)
def _compiled_init(model, shape: tuple[int, ...]):
    # Compiled once per model and input shape: un-jitted, every initialiser op compiles on its
    # own (seconds on CPU), and a study initialises the same model for every run.
    dummy = jax.ShapeDtypeStruct(shape, jnp.float32)
    lowered = jax.jit(functools.partial(model.init, train=False)).lower(jax.random.key(0), dummy)
    return lowered.compile(INIT_CPU_OPTIONS if jax.default_backend() == 'cpu' else None)


def initial_variables(model, config: ml_collections.ConfigDict) -> dict[str, Any]:
    size = config.data.image_size
    shape = (1, size, size, config.model.in_channels)
    variables = _compiled_init(model, shape)(jax.random.key(config.seed), jnp.zeros(shape))
    return jax.tree.map(np.asarray, flax.core.unfreeze(variables))


def load_init_from(variables: dict[str, Any], config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Params (and BN statistics) of a pre-training run, strictly matched to the model; with
    `config.init_matched`, random params of the same per-tensor statistics instead."""
    loaded, _ = checkpoint.load_variables(config.init_from)
    merged = checkpoint.merge_pretrained(
        variables, loaded, dont_load=tuple(config.dont_load), source=config.init_from
    )
    if not config.get('init_matched', False):
        return merged
    rng = np.random.default_rng([config.seed, 7])  # 7: a stream apart from the model's init
    return {**variables, 'params': matched_params(merged['params'], rng)}


def matched_params(params: Any, rng: np.random.Generator) -> Any:
    """Every tensor drawn i.i.d. from a normal with that tensor's own mean and standard
    deviation (a one-element tensor keeps its value): pre-trained weight scales without
    pre-trained features (Raghu et al., "Transfusion", NeurIPS 2019)."""

    def draw(x):
        x = np.asarray(x)
        mean, std = x.mean(), x.std()
        return (mean + std * rng.standard_normal(x.shape)).astype(x.dtype)

    return jax.tree.map(draw, params)


def with_adapters(variables: dict[str, Any], plan: freeze.FreezePlan, seed: int) -> dict:
    """The variables with the low-rank adapters of a `lora:` plan added (A drawn from the
    run's seed, B zero: the model is unchanged at step 0); unchanged for other plans."""
    ranks = plan.lora_ranks
    if not ranks:
        return variables
    rng = np.random.default_rng([seed, 13])  # 13: a stream apart from the model's init
    return {**variables, 'params': adapters.add(variables['params'], ranks, rng)}


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *leaves: np.stack(leaves), *trees)


def _all_equal(trees: Sequence[Any]) -> bool:
    first = jax.tree.leaves(trees[0])
    return all(
        all(np.array_equal(a, b) for a, b in zip(first, jax.tree.leaves(t))) for t in trees[1:]
    )


def create_train_state(
    configs: Sequence[ml_collections.ConfigDict],
    *,
    model,
    plan: freeze.FreezePlan,
    scales: Mapping[str, float] | None = None,
) -> InitialState:
    """The initial state of a group (run axis first), its frozen params and their labels.

    Each run starts from its own initialisation (seeded) or its `init_from`. The optimiser
    state is `create_optimizer`'s on the whole tree: it holds the trained leaves only. The
    frozen params come back shared (axis None) when equal in every run, else with the run
    axis (0).
    """
    variables = []
    for config in configs:
        v = initial_variables(model, config)
        v = load_init_from(v, config) if config.init_from else v
        variables.append(with_adapters(v, plan, config.seed))
    labels = plan.labels(variables[0]['params'])
    tx = create_optimizer(configs[0], labels, scales)
    trainable, frozen = zip(*(freeze.split_trainable(v['params'], labels) for v in variables))
    shared = _all_equal(frozen)
    state = TrainState(
        step=np.zeros((), np.int32),
        trainable=_stack(trainable),
        batch_stats=_stack([v.get('batch_stats', {}) for v in variables]),
        opt_state=_stack([tx.init(v['params']) for v in variables]),
    )
    frozen_params, axis = (frozen[0], None) if shared else (_stack(frozen), 0)
    return InitialState(state, frozen_params, axis, labels)
