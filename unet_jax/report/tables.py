"""The report's tables as plain cells (strings), rendered to Markdown and HTML alike.

Per target and size: test Dice per configuration (with the convergence flag), cost and time,
and every headline comparison. A missing value (an older results.json, one run) shows '-'.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses

import numpy as np
import pandas as pd

from unet_jax.report.analysis import TIME_PARTS, Analysis, Answer
from unet_jax.report.compare import COST_AXES, FULL, Comparison
from unet_jax.report.conclusions import cell_name, label, p_text
from unet_jax.report.load import Study


@dataclasses.dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ''


def fmt(value, digits: int = 3) -> str:
    try:
        ok = value is not None and np.isfinite(value)
    except TypeError:
        ok = False
    return f'{value:.{digits}f}' if ok else '-'


def _unit(value, unit: str, digits: int) -> str:
    text = fmt(value, digits)
    return text if text == '-' else text + unit


def _cells(study: Study, frame: pd.DataFrame) -> Iterator[tuple[str, int, pd.DataFrame]]:
    for target, num_train in study.cells:
        rows = frame[(frame['target'] == target) & (frame['num_train'] == num_train)]
        if len(rows):
            yield target, num_train, rows


def _name(row) -> str:
    return row['configuration'] + (f' (= {row["same_run_as"]})' if row['same_run_as'] else '')


def _seeds(row) -> str:
    if row['seeds_done'] > 1 and row['runs_done'] == 1:
        return f'1 run (all {row["seeds_done"]} seeds)'
    text = f'{row["seeds_done"]}/{row["seeds_total"]}'
    return text + (f' ({row["seeds_failed"]} failed)' if row['seeds_failed'] else '')


def _improving(row) -> str:
    if not row['convergence_known']:
        return '-'
    if not row['still_improving']:
        return 'no'
    return f'yes, {row["still_improving"]} of {row["convergence_known"]}'


# ----------------------------------------------------------------------------- the answer


def _share(value: float) -> str:
    return f'{value:.0%}' if np.isfinite(value) else '-'


def _difference(d) -> str:
    return f'{d.estimate:+.3f} [{d.interval.low:+.3f}, {d.interval.high:+.3f}]'


def _answer_row(answer: Answer) -> tuple[str, ...]:
    name = cell_name(answer.target, answer.num_train)
    if answer.best is None:
        return (name, 'no finished runs', '-', '-', '-', '-')
    best = f'{answer.best} ({answer.best_dice:.3f})'
    margin = (
        f'{answer.runner_up}: {_difference(answer.margin)}'
        if answer.margin is not None
        else (answer.runner_up or '-')
    )
    if answer.cheapest is None:
        cheapest, cost = f'- ({FULL} not finished)', '-'
    elif answer.cheapest == FULL:
        cheapest, cost = f'none cheaper than {FULL}', '-'
    else:
        c, d = answer.cheapest_cost, answer.cheapest_vs_full
        versus = f'; {_difference(d)} vs {FULL}' if d is not None else ''
        cheapest = f'{answer.cheapest} ({c["dice"]:.3f}{versus})'
        cost = f'{_share(c["trained_fraction"])} / {_share(c["train_flops"])}'
    return (name, best, margin, _share(answer.share_best), cheapest, cost)


def answer_table(analysis: Analysis) -> Table:
    rows = tuple(_answer_row(a) for a in analysis.answers)
    return Table(
        'Which configuration wins',
        (
            'target, size', 'best (test Dice)', 'next best: best - it [95% CI]',
            'best in resamples', f'cheapest within 1 point of {FULL}', 'its params / FLOPs vs full',
        ),
        rows,
        'Best: highest mean test Dice over seeds (lesion images); the difference to the next '
        'best is a paired hierarchical bootstrap, not corrected for picking the best; "best in '
        'resamples": share of bootstrap resamples in which it ranks first. Cheapest within 1 '
        f'point: the lowest training cost (FLOPs, else trained parameters) whose Dice is at '
        f'least {FULL}\'s minus 0.01 and inside {FULL}\'s 95% CI, with its paired difference to '
        f'{FULL} [95% CI].',
    )  # fmt: skip


def _verdict_cell(c: Comparison) -> str:
    if c.difference is None:
        return 'not tested'
    text = {
        'a': f'{label(c.a)} better',
        'b': f'{label(c.b)} better',
        'equivalent': f'equivalent (+-{c.difference.margin:g})',
        'no evidence': 'no evidence',
        'untested': 'not tested',
    }[c.verdict]
    flag = ' (!)' if c.flagged else ''
    return f'{text}: {_difference(c.difference)}{flag}'


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
        d = next((c.difference for c in by_axis.values() if c.difference), None)
        base = f'{d.interval.num_seeds} x {d.interval.num_images}' if d else '-'
        cells = [_verdict_cell(by_axis[a]) if a in by_axis else '-' for a in COST_AXES]
        table_rows.append((*key, base, *cells))
    return Table(
        'Which direction wins at the same budget',
        ('target, size', 'depth order', 'A - B', 'seeds x images')
        + tuple(f'equal {v}' for v in COST_AXES.values()),
        tuple(table_rows),
        'Each direction\'s Dice interpolated linearly in log(cost) between its k points and '
        'averaged over 16 costs both reach; A - B with its 95% CI; a winner is named only where '
        'the Holm-adjusted bootstrap p < 0.05, "equivalent" only from the TOST. (!): some runs '
        'involved were still improving when training stopped.',
    )  # fmt: skip


# ----------------------------------------------------------------------------- per cell


def dice_tables(study: Study, analysis: Analysis) -> list[Table]:
    out = []
    for target, num_train, cell in _cells(study, analysis.summary):
        normal = bool((cell['num_normal'] > 0).any())
        columns = ['configuration', 'seeds', 'test Dice', '95% CI', 'IoU', 'HD95 (px)']
        columns += ['normal FP'] if normal else []
        columns += ['trained params', 'FLOPs vs full', 'still improving']
        rows = []
        for _, row in cell.iterrows():
            dice = fmt(row['dice_mean'])
            if np.isfinite(row['dice_std']):
                dice += f' +- {fmt(row["dice_std"])}'
            ci = (
                f'[{fmt(row["dice_ci_low"])}, {fmt(row["dice_ci_high"])}]'
                if np.isfinite(row['dice_ci_low'])
                else '-'
            )
            cells = [_name(row), _seeds(row), dice, ci, fmt(row['test_iou'])]
            cells.append(fmt(row['test_hd95'], 1))
            cells += [fmt(row['normal_fp_rate'], 2)] if normal else []
            cells.append(_unit(100 * row['trained_fraction'], '%', 2))
            cells.append(_unit(row['train_flops_vs_full'], 'x', 2))
            cells.append(_improving(row))
            rows.append(tuple(cells))
        lesion = fmt(cell['num_lesion'].max(), 0)
        note = (
            f'Test Dice over the {lesion} lesion test images: mean +- sd over seeds; 95% CI from '
            'the hierarchical bootstrap over seeds and images (none for a single run). '
            '"(= X)" trains the same units as X and shares its run.'
        )
        if normal:
            note += (
                f' Normal FP: share of the {fmt(cell["num_normal"].max(), 0)} normal test images '
                '(empty ground truth) with any predicted foreground; they are not in the Dice.'
            )
        out.append(
            Table(f'Test Dice: {cell_name(target, num_train)}', tuple(columns), tuple(rows), note)
        )
    return out


def time_tables(study: Study, analysis: Analysis) -> list[Table]:
    columns = ('configuration', 'trained params', 'training FLOPs', 'step ms')
    columns += tuple(p.removesuffix('_s') + ' s' for p in TIME_PARTS)
    out = []
    for target, num_train, cell in _cells(study, analysis.summary):
        cell = cell[cell['same_run_as'] == '']
        rows = []
        for _, row in cell.iterrows():
            params = row['trained_params']
            rows.append(
                (
                    row['configuration'],
                    f'{params:,.0f}' if np.isfinite(params) else '-',
                    f'{row["train_flops"]:.3g}' if np.isfinite(row['train_flops']) else '-',
                    fmt(1000 * row['step_time_s'], 1),
                    *(fmt(row[p], 1) for p in TIME_PARTS),
                )
            )
        note = (
            'Mean over seeds. compile: tracing and compiling; steps: the training steps; eval: '
            'validation and test scoring; checkpoint and write: saving; wall: all of it, '
            'summed over every process of a resumed run.'
        )
        if (cell['group_size'] > 1).any():
            note += " Some runs trained in groups of seeds: their times are the group's."
        out.append(
            Table(f'Cost and time: {cell_name(target, num_train)}', columns, tuple(rows), note)
        )
    return out


def _comparison_row(c: Comparison) -> tuple[str, ...]:
    d = c.difference
    verdict = {
        'a': f'{label(c.a)} better',
        'b': f'{label(c.b)} better',
        'equivalent': 'equivalent',
        'no evidence': 'no evidence',
        'untested': 'not tested',
    }[c.verdict]
    if c.flagged:
        verdict += ' (still improving runs)'
    if d is None:
        return (f'{label(c.a)} - {label(c.b)}', c.scope or '-', *['-'] * 6, verdict)
    t = d.t_test
    return (
        f'{label(c.a)} - {label(c.b)}',
        c.scope or '-',
        f'{d.interval.num_seeds} x {d.interval.num_images}',
        f'{d.estimate:+.3f} [{d.interval.low:+.3f}, {d.interval.high:+.3f}]',
        p_text(d.p),
        p_text(c.p_holm),
        p_text(c.p_tost_holm),
        f'{t.t:.2f} ({t.df}), {p_text(t.p)}' if np.isfinite(t.t) else '-',
        verdict,
    )


def comparison_tables(study: Study, analysis: Analysis) -> list[Table]:
    columns = (
        'A - B', 'scope', 'seeds x images', 'difference [95% CI]', 'p', 'p Holm',
        'TOST p Holm', 't (df), p', 'verdict',
    )  # fmt: skip
    out = []
    for target, num_train in study.cells:
        cell = [c for c in analysis.comparisons if (c.target, c.num_train) == (target, num_train)]
        if not cell:
            continue
        note = (
            'Paired by seed and test image; hierarchical bootstrap (seeds and images resampled, '
            f'{analysis.settings.resamples} resamples, seed {analysis.settings.seed}). p: '
            'bootstrap, two-sided; p Holm: Holm-adjusted over all headline comparisons of this '
            f'report; TOST: equivalence within +-{analysis.settings.margin:g} Dice, Holm-adjusted; '
            't: paired t-test over per-seed means (secondary).'
        )
        rows = tuple(_comparison_row(c) for c in cell)
        out.append(Table(f'Comparisons: {cell_name(target, num_train)}', columns, rows, note))
    return out
