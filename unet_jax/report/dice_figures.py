"""The figures of test Dice: against k or the trained units, against a cost (trained
parameters, FLOPs) with the Pareto front, the reference configurations' bars, and against the
training-set size. What they share (colours, panels, saving): unet_jax.report.figures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
import math
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from unet_jax import layout
from unet_jax.config import families
from unet_jax.report import stats  # noqa: E402
from unet_jax.report.analysis import Analysis
from unet_jax.report.contrasts import COST_AXES  # noqa: E402
from unet_jax.report.figures import (  # noqa: E402
    AUTO_COLORS,
    LINE_STYLES,
    MARKERS,
    REFERENCE_MARKERS,
    Figure,
    family_color,
    panel_figure,
    save,
    size_label,
    write_png,
)
from unet_jax.report.load import Study, family  # noqa: E402


def _log_axis(ax, values: Sequence[float], fmt: Callable[[float], str]) -> None:
    """Log x with labels at 1, 2, 5 x 10^n (at 10^n only over more than two decades)."""
    values = np.asarray([v for v in values if np.isfinite(v) and v > 0])
    ax.set_xscale('log')
    decades = np.log10(values.max() / values.min()) if values.size else 0
    subs = (1.0,) if decades > 2 else (1.0, 2.0, 5.0)
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=subs))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: fmt(v)))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _cell(summary: pd.DataFrame, target: str, num_train: int) -> pd.DataFrame:
    cell = summary[(summary['target'] == target) & (summary['num_train'] == num_train)]
    return cell[cell['dice_mean'].notna()]


def _row(summary: pd.DataFrame, target: str, num_train: int, name: str) -> pd.DataFrame:
    cell = _cell(summary, target, num_train)
    return cell[cell['configuration'] == name]


def _direction_lines(study: Study, cell: pd.DataFrame):
    """(label, style, rows) per direction x order x granularity present in the cell."""
    orders = list(study.plan.get('orders', []))
    granularities = list(study.plan.get('granularities', []))
    for name in [d for d in families.DIRECTIONS if d in study.plan['families']]:
        for order, granularity in study.orders():
            rows = cell[
                (cell['family'] == name)
                & (cell['order'] == order)
                & (cell['granularity'] == granularity)
            ]
            if rows.empty:
                continue
            style = dict(
                color=family_color(name),
                linestyle=LINE_STYLES[orders.index(order) % len(LINE_STYLES)],
                marker=MARKERS[granularities.index(granularity) % len(MARKERS)],
                markersize=4,
            )
            yield f'{family(name).label} ({order}, by {granularity})', style, rows


def _references(study: Study, cell: pd.DataFrame) -> pd.DataFrame:
    names = [r for r in families.REFERENCES if r in study.plan['families']]
    return cell[cell['family'].isin(names) & (cell['configuration'] == cell['family'])]


def _auto_points(ax, cell: pd.DataFrame, x: str = 'num_units') -> int:
    """The automatic picks as stars (k) and diamonds (soft) at the units they trained (or at
    their k, x='k'; soft picks have no k and are left out then)."""
    rows = cell[cell['family'] == families.AUTO]
    for criterion, found in rows.groupby(rows['configuration'].str.split('-').str[1]):
        for soft, marker in ((False, '*'), (True, 'D')):
            part = found[(found['k'] == 0) == soft]
            if len(part) and not (soft and x == 'k'):
                ax.plot(
                    part[x], part['dice_mean'], linestyle='none', marker=marker,
                    markersize=8 if marker == '*' else 5, color=AUTO_COLORS.get(criterion, 'k'),
                    label=f'auto: {criterion}' + (' (soft)' if soft else ' (k)'),
                )  # fmt: skip
    return len(rows)


# ----------------------------------------------------------------------------- Dice vs k


def dice_vs_units(study: Study, analysis: Analysis, folder: str) -> Figure | None:
    path = os.path.join(folder, 'dice_vs_units.png')

    by_block = set(study.plan.get('granularities') or ()) == {'block'}
    x = 'k' if by_block else 'num_units'  # a study by block is read in blocks

    def draw(ax, target, num_train):
        cell = _cell(analysis.summary, target, num_train)
        points, ks = 0, set()
        for label, style, rows in _direction_lines(study, cell):
            rows = rows.sort_values(x)
            ax.plot(rows[x], rows['dice_mean'], label=label, **style)
            if len(rows) == 1:  # one k: its CI as an error bar (a band needs two points)
                columns = ('dice_mean', 'dice_ci_low', 'dice_ci_high')
                mean, low, high = (rows[c].to_numpy() for c in columns)
                ax.errorbar(rows[x], mean, yerr=[mean - low, high - mean], color=style['color'],
                            capsize=4, linestyle='none')  # fmt: skip
            else:
                ax.fill_between(
                    rows[x], rows['dice_ci_low'], rows['dice_ci_high'],
                    color=style['color'], alpha=0.1, linewidth=0,
                )  # fmt: skip
            points += len(rows)
            ks |= {int(k) for k in rows[x]}
        if by_block and ks:
            ax.set_xticks(range(min(ks), max(ks) + 1))
            ax.set_xlim(min(ks) - 0.5, max(ks) + 0.5)
        for _, ref in _references(study, cell).iterrows():
            ax.axhline(
                ref['dice_mean'], color=family_color(ref['family']), linestyle=(0, (1, 2)),
                linewidth=1.2, label=f'{family(ref["family"]).label} (reference)',
            )  # fmt: skip
        points += _auto_points(ax, cell, x)
        ax.set_xlabel('k: number of tuned blocks' if by_block else 'number of trained units')
        ax.set_ylabel('test Dice (lesion images)')
        return points

    return panel_figure(
        study,
        draw,
        path,
        ('Test Dice against k, the number of blocks tuned (the first k from shallow to deep, '
         'or the last k from deep to shallow), each direction a line with a point per k; '
         'automatic picks (auto family) as stars at their k'
         if by_block else
         'Test Dice against the number of trained units, each direction in each depth order '
         '(line style) and granularity (marker); automatic picks (auto family) as stars (k) '
         'and diamonds (soft) at the number of units they trained')
        + '; bands: 95% CI of the design\'s test. The reference configurations have one value '
        'per panel and are drawn as dotted horizontal lines.',
    )


# ----------------------------------------------------------------------------- Dice vs cost


def dice_vs_cost(study: Study, analysis: Analysis, folder: str, axis: str) -> Figure | None:
    """Dice against a cost (log x): direction lines, references as points, the Pareto front."""
    path = os.path.join(
        folder, f'dice_vs_{"params" if axis == "trained_fraction" else "flops"}.png'
    )
    scale = 100.0 if axis == 'trained_fraction' else 1.0

    def draw(ax, target, num_train):
        cell = _cell(analysis.summary, target, num_train)
        priced = cell[cell[axis] > 0]
        for label, style, rows in _direction_lines(study, priced):
            rows = rows.sort_values(axis)
            ax.plot(rows[axis] * scale, rows['dice_mean'], label=label, **style)
        references = _references(study, cell)
        for i, (_, ref) in enumerate(references.iterrows()):
            label = f'{family(ref["family"]).label} (reference)'
            if ref[axis] > 0:
                ax.scatter(
                    ref[axis] * scale, ref['dice_mean'], s=70, zorder=5, label=label,
                    marker=REFERENCE_MARKERS[i % len(REFERENCE_MARKERS)],
                    color=family_color(ref['family']), edgecolor='k', linewidth=0.5,
                )  # fmt: skip
            elif np.isfinite(ref[axis]):  # no training cost: a line, not a point at log(0)
                ax.axhline(
                    ref['dice_mean'], color=family_color(ref['family']), linestyle=(0, (1, 2)),
                    label=f'{label}, no training',
                )  # fmt: skip
        unique = priced[(priced['same_run_as'] == '') & priced[axis].notna()]
        front = unique.iloc[stats.pareto_front(unique[axis], unique['dice_mean'])]
        if len(front) > 1:
            ax.step(
                front[axis] * scale, front['dice_mean'], where='post', color='k', alpha=0.35,
                linewidth=4, zorder=1, label='Pareto front (best Dice for its cost)',
            )  # fmt: skip
        _log_axis(
            ax,
            priced[axis] * scale,
            (lambda v: f'{v:g}%') if scale == 100 else (lambda v: f'{v:.0e}'.replace('e+', 'e')),
        )
        ax.set_xlabel(
            'trained parameters (% of the network)' if scale == 100 else 'training FLOPs (log)'
        )
        ax.set_ylabel('test Dice (lesion images)')
        return len(priced)

    return panel_figure(
        study,
        draw,
        path,
        f'Test Dice against {COST_AXES[axis]} (log scale): directions as lines (style: depth '
        'order, marker: granularity), reference configurations as large markers (one run '
        'without training cost as a dotted line), and the Pareto front: the best Dice '
        'reached for at most that cost.',
    )


# ----------------------------------------------------------------------------- references


def references(study: Study, analysis: Analysis, folder: str) -> Figure | None:
    """Bars of the reference configurations per cell; a single run has no error bar."""
    summary = analysis.summary
    names = [r for r in families.REFERENCES if r in study.plan['families']]
    if len(names) < 2 or summary.empty:
        return None
    path = os.path.join(folder, 'references.png')
    cells = study.cells
    fig, ax = plt.subplots(figsize=(max(6.5, 0.45 * len(names) * len(cells) + 1.5), 3.6))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        rows = [_row(summary, t, n, name) for t, n in cells]
        mean = np.array([r['dice_mean'].iloc[0] if len(r) else math.nan for r in rows])
        low = np.array([r['dice_ci_low'].iloc[0] if len(r) else math.nan for r in rows])
        high = np.array([r['dice_ci_high'].iloc[0] if len(r) else math.nan for r in rows])
        single = np.isnan(low) & np.isfinite(mean)
        x = np.arange(len(cells)) + (i - (len(names) - 1) / 2) * width
        ax.bar(
            x, mean, width, color=family_color(name), edgecolor='white',
            hatch=['//' if s else '' for s in single], label=family(name).label,
        )  # fmt: skip
        ok = np.isfinite(low)
        ax.errorbar(
            x[ok], mean[ok], yerr=np.stack([mean - low, high - mean])[:, ok], fmt='none',
            ecolor='k', capsize=3, linewidth=1,
        )  # fmt: skip
    ax.set_xticks(range(len(cells)), [f'{t}\n{size_label(n)}' for t, n in cells])
    ax.set_ylabel('test Dice (lesion images)')
    ax.set_ylim(0, 1)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=8, loc='center left', bbox_to_anchor=(1.0, 0.5))
    write_png(fig, path)
    return Figure(
        os.path.basename(path),
        'The reference configurations per target and size: mean test Dice over seeds with its '
        '95% hierarchical-bootstrap CI; hatched bars are a single run (no CI).',
        tuple(family(n).label for n in names),
    )


def dice_vs_size(study: Study, analysis: Analysis, folder: str) -> Figure | None:
    """Reference configurations against the training-set size (needs two sizes or more)."""
    sizes = study.sizes
    names = [r for r in families.REFERENCES if r in study.plan['families']]
    if len(sizes) < 2 or not names:
        return None
    path = os.path.join(folder, 'dice_vs_size.png')
    summary = analysis.summary
    fig, axes = plt.subplots(1, len(study.targets), figsize=(4.4 * len(study.targets), 3.3))
    for ax, target in zip(np.ravel(axes), study.targets):
        for name in names:
            rows = [_row(summary, target, n, name) for n in sizes]
            mean = [r['dice_mean'].iloc[0] if len(r) else math.nan for r in rows]
            ax.plot(
                range(len(sizes)),
                mean,
                marker='o',
                color=family_color(name),
                label=family(name).label,
            )
        ax.set_xticks(range(len(sizes)), [layout.size_name(n) for n in sizes])
        ax.set_xlabel('training images')
        ax.set_ylabel('test Dice (lesion images)')
        ax.set_title(study.title(target), fontsize=10)
        ax.grid(alpha=0.3)
    labels = save(fig, axes, path)
    plt.close(fig)
    return Figure(
        os.path.basename(path),
        'Test Dice of the reference configurations against the training-set size.',
        labels,
    )
