"""What the report concludes from the tidy tables: a summary per configuration, the
comparisons (unet_jax.report.compare: the primary endpoint, the secondary ones) and the answer
per target and size: the best configuration, its margin over the next best, the cheapest
configuration near full.

Every choice is made on validation, never on test: "best", "next best" and "cheapest within 1
point of full" rank configurations by their mean validation Dice (the lesion Dice of the best
validation step, over seeds), and the chosen ones are then reported on test with a CI. Whether
the validation pick is also the configuration with the highest test mean is shown beside it
(a validation set of a few images picks noisily).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from unet_jax.report import stats
from unet_jax.report.compare import Comparisons, all_comparisons, compare, mean_test
from unet_jax.report.contrasts import FULL
from unet_jax.report.load import Study
from unet_jax.report.scores import Scores

WITHIN_FULL = 0.01  # "within 1 Dice point of full"
TIME_PARTS = ('compile_s', 'steps_s', 'eval_s', 'checkpoint_s', 'write_s', 'wall_s')


@dataclasses.dataclass
class Answer:
    """Per cell, chosen on validation and reported on test: the best configuration, its margin
    over the next best, the cheapest configuration within 1 point of full."""

    target: str
    num_train: int
    best: str | None = None
    best_val: float = math.nan
    best_test: stats.Test | None = None
    runner_up: str | None = None
    margin: stats.Test | None = None  # best - runner-up, on test
    test_best: str | None = None  # the highest test mean (shown, never chosen on)
    cheapest: str | None = None
    cheapest_vs_full: stats.Test | None = None
    cheapest_cost: dict[str, float] = dataclasses.field(default_factory=dict)
    budget: list = dataclasses.field(default_factory=list)

    @property
    def pick_agrees(self) -> bool | None:
        """Is the validation pick also the test pick? None without a pick."""
        return None if self.best is None else self.best == self.test_best


@dataclasses.dataclass
class Analysis:
    summary: pd.DataFrame
    comparisons: Comparisons
    answers: list[Answer]
    settings: stats.Settings
    scores: Scores  # the score matrices every test of the report is made on


# ----------------------------------------------------------------------------- summary


def summarize(study: Study, scores: Scores, settings: stats.Settings) -> pd.DataFrame:
    """One row per cell and configuration: Dice over seeds with its CI, costs, times, flags."""
    rows = []
    for (target, num_train), cell in study.cell_runs():
        for configuration, group in cell.groupby('configuration', sort=False):
            done = group[group['status'] == 'done']
            first = group.iloc[0]
            others = set(group['run_configuration']) - {configuration}
            row = dict(
                target=target,
                num_train=num_train,
                configuration=configuration,
                family=first['family'],
                order=first['order'],
                granularity=first['granularity'],
                k=first['k'],
                num_units=first['num_units'],
                same_run_as=others.pop() if len(others) == 1 and group['alias'].all() else '',
                seeds_total=len(group),
                seeds_done=len(done),
                seeds_failed=int((group['status'] == 'failed').sum()),
                runs_done=done['run'].nunique(),
                still_improving=int((done['still_improving'] == True).sum()),  # noqa: E712
                convergence_known=int(done['still_improving'].notna().sum()),
                stopped_plateau=int((done['stop'] == 'plateau').sum()),
                stopped_cap=int(((done['stop'] == 'cap') & (done['num_steps'] > 0)).sum()),
                steps_trained=done['num_steps'].mean(),
                pretrain_runs=max(1, done['pretrain_index'].nunique()),
            )
            row.update(_dice_over_seeds(done, scores, target, num_train, configuration, settings))
            row['val_dice_mean'] = done['val_dice'].mean()
            for column in ('test_iou', 'test_hd95', 'normal_fp_rate', 'num_lesion', 'num_normal'):
                row[column] = done[column].mean()
            if len(done):  # an auto: spec's units are known from its finished runs
                row['num_units'] = done['num_units'].iloc[0]
            row['probe_flops'] = done['probe_flops'].mean() if len(done) else math.nan
            for column in ('trained_fraction', 'trained_params', 'train_flops', 'step_time_s'):
                row[column] = done[column].mean()
            for column in TIME_PARTS:
                row[column] = done[column].mean()
            row['group_size'] = done['group_size'].max()
            rows.append(row)
    summary = pd.DataFrame(rows)
    if summary.empty:
        return summary
    full = summary[summary['configuration'] == FULL].set_index(['target', 'num_train'])
    for column in ('trained_fraction', 'train_flops'):
        reference = summary.set_index(['target', 'num_train']).index.map(
            full[column].to_dict() if len(full) else {}
        )
        summary[f'{column}_vs_full'] = summary[column].to_numpy() / np.asarray(reference, float)
    return summary


def _dice_over_seeds(done, scores, target, num_train, configuration, settings) -> dict:
    out = dict(dice_mean=done['test_dice'].mean(), dice_std=math.nan)
    out.update(dice_ci_low=math.nan, dice_ci_high=math.nan, num_images=math.nan)
    if done['run'].nunique() < 2:  # one run (e.g. 'pretrained' for every seed): no spread
        return out
    out['dice_std'] = done['test_dice'].std(ddof=1)
    test = mean_test(scores, target, num_train, configuration, settings)
    if test is not None:
        out.update(dice_ci_low=test.low, dice_ci_high=test.high, num_images=test.num_images)
    return out


# ----------------------------------------------------------------------------- the answer


def answers(
    study: Study, scores: Scores, summary: pd.DataFrame, comparisons, settings: stats.Settings
) -> list[Answer]:
    out = []
    for target, num_train in study.cells:
        cell = summary[
            (summary['target'] == target)
            & (summary['num_train'] == num_train)
            & summary['dice_mean'].notna()
        ]
        answer = Answer(target, num_train)
        answer.budget = [
            c
            for c in comparisons.secondary
            if (c.target, c.num_train, c.kind) == (target, num_train, 'budget')
        ]
        out.append(answer)
        runs = cell[(cell['same_run_as'] == '') | ~cell['same_run_as'].isin(cell['configuration'])]
        ranked = runs[runs['val_dice_mean'].notna()].sort_values('val_dice_mean', ascending=False)
        if ranked.empty:
            continue
        answer.best = ranked['configuration'].iloc[0]
        answer.best_val = ranked['val_dice_mean'].iloc[0]
        answer.test_best = runs.loc[runs['dice_mean'].idxmax(), 'configuration']
        answer.best_test = mean_test(scores, target, num_train, answer.best, settings)
        if len(ranked) > 1:
            answer.runner_up = ranked['configuration'].iloc[1]
            answer.margin = compare(
                scores, target, num_train, answer.best, answer.runner_up, settings
            )
        _set_cheapest(answer, runs, scores, settings)
    return out


def cheapest_near_full(runs: pd.DataFrame) -> pd.Series | None:
    """The cheapest configuration of a cell (one row per run) whose mean validation Dice is
    within 1 point of full's; cost: training FLOPs where every run has them, else the
    trained-parameter fraction. None without a finished full."""
    full = runs[(runs['configuration'] == FULL) & runs['val_dice_mean'].notna()]
    if full.empty:
        return None
    floor = full['val_dice_mean'].iloc[0] - WITHIN_FULL
    cost = 'train_flops' if runs['train_flops'].notna().all() else 'trained_fraction'
    near = runs[(runs['val_dice_mean'] >= floor) & runs[cost].notna()]
    near = near.sort_values([cost, 'val_dice_mean'], ascending=[True, False])
    return near.iloc[0] if len(near) else None


def _set_cheapest(answer: Answer, runs: pd.DataFrame, scores: Scores, settings) -> None:
    best = cheapest_near_full(runs)
    if best is None:
        return
    answer.cheapest = best['configuration']
    answer.cheapest_cost = {
        'trained_fraction': best['trained_fraction_vs_full'],
        'train_flops': best['train_flops_vs_full'],
        'dice': best['dice_mean'],
        'val_dice': best['val_dice_mean'],
    }
    if answer.cheapest != FULL:
        answer.cheapest_vs_full = compare(
            scores, answer.target, answer.num_train, answer.cheapest, FULL, settings
        )


def pick_agreement(answers: list[Answer]) -> tuple[int, int]:
    """(cells whose validation pick is also the highest test mean, cells with a pick)."""
    known = [a.pick_agrees for a in answers if a.pick_agrees is not None]
    return sum(known), len(known)


def analyse(study: Study, settings: stats.Settings | None = None) -> Analysis:
    settings = settings or stats.Settings()
    scores = Scores(study)
    summary = summarize(study, scores, settings)
    if summary.empty:
        return Analysis(summary, Comparisons([], None, [], []), [], settings, scores)
    comparisons = all_comparisons(study, scores, summary, settings)
    cells = answers(study, scores, summary, comparisons, settings)
    return Analysis(summary, comparisons, cells, settings, scores)
