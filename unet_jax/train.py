"""Training: `train_and_evaluate(config, workdir)` trains one run; `train_group(runs, group_dir)`
trains runs that differ only in seed together, in one jitted step. A run is a group of one.

Read top to bottom: the programs (unet_jax.steps.compiled, keyed by their own inputs and
compiled once per process: a study compiles one step per configuration and one evaluation
per model and image size, not per run) -> the group's session (its members and data,
unet_jax.groups; its state in lanes, unet_jax.lanes; resumed from its checkpoint or started)
-> the loop: steps, validation that keeps each run's best params, checkpoints -> each run's
best params scored on val and test, and its folder written (unet_jax.outputs).

Just over 400 lines: the loop's parts (session, validation, checkpoint policy, steps, scoring)
are short functions kept together so the order of a run reads in one file.
"""

from __future__ import annotations

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
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import ml_collections
import numpy as np

from unet_jax import checkpoint, freeze, hosts, io_utils, layout
from unet_jax.data import pipeline
from unet_jax.groups import Group, Member
from unet_jax.lanes import Lanes, lane_width, to_devices, to_host
from unet_jax.steps import (
    DATA_AXIS,
    StepConfig,
    check_batch_size,
    compiled,
    create_learning_rate_fn,
    create_mesh,
    create_train_state,
    eval_step,
    train_step,
)

GROUP_FILE = 'group.json'  # the members of a group's checkpoint, in run-axis order

SplitsFn = Callable[[ml_collections.ConfigDict], Mapping[str, pipeline.Split]]


# ----------------------------------------------------------------------------- programs


class Programs:
    """The compiled step and evaluation of a group, from the process's cache (steps.compiled):
    keyed by their own inputs, so a group reuses every program an earlier group compiled for
    the same model, step config, freeze spec and shapes."""

    def __init__(self, group: Group, frozen_axis: int | None, watch):
        self.watch = watch
        self.step_inputs = dict(
            model=group.model,
            config=StepConfig.of(group.config, per_block_scales=group.scales is not None),
            frozen_units=group.plan.frozen_units,
            frozen_axis=frozen_axis,
        )
        self.eval_inputs = dict(
            model=group.model, loss=ml_collections.FrozenConfigDict(group.config.loss)
        )

    def step(self, *args):
        return compiled(train_step, self.step_inputs, args, self.watch, donate_argnums=(0,))

    def evaluation(self, variables, batch):
        return compiled(eval_step, self.eval_inputs, (variables, batch), self.watch)


# ----------------------------------------------------------------------------- evaluation


def device_batches(split: pipeline.Split, batch_size: int, sharding) -> list[dict[str, Any]]:
    """The split as padded batches on device (put there once per group, not per evaluation)."""
    batches = []
    for start in range(0, len(split), batch_size):
        image = split.image[start : start + batch_size]
        mask = split.mask[start : start + batch_size]
        pad = ((0, batch_size - len(image)), (0, 0), (0, 0), (0, 0))
        batch = {'image': np.pad(image, pad), 'mask': np.pad(mask, pad)}
        batches.append(to_devices(batch, sharding))
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


def choose_members(runs: Sequence[Member], group_dir: str) -> list[Member]:
    """The runs to train: those of the group's checkpoint if it covers every unfinished run
    (it was killed mid-way), else the unfinished ones from the start."""
    unfinished = [r for r in runs if not layout.is_finished(r.workdir)]
    if len(runs) == 1 and os.path.abspath(runs[0].workdir) == os.path.abspath(group_dir):
        return unfinished  # a run in its own folder: its checkpoint is its own, even if moved
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
    member = Member(config, workdir)
    outcome = train_group(
        [member], workdir, name=member.label, splits_fn=(lambda _: splits) if splits else None
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
    runs: Sequence[Member],
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
    try:
        if session.num_steps == 0:
            validate(session, 0)
        elif session.lanes.step < session.num_steps:
            train_steps(session)
    finally:  # also when training stops with an error: the last good step's save completes
        with watch('checkpoint'):
            session.manager.wait_until_finished()
            session.manager.close()
    return score_best(session)


def start_session(group: Group, *, policy: CheckpointPolicy, vectorize: str) -> Session:
    """The group's state (resumed from its checkpoint, else initialised), programs, files."""
    config = group.config
    hosts.check_same_data(
        [s.image for s in (group.val, group.test, *group.train_splits)], where=group.name
    )
    mesh = create_mesh()
    state, frozen, frozen_axis = create_train_state(
        [m.config for m in group.members], model=group.model, plan=group.plan, scales=group.scales
    )  # scales: a soft auto: spec
    logging.info(
        '%s: freeze spec %r -> %s; trained and frozen parameters:\n%s',
        group.name,
        config.finetune.train,
        group.plan.canonical,
        group.plan.parameter_table(_first_run(state.trainable, frozen, frozen_axis)),
    )
    width = lane_width(len(group.members), vectorize)
    lanes = Lanes(state, frozen, frozen_axis, width, NamedSharding(mesh, PartitionSpec()))
    manager = checkpoint.create_manager(os.path.join(group.directory, checkpoint.LATEST_DIR))
    if manager.latest_step() is not None:
        restored, ledger = checkpoint.restore(manager, lanes.joined())
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
        programs=Programs(group, frozen_axis, group.watch),
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
        variables = lanes.variables(0, best=False)
        program = session.programs.evaluation(variables, session.val_batches[0])
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
        jax.random.wrap_key_data(
            to_devices(
                np.stack([jax.random.key_data(jax.random.key(m.config.seed)) for m in lane]),
                session.sharding(),
            )
        )
        for lane in (group.members[s] for s in lanes.slices)
    ]
    put = functools.partial(to_devices, sharding=session.sharding(None, DATA_AXIS))
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
            program = session.programs.evaluation(lanes.variables(0, best=True), batches[0])
            final[split_name] = lanes.evaluate(
                program, batches, len(split), best=True, with_probs=True
            )
    return group.finish(to_host(lanes.joined()['best']), final)


def _load_splits(config: ml_collections.ConfigDict) -> Mapping[str, pipeline.Split]:
    return hosts.first_then_others(
        lambda: pipeline.load_splits(config.data, in_channels=config.model.in_channels)
    )


def _first_run(trainable: Any, frozen: Any, frozen_axis: int | None) -> Any:
    """The parameter shapes of one run (what the parameter table counts)."""

    def without_run_axis(tree):
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), tree)

    return freeze.merge(
        without_run_axis(trainable), frozen if frozen_axis is None else without_run_axis(frozen)
    )


def _join_lanes(summaries: list[dict[str, jax.Array]]) -> dict[str, jax.Array]:
    return {k: jnp.concatenate([s[k] for s in summaries]) for k in summaries[0]}
