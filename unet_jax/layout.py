"""Where a study keeps its files, and when a run counts as finished (standard library only).

The study runner, the launchers and the report all read these names from here, so the report
can be made from a workdir without importing JAX. A study's workdir:

  .lock                      held by the whole study's process or launch/sweep.py (runfolder)
  study.json                 the plan: every named point, its run, aliases (unet_jax.study.runner)
  registration.json          what the study declared when it started, and every amendment
                             (unet_jax.config.registration)
  leak_check.json            the leak check: images compared, duplicates found (data.leakage)
  pretrain/                  the pre-training run (unless `study.pretrained_workdir` is set)
  points/<run name>/         one run folder per unique run; results.json there = finished
  groups/<group name>/       a group's checkpoint while it trains, and the .lock its process holds
  report/                    tables, figures, report.html (unet_jax.report), and the event
                             files of the study's Dice against k (unet_jax.report.dice_curves)
  log.txt                    the whole study's log (unet_jax.console: the console shows less)

A study of several pre-training sources (`study.sources`) holds one such study per source:

  sources.json               the sources in order (the first is the baseline) and their folders
  sources/<name>/            the study pre-trained on source <name> (the layout above)
  report/sources.md          the shallow-vs-deep gap per source and its changes (report.sources)
  report/sources.html        the same page, self-contained; sources.csv: every comparison
"""

from __future__ import annotations

import json
import os
from typing import Any

PLAN_FILE = 'study.json'
REGISTRATION_FILE = 'registration.json'
PRETRAIN_DIR = 'pretrain'
POINTS_DIR = 'points'
REPORT_DIR = 'report'
RESULTS_FILE = 'results.json'
ERROR_FILE = 'error.txt'
LEAK_CHECK_FILE = 'leak_check.json'
SOURCES_FILE = 'sources.json'
SOURCES_DIR = 'sources'
LOG_FILE = 'log.txt'
PREDICTIONS_FILE = 'predictions.npz'  # a run's first test images, masks and probabilities


def predictions_file(external: str = '') -> str:
    """predictions.npz (the run's own test split) or predictions_on_NAME.npz (external set)."""
    return f'predictions_on_{external}.npz' if external else PREDICTIONS_FILE


def size_name(num_train: int) -> str:
    """'all' for every training image (-1), else the number."""
    return 'all' if num_train < 0 else str(num_train)


def run_dir(workdir: str, run_name: str) -> str:
    """The folder of run `run_name` ('us/n16/s0/full') in a study workdir."""
    return os.path.join(workdir, POINTS_DIR, *run_name.split('/'))


def source_dir(workdir: str, source: str) -> str:
    """The study of pre-training source `source` in a study of several sources."""
    return os.path.join(workdir, SOURCES_DIR, source)


def is_finished(directory: str) -> bool:
    """A run is finished iff its results.json exists (written atomically, last)."""
    return os.path.exists(os.path.join(directory, RESULTS_FILE))


def has_failed(directory: str) -> bool:
    return os.path.exists(os.path.join(directory, ERROR_FILE))


def read_results(directory: str) -> dict[str, Any] | None:
    """The run's results.json, or None while it is not finished."""
    path = os.path.join(directory, RESULTS_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_plan(workdir: str) -> dict[str, Any]:
    """study.json of a study workdir, with an error that says how to make one."""
    path = os.path.join(workdir, PLAN_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f'{path} does not exist: {workdir} is not a study workdir (or the study never '
            'started). Run `python -m unet_jax.main --config=configs/layerwise.py '
            f'--workdir={workdir}` (or with --sweep_index=report) first.'
        )
    with open(path) as f:
        return json.load(f)
