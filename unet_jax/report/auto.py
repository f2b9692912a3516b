"""The automatic layer choice against the sweep: per target and size, each `auto` point's Dice
gap to the best sweep point that trains as many blocks or units (same k and granularity) and to
the best configuration of the sweep, and its cost, probe included, relative to the sweep.

The sweep here is every configuration of the cell that is neither `auto` nor `pretrained`, one
run each (its mean training FLOPs over seeds); the automatic point costs its own training and
its probe (cost.probe_flops of results.json). An alias (a point that shares another's run) is
counted once.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from unet_jax import families
from unet_jax.report.analysis import Analysis
from unet_jax.report.conclusions import cell_name
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
        best = sweep.loc[sweep['dice_mean'].idxmax()] if len(sweep) else None
        for _, row in cell[cell['family'] == families.AUTO].iterrows():
            same_k = sweep[
                sweep['family'].isin(families.DIRECTIONS)
                & (sweep['granularity'] == row['granularity'])
                & (sweep['k'] == row['k'])
            ]
            best_k = same_k.loc[same_k['dice_mean'].idxmax()] if len(same_k) else None
            probe = row['probe_flops'] if np.isfinite(row['probe_flops']) else 0.0
            rows.append(
                dict(
                    target=target,
                    num_train=num_train,
                    configuration=row['configuration'],
                    k=row['k'],
                    num_units=row['num_units'],
                    dice=row['dice_mean'],
                    best_same_k=None if best_k is None else best_k['configuration'],
                    gap_same_k=_gap(row, best_k),
                    best=None if best is None else best['configuration'],
                    gap_best=_gap(row, best),
                    cost_vs_sweep=(row['train_flops'] + probe) / sweep_flops,
                    probe_share=probe / (row['train_flops'] + probe),
                )
            )
    return pd.DataFrame(rows)


def _gap(row: pd.Series, other: pd.Series | None) -> float:
    """Dice of the auto point minus the other's (negative: the sweep's point is better)."""
    return math.nan if other is None else float(row['dice_mean'] - other['dice_mean'])


def findings(frame: pd.DataFrame, margin: float = 0.01) -> list[tuple[str, list[str]]]:
    """Per cell, the best auto point against the sweep's best, in words (a report subject)."""
    out = []
    if frame.empty:
        return out
    for (target, num_train), cell in frame.groupby(['target', 'num_train'], sort=False):
        cell = cell[cell['dice'].notna()]
        if cell.empty:
            continue
        top = cell.loc[cell['dice'].idxmax()]
        within = 'within' if top['gap_best'] >= -margin else 'not within'
        cost = top['cost_vs_sweep']
        cheap = 'at most' if cost <= 0.2 else 'more than' if cost > 0.2 else 'unknown vs'
        out.append(
            f'{cell_name(target, num_train)}: the best automatic pick, {top["configuration"]} '
            f"(Dice {top['dice']:.3f}), is {top['gap_best']:+.3f} Dice from the sweep's best "
            f"({top['best']}), {within} {margin:g}, at {top['cost_vs_sweep']:.2f}x the sweep's "
            f'training FLOPs ({cheap} 1/5; probe included). Means over seeds, no CI: the gap '
            'is to the best of many configurations, which favours the sweep.'
        )
    return [('Automatic layer choice', out)] if out else []


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
                f'Automatic choice vs the sweep: {cell_name(target, num_train)}',
                ('auto point', 'units', 'test Dice', 'gap to best same k', 'gap to best',
                 'FLOPs vs sweep', 'probe share'),
                rows,
                'Gap: Dice of the auto point minus the best sweep point that trains as many '
                'blocks/units (a direction at the same k and granularity), and minus the best '
                'configuration of the sweep; means over seeds. FLOPs vs sweep: its training '
                "plus its probe over all the sweep's runs of one seed (auto and pretrained "
                'excluded). Probe share: the probe in its own cost.',
            )
        )  # fmt: skip
    return out


def _percent(value: float) -> str:
    return '-' if not np.isfinite(value) else f'{100 * value:.1f}%'
