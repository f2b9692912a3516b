"""The layer-wise study's runner (`main`, what unet_jax.main calls): the plan, the leak check,
pre-training and every group (unet_jax.study.loop), then the report and what the study writes
besides it (unet_jax.study.summaries); or one part of it for a launcher (`sweep_index`); or a
study of several pre-training sources (`run_sources`).

The in-process runner and `launch/sweep.py` (local processes, SLURM arrays) run the groups of
`sweep_points.enumerate_sweep(config)`; the runs as configs and study.json are in
unet_jax.study.run_configs, the workdir's layout in unet_jax.layout.

A run is finished iff its results.json exists (train writes it atomically, last), so a study
killed at any moment and started again loses nothing and runs nothing twice.
"""

from collections.abc import Callable, Sequence
import functools
import json
import os
from typing import Any

from absl import logging
import ml_collections

from unet_jax import console as console_lib
from unet_jax import io_utils, layout
from unet_jax.errors import UserError
from unet_jax.layout import ERROR_FILE, SOURCES_FILE, run_dir, source_dir
from unet_jax.study.loop import (
    PrepareFn,
    RunFn,
    check_run_folders,
    default_run_fn,
    prepare_data,
    prepare_targets,
    run_group,
    run_pretrain,
    run_study,
)
from unet_jax.study.run_configs import is_chief, write_plan
from unet_jax.study.summaries import analyze_full_runs, answer, write_study_summaries
from unet_jax.study.sweep_points import Sweep, enumerate_sweep, num_pretrainings
from unet_jax.train import runfolder


def failed_message(workdir: str, failed: Sequence[str], total: int, *, of: str = '') -> str:
    """'N of M runs failed: see <their error.txt>', with what to do next."""
    files = [os.path.join(run_dir(workdir, name), ERROR_FILE) for name in failed]
    more = f' and {len(files) - 3} more error.txt under {workdir}' if len(files) > 3 else ''
    return (
        f'{len(failed)} of {total} runs{of} failed: see {", ".join(files[:3])}{more} (each '
        'holds its traceback). To fix: remove the cause, then run the same command again; '
        'finished runs are kept and only the failed ones run.'
    )


class RunsFailedError(UserError):
    """Some runs of a study failed (exit 1); `outcome` is what study.main returns otherwise."""

    def __init__(self, message: str, outcome: dict[str, Any]):
        super().__init__(message)
        self.outcome = outcome


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
        from unet_jax.study import leakage  # the data pipeline; only needed before training

        leakage.check_leaks(config, workdir, leak_check_fn)
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
        raise RunsFailedError(failed_message(workdir, outcome['failed'], len(sweep.runs)), outcome)
    return outcome


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
                found = main(
                    source_config(config, name), source_dir(workdir, name), sweep_index, **kwargs
                )
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
            f"{total} runs of the sources study failed (each source's error.txt files are "
            f'under {os.path.join(workdir, "sources")}): ' + ', '.join(outcome['failed'][:5]),
            outcome,
        )
    return outcome


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
