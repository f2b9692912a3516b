"""The jitted computations of training: the optimiser, the train state (what a step changes;
unet_jax.train.initial_state makes a group's first), the train step of every run of a group
(jax.vmap over the run axis), evaluation, and the process's compiled programs.

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
from collections.abc import Callable, Hashable, Mapping
import dataclasses
import functools
from typing import Any

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


# ----------------------------------------------------------------------------- mesh, optimiser


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
