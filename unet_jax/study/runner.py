"""The layer-wise study's runner: its groups trained in order, pre-training first, then the
report (the runs as configs and study.json: unet_jax.study.run_configs).

The in-process runner (`main`) and `launch/sweep.py` (local processes, SLURM arrays) run the
groups of `sweep_points.enumerate_sweep(config)`; the workdir's layout is in unet_jax.layout.

A run is finished iff its results.json exists (train writes it atomically, last), so a study
killed at any moment and started again loses nothing and runs nothing twice. A group (runs
that differ only in seed, trained together in one compiled step by train.trainer) is what the
runner, the local launcher and a SLURM array task execute; while it trains, its checkpoint is
in <workdir>/groups/<group name>/, deleted once its runs are written.
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
from unet_jax.errors import ConfigError, UserError
from unet_jax.layout import (
    ERROR_FILE,
    LEAK_CHECK_FILE,
    PRETRAIN_DIR,
    RESULTS_FILE,
    SOURCES_FILE,
    is_finished,
    run_dir,
    source_dir,
)
from unet_jax.study.run_configs import (
    is_chief,
    point_config,
    pretrain_config,
    pretrain_dirs,
    write_plan,
)
from unet_jax.study.sweep_points import (
    RunGroup,
    Sweep,
    SweepPoint,
    enumerate_sweep,
    num_pretrainings,
)
from unet_jax.train import runfolder

# run_fn(members, group_dir, name) trains a group (groups.Member objects) and returns, per run
# folder, its results or the exception that ended it.
RunFn = Callable[[Sequence[Any], str, str], Mapping[str, Any]]
PrepareFn = Callable[[ml_collections.ConfigDict], None]
GROUPS_DIR = 'groups'  # <workdir>/groups/<group name>/: a group's checkpoint while it trains


# ----------------------------------------------------------------------------- the runner


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


def failed_message(workdir: str, failed: Sequence[str], total: int, *, of: str = '') -> str:
    """'N of M runs failed: see <their error.txt>', with what to do next."""
    files = [os.path.join(run_dir(workdir, name), ERROR_FILE) for name in failed]
    more = f' and {len(files) - 3} more error.txt under {workdir}' if len(files) > 3 else ''
    return (
        f'{len(failed)} of {total} runs{of} failed: see {", ".join(files[:3])}{more} (each '
        'holds its traceback). To fix: remove the cause, then run the same command again; '
        'finished runs are kept and only the failed ones run.'
    )


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


class RunsFailedError(UserError):
    """Some runs of a study failed (exit 1); `outcome` is what study.main returns otherwise."""

    def __init__(self, message: str, outcome: dict[str, Any]):
        super().__init__(message)
        self.outcome = outcome


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
    progress = io_utils.Progress(total, done=len(done), unit='runs')
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
        for name in outcome['failed']:
            path = os.path.join(run_dir(workdir, name), ERROR_FILE)
            logging.info('study: %s failed (see %s)', name, path)
            console.failure(name, errors.get(name) or error_line(path), path)
        logging.info(
            'study: group %d/%d (%s): %s; %d failed',
            group.index + 1,
            len(sweep.groups),
            group.name,
            progress.line(len(done) + len(failed)),
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
            progress=progress.line(len(done) + len(failed)),
            runs=len(group.runs),
            failed=len(outcome['failed']),
        )
    return {'done': done, 'failed': failed, 'trained': trained}


def main(
    config: ml_collections.ConfigDict,
    workdir: str,
    sweep_index: int | str | None = None,
    *,
    run_fn: RunFn | None = None,
    prepare_fn: PrepareFn | None = None,
    leak_check_fn: Callable[[ml_collections.ConfigDict], Any] | None = None,
    console: console_lib.Console | None = None,
) -> dict[str, Any]:
    """The study from `unet_jax.main`: `sweep_index` None = everything, an int = that group of
    runs, 'report' = only the report, 'pretrain' = pre-training (if not finished) and building
    every target set: what launchers run before fanning out, so that parallel runs never race
    to build the same data set. Before anything trains (None, 'pretrain') the leak check
    (`data.leakage.check_study`, or `leak_check_fn`) runs: it raises when a target's test or
    validation image is in its training split or in the pre-training set, and writes
    leak_check.json.

    A run folder holding a run of another config stops everything before a file is written
    (exit 2; a group checks its own runs); the whole study holds its folder's lock
    (unet_jax.train.runfolder), each group its group folder's. When runs failed, the report is
    still written, then RunsFailedError (exit 1) says how many and where their error.txt is.

    `console` (unet_jax.console) tells the story of the study (a line per group, failures,
    the answer, the report's path); default: the current one, silent unless activated."""
    with console_lib.activate(console):
        if config.study.get('sources'):
            return run_sources(
                config,
                workdir,
                sweep_index,
                run_fn=run_fn,
                prepare_fn=prepare_fn,
                leak_check_fn=leak_check_fn,
            )
        sweep = enumerate_sweep(config)
        if sweep_index in (None, 'pretrain'):
            check_run_folders(config, workdir, sweep.runs, pretraining=True)  # before any write
        # The whole study in this process: one process per study folder (groups lock theirs).
        with runfolder.lock(workdir, enabled=sweep_index is None and is_chief()):
            return _main(config, workdir, sweep, sweep_index, run_fn, prepare_fn, leak_check_fn)


def _main(
    config: ml_collections.ConfigDict,
    workdir: str,
    sweep: Sweep,
    sweep_index: int | str | None,
    run_fn: RunFn | None,
    prepare_fn: PrepareFn | None,
    leak_check_fn: Callable[[ml_collections.ConfigDict], Any] | None,
) -> dict[str, Any]:
    from unet_jax import report  # matplotlib; only needed where a report is written

    os.makedirs(workdir, exist_ok=True)
    write_plan(config, workdir, sweep)
    if sweep_index == 'report':
        path = report.write_report(workdir)
        write_study_summaries(workdir)
        return {'report': path}
    if sweep_index in (None, 'pretrain'):
        check_leaks(config, workdir, leak_check_fn)
    run_fn = run_fn or default_run_fn(config)
    needs_pretraining = any(p.pretrain_index is not None for p in sweep.runs)
    if sweep_index == 'pretrain':
        if needs_pretraining:
            run_pretrain(config, workdir, run_fn)
        prepare_targets(
            config,
            workdir,
            sweep,
            prepare_fn or functools.partial(prepare_data, in_channels=config.model.in_channels),
        )
        return {}
    if sweep_index is not None:
        group = sweep.groups[_parse_index(sweep_index, len(sweep.groups))]
        logging.info('study: group %d/%d: %s', group.index, len(sweep.groups), group.name)
        outcome = run_group(config, workdir, group, run_fn)
        if not outcome['trained'] and not outcome['failed']:
            logging.info('study: %s finished earlier; nothing to do.', group.name)
        if outcome['failed']:
            of = f' of group {group.index} ({group.name})'
            message = failed_message(workdir, outcome['failed'], len(group.runs), of=of)
            raise RunsFailedError(message, outcome)
        return outcome
    console = console_lib.current()
    pretraining = ''
    if needs_pretraining:
        count = num_pretrainings(config)
        pretraining = f' after pre-training ({count} run{"s" if count > 1 else ""})'
    console.line(
        f'Study in {workdir}: {len(sweep.runs)} runs in {len(sweep.groups)} groups'
        f'{pretraining}. Log: {os.path.join(workdir, layout.LOG_FILE)} (-v 0 prints it); '
        f'TensorBoard: tensorboard --logdir {workdir}'
    )
    if needs_pretraining:
        run_pretrain(config, workdir, run_fn)
    outcome = run_study(config, workdir, sweep, run_fn)
    analyze_full_runs(workdir)
    outcome['report'] = report.write_report(workdir)
    logging.info('study: report in %s', outcome['report'])
    write_study_summaries(workdir)
    console.line(f'Answer: {answer(workdir, outcome["report"])}')
    console.line(f'Report: {outcome["report"]}')
    if outcome['failed']:  # the report shows the others; the command still fails
        raise RunsFailedError(
            failed_message(workdir, outcome['failed'], len(sweep.runs)), outcome
        )
    return outcome


ANSWER_FILE = 'answer.txt'  # in the report folder, when the report writes it


def answer(workdir: str, report_path: str) -> str:
    """The report's answer in a sentence (the primary endpoint's): the report folder's
    answer.txt if the report wrote one, else made again from the runs by the report's own
    functions (what the report's first line says)."""
    path = os.path.join(os.path.dirname(report_path), ANSWER_FILE)
    if os.path.exists(path):
        with open(path) as f:
            return ' '.join(f.read().split())
    try:
        from unet_jax.report import analysis, conclusions, stats
        from unet_jax.report.load import load

        study = load(workdir)
        margin = study.plan.get('margin') or stats.Settings().margin
        result = analysis.analyse(study, stats.Settings(margin))
        return conclusions.plain_answer(result, study.title)
    except Exception as error:  # the answer is a courtesy; the report has it
        logging.warning('study: no answer sentence (%s: %s)', type(error).__name__, error)
        return f'see the report ({type(error).__name__} while making the sentence).'


def write_study_summaries(workdir: str) -> None:
    """The study's Dice against k per target and direction family as TensorBoard scalars
    (step = k) in WORKDIR/report/ (unet_jax.report.dice_curves.write_study_curves)."""
    if not is_chief():
        return
    from unet_jax.report import dice_curves

    curves = dice_curves.write_study_curves(workdir, os.path.join(workdir, layout.REPORT_DIR))
    logging.info('study: %d curves of Dice against k in TensorBoard', len(curves))


# ----------------------------------------------------------------------------- sources


def source_config(config: ml_collections.ConfigDict, source: str) -> ml_collections.ConfigDict:
    """The study of one pre-training source of `study.sources`: the same config (targets,
    sweep, seeds) with study.pretrain = study.source_pretrain[source] and no sources."""
    if source not in config.study.source_pretrain:
        raise ValueError(
            f'config.study.sources names {source!r}, which config.study.source_pretrain lacks '
            f'(it has {", ".join(config.study.source_pretrain)}): make both with sources=.'
        )
    one = config.copy_and_resolve_references()
    one.study.pretrain = one.study.source_pretrain[source]
    one.study.sources = ()
    one.study.source_pretrain = ml_collections.ConfigDict()
    return one


def run_sources(
    config: ml_collections.ConfigDict,
    workdir: str,
    sweep_index: int | str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """A study of several pre-training sources: each source's whole study in
    <workdir>/sources/<name> (in order; a source whose runs failed does not stop the next),
    then <workdir>/report/sources.md (unet_jax.report.sources) compares their gaps. Resumes
    like any study. `sweep_index`: None (everything) or 'report'; a launcher runs one source's
    groups with source=NAME and --workdir=<workdir>/sources/NAME."""
    from unet_jax.report import sources as source_report

    if sweep_index not in (None, 'report'):
        raise ValueError(
            f'--sweep_index={sweep_index!r}: a study of several sources (sources=) runs whole '
            "in one process, or 'report'; to launch one source's groups, use source=NAME "
            f'with --workdir={source_dir(workdir, "NAME")}.'
        )
    names = list(config.study.sources)
    outcome: dict[str, Any] = {'sources': {}, 'failed': []}
    with runfolder.lock(workdir, enabled=sweep_index is None and is_chief()):
        os.makedirs(workdir, exist_ok=True)
        if is_chief():
            plan = dict(sources=names, dirs=[source_dir('', n) for n in names])
            io_utils.write_text_atomically(
                os.path.join(workdir, SOURCES_FILE), json.dumps(plan, indent=1)
            )
        for i, name in enumerate(names):
            logging.info('study: source %d/%d: %s', i + 1, len(names), name)
            console_lib.current().line(f'Source {i + 1}/{len(names)}: {name}')
            try:
                found = main(source_config(config, name), source_dir(workdir, name), sweep_index, **kwargs)
            except RunsFailedError as error:
                found = error.outcome
                outcome['failed'] += [f'{name}: {r}' for r in error.outcome.get('failed', [])]
            outcome['sources'][name] = found
        if is_chief():
            outcome['report'] = source_report.write_study(workdir)
            logging.info('study: sources compared in %s', outcome['report'])
            console_lib.current().line(f'Sources compared: {outcome["report"]}')
    if outcome['failed']:
        total = len(outcome['failed'])
        raise RunsFailedError(
            f'{total} runs of the sources study failed (each source\'s error.txt files are '
            f'under {os.path.join(workdir, "sources")}): ' + ', '.join(outcome['failed'][:5]),
            outcome,
        )
    return outcome


def analyze_full_runs(workdir: str, max_images: int = 16) -> None:
    """representation_change.json (unet_jax.representation_change: CKA and weight change per
    unit) of every finished `full` run that lacks one, on its first `max_images` test images,
    for the report's panel; a run it cannot analyse is logged and left out of the panel."""
    from unet_jax import representation_change

    if not is_chief():
        return
    for folder in representation_change.study_runs(workdir, ['full']):
        if os.path.exists(os.path.join(folder, representation_change.RESULT_FILE)):
            continue
        try:
            representation_change.analyze_run(folder, max_images=max_images)
        except (representation_change.AnalyzeError, OSError, ValueError) as error:
            logging.warning('study: no representation change of %s: %s', folder, error)


def check_leaks(
    config: ml_collections.ConfigDict,
    workdir: str,
    check_fn: Callable[[ml_collections.ConfigDict], Any] | None = None,
) -> None:
    """Runs the leak check and writes leak_check.json (what was compared, what was found);
    a leak raises data.leakage.LeakError before any run starts."""
    from unet_jax.study import leakage

    try:
        report = (check_fn or leakage.check_study)(config)
    except leakage.LeakError as error:
        _write_leak_check(workdir, error.report)
        raise
    if report is None:
        return
    _write_leak_check(workdir, report)
    if report.warnings:  # the console gets one line; the log and leak_check.json list them
        where = os.path.join(workdir, LEAK_CHECK_FILE)
        logging.warning('study: %s; listed in %s', report.headline(), where)


def _write_leak_check(workdir: str, report: Any) -> None:
    if is_chief():
        io_utils.write_text_atomically(
            os.path.join(workdir, LEAK_CHECK_FILE), json.dumps(report.to_dict(), indent=1)
        )


def _parse_index(sweep_index: int | str, num_groups: int) -> int:
    try:
        index = int(sweep_index)
    except ValueError:
        raise ValueError(
            f"--sweep_index={sweep_index!r}: expected an integer group index, 'pretrain' or "
            "'report'."
        ) from None
    if not 0 <= index < num_groups:
        raise ValueError(
            f'--sweep_index={index} is out of range: this study has {num_groups} groups of '
            f'runs (0..{num_groups - 1}); see study.json or launch/sweep.py --dry-run.'
        )
    return index
