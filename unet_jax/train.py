"""Training: `train_and_evaluate(config, workdir)` trains one run; `train_group(runs, group_dir)`
trains runs that differ only in seed together, in one jitted step. A run is a group of one.

Read top to bottom: optimiser -> the group's train state (create_train_state) -> one step of
every run (train_step, jax.vmap over the run axis) -> evaluation on device (eval_step) -> the
loop (train_group): resume or start, steps, validation that keeps each run's best params,
checkpoints of the group -> each run's test scores and files (unet_jax.outputs).

The run axis: each run of a group keeps its own trained params, optimiser state, BatchNorm
statistics, random key, training subset, data order and augmentation, so it ends with the
params it would have had trained alone. The frozen params are shared by the group when they are
equal in every run (a pre-trained family with one pre-training), else they carry the run axis.

Data parallelism: a group's batch is [runs, batch, H, W, C]; the batch axis is sharded over
every device on the 1-D mesh axis `data` (the run axis is not sharded) and the step is jitted
over it, so each device holds batch/num_devices examples of every run. The loss is each run's
mean over its global batch and BatchNorm uses global-batch statistics, so 1 and N devices
compute the same step.

Programs are compiled once per process for each distinct (config, freeze spec, group shape) and
reused by every later group: a study compiles one program per configuration, not per run.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
import dataclasses
import functools
import json
import math
import os
import shutil
import time
from typing import Any

from absl import logging
import flax
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import ml_collections
import numpy as np
import optax

from unet_jax import checkpoint, freeze, io_utils, layout, metrics
from unet_jax.data import augment, pipeline
from unet_jax.groups import Group, NonFiniteLossError, Run, batch_indices
from unet_jax.lanes import Lanes, lane_width, to_host

__all__ = ['NonFiniteLossError', 'Run', 'batch_indices', 'train_and_evaluate', 'train_group']

DATA_AXIS = 'data'
GROUP_FILE = 'group.json'  # the members of a group's checkpoint, in run-axis order

SplitsFn = Callable[[ml_collections.ConfigDict], Mapping[str, pipeline.Split]]


@flax.struct.dataclass
class TrainState:
    """What training changes, for every run of a group (leading run axis; `step` is shared)."""

    step: jax.Array
    trainable: Any
    batch_stats: Any
    opt_state: Any


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


def create_learning_rate_fn(config: ml_collections.ConfigDict) -> optax.Schedule:
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


def create_train_tx(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The optimiser of the trained parameters only: frozen ones get no update and no state,
    and weight decay can never touch them (as `freeze.make_optimizer` on the whole tree)."""
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
    return tx


@functools.lru_cache(maxsize=8)
def _jitted_init(model):
    # Jitted once per model: un-jitted, every initialiser op compiles on its own (seconds on
    # CPU), and a study initialises the same model for every run.
    return jax.jit(functools.partial(model.init, train=False))


def initial_variables(model, config: ml_collections.ConfigDict) -> dict[str, Any]:
    size = config.data.image_size
    dummy = jnp.zeros((1, size, size, config.model.in_channels), jnp.float32)
    variables = _jitted_init(model)(jax.random.key(config.seed), dummy)
    return jax.tree.map(np.asarray, flax.core.unfreeze(variables))


def load_init_from(variables: dict[str, Any], config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Params (and BN statistics) of a pre-training run, strictly matched to the model."""
    loaded, _ = checkpoint.load_variables(config.init_from)
    return checkpoint.merge_pretrained(
        variables, loaded, dont_load=tuple(config.dont_load), source=config.init_from
    )


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *leaves: np.stack(leaves), *trees)


def _all_equal(trees: Sequence[Any]) -> bool:
    first = jax.tree.leaves(trees[0])
    return all(
        all(np.array_equal(a, b) for a, b in zip(first, jax.tree.leaves(t))) for t in trees[1:]
    )


def create_train_state(
    configs: Sequence[ml_collections.ConfigDict], *, model, plan: freeze.FreezePlan, tx
) -> tuple[TrainState, Any, int | None]:
    """The initial state of a group (run axis first) and its frozen params.

    Each run starts from its own initialisation (seeded) or its `init_from`. The frozen
    params come back shared (axis None) when equal in every run, else with the run axis (0).
    """
    variables = []
    for config in configs:
        v = initial_variables(model, config)
        variables.append(load_init_from(v, config) if config.init_from else v)
    labels = plan.labels(variables[0]['params'])
    trainable, frozen = zip(*(freeze.split_trainable(v['params'], labels) for v in variables))
    shared = _all_equal(frozen)
    state = TrainState(
        step=np.zeros((), np.int32),
        trainable=_stack(trainable),
        batch_stats=_stack([v.get('batch_stats', {}) for v in variables]),
        opt_state=_stack([tx.init(t) for t in trainable]),
    )
    return state, (frozen[0] if shared else _stack(frozen)), (None if shared else 0)


# ----------------------------------------------------------------------------- steps


def train_step(state, frozen, batch, rngs, *, model, tx, frozen_units, frozen_axis, config):
    """One step of every run of the group, differentiating only the trained parameters.

    The frozen subtree is a constant of the loss, so XLA computes no weight gradients for it
    and, past the shallowest trained layer, no activation gradients either.
    """
    has_batch_stats = bool(jax.tree.leaves(state.batch_stats))

    def run_step(trainable, batch_stats, opt_state, frozen, rng, images, masks):
        augment_rng, dropout_rng = jax.random.split(jax.random.fold_in(rng, state.step))
        # The barrier keeps XLA from fusing the warp's gathers into the first convolution and
        # its gradient: without it a base-32 step on CPU took 2.1x as long (3.1 s vs 1.5 s).
        images, masks = jax.lax.optimization_barrier(
            augment.augment_batch(augment_rng, images, masks, config.augment)
        )

        def loss_fn(trainable):
            variables = {'params': freeze.merge(trainable, frozen)}
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
        updates, opt_state = tx.update(grads, opt_state, trainable)
        counts = metrics.overlap_counts((logits > 0).astype(jnp.float32), masks)
        summary = {
            'loss': loss,
            'dice': metrics.dice_from_counts(**counts).mean(),
            'grad_norm': optax.global_norm(grads),
        }
        return optax.apply_updates(trainable, updates), batch_stats, opt_state, summary

    trainable, batch_stats, opt_state, summary = jax.vmap(
        run_step, in_axes=(0, 0, 0, frozen_axis, 0, 0, 0)
    )(
        state.trainable,
        state.batch_stats,
        state.opt_state,
        frozen,
        rngs,
        batch['image'],
        batch['mask'],
    )
    new_state = TrainState(state.step + 1, trainable, batch_stats, opt_state)
    return new_state, summary


def eval_step(trainable, batch_stats, frozen, batch, *, model, frozen_axis, num_runs, config):
    """Per-image loss and pixel counts [runs, batch], and probabilities, of one eval batch."""

    def run_eval(trainable, batch_stats, frozen):
        variables = {'params': freeze.merge(trainable, frozen)}
        if jax.tree.leaves(batch_stats):
            variables['batch_stats'] = batch_stats
        logits = model.apply(variables, batch['image'], train=False)
        loss = metrics.segmentation_loss(
            logits,
            batch['mask'],
            bce_weight=config.loss.bce_weight,
            dice_weight=config.loss.dice_weight,
        )
        counts = metrics.overlap_counts((logits > 0).astype(jnp.float32), batch['mask'])
        return {'loss': loss, **counts}, jax.nn.sigmoid(logits)

    # axis_size: a group that trains nothing may hold no array with the run axis at all.
    return jax.vmap(run_eval, in_axes=(0, 0, frozen_axis), axis_size=num_runs)(
        trainable, batch_stats, frozen
    )


# ----------------------------------------------------------------------------- programs

# Compiled programs of this process, keyed by what determines them (config fields, freeze
# spec, group shape): every group with the same key reuses the executable.
_PROGRAMS: collections.OrderedDict[Any, Any] = collections.OrderedDict()
_MAX_PROGRAMS = 64
_STEP_FIELDS = ('model', 'loss', 'optimizer', 'augment', 'num_train_steps', 'warmup_steps')


def _plain(value: Any) -> Any:
    return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


def _signature(args: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(args)
    return treedef, tuple((np.shape(x), str(x.dtype), getattr(x, 'sharding', None)) for x in leaves)


def compiled(key: tuple, build: Callable[[], Any], args: tuple, watch: io_utils.Stopwatch):
    """The executable of `build()` (a jitted function) for `args`, compiled once per process."""
    full_key = (key, _signature(args))
    if full_key in _PROGRAMS:
        _PROGRAMS.move_to_end(full_key)
        return _PROGRAMS[full_key]
    with watch('compile'):
        program = build().lower(*args).compile()
    _PROGRAMS[full_key] = program
    if len(_PROGRAMS) > _MAX_PROGRAMS:
        _PROGRAMS.popitem(last=False)
    return program


class Programs:
    """The compiled step and evaluation of a group's lanes, from the process's cache."""

    def __init__(self, group: Group, tx, frozen_axis: int | None, width: int, watch):
        self.group, self.tx, self.frozen_axis, self.width, self.watch = (
            group,
            tx,
            frozen_axis,
            width,
            watch,
        )

    def _key(self, kind: str, fields: Sequence[str], *extra) -> tuple:
        config = self.group.config
        described = json.dumps({f: _plain(config[f]) for f in fields}, sort_keys=True, default=str)
        return (kind, config.data.image_size, described, self.frozen_axis, self.width, *extra)

    def step(self, *args):
        group = self.group
        build = functools.partial(
            train_step,
            model=group.model,
            tx=self.tx,
            frozen_units=group.plan.frozen_units,
            frozen_axis=self.frozen_axis,
            config=group.config,
        )
        key = self._key('step', _STEP_FIELDS, group.plan.frozen_units)
        return compiled(key, lambda: jax.jit(build, donate_argnums=0), args, self.watch)

    def evaluation(self, params: tuple, batch):
        build = functools.partial(
            eval_step,
            model=self.group.model,
            frozen_axis=self.frozen_axis,
            num_runs=self.width,
            config=self.group.config,
        )
        key = self._key('eval', ('model', 'loss'))
        return compiled(key, lambda: jax.jit(build), (*params, batch), self.watch)


# ----------------------------------------------------------------------------- evaluation


def device_batches(split: pipeline.Split, batch_size: int, sharding) -> list[dict[str, Any]]:
    """The split as padded batches on device (put there once per group, not per evaluation)."""
    batches = []
    for start in range(0, len(split), batch_size):
        image = split.image[start : start + batch_size]
        mask = split.mask[start : start + batch_size]
        pad = ((0, batch_size - len(image)), (0, 0), (0, 0), (0, 0))
        batch = {'image': np.pad(image, pad), 'mask': np.pad(mask, pad)}
        batches.append(jax.device_put(batch, sharding))
    return batches


# ----------------------------------------------------------------------------- bookkeeping


def is_due(done: int, every: int, last: int) -> bool:
    """The 'every N steps, and at the last step' rule of logging, evaluation and checkpoints."""
    return done == last or (every > 0 and done % every == 0)


def check_finite(history: list[tuple[int, Any]], ledger: dict[str, Any], labels) -> None:
    """Marks each run whose loss or gradient norm became NaN/Inf, with the first such step."""
    for step, values in to_host(history):
        for r, label in enumerate(labels):
            loss, grad_norm = float(values['loss'][r]), float(values['grad_norm'][r])
            if ledger['failed'][r] is None and not (
                math.isfinite(loss) and math.isfinite(grad_norm)
            ):
                ledger['failed'][r] = (
                    f'Training of {label} stopped at step {step}: loss={loss}, gradient '
                    f'norm={grad_norm}. Lower config.optimizer.learning_rate, add warm-up '
                    '(config.warmup_steps) or gradient clipping (config.optimizer.grad_clip_norm), '
                    'and check the inputs.'
                )


def choose_members(runs: Sequence[Run], group_dir: str) -> list[Run]:
    """The runs to train: those of the group's checkpoint if it covers every unfinished run
    (it was killed mid-way), else the unfinished ones from the start."""
    unfinished = [r for r in runs if not layout.is_finished(r.workdir)]
    path = os.path.join(group_dir, GROUP_FILE)
    by_label = {r.label: r for r in runs}
    if unfinished and os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)['members']
        if set(saved) <= set(by_label) and {r.label for r in unfinished} <= set(saved):
            return [by_label[label] for label in saved]
        logging.warning('%s: checkpoint of other members %s; starting afresh.', group_dir, saved)
        shutil.rmtree(os.path.join(group_dir, checkpoint.LATEST_DIR), ignore_errors=True)
    return unfinished


# ----------------------------------------------------------------------------- the runs


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    splits: Mapping[str, pipeline.Split] | None = None,
) -> dict[str, Any]:
    """Trains one freeze configuration and writes its run folder (see the README).

    `splits` lets a caller that already holds the data in memory pass it in.
    """
    workdir = os.path.abspath(workdir)
    run = Run(config, workdir)
    outcome = train_group(
        [run], workdir, name=run.label, splits_fn=(lambda _: splits) if splits else None
    )
    result = outcome.get(workdir)
    if isinstance(result, Exception):
        raise result
    return result if result is not None else layout.read_results(workdir)


@dataclasses.dataclass(frozen=True)
class CheckpointPolicy:
    """When a group saves its state: every `config.checkpoint_every_steps`, but not sooner than
    `every_secs` after the previous save, and at the last step unless `final` is False (a study
    deletes a group's state once its runs are written, so saving it last is wasted)."""

    every_secs: float = 0.0
    final: bool = True


@dataclasses.dataclass
class Session:
    """Everything a group's training needs after set-up: its data, lanes, programs, files."""

    group: Group
    lanes: Lanes
    programs: Programs
    manager: Any  # the group checkpoint's Orbax manager
    mesh: Mesh
    val_batches: list[dict[str, Any]]
    policy: CheckpointPolicy
    last_save: float = 0.0

    @property
    def num_steps(self) -> int:
        return self.group.config.num_train_steps

    def sharding(self, *axes) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec(*axes))


def train_group(
    runs: Sequence[Run],
    group_dir: str,
    *,
    name: str,
    splits_fn: SplitsFn | None = None,
    policy: CheckpointPolicy = CheckpointPolicy(),
    vectorize: str = 'auto',
) -> dict[str, dict[str, Any] | Exception]:
    """Trains the unfinished runs of a group together and writes each run's folder.

    The group's checkpoint lives in `group_dir/checkpoints` (a run's own folder for a group of
    one), saved as `policy` says. `vectorize` says how many runs one program steps
    (unet_jax.lanes). Returns {workdir: results, or the exception that ended that run} for the
    runs it finished; a run that diverged does not stop the others.
    """
    start, watch = time.time(), io_utils.Stopwatch()
    members = choose_members(runs, group_dir)
    if not members:
        return {}
    with watch('setup'):
        check_batch_size(members[0].config.batch_size, create_mesh())  # before loading data
        group = Group.create(
            members, group_dir, splits_fn or _load_splits, name=name, watch=watch, start=start
        )
        session = start_session(group, policy=policy, vectorize=vectorize)
    if session.num_steps == 0:
        validate(session, 0)
    elif session.lanes.step < session.num_steps:
        train_steps(session)
    with watch('checkpoint'):
        session.manager.wait_until_finished()
        session.manager.close()
    return score_best(session)


def start_session(group: Group, *, policy: CheckpointPolicy, vectorize: str) -> Session:
    """The group's state (resumed from its checkpoint, else initialised), programs, files."""
    config = group.config
    mesh = create_mesh()
    tx = create_train_tx(config)
    state, frozen, frozen_axis = create_train_state(
        [m.config for m in group.members], model=group.model, plan=group.plan, tx=tx
    )
    width = lane_width(len(group.members), vectorize)
    lanes = Lanes(state, frozen, frozen_axis, width, NamedSharding(mesh, PartitionSpec()))
    manager = checkpoint.create_manager(os.path.join(group.directory, checkpoint.LATEST_DIR))
    if manager.latest_step() is not None:
        restored, ledger = checkpoint.restore(manager, jax.device_put(lanes.joined()))
        lanes.load(restored['state'], restored['best'])
        group.resume(ledger)
        logging.info('%s: resumed at step %d.', group.name, lanes.step)
    elif jax.process_index() == 0:
        io_utils.write_text_atomically(
            os.path.join(group.directory, GROUP_FILE), json.dumps({'members': group.labels})
        )
    group.open_writers(fresh=lanes.step == 0)
    eval_sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return Session(
        group=group,
        lanes=lanes,
        programs=Programs(group, tx, frozen_axis, width, group.watch),
        manager=manager,
        mesh=mesh,
        val_batches=device_batches(group.val, group.eval_batch_size, eval_sharding),
        policy=policy,
        last_save=time.time(),
    )


def validate(session: Session, step: int) -> None:
    """Validation Dice of every run; each run's best params follow its best lesion Dice."""
    group, lanes = session.group, session.lanes
    with group.watch('eval'):
        program = session.programs.evaluation(lanes.params(0, best=False), session.val_batches[0])
        stats, _ = lanes.evaluate(program, session.val_batches, len(group.val), best=False)
        lanes.keep_best(group.record_validation(step, stats))


def save_checkpoint(session: Session, step: int) -> None:
    policy, last = session.policy, step == session.num_steps
    if (last and not policy.final) or (
        not last and time.time() - session.last_save < policy.every_secs
    ):
        return
    with session.group.watch('checkpoint'):
        session.group.ledger['time'] = session.group.times()
        checkpoint.save(session.manager, step, session.lanes.joined(), session.group.ledger)
    session.last_save = time.time()


def train_steps(session: Session) -> None:
    """The loop: steps of every lane, then logging, validation and checkpoints when due."""
    group, lanes, config, watch = (
        session.group,
        session.lanes,
        session.group.config,
        session.group.watch,
    )
    first_step, num_steps = lanes.step, session.num_steps
    rngs = [
        jax.device_put(
            jnp.stack([jax.random.key(m.config.seed) for m in group.members[lane]]),
            session.sharding(),
        )
        for lane in lanes.slices
    ]
    put = functools.partial(jax.device_put, device=session.sharding(None, DATA_AXIS))
    first_batch = put({k: v[lanes.slices[0]] for k, v in group.batch(first_step).items()})
    program = session.programs.step(lanes.states[0], lanes.frozen[0], first_batch, rngs[0])
    learning_rate = create_learning_rate_fn(config)
    progress = io_utils.Progress(num_steps, done=first_step)
    history, interval_start = [], watch.seconds['steps']
    for step in range(first_step, num_steps):
        with watch('steps'):
            history.append((step, lanes.train_step(program, group.batch(step), rngs, put)))
        done = step + 1
        if is_due(done, config.log_every_steps, num_steps):
            with watch('steps'):
                history = [(s, _join_lanes(summaries)) for s, summaries in history]
                check_finite(history, group.ledger, group.labels)
                lanes.block()
            seconds = (watch.seconds['steps'] - interval_start) / len(history)
            if history[0][0] != first_step or done == num_steps:  # the first one warms up
                group.ledger['interval_times'].append(seconds)
            with watch('write'):
                rates = {'learning_rate': float(learning_rate(step)), 'steps_per_sec': 1 / seconds}
                group.log_train(done, history, progress, rates)
            history, interval_start = [], watch.seconds['steps']
            if all(f is not None for f in group.ledger['failed']):
                return
        if is_due(done, config.eval_every_steps, num_steps):
            validate(session, done)
        if is_due(done, config.checkpoint_every_steps, num_steps):
            save_checkpoint(session, done)


def score_best(session: Session) -> dict[str, dict[str, Any] | Exception]:
    """Every run's best params on val and test (per-image stats and probabilities), then its
    folder: best params, predictions, results.json."""
    group, lanes = session.group, session.lanes
    with group.watch('eval'):
        final = {}
        for split_name, split in (('val', group.val), ('test', group.test)):
            batches = device_batches(split, group.eval_batch_size, session.sharding(DATA_AXIS))
            program = session.programs.evaluation(lanes.params(0, best=True), batches[0])
            final[split_name] = lanes.evaluate(
                program, batches, len(split), best=True, with_probs=True
            )
    frozen = lanes.frozen_group()
    return group.finish(to_host(lanes.joined()['best']), frozen, lanes.frozen_axis, final)


def _load_splits(config: ml_collections.ConfigDict) -> Mapping[str, pipeline.Split]:
    return pipeline.load_splits(config.data, in_channels=config.model.in_channels)


def _join_lanes(summaries: list[dict[str, jax.Array]]) -> dict[str, jax.Array]:
    return {k: jnp.concatenate([s[k] for s in summaries]) for k in summaries[0]}
