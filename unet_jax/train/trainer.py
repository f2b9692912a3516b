"""Training: `train_and_evaluate(config, workdir)` trains one run; `train_group(members,
group_dir)` trains runs that differ only in seed together, in one jitted step. A run is a group
of one.

Read top to bottom, in the order a group trains:
  set-up     members, data, model, registry, freeze plan (unet_jax.train.groups.set_up); the
             plan (freeze.FreezePlan: trained units, parameter counts, step FLOPs) is made
             once here and passed on to state creation and to the write-out
  state      the group's train state in lanes (unet_jax.train.lanes) and its ledger
             (train.ledger), resumed from its checkpoint or initialised (train.initial_state,
             which labels the parameters once); the members' folders opened
             (unet_jax.train.outputs.RunFolders)
  the loop   steps of every lane, then, when due, logging, validation (each run's best
             params follow its best validation Dice) and checkpoints
  the end    each run's best params scored on val and test, and every run's folder written
             (unet_jax.train.outputs.write_runs)
The compiled programs come from the process's cache (unet_jax.train.steps.compiled), keyed by their
own inputs: a study compiles one step per configuration and one evaluation per model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import functools
import json
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

from unet_jax import console, freeze, io_utils, layout
from unet_jax.data import pipeline
from unet_jax.models import metrics
from unet_jax.train import checkpoint, groups, hosts, initial_state, outputs, steps
from unet_jax.train.groups import GroupSetup, Member
from unet_jax.train.lanes import Evaluation, Lanes, lane_width, to_devices, to_host
from unet_jax.train.ledger import EarlyStopping, Ledger

GROUP_FILE = 'group.json'  # the members of a group's checkpoint, in run-axis order


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


def train_group(
    members: Sequence[Member],
    group_dir: str,
    *,
    name: str,
    splits_fn: groups.SplitsFn | None = None,
    policy: CheckpointPolicy = CheckpointPolicy(),
    vectorize: str = 'auto',
) -> dict[str, dict[str, Any] | Exception]:
    """Trains the unfinished members of a group together and writes each one's folder.

    The group's checkpoint lives in `group_dir/checkpoints` (a run's own folder for a group of
    one), saved as `policy` says. `vectorize` says how many runs one program steps
    (unet_jax.train.lanes). Returns {workdir: results, or the exception that ended that run} for the
    runs it finished; a run that diverged does not stop the others.
    """
    start, watch = time.time(), io_utils.Stopwatch()
    members = choose_members(members, group_dir)
    if not members:
        return {}
    with watch('setup'):
        steps.check_batch_size(members[0].config.batch_size, steps.create_mesh())  # before data
        setup = groups.set_up(members, group_dir, splits_fn or _load_splits, name=name)
        session = start_session(
            setup, policy=policy, vectorize=vectorize, watch=watch, start=start
        )
    try:
        if session.num_steps == 0:
            validate(session, 0)
        elif session.lanes.step < session.num_steps:
            train_steps(session)
    finally:  # also when training stops with an error: the last good step's save completes
        with watch('checkpoint'):
            session.manager.wait_until_finished()
            session.manager.close()
    return finish(session)


def choose_members(members: Sequence[Member], group_dir: str) -> list[Member]:
    """The members to train: those of the group's checkpoint if it covers every unfinished
    one (it was killed mid-way), else the unfinished ones from the start."""
    unfinished = [m for m in members if not layout.is_finished(m.workdir)]
    if len(members) == 1 and os.path.abspath(members[0].workdir) == os.path.abspath(group_dir):
        return unfinished  # a run in its own folder: its checkpoint is its own, even if moved
    path = os.path.join(group_dir, GROUP_FILE)
    by_label = {m.label: m for m in members}
    if unfinished and os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)['members']
        if set(saved) <= set(by_label) and {m.label for m in unfinished} <= set(saved):
            return [by_label[label] for label in saved]
        logging.warning('%s: checkpoint of other members %s; starting afresh.', group_dir, saved)
        shutil.rmtree(os.path.join(group_dir, checkpoint.LATEST_DIR), ignore_errors=True)
    return unfinished


# ----------------------------------------------------------------------------- state


@dataclasses.dataclass
class Session:
    """A group while it trains: its set-up, state (lanes and ledger), programs and files."""

    setup: GroupSetup
    lanes: Lanes
    ledger: Ledger
    programs: Programs
    folders: outputs.RunFolders
    manager: Any  # the group checkpoint's Orbax manager
    mesh: Mesh
    val_batches: list[dict[str, Any]]
    policy: CheckpointPolicy
    watch: io_utils.Stopwatch
    start: float  # when this process began the group
    last_save: float

    @property
    def num_steps(self) -> int:
        return self.setup.config.num_train_steps

    def sharding(self, *axes) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec(*axes))

    def times(self) -> dict[str, float]:
        return self.ledger.times(self.watch.seconds, wall=time.time() - self.start)


class Programs:
    """The compiled step and evaluation of a group, from the process's cache (steps.compiled):
    keyed by their own inputs, so a group reuses every program an earlier group compiled for
    the same model, step config, freeze spec and shapes."""

    def __init__(self, setup: GroupSetup, frozen_axis: int | None, watch: io_utils.Stopwatch):
        self.watch = watch
        self.step_inputs = dict(
            model=setup.model,
            config=steps.StepConfig.of(setup.config, per_block_scales=setup.scales is not None),
            frozen_units=setup.plan.frozen_units,
            frozen_axis=frozen_axis,
        )
        self.eval_inputs = dict(
            model=setup.model, loss=ml_collections.FrozenConfigDict(setup.config.loss)
        )

    def step(self, *args):
        return steps.compiled(
            steps.train_step, self.step_inputs, args, self.watch, donate_argnums=(0,)
        )

    def evaluation(self, variables, batch):
        return steps.compiled(steps.eval_step, self.eval_inputs, (variables, batch), self.watch)


def start_session(
    setup: GroupSetup,
    *,
    policy: CheckpointPolicy,
    vectorize: str,
    watch: io_utils.Stopwatch,
    start: float,
) -> Session:
    """The group's state (resumed from its checkpoint, else initialised), programs, folders."""
    hosts.check_same_data(
        [s.image for s in (setup.val, setup.test, *setup.train_splits)], where=setup.name
    )
    mesh = steps.create_mesh()
    state, frozen, frozen_axis, labels = initial_state.create_train_state(
        [m.config for m in setup.members],
        model=setup.model,
        plan=setup.plan,
        scales=setup.scales,  # a soft auto: spec
    )
    freeze_text = (
        f'freeze spec {setup.config.finetune.train!r} -> {setup.plan.canonical}; trained and '
        'frozen parameters:\n'
        + setup.plan.parameter_table(_first_run(state.trainable, frozen, frozen_axis), labels)
    )
    logging.info(
        '%s: %d run(s) (%s); %s', setup.name, len(setup.members), ', '.join(setup.labels),
        freeze_text,
    )  # fmt: skip
    width = lane_width(len(setup.members), vectorize)
    lanes = Lanes(state, frozen, frozen_axis, width, NamedSharding(mesh, PartitionSpec()))
    ledger = Ledger.new(setup.labels)
    manager = checkpoint.create_manager(os.path.join(setup.directory, checkpoint.LATEST_DIR))
    if manager.latest_step() is not None:
        restored, saved = checkpoint.restore(manager, lanes.joined())
        lanes.load(restored['state'], restored['best'])
        ledger = Ledger.from_json(saved)
        logging.info('%s: resumed at step %d.', setup.name, lanes.step)
    elif jax.process_index() == 0:
        io_utils.write_text_atomically(
            os.path.join(setup.directory, GROUP_FILE), json.dumps({'members': setup.labels})
        )
    eval_sharding = NamedSharding(mesh, PartitionSpec(steps.DATA_AXIS))
    return Session(
        setup=setup,
        lanes=lanes,
        ledger=ledger,
        programs=Programs(setup, frozen_axis, watch),
        folders=outputs.RunFolders(setup, fresh=lanes.step == 0, freeze_text=freeze_text),
        manager=manager,
        mesh=mesh,
        val_batches=device_batches(setup.val, setup.eval_batch_size, eval_sharding),
        policy=policy,
        watch=watch,
        start=start,
        last_save=time.time(),
    )


# ----------------------------------------------------------------------------- the loop


def train_steps(session: Session) -> None:
    """Steps of every lane still training; logging, validation and checkpoints when due. Ends
    at the cap (config.num_train_steps) or once every run has stopped (early stopping,
    divergence)."""
    setup, lanes, watch = session.setup, session.lanes, session.watch
    config, ledger = setup.config, session.ledger
    first_step, num_steps = lanes.step, session.num_steps
    if ledger.all_stopped:
        return  # resumed after its last run stopped
    rngs = [run_keys(setup.members[s], session.sharding()) for s in lanes.slices]
    put = functools.partial(to_devices, sharding=session.sharding(None, steps.DATA_AXIS))
    first_batch = put({k: v[lanes.slices[0]] for k, v in setup.batch(first_step).items()})
    program = session.programs.step(lanes.states[0], lanes.frozen[0], first_batch, rngs[0])
    learning_rate = steps.create_learning_rate_fn(config)
    progress = io_utils.Progress(num_steps, done=first_step)
    history, interval_start = [], watch.seconds['steps']
    training = lanes.training(ledger.training())
    for step in range(first_step, num_steps):
        with watch('steps'):
            summaries = lanes.train_step(program, setup.batch(step), rngs, put, training)
            history.append((step, summaries))
        done = step + 1
        if is_due(done, config.log_every_steps, num_steps):
            with watch('steps'):
                summaries = to_host([_join_lanes(lane_summaries) for _, lane_summaries in history])
                history = [(s, summary) for (s, _), summary in zip(history, summaries)]
                ledger.record_losses(history)
            seconds = (watch.seconds['steps'] - interval_start) / len(history)
            if history[0][0] != first_step or done == num_steps:  # the first one warms up
                ledger.interval_times.append(seconds / max(np.mean(training), 1e-9))
            with watch('write'):
                rates = {'learning_rate': float(learning_rate(step)), 'steps_per_sec': 1 / seconds}
                log_train(session, done, history, progress, rates)
            history, interval_start = [], watch.seconds['steps']
        if is_due(done, config.eval_every_steps, num_steps) and not ledger.all_stopped:
            validate(session, done)
        if ledger.all_stopped:
            logging.info(
                '%s: every run has stopped by step %d (%s).',
                setup.name,
                done,
                ', '.join(f'{r.stop} at {r.stop_step}' for r in ledger.runs),
            )
            return
        if is_due(done, config.checkpoint_every_steps, num_steps):
            save_checkpoint(session, done)
        training = lanes.training(ledger.training())


def is_due(done: int, every: int, last: int) -> bool:
    """The 'every N steps, and at the last step' rule of logging, evaluation and checkpoints."""
    return done == last or (every > 0 and done % every == 0)


def run_keys(members: Sequence[Member], sharding) -> jax.Array:
    """The random keys of a lane's runs (each run's own seed), on device."""
    data = np.stack([jax.random.key_data(jax.random.key(m.config.seed)) for m in members])
    return jax.random.wrap_key_data(to_devices(data, sharding))


def log_train(session: Session, done: int, history: list, progress, extra: dict) -> None:
    """Each run's mean train loss, Dice and gradient norm over the interval; one log line."""
    values = [summary for _, summary in history]
    with np.errstate(invalid='ignore'):  # a stopped run's values are NaN
        means = {k: np.mean([v[k] for v in values], axis=0) for k in values[0]}
    for r, record in enumerate(session.ledger.runs):
        if record.stop in ('', 'nan'):  # a run stopped earlier writes nothing more
            run_means = {k: float(v[r]) for k, v in means.items()}
            session.folders.write(r, done, 'train', {**run_means, **extra})
    shown = lambda values, digits: ' '.join(
        'stopped' if record.stop == 'plateau' else f'{x:.{digits}f}'
        for x, record in zip(values, session.ledger.runs)
    )
    logging.info(
        '%s: %s | loss %s | dice %s',
        session.setup.name,
        progress.line(done),
        shown(means['loss'], 4),
        shown(means['dice'], 3),
    )
    console.current().progress(session.setup.name, done, session.num_steps)


def validate(session: Session, step: int) -> None:
    """Validation Dice of every run; each run's best params follow its best lesion Dice. Each
    run's summaries get its scalars and its predictions on a few fixed validation images
    (outputs.SUMMARY_IMAGES, overlaid on them: from the probabilities the evaluation brought
    to the host anyway)."""
    setup, lanes = session.setup, session.lanes
    with session.watch('eval'):
        variables = lanes.variables(0, best=False)
        program = session.programs.evaluation(variables, session.val_batches[0])
        evaluation = lanes.evaluate(
            program, session.val_batches, len(setup.val), best=False, with_probs=True
        )
        val = [metrics.split_metrics(**evaluation.run(r).stats) for r in range(len(setup.members))]
        training = session.ledger.training()
    with session.watch('write'):
        shown = outputs.summary_indices(setup.val)
        for r, run_val in enumerate(val):
            if training[r]:
                session.folders.write(r, step, 'val', run_val)
                session.folders.write_predictions(r, step, setup.val, evaluation.probs[r], shown)
    with session.watch('eval'):
        dice = [v['dice'] for v in val]
        rule = EarlyStopping.of(setup.config)
        lanes.keep_best(session.ledger.record_validation(step, dice, rule))


def save_checkpoint(session: Session, step: int) -> None:
    policy, last = session.policy, step == session.num_steps
    if (last and not policy.final) or (
        not last and time.time() - session.last_save < policy.every_secs
    ):
        return
    with session.watch('checkpoint'):
        metadata = session.ledger.to_json(session.times())
        checkpoint.save(session.manager, step, session.lanes.joined(), metadata)
    session.last_save = time.time()


# ----------------------------------------------------------------------------- the end


def finish(session: Session) -> dict[str, dict[str, Any] | Exception]:
    """Every run's best params on val, test and each external set (per-image stats and
    probabilities), then its folder: best params, predictions, results.json."""
    setup, lanes = session.setup, session.lanes
    session.ledger.record_cap(lanes.step)
    with session.watch('eval'):
        final: dict[str, Evaluation] = {}
        external = [(f'external/{name}', split) for name, split in setup.external.items()]
        for split_name, split in (('val', setup.val), ('test', setup.test), *external):
            sharding = session.sharding(steps.DATA_AXIS)
            batches = device_batches(split, setup.eval_batch_size, sharding)
            program = session.programs.evaluation(lanes.variables(0, best=True), batches[0])
            final[split_name] = lanes.evaluate(
                program, batches, len(split), best=True, with_probs=True
            )
    best = to_host(lanes.joined()['best'])
    return outputs.write_runs(
        setup,
        session.ledger,
        session.folders,
        best,
        final,
        time=session.times(),
        watch=session.watch,
    )


# ----------------------------------------------------------------------------- helpers


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
