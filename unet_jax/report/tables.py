"""The report's tables as plain cells (strings), rendered to Markdown and HTML alike: the
`Table` record and `fmt`, and the tables per target and size.

Per target and size: test Dice per configuration (with the convergence flag), cost and time,
and every headline comparison. A missing value (an older results.json, one run) shows '-'.
The tables the page opens with (the answer, the primary endpoint, the directions at matched
cost): unet_jax.report.answer_tables.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import math

import numpy as np
import pandas as pd

from unet_jax.report.analysis import TIME_PARTS, Analysis
from unet_jax.report.compare import PRIMARY, Comparison
from unet_jax.report.conclusions import cell_title, named, p_text
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


def _name(cell: pd.DataFrame, row) -> str:
    same = row['same_run_as']
    return named(cell, row['configuration']) + (f' (= {named(cell, same)})' if same else '')


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


# ----------------------------------------------------------------------------- per cell


def _lesion_images(study: Study, target: str, num_train: int, cell: pd.DataFrame) -> float:
    """The lesion test images of a cell: every image of every outer fold (distinct ids), else
    the largest count a run recorded."""
    images = study.images
    if len(images) and 'lesion' in images:
        rows = images[(images['target'] == target) & (images['num_train'] == num_train)]
        rows = rows[rows['lesion'].astype(bool)]
        if len(rows):
            return float(rows['image_id'].nunique())
    return float(cell['num_lesion'].max())


def dice_tables(study: Study, analysis: Analysis) -> list[Table]:
    out = []
    for target, num_train, cell in _cells(study, analysis.summary):
        normal = bool((cell['num_normal'] > 0).any())
        columns = ['configuration', 'seeds', 'val Dice', 'test Dice', '95% CI', 'IoU', 'HD95 (px)']
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
            cells = [_name(cell, row), _seeds(row), fmt(row['val_dice_mean']), dice, ci]
            cells.append(fmt(row['test_iou']))
            cells.append(fmt(row['test_hd95'], 1))
            cells += [fmt(row['normal_fp_rate'], 2)] if normal else []
            cells.append(_unit(100 * row['trained_fraction'], '%', 2))
            cells.append(_unit(row['train_flops_vs_full'], 'x', 2))
            cells.append(_improving(row))
            rows.append(tuple(cells))
        lesion = fmt(_lesion_images(study, target, num_train, cell), 0)
        note = (
            f'Test Dice over the {lesion} lesion test images: mean +- sd over seeds; 95% CI of '
            "the mean from the design's t-test (none for a single run). "
            "Val Dice: mean over seeds of the best validation step's lesion Dice (what every "
            'choice in this report is made on). '
            '"(= X)" trains the same units as X and shares its run. summary.csv names each '
            'configuration as its run folders do (e.g. shallow_to_deep-forward-block-k4).'
        )
        if normal:
            note += (
                f' Normal FP: share of the {fmt(cell["num_normal"].max(), 0)} normal test images '
                '(empty ground truth) with any predicted foreground; they are not in the Dice.'
            )
        out.append(
            Table(
                f'Test Dice: {cell_title(study, target, num_train)}',
                tuple(columns),
                tuple(rows),
                note,
            )
        )
    return out


def time_tables(study: Study, analysis: Analysis) -> list[Table]:
    columns = ('configuration', 'trained params', 'steps (plateau/cap)', 'training FLOPs')
    columns += ('step ms',)
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
                    _steps(row),
                    f'{row["train_flops"]:.3g}' if np.isfinite(row['train_flops']) else '-',
                    fmt(1000 * row['step_time_s'], 1),
                    *(fmt(row[p], 1) for p in TIME_PARTS),
                )
            )
        note = (
            'Mean over seeds. steps: the mean steps trained, and how many runs stopped on a '
            'validation plateau / at the step cap (early stopping, config.early_stopping). '
            'compile: tracing and compiling; steps: the training steps; eval: '
            'validation and test scoring; checkpoint and write: saving; wall: all of it, '
            'summed over every process of a resumed run.'
        )
        if (cell['group_size'] > 1).any():
            note += " Some runs trained in groups of seeds: their times are the group's."
        out.append(
            Table(
                f'Cost and time: {cell_title(study, target, num_train)}', columns, tuple(rows), note
            )
        )
    return out


def pretraining_table(study: Study) -> Table | None:
    """Each pre-training's Dice on its own set's test split (None with fewer than two)."""
    frame = study.pretrainings()
    if len(frame) < 2:
        return None
    rows = tuple(
        (
            str(int(r.index)),
            '-' if r.seed != r.seed else str(int(r.seed)),
            r.data or '-',
            fmt(r.test_dice),
            '-' if not np.isfinite(r.num_test) else f'{r.num_test:.0f}',
        )
        for r in frame.itertuples()
    )
    note = (
        'Fine-tuning seed s starts from pre-training s mod R (R = study.pretrain_seeds), so '
        'the replicates of every comparison include the pre-training variance. Test Dice of '
        "each pre-training on its own set's test split (lesion / foreground images)."
    )
    return Table(
        'Pre-trainings', ('pre-training', 'seed', 'data', 'test Dice', 'test images'), rows, note
    )


def _steps(row) -> str:
    steps = row.get('steps_trained', math.nan)
    if not np.isfinite(steps):
        return '-'
    if not steps:
        return '0'
    return f'{steps:.0f} ({row.get("stopped_plateau", 0)}/{row.get("stopped_cap", 0)})'


def _comparison_row(c: Comparison) -> tuple[str, ...]:
    t = c.test
    verdict = c.definition.verdict_text(c)
    if c.flagged:
        verdict += ' (still improving runs)'
    name = c.definition.title(c)
    role = 'primary' if c.role == PRIMARY else 'secondary'
    if t is None or not t.defined:
        return (name, c.scope or '-', role, *['-'] * 6, verdict)
    adjusted = c.decision if c.role == PRIMARY else p_text(c.p_adjusted)
    return (
        name,
        c.scope or '-',
        role,
        t.base,
        f'{t.estimate:+.3f} [{t.low:+.3f}, {t.high:+.3f}]',
        f'{t.t:.2f} ({t.df:.1f})',
        p_text(t.p),
        adjusted,
        p_text(c.p_tost_adjusted) if c.role != PRIMARY else '-',
        f'{t.mdd:.3f}',
        verdict,
    )


def comparison_tables(study: Study, analysis: Analysis) -> list[Table]:
    columns = (
        'A - B', 'scope', 'role', 'replicates x images', 'difference [95% CI]', 't (df)', 'p',
        'p Holm (primary: fixed sequence)', 'TOST p Holm', 'detectable (80% power)', 'verdict',
    )  # fmt: skip
    note = (
        "Paired by pre-training (or seed), fold and test image; the design's t-test "
        '(pre-training, fold, run, image and residual random; Satterthwaite df); 95% CI not '
        'adjusted. Primary: the declared endpoint, fixed sequence at 0.05. '
        'Secondary: p Holm-adjusted over every secondary comparison of this report; TOST: '
        f'equivalence within +-{analysis.settings.margin:g} Dice, Holm-adjusted. Detectable: '
        'the difference found with 80% power at 0.05 (unadjusted) with this n. Interactions: '
        'the gap on one target minus the gap on another, paired by pre-training.'
    )
    out = []
    every = list(analysis.comparisons)
    for target, num_train in study.cells:
        cell = [
            c for c in every if (c.target, c.num_train) == (target, num_train) and not c.between
        ]  # fmt: skip
        if cell:
            rows = tuple(_comparison_row(c) for c in cell)
            out.append(
                Table(f'Comparisons: {cell_title(study, target, num_train)}', columns, rows, note)
            )
    between = [c for c in every if c.between]
    if between:
        rows = tuple(_comparison_row(c) for c in between)
        title = 'Comparisons between targets (interactions) and training sizes'
        out.append(Table(title, columns, rows, note))
    return out
