"""The study loop: pre-training first, then every group of runs in index order.

A group (runs that differ only in seed, trained together in one compiled step by
train.trainer) is what the runner, the local launcher and a SLURM array task execute; while it
trains, its checkpoint is in <workdir>/groups/<group name>/, deleted once its runs are written.
A run that fails gets error.txt in its folder and the other groups still run; a run folder that
holds a run of another config stops the study before anything is written.
"""

from collections.abc import Callable, Mapping, Sequence
import functools
import json
import os
import shutil
import time
import traceback
from typing import Any

from absl import logging
import ml_collections

from unet_jax import console as console_lib
from unet_jax import io_utils, layout
from unet_jax.errors import ConfigError
from unet_jax.layout import ERROR_FILE, PRETRAIN_DIR, RESULTS_FILE, is_finished, run_dir
from unet_jax.study.run_configs import (
    is_chief,
    point_config,
    pretrain_config,
    pretrain_dirs,
    train_steps,
)
from unet_jax.study.sweep_points import RunGroup, Sweep, SweepPoint
from unet_jax.train import runfolder

# run_fn(members, group_dir, name) trains a group (groups.Member objects) and returns, per run
# folder, its results or the exception that ended it.
RunFn = Callable[[Sequence[Any], str, str], Mapping[str, Any]]
PrepareFn = Callable[[ml_collections.ConfigDict], None]
GROUPS_DIR = 'groups'  # <workdir>/groups/<group name>/: a group's checkpoint while it trains


def default_run_fn(config: ml_collections.ConfigDict) -> RunFn:
    """train.train_group, with each run's data loaded once for the groups that share it, and
    the study's checkpoint policy (a group's state is only kept while it trains)."""
    from unet_jax.data import pipeline
    from unet_jax.train import trainer

    @functools.lru_cache(maxsize=16)
    def load(data_json: str, in_channels: int):
        data = ml_collections.ConfigDict(json.loads(data_json))
        return pipeline.load_splits(data, in_channels=in_channels)

    def splits(run_config: ml_collections.ConfigDict):
        return load(run_config.data.to_json(), run_config.model.in_channels)

    def run(runs: Sequence[Any], group_dir: str, name: str) -> Mapping[str, Any]:
        return trainer.train_group(
            runs,
            group_dir,
            name=name,
            splits_fn=splits,
            policy=trainer.CheckpointPolicy(
                every_secs=config.study.get('checkpoint_every_secs', 0.0), final=False
            ),
            vectorize=config.study.get('vectorize', 'auto'),
        )

    return run


def group_dir(workdir: str, group: RunGroup) -> str:
    return os.path.join(workdir, GROUPS_DIR, *group.name.split('/'))


def remove_group_state(directory: str) -> None:
    """Deletes a group's checkpoint folder once its runs are written, and empty folders above."""
    if not is_chief():
        return
    shutil.rmtree(directory, ignore_errors=True)
    try:
        os.removedirs(os.path.dirname(directory))  # stops at the first folder that is not empty
    except OSError:
        pass


def run_pretrain(config: ml_collections.ConfigDict, workdir: str, run_fn: RunFn) -> None:
    """Every pre-training (one group of `study.pretrain_seeds` runs) unless finished."""
    directories = pretrain_dirs(config, workdir)
    console = console_lib.current()
    if all(is_finished(d) for d in directories):
        logging.info('study: pre-training finished earlier (%s); reusing it.', directories[0])
        console.line(f'pre-training: finished earlier ({directories[0]}); reusing it')
        return
    if config.study.get('pretrained_workdir'):
        raise FileNotFoundError(
            f'config.study.pretrained_workdir={directories[0]} has no {RESULTS_FILE}: that '
            "pre-training run did not finish. Finish it, or set the field to '' to pre-train "
            'inside the study workdir.'
        )
    from unet_jax.train.groups import Member

    logging.info('study: pre-training on %s in %s', config.study.pretrain.data.name, directories)
    runs = [
        Member(pretrain_config(config, i), d, name=os.path.basename(d))
        for i, d in enumerate(directories)
    ]
    directory = os.path.join(workdir, GROUPS_DIR, PRETRAIN_DIR)
    start = time.time()
    console.group_started(PRETRAIN_DIR)
    with runfolder.lock(directory, enabled=is_chief()):  # one process per group folder
        outcome = run_fn(runs, directory, PRETRAIN_DIR)
    for d in directories:
        if isinstance(outcome.get(d), Exception):
            console.failure(os.path.basename(d), outcome[d], d)
            raise outcome[d]
    console.group_done(
        'pre-training',
        config.study.pretrain.data.name,
        [run_test_dice(d) for d in directories],
        seconds=time.time() - start,
        progress=f'{len(directories)}/{len(directories)} runs',
        runs=len(directories),
    )
    if all(is_finished(d) for d in directories):
        remove_group_state(directory)


def check_run_folders(
    config: ml_collections.ConfigDict,
    workdir: str,
    points: Sequence[SweepPoint],
    *,
    pretraining: bool = False,
) -> None:
    """Fails (exit 2) when the folder of one of `points`' runs (and, with `pretraining`, of a
    pre-training in the workdir) holds a run of another config (unet_jax.train.runfolder): the study
    would otherwise report runs trained under two configs as one. Reads config.json only."""
    folders = []
    if pretraining and not config.study.get('pretrained_workdir'):
        folders += [
            (functools.partial(pretrain_config, config, i), d)
            for i, d in enumerate(pretrain_dirs(config, workdir))
        ]
    folders += [
        (functools.partial(point_config, config, p, workdir), run_dir(workdir, p.run_name))
        for p in points
    ]
    for make_config, folder in folders:
        if os.path.exists(os.path.join(folder, runfolder.CONFIG_FILE)):
            runfolder.check_same_config(make_config(), folder, log_changes=False)


def run_test_dice(directory: str) -> float | None:
    """The test Dice of a finished run (None if it has none)."""
    results = layout.read_results(directory) or {}
    return (results.get('test') or {}).get('dice')


def error_line(path: str) -> str:
    """The last line of an error.txt (the exception and its message)."""
    try:
        with open(path) as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return 'failed'
    return lines[-1] if lines else 'failed'


def prepare_data(data_config: ml_collections.ConfigDict, *, in_channels: int) -> None:
    """Builds a set (TFDS build + cache) once, before parallel runs would race to build it."""
    from unet_jax.data import pipeline

    pipeline.load_splits(data_config, in_channels=in_channels)


def prepare_targets(
    config: ml_collections.ConfigDict, workdir: str, sweep: Sweep, prepare_fn: PrepareFn
) -> None:
    for target in config.study.targets:
        point = next(p for p in sweep.runs if p.target == target)
        logging.info('study: preparing the data of %s', target)
        prepare_fn(point_config(config, point, workdir).data)


def _record_failure(directory: str, point: SweepPoint, error: BaseException) -> None:
    if not is_chief():
        return
    text = ''.join(traceback.format_exception(type(error), error, error.__traceback__))
    io_utils.write_text_atomically(
        os.path.join(directory, ERROR_FILE), f'sweep point {point.index}: {point.name}\n\n{text}'
    )


def run_group(
    config: ml_collections.ConfigDict, workdir: str, group: RunGroup, run_fn: RunFn
) -> dict[str, list[str]]:
    """Trains a group's unfinished runs; each failed run gets error.txt in its folder.

    Returns {'trained': run names, 'failed': run names}. The group's checkpoint folder is
    removed once every run of it is finished.
    """
    check_run_folders(config, workdir, group.runs)
    state_dir = group_dir(workdir, group)
    with runfolder.lock(state_dir, enabled=is_chief()):  # one process per group folder
        return _run_group(config, workdir, group, run_fn, state_dir)


def _run_group(
    config: ml_collections.ConfigDict,
    workdir: str,
    group: RunGroup,
    run_fn: RunFn,
    state_dir: str,
) -> dict[str, list[str]]:
    from unet_jax.train.groups import Member

    pending = [p for p in group.runs if not is_finished(run_dir(workdir, p.run_name))]
    if not pending:
        remove_group_state(state_dir)
        return {'trained': [], 'failed': []}
    dirs = pretrain_dirs(config, workdir)
    for point in pending:
        if point.pretrain_index is not None and not is_finished(dirs[point.pretrain_index]):
            raise FileNotFoundError(
                f'group {group.index} ({group.name}) starts from the pre-trained weights, but '
                f'{dirs[point.pretrain_index]} has no {RESULTS_FILE}. Run '
                '--sweep_index=pretrain first (launch/sweep.py and the whole-study run do).'
            )
        os.makedirs(run_dir(workdir, point.run_name), exist_ok=True)
        if os.path.exists(os.path.join(run_dir(workdir, point.run_name), ERROR_FILE)):
            os.remove(os.path.join(run_dir(workdir, point.run_name), ERROR_FILE))
    runs = [
        Member(
            point_config(config, p, workdir),
            run_dir(workdir, p.run_name),
            name=p.run_name,
            extra={
                'pretrain': None
                if p.pretrain_index is None
                else {'dir': dirs[p.pretrain_index], 'index': p.pretrain_index}
            },
        )
        for p in group.runs
    ]
    try:
        outcome = run_fn(runs, state_dir, group.name)
    except Exception as error:
        for point in pending:
            _record_failure(run_dir(workdir, point.run_name), point, error)
        raise
    trained, failed = [], []
    for point in pending:
        result = outcome.get(run_dir(workdir, point.run_name))
        if isinstance(result, Exception):
            _record_failure(run_dir(workdir, point.run_name), point, result)
            failed.append(point.run_name)
        elif is_finished(run_dir(workdir, point.run_name)):
            trained.append(point.run_name)
    if all(is_finished(run_dir(workdir, p.run_name)) for p in group.runs):
        remove_group_state(state_dir)
    return {'trained': trained, 'failed': failed}


# The cost of a run's evaluations and write-out, in train steps (the `:quick` study on 2 cores:
# a group of 3 pre-trained-only runs takes 1 s, one of 3 runs of 100 full steps 8 s).
EVAL_WORK_STEPS = 10


def run_work(config: ml_collections.ConfigDict, point: SweepPoint) -> int:
    """A run's expected cost, in train steps, for the study's ETA: its step cap plus its
    evaluations (early stopping can end it sooner: the ETA is then an upper bound)."""
    return train_steps(config, point) + EVAL_WORK_STEPS


def run_study(
    config: ml_collections.ConfigDict, workdir: str, sweep: Sweep, run_fn: RunFn
) -> dict[str, list[str]]:
    """Every unfinished group in index order; a failure is recorded and the study goes on."""
    total = len(sweep.runs)
    done = [p.run_name for p in sweep.runs if is_finished(run_dir(workdir, p.run_name))]
    failed, trained = [], []
    logging.info(
        'study: %d runs (%d names) in %d groups, %d finished earlier.',
        total,
        len(sweep.points),
        len(sweep.groups),
        len(done),
    )
    console = console_lib.current()
    if done:
        console.line(f'{len(done)} of {total} runs finished earlier; they are kept.')
    work = {p.run_name: run_work(config, p) for p in sweep.runs}
    progress = io_utils.Progress(
        total,
        done=len(done),
        unit='runs',
        work_total=sum(work.values()),
        work_done=sum(work[name] for name in done),
    )
    width = len(str(len(sweep.groups)))
    for group in sweep.groups:
        if all(is_finished(run_dir(workdir, p.run_name)) for p in group.runs):
            continue
        start = time.time()
        console.group_started(group.name)
        errors: dict[str, str | BaseException] = {}
        try:
            outcome = run_group(config, workdir, group, run_fn)
        except (runfolder.FolderInUseError, ConfigError):
            raise  # another process trains the group, or its folders hold another config
        except Exception as e:  # recorded in error.txt; the other groups still run
            outcome = {'trained': [], 'failed': [p.run_name for p in group.runs]}
            errors = {p.run_name: e for p in group.runs}
            logging.info('study: group %d (%s) failed: %s', group.index, group.name, e)
        trained += outcome['trained']
        done += outcome['trained']
        failed += outcome['failed']
        progress_line = progress.line(
            len(done) + len(failed), sum(work[name] for name in done + failed)
        )
        for name in outcome['failed']:
            path = os.path.join(run_dir(workdir, name), ERROR_FILE)
            logging.info('study: %s failed (see %s)', name, path)
            console.failure(name, errors.get(name) or error_line(path), path)
        logging.info(
            'study: group %d/%d (%s): %s; %d failed',
            group.index + 1,
            len(sweep.groups),
            group.name,
            progress_line,
            len(failed),
        )
        scored = [
            run_test_dice(run_dir(workdir, p.run_name))
            for p in group.runs
            if is_finished(run_dir(workdir, p.run_name)) and p.run_name not in outcome['failed']
        ]
        console.group_done(
            f'{group.index + 1:{width}d}/{len(sweep.groups)}',
            group.name,
            scored,
            seconds=time.time() - start,
            progress=progress_line,
            runs=len(group.runs),
            failed=len(outcome['failed']),
        )
    return {'done': done, 'failed': failed, 'trained': trained}
