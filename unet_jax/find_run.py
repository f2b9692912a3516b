"""Which finished run a `--checkpoint` path names, with errors that lead to the right one.

`predict` accepts a run's workdir, its `best/` folder or a step in it. Inside a study it also
accepts what the report shows: a point's name under `points/` that is an alias of another run
(`.../deep_to_shallow-k3` trains what `.../contracting` trains, so only the latter has a
folder) resolves to that run, with a warning naming it. A study's workdir, or any folder that
holds runs further down, is refused with the best finished run of each target and family (by
validation Dice) and a count of the others. A pre-training run is accepted with a warning: it
was not fine-tuned on a target.
"""

from __future__ import annotations

from collections.abc import Iterator
import json
import os
from typing import Any

from absl import logging

from unet_jax import layout
from unet_jax.config.defaults import PRETRAIN_DATA_SEED

CONFIG_FILE = 'config.json'
_SHOWN = 10
_MAX_FOLDERS = 20000  # folders looked at when listing the runs under a path


class RunNotFoundError(ValueError):
    """A --checkpoint path that names no finished run; the message names the runs near it."""


def run_folder(path: str, *, flag: str = '--checkpoint') -> str:
    """The workdir of the finished run at or above `path` (a workdir, its best/ or a step),
    or of the run a study point names (an alias included)."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        return run_folder(_point_run(path, flag), flag=flag)
    for folder in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
        if os.path.isfile(os.path.join(folder, CONFIG_FILE)):
            if not layout.is_finished(folder):
                raise RunNotFoundError(
                    f'{flag}={path!r}: the run in {folder} has not finished (it has no '
                    'results.json). Let it finish, or re-run its unet_jax.main command to '
                    'resume it, then predict.'
                )
            _warn_if_pretraining(folder)
            return folder
    raise RunNotFoundError(_no_run_message(path, flag))


# ----------------------------------------------------------------------------- studies


def study_of(path: str) -> tuple[str, dict[str, Any]] | None:
    """(workdir, study.json) of the study that `path` is in (or is), else None."""
    folder = path
    while True:
        plan_file = os.path.join(folder, layout.PLAN_FILE)
        if os.path.isfile(plan_file):
            try:
                with open(plan_file) as f:
                    return folder, json.load(f)
            except (OSError, ValueError):
                return None
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def _existing_ancestor(path: str) -> str:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _point_run(path: str, flag: str) -> str:
    """The run folder of the study point `path` names (warning when it is an alias)."""
    found = study_of(_existing_ancestor(path))
    if found is None:
        raise RunNotFoundError(
            f'{flag}={path!r} does not exist. Pass the workdir of a finished run (the '
            '--workdir given to unet_jax.main).'
        )
    root, plan = found
    name = os.path.relpath(path, root).replace(os.sep, '/').removeprefix('points/')
    point = next((p for p in plan.get('points', []) if p.get('name') == name), None)
    if point is None:
        raise RunNotFoundError(
            f'{flag}={path!r} does not exist: the study in {root} has no point {name!r}.\n'
            f'{_study_runs(root, plan)}'
        )
    run = os.path.join(root, point['dir'])
    if point.get('run', name) != name:
        logging.warning(
            'Point %s is an alias of run %s (it trains the same units from the same start): '
            'using %s.',
            name,
            point['run'],
            run,
        )
    return run


def _study_runs(root: str, plan: dict[str, Any]) -> str:
    """The best finished run of each target and family (validation Dice), and how many more."""
    points = [(os.path.normpath(os.path.join(root, p['dir'])), p) for p in plan.get('points', [])]
    results = {folder: _results(folder) for folder in {folder for folder, _ in points}}
    best: dict[tuple[str, str], tuple[float, str]] = {}
    for folder, point in points:
        if results[folder] is None:
            continue
        val = _dice(results[folder], 'val')
        key = (point.get('target', '?'), point.get('family', '?'))
        if key not in best or val > best[key][0]:
            best[key] = (val, folder)
    finished = sum(r is not None for r in results.values())
    if not best:
        return (
            f'None of its {len(results)} runs has finished yet: wait for them (or run the '
            'study again to resume it), then pass one of its points/ folders.'
        )
    lines = [
        f'  {target} {family}: {folder} (val Dice {val:.4f}, '
        f'test Dice {_dice(results[folder], "test"):.4f})'
        for (target, family), (val, folder) in sorted(best.items())
    ]
    return (
        'Pass one of its runs; the best of each target and family by validation Dice:\n'
        + '\n'.join(lines)
        + f'\n({finished} of {len(results)} runs finished, under {os.path.join(root, "points")}; '
        'report/report.html lists them.)'
    )


def _results(folder: str) -> dict[str, Any] | None:
    try:
        return layout.read_results(folder)
    except (OSError, ValueError):
        return None


def _dice(results: dict[str, Any], split: str) -> float:
    value = (results.get(split) or {}).get('dice')
    return float(value) if isinstance(value, (int, float)) else float('nan')


# ----------------------------------------------------------------------------- other folders


def _no_run_message(path: str, flag: str) -> str:
    base = f'{flag}={path!r} holds no run: no config.json there or above.'
    if os.path.isfile(os.path.join(path, layout.PLAN_FILE)):
        found = study_of(path)
        if found is not None:
            return f'{flag}={path!r} is the workdir of a study, not a run. {_study_runs(*found)}'
    runs = list(_finished_runs_under(path))
    if runs:
        more = f' ... ({len(runs)} in all)' if len(runs) > _SHOWN else ''
        return (
            f'{base} Finished runs under it: {", ".join(runs[:_SHOWN])}{more}. Pass one of '
            'them.'
        )
    return f'{base} Pass the workdir of a finished run (the --workdir given to unet_jax.main).'


def _finished_runs_under(path: str) -> Iterator[str]:
    """Folders under `path` that hold a finished run (not descending into runs), sorted."""
    looked = 0
    for folder, dirs, files in os.walk(path):
        looked += 1
        if CONFIG_FILE in files:
            dirs[:] = []
            if layout.RESULTS_FILE in files:
                yield folder
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        if looked >= _MAX_FOLDERS:
            return


def _warn_if_pretraining(folder: str) -> None:
    config = _config(folder)
    found = study_of(folder)
    in_plan = found is not None and os.path.normpath(folder) in {
        os.path.normpath(d) for d in found[1].get('pretrain_dirs', [])
    }
    data = config.get('data') or {}
    generated = data.get('seed') == PRETRAIN_DATA_SEED and not config.get('init_from')
    if in_plan or generated:
        logging.warning(
            '%s is a pre-training run (on %s): it was not fine-tuned on a target, so it '
            "segments what the pre-training task taught it. For a target's images, pass a "
            'fine-tuned run (a folder under the study\'s points/).',
            folder,
            data.get('name', 'its pre-training set'),
        )


def _config(folder: str) -> dict[str, Any]:
    try:
        with open(os.path.join(folder, CONFIG_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}
