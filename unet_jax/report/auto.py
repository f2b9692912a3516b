"""The automatic layer choice against the sweep: per target and size, each `auto` point's Dice
gap to the sweep point chosen on validation among those that train as many blocks or units
(same k and granularity) and to the configuration of the sweep chosen on validation, and its
cost, probe included, relative to the sweep. The findings pick each criterion's k on
validation and test that pick on test against `full`, against the sweep's validation pick and
against the sweep's validation pick among the configurations that cost no more training FLOPs
than the automatic pick with its probe (matched cost).

The sweep here is every configuration of the cell that is neither `auto` nor `pretrained`, one
run each (its mean training FLOPs over seeds); the automatic point costs its own training and
its probe (cost.probe_flops of results.json). An alias (a point that shares another's run) is
counted once.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from unet_jax.config import families
from unet_jax.report.analysis import Analysis
from unet_jax.report.compare import compare
from unet_jax.report.conclusions import Finding, cell_title, ci_text, p_is
from unet_jax.report.contrasts import FULL
from unet_jax.report.load import Study
from unet_jax.report.tables import Table, fmt


def auto_rows(analysis: Analysis) -> pd.DataFrame:
    """One row per cell and auto configuration: Dice, gaps to the sweep, relative cost."""
    summary = analysis.summary
    if summary.empty or not (summary['family'] == families.AUTO).any():
        return pd.DataFrame()
    rows = []
    for (target, num_train), cell in summary.groupby(['target', 'num_train'], sort=False):
        sweep = cell[~cell['family'].isin([families.AUTO, 'pretrained'])]
        sweep = sweep[sweep['dice_mean'].notna()]
        counted = sweep[sweep['same_run_as'] == '']
        sweep_flops = counted['train_flops'].sum(min_count=len(counted)) or math.nan
        chosen = sweep[sweep['val_dice_mean'].notna()]
        best = chosen.loc[chosen['val_dice_mean'].idxmax()] if len(chosen) else None
        for _, row in cell[cell['family'] == families.AUTO].iterrows():
            same_k = sweep[
                sweep['family'].isin(families.DIRECTIONS)
                & (sweep['granularity'] == row['granularity'])
                & (sweep['k'] == row['k'])
            ]
            same_k = same_k[same_k['val_dice_mean'].notna()]
            best_k = same_k.loc[same_k['val_dice_mean'].idxmax()] if len(same_k) else None
            probe = row['probe_flops'] if np.isfinite(row['probe_flops']) else 0.0
            rows.append(
                dict(
                    target=target,
                    num_train=num_train,
                    configuration=row['configuration'],
                    criterion=row['configuration'].rsplit('-', 1)[0],
                    k=row['k'],
                    val_dice=row['val_dice_mean'],
                    num_units=row['num_units'],
                    dice=row['dice_mean'],
                    best_same_k=None if best_k is None else best_k['configuration'],
                    gap_same_k=_gap(row, best_k),
                    best=None if best is None else best['configuration'],
                    gap_best=_gap(row, best),
                    cost_flops=row['train_flops'] + probe,
                    cost_vs_sweep=(row['train_flops'] + probe) / sweep_flops,
                    probe_share=probe / (row['train_flops'] + probe),
                )
            )
    return pd.DataFrame(rows)


def _gap(row: pd.Series, other: pd.Series | None) -> float:
    """Dice of the auto point minus the other's (negative: the sweep's point is better)."""
    return math.nan if other is None else float(row['dice_mean'] - other['dice_mean'])


def findings(study: Study, analysis: Analysis, frame: pd.DataFrame) -> list:
    """Per cell and criterion: its k (or soft) chosen on validation, tested on test against
    full and against the sweep's validation pick (a report subject of Findings)."""
    out = []
    if frame.empty:
        return out
    scores, settings = analysis.scores, analysis.settings
    summary = analysis.summary
    groups = frame.groupby(['target', 'num_train', 'criterion'], sort=False)
    for (target, num_train, criterion), rows in groups:
        rows = rows[rows['val_dice'].notna()]
        if rows.empty:
            continue
        pick = rows.loc[rows['val_dice'].idxmax()]
        cell = summary[(summary['target'] == target) & (summary['num_train'] == num_train)]
        versus = [(FULL, 'full')]
        if pick['best'] not in (None, FULL):
            versus.append((pick['best'], "the sweep's validation pick"))
        matched = matched_cost_pick(cell, pick['cost_flops'])
        if matched is not None and matched not in [name for name, _ in versus]:
            versus.append((matched, "the sweep's validation pick at no more FLOPs"))
        parts, details = [], []
        for name, role in versus:
            test = compare(scores, target, num_train, pick['configuration'], name, settings)
            if test is None or not test.defined:
                continue
            parts.append(
                f'{test.estimate:+.3f} Dice vs {role} ({name}; 95% CI '
                f'{ci_text(test.low, test.high)})'
            )
            details.append(
                f'vs {name}: t = {test.t:.2f}, df = {test.df:.1f}, p {p_is(test.p)} '
                f'(unadjusted), detectable {test.mdd:.3f}'
            )
        flops = _flops_vs_full(cell, pick['configuration'])
        cost = (
            f", at {flops:.2f}x full's training FLOPs (probe included)"
            if np.isfinite(flops)
            else ''
        )
        out.append(
            Finding(
                f'{cell_title(study, target, num_train)}: {criterion} with k chosen on validation '
                f'({pick["configuration"]}, val Dice {pick["val_dice"]:.3f}){cost}: '
                + ('; '.join(parts) or 'not tested')
                + ' on test.',
                "The k (or soft) of each criterion and the sweep's configurations (the best, and "
                'the best at no more training FLOPs than the pick with its probe) are chosen on '
                'validation Dice, then compared on test, paired by pre-training, fold and image '
                "(the design's t-test, not adjusted: these lines are descriptive, outside the "
                'Holm family). ' + '; '.join(details) + '.',
            )
        )
    return [('Automatic layer choice (k chosen on validation)', out)] if out else []


def matched_cost_pick(cell: pd.DataFrame, flops: float) -> str | None:
    """The sweep configuration (neither auto nor pretrained) with the best validation Dice
    among those whose training FLOPs are at most `flops` (an automatic pick's training plus
    its probe): the fair opponent at matched cost. None when none is that cheap."""
    sweep = cell[~cell['family'].isin([families.AUTO, 'pretrained'])]
    sweep = sweep[sweep['val_dice_mean'].notna() & (sweep['train_flops'] <= flops * (1 + 1e-9))]
    if sweep.empty or not np.isfinite(flops):
        return None
    return str(sweep.loc[sweep['val_dice_mean'].idxmax()]['configuration'])


def _flops_vs_full(cell: pd.DataFrame, configuration: str) -> float:
    """Training FLOPs plus probe of a configuration over full's training FLOPs."""
    full = cell[cell['configuration'] == FULL]
    own = cell[cell['configuration'] == configuration]
    if full.empty or own.empty or not np.isfinite(full['train_flops'].iloc[0]):
        return math.nan
    probe = own['probe_flops'].iloc[0]
    probe = probe if np.isfinite(probe) else 0.0
    return float((own['train_flops'].iloc[0] + probe) / full['train_flops'].iloc[0])


def auto_tables(study: Study, analysis: Analysis) -> list[Table]:
    frame = auto_rows(analysis)
    out = []
    if frame.empty:
        return out
    for (target, num_train), cell in frame.groupby(['target', 'num_train'], sort=False):
        rows = tuple(
            (
                r['configuration'],
                fmt(r['num_units'], 0),
                fmt(r['val_dice']),
                fmt(r['dice']),
                f'{fmt(r["gap_same_k"])} ({r["best_same_k"] or "-"})',
                f'{fmt(r["gap_best"])} ({r["best"] or "-"})',
                fmt(r['cost_vs_sweep'], 3),
                _percent(r['probe_share']),
            )
            for _, r in cell.iterrows()
        )
        out.append(
            Table(
                f'Automatic choice vs the sweep: {cell_title(study, target, num_train)}',
                ('auto point', 'units', 'val Dice', 'test Dice', 'test gap to same k (val pick)',
                 'test gap to the sweep (val pick)', 'FLOPs vs sweep', 'probe share'),
                rows,
                'Test gap: test Dice of the auto point minus that of the sweep point chosen on '
                'validation among those that train as many blocks/units (a direction at the same '
                'k and granularity), and minus that of the sweep configuration chosen on '
                'validation; means over seeds, no CI (the findings test the validation picks). '
                'FLOPs vs sweep: its training '
                "plus its probe over all the sweep's runs of one seed (auto and pretrained "
                'excluded). Probe share: the probe in its own cost.',
            )
        )  # fmt: skip
    return out


def _percent(value: float) -> str:
    return '-' if not np.isfinite(value) else f'{100 * value:.1f}%'
