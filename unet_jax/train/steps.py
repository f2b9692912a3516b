"""The jitted computations of training: optimiser, a group's train state, the train step of
every run of a group (jax.vmap over the run axis), and evaluation.

The run axis: each run of a group keeps its own trained params, optimiser state, BatchNorm
statistics, random key, training subset, data order and augmentation, so it ends with the
params it would have had trained alone. The frozen params are shared by the group when they are
equal in every run (a pre-trained family with one pre-training), else they carry the run axis.

Data parallelism: a group's batch is [runs, batch, H, W, C]; the batch axis is sharded over
every device on the 1-D mesh axis `data` (the run axis is not sharded) and the step is jitted
over it, so each device holds batch/num_devices examples of every run. The loss is each run's
mean over its global batch and BatchNorm uses global-batch statistics, so 1 and N devices
compute the same step.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable, Mapping, Sequence
import dataclasses
import functools
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import ml_collections
import numpy as np
import optax

from unet_jax import freeze, io_utils, models
from unet_jax.data import augment
from unet_jax.freeze import adapters, score_scaling
from unet_jax.models import metrics
from unet_jax.train import checkpoint

DATA_AXIS = 'data'
FLIP = 'flip_probability'  # the batch's entry [runs, batch]: 0.5, or 0 (no flips)


def train_batch(images: np.ndarray, masks: np.ndarray, configs) -> dict[str, np.ndarray]:
    """The train step's batch: images and masks [runs, batch, ...] of the runs of `configs`,
    with each run's flip probability (0.5 with config.augment.flip, else 0) per example."""
    flips = [0.5 if config.augment.flip else 0.0 for config in configs]
    probability = np.repeat(np.asarray(flips, np.float32)[:, None], images.shape[1], axis=1)
    return {'image': images, 'mask': masks, FLIP: probability}


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What the train step reads of a run's config, and nothing else. Hashable: it is part of
    the key of the step's compiled program (`compiled`), so a field the step reads cannot be
    left out of that key.

    `per_block_scales`: a soft `auto:` spec's per-block learning rates are in the optimiser
    (their values are its state, score_scaling.scale_by_score, so they are not part of the key).
    """

    loss: ml_collections.FrozenConfigDict
    augment: ml_collections.FrozenConfigDict
    optimizer: ml_collections.FrozenConfigDict
    num_train_steps: int
    warmup_steps: int
    per_block_scales: bool = False

    @classmethod
    def of(cls, config: ml_collections.ConfigDict, *, per_block_scales: bool = False):
        # The flip is an input of the step (its probability, in the batch: `flip_probability`),
        # so targets that differ only in it (ultrasound flips, X-ray does not) share a program.
        augment = {k: v for k, v in config.augment.items() if k != 'flip'}
        return cls(
            loss=ml_collections.FrozenConfigDict(config.loss),
            augment=ml_collections.FrozenConfigDict(augment),
            optimizer=ml_collections.FrozenConfigDict(config.optimizer),
            num_train_steps=int(config.num_train_steps),
            warmup_steps=int(config.warmup_steps),
            per_block_scales=per_block_scales,
        )


@flax.struct.dataclass
class TrainState:
    """What training changes, for every run of a group (leading run axis; `step` is shared)."""

    step: jax.Array
    trainable: Any
    batch_stats: Any
    opt_state: Any


class InitialState(NamedTuple):
    """A group's state before its first step, its frozen params and their labels."""

    state: TrainState
    frozen: Any  # the frozen params: shared (frozen_axis None) or with the run axis (0)
    frozen_axis: int | None
    labels: Any  # 'train' / 'freeze' for every leaf of one run's params (adapters included)


# ----------------------------------------------------------------------------- set-up


def create_mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    if batch_size < 1 or batch_size % mesh.size:
        raise ValueError(
            f'config.batch_size={batch_size} must be a positive multiple of the {mesh.size} '
            f'device(s); set --config.batch_size to a multiple of {mesh.size}, e.g. '
            f'{max(mesh.size, 8 - 8 % mesh.size)}.'
        )


def create_learning_rate_fn(config: ml_collections.ConfigDict | StepConfig) -> optax.Schedule:
    """Linear warm-up, then cosine decay to zero or a constant rate."""
    opt = config.optimizer
    total = max(config.num_train_steps, 1)
    warmup = min(config.warmup_steps, total - 1)
    if opt.schedule == 'cosine':
        return optax.warmup_cosine_decay_schedule(
            0.0, opt.learning_rate, warmup_steps=warmup, decay_steps=total, end_value=0.0
        )
    if opt.schedule == 'constant':
        return optax.join_schedules(
            [
                optax.linear_schedule(0.0, opt.learning_rate, max(warmup, 1)),
                optax.constant_schedule(opt.learning_rate),
            ],
            [warmup],
        )
    raise ValueError(
        f"config.optimizer.schedule={opt.schedule!r} is unknown; use 'cosine' or 'constant'."
    )


def create_train_tx(
    config: ml_collections.ConfigDict | StepConfig, scales: Mapping[str, float] | None = None
) -> optax.GradientTransformation:
    """The optimiser of the trained leaves: the 'train' part of `create_optimizer`.

    `scales` (a soft `auto:` spec's scores, by block or unit) multiply each block's updates:
    per-block learning rates (score_scaling.scale_by_score).
    """
    opt = config.optimizer
    lr = create_learning_rate_fn(config)
    if opt.name == 'adam':
        tx = optax.adam(lr)
    elif opt.name == 'adamw':
        tx = optax.adamw(lr, weight_decay=opt.weight_decay)
    else:
        raise ValueError(f"config.optimizer.name={opt.name!r} is unknown; use 'adam' or 'adamw'.")
    if opt.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
    if scales is not None:
        tx = optax.chain(tx, score_scaling.scale_by_score(scales))
    return tx


def create_optimizer(
    config: ml_collections.ConfigDict | StepConfig,
    labels: Any,
    scales: Mapping[str, float] | None = None,
) -> optax.GradientTransformation:
    """The optimiser of the whole parameter tree, as training uses it:
    ``optax.multi_transform({'train': create_train_tx(...), 'freeze': optax.set_to_zero()},
    labels)`` (freeze.make_optimizer). Frozen leaves get zero updates and hold no optimiser
    state, and weight decay inside the 'train' part never reaches them."""
    return freeze.make_optimizer(create_train_tx(config, scales), labels)


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


# ----------------------------------------------------------------------------- steps


def train_step(state, frozen, batch, rngs, *, model, config: StepConfig, frozen_units, frozen_axis):
    """One step of every run of the group, differentiating only the trained parameters.

    The frozen subtree is a constant of the loss, so XLA computes no weight gradients for it
    and, past the shallowest trained layer, no activation gradients either. The optimiser
    (`create_optimizer`, labelled by the two halves) updates the whole tree: the frozen leaves'
    gradients enter it as zeros and their updates come out zero (set_to_zero); only the trained
    leaves' updates are applied, so a frozen leaf is never written and stays bit-identical.
    Everything the step depends on is an argument (`compiled` keys its program on them).
    """
    # The per-block scales' values are the optimiser state's; the step needs the chain's shape.
    scales = {} if config.per_block_scales else None
    tx = create_optimizer(config, freeze.labels_of(state.trainable, frozen), scales)
    has_batch_stats = bool(jax.tree.leaves(state.batch_stats))

    def run_step(trainable, batch_stats, opt_state, frozen, rng, images, masks, flip):
        augment_rng, dropout_rng = jax.random.split(jax.random.fold_in(rng, state.step))
        # The barrier keeps XLA from fusing the warp's gathers into the first convolution and
        # its gradient: without it a base-32 step on CPU took 2.1x as long (3.1 s vs 1.5 s).
        images, masks = jax.lax.optimization_barrier(
            augment.augment_batch(augment_rng, images, masks, config.augment, flip=flip)
        )

        def loss_fn(trainable):
            variables = {'params': adapters.fold(freeze.merge(trainable, frozen))}
            if has_batch_stats:
                variables['batch_stats'] = batch_stats
            output = model.apply(
                variables,
                images,
                train=True,
                frozen_units=frozen_units,
                rngs={'dropout': dropout_rng},
                mutable=['batch_stats'] if has_batch_stats else False,
            )
            logits, updates = output if has_batch_stats else (output, {})
            per_image = metrics.segmentation_loss(
                logits,
                masks,
                bce_weight=config.loss.bce_weight,
                dice_weight=config.loss.dice_weight,
            )
            return per_image.mean(), (logits, updates.get('batch_stats', batch_stats))

        (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        updates, opt_state = tx.update(
            freeze.merge(grads, jax.tree.map(jnp.zeros_like, frozen)),
            opt_state,
            freeze.merge(trainable, frozen),
        )
        counts = metrics.overlap_counts((logits > 0).astype(jnp.float32), masks)
        summary = {
            'loss': loss,
            'dice': metrics.dice_from_counts(**counts).mean(),
            'grad_norm': optax.global_norm(grads),
        }
        trained_updates = freeze.select(updates, like=trainable)
        return optax.apply_updates(trainable, trained_updates), batch_stats, opt_state, summary

    trainable, batch_stats, opt_state, summary = jax.vmap(
        run_step, in_axes=(0, 0, 0, frozen_axis, 0, 0, 0, 0)
    )(
        state.trainable,
        state.batch_stats,
        state.opt_state,
        frozen,
        rngs,
        batch['image'],
        batch['mask'],
        batch[FLIP],
    )
    new_state = TrainState(state.step + 1, trainable, batch_stats, opt_state)
    return new_state, summary


def eval_step(variables, batch, *, model, loss):
    """Per-image loss and pixel counts [runs, batch], and probabilities, of one eval batch.

    `variables` are every run's whole params (and BatchNorm statistics), run axis first: the
    program depends on the model and the image size, not on what a spec trains.
    """

    def run_eval(variables):
        if not jax.tree.leaves(variables['batch_stats']):
            variables = {'params': variables['params']}
        logits = model.apply(variables, batch['image'], train=False)
        per_image = metrics.segmentation_loss(
            logits, batch['mask'], bce_weight=loss.bce_weight, dice_weight=loss.dice_weight
        )
        counts = metrics.overlap_counts((logits > 0).astype(jnp.float32), batch['mask'])
        return {'loss': per_image, **counts}, jax.nn.sigmoid(logits)

    return jax.vmap(run_eval)(variables)


# ----------------------------------------------------------------------------- programs

# Compiled programs of this process, keyed by what determines them: every group whose step
# (or evaluation) has the same inputs reuses the executable.
_PROGRAMS: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()
_MAX_PROGRAMS = 64


def _signature(args: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(args)
    return treedef, tuple((np.shape(x), str(x.dtype), getattr(x, 'sharding', None)) for x in leaves)


def compiled(
    fn: Callable[..., Any],
    static: Mapping[str, Hashable],
    args: tuple,
    watch: io_utils.Stopwatch,
    *,
    donate_argnums: tuple[int, ...] = (),
):
    """The executable of `fn(*args, **static)`, compiled once per process.

    Its key is what the program computes: `fn`, its static inputs (the model, a StepConfig:
    hashable values, never a hand-kept list of fields) and the shapes, dtypes and shardings of
    `args`. A static input that cannot be hashed fails here, naming it.
    """
    unhashable = [name for name, value in static.items() if not _is_hashable(value)]
    if unhashable:
        raise TypeError(
            f'{fn.__name__}: static input(s) {", ".join(unhashable)} cannot be hashed, so they '
            'cannot key its compiled program; pass them as frozen dataclasses, tuples or '
            'ml_collections.FrozenConfigDict.'
        )
    key = (fn, tuple(sorted(static.items())), _signature(args))
    if key in _PROGRAMS:
        _PROGRAMS.move_to_end(key)
        return _PROGRAMS[key]
    with watch('compile'):
        jitted = jax.jit(functools.partial(fn, **static), donate_argnums=donate_argnums)
        program = jitted.lower(*args).compile(models.compiler_options())
    _PROGRAMS[key] = program
    if len(_PROGRAMS) > _MAX_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return program


def _is_hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
