"""The tables the report opens with: which configuration wins in each cell (chosen on
validation, reported on test), the primary endpoint's hypotheses, and which direction wins over
a common cost range. Plain cells (strings), as every table of unet_jax.report.tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from unet_jax.report.analysis import Analysis, Answer, pick_agreement
from unet_jax.report.compare import Comparison
from unet_jax.report.conclusions import cell_title, named, p_text
from unet_jax.report.contrasts import COST_AXES, FULL
from unet_jax.report.kinds import cell_name, cost_text, label
from unet_jax.report.load import Study
from unet_jax.report.tables import Table, fmt


def _share(value: float) -> str:
    return f'{value:.0%}' if np.isfinite(value) else '-'


def _difference(t) -> str:
    return f'{t.estimate:+.3f} [{t.low:+.3f}, {t.high:+.3f}]'


def _answer_row(study: Study, summary: pd.DataFrame, answer: Answer) -> tuple[str, ...]:
    name = cell_title(study, answer.target, answer.num_train)
    if answer.best is None:
        return (name, 'no finished runs', '-', '-', '-', '-', '-')
    test = answer.best_test
    best = f'{named(summary, answer.best)} (val {answer.best_val:.3f}; test ' + (
        f'{test.estimate:.3f} [{test.low:.3f}, {test.high:.3f}])'
        if test is not None and test.defined
        else f'{fmt(test.estimate) if test else "-"})'
    )
    runner_up = named(summary, answer.runner_up) if answer.runner_up else '-'
    margin = (
        f'{runner_up}: {_difference(answer.margin)}'
        if answer.margin is not None and answer.margin.defined
        else runner_up
    )
    agrees = 'yes' if answer.pick_agrees else f'no ({named(summary, answer.test_best)})'
    if answer.cheapest is None:
        cheapest, cost = f'- ({FULL} not finished)', '-'
    elif answer.cheapest == FULL:
        cheapest, cost = f'none cheaper than {FULL}', '-'
    else:
        c, d = answer.cheapest_cost, answer.cheapest_vs_full
        versus = f'; test vs {FULL} {_difference(d)}' if d is not None and d.defined else ''
        cheapest = f'{named(summary, answer.cheapest)} (val {c["val_dice"]:.3f}{versus})'
        cost = f'{_share(c["trained_fraction"])} / {_share(c["train_flops"])}'
    return (name, best, margin, agrees, cheapest, cost)


def answer_table(study: Study, analysis: Analysis) -> Table:
    rows = tuple(_answer_row(study, analysis.summary, a) for a in analysis.answers)
    agree, known = pick_agreement(analysis.answers)
    return Table(
        'Which configuration wins (chosen on validation, reported on test)',
        (
            'target, size', 'best on validation (val Dice; test Dice [95% CI])',
            'next best on validation: best - it on test [95% CI]', 'also best on test?',
            f'cheapest within 1 point of {FULL} on validation', 'its params / FLOPs vs full',
        ),
        rows,
        'Best and next best: the highest mean validation Dice over seeds (lesion images of the '
        'validation split, at each run\'s best validation step); then their test Dice and '
        'paired test difference with a 95% CI (the design\'s t-test; not a secondary comparison, '
        'not adjusted). Cheapest within 1 point: the lowest training cost (FLOPs, else trained '
        f'parameters) whose mean validation Dice is at least {FULL}\'s minus 0.01, with its '
        f'paired test difference to {FULL}. Validation sets are small: the validation pick was '
        f'also the highest test mean in {agree} of {known} cells (shown, never chosen on).',
    )  # fmt: skip


def primary_table(analysis: Analysis) -> Table | None:
    rows = []
    for c in analysis.comparisons.primary:
        what = c.definition.hypothesis(c)
        t = c.test
        if t is None or not t.defined:
            rows.append((what, f'n = {c.num_train}', '-', '-', '-', '-', '-', 'not tested'))
            continue
        rows.append(
            (what, c.scope or '-', t.base, _difference(t), f'{p_text(t.p)} ({t.df:.1f})',
             t.component_sds() or '-', f'{t.mdd:.3f}', c.decision)
        )  # fmt: skip
    if not rows:
        return None
    plan = analysis.comparisons.primary_plan
    return Table(
        'Primary endpoint',
        ('hypothesis', 'scope', 'n (replicates x folds x images)', 'difference [95% CI]',
         'p (df)', 'variance components (SD)', 'detectable (80% power)',
         f'fixed sequence at {0.05:g}'),
        tuple(rows),
        f'As declared in study.primary (registration above): {plan.describe() if plan else "-"}. '
        'Gap: test Dice of the first family minus the second, averaged over k, paired by '
        'pre-training, fold and image; the design\'s t-test, its variance from the components '
        'shown (standard deviations of the per-image gap: pre-training, fold, run, image, '
        'residual; 0 = estimated at or below 0) with Satterthwaite df. The interaction '
        'compares two targets\' gaps paired by the pre-trainings they share. Fixed sequence: '
        'each hypothesis is tested at 0.05 while every earlier one was rejected; no other '
        'comparison dilutes it.',
    )  # fmt: skip


def _verdict_cell(c: Comparison) -> str:
    if c.test is None or not c.test.defined:
        return 'not tested'
    text = {
        'a': f'{label(c.a)} better',
        'b': f'{label(c.b)} better',
        'equivalent': f'equivalent (+-{c.test.margin:g})',
        'no evidence': f'no evidence (detectable {c.test.mdd:.3f})',
        'untested': 'not tested',
    }[c.verdict]
    flag = ' (!)' if c.flagged else ''
    return f'{text}: {_difference(c.test)}{flag}'


def budget_table(analysis: Analysis) -> Table | None:
    """The directions at matched budget: one row per cell, depth order and pair."""
    rows = {}
    for answer in analysis.answers:
        for c in answer.budget:
            key = (cell_name(c.target, c.num_train), c.where, f'{label(c.a)} - {label(c.b)}')
            rows.setdefault(key, {})[c.axis] = c
    if not rows:
        return None
    table_rows = []
    for key, by_axis in rows.items():
        d = next((c.test for c in by_axis.values() if c.test), None)
        base = d.base if d else '-'
        cells = [
            f'{_verdict_cell(by_axis[a])} over {_range(by_axis[a])}' if a in by_axis else '-'
            for a in COST_AXES
        ]
        table_rows.append((*key, base, *cells))
    return Table(
        'Which direction wins over a common cost range',
        ('target, size', 'depth order', 'A - B', 'replicates x images')
        + tuple(f'averaged over a common range of {v}' for v in COST_AXES.values()),
        tuple(table_rows),
        'Each direction\'s Dice interpolated linearly in log(cost) between its k points and '
        'averaged over 16 costs of the range [a, b] both reach (compared only where that range '
        'is at least 2x wide and no curve is interpolated across more than a decade without a '
        'measured point; "-": not compared, the conclusions say why); A - B with its 95% CI '
        '(not adjusted); '
        'a winner is named only where the Holm-adjusted p < 0.05, "equivalent" only from the '
        'TOST. (!): some runs involved were still improving when training stopped.',
    )  # fmt: skip


def _range(c: Comparison) -> str:
    return f'[{cost_text(c.axis, c.cost_range[0])}, {cost_text(c.axis, c.cost_range[1])}]'
