"""The report's figures (PNG, matplotlib Agg), one panel per target and training size.

Colours come from the family's place in unet_jax.config.families, line styles from the depth order's
place in the plan, markers from the granularity's, so a new family, direction or order is
drawn without a change here. A panel with fewer than two points is not drawn (the caption
says so); a configuration with one value per panel (a reference) is a line or a marker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import json
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
from unet_jax.report.contrasts import COST_AXES, FULL  # noqa: E402
from unet_jax.report.load import Study, family  # noqa: E402

LINE_STYLES = ('-', '--', ':', '-.')
MARKERS = ('o', 's', '^', 'D', 'v', 'P')
REFERENCE_MARKERS = ('X', '*', 'P', 'h', 'p', 'd', '8', 's', 'v', '^')
GT_COLOR, PREDICTION_COLOR = '#00d000', '#ff3030'
# One colour per family of config/families.py (directions, references: table order), none shared.
DIRECTION_COLORS = (
    'tab:blue', 'tab:red', 'tab:cyan', 'tab:olive', 'tab:pink', 'sienna', 'slateblue',
    'darkorange', 'teal', 'navy',
)  # fmt: skip
AUTO_COLORS = {'rgn': 'tab:red', 'probe': 'tab:cyan'}
REFERENCE_COLORS = (
    '0.55', 'k', 'tab:green', 'tab:purple', 'tab:orange', 'tab:brown', 'gold', 'magenta',
    'darkcyan', 'yellowgreen',
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Figure:
    file: str
    caption: str
    labels: tuple[str, ...] = ()  # what it draws (its legend): the page's alt text


def family_color(name: str) -> str:
    """Directions in saturated colours, references in their own palette, by table position;
    a family past the end of its palette (one added to the table) gets a hue of its own."""
    for names, palette, offset in (
        (families.DIRECTIONS, DIRECTION_COLORS, 0.0),
        (families.REFERENCES, REFERENCE_COLORS, 0.5),
    ):
        if name in names:
            i = names.index(name)
            if i < len(palette):
                return palette[i]
            hue = (offset + 0.618034 * (i - len(palette))) % 1.0  # golden-ratio steps
            return matplotlib.colors.to_hex(matplotlib.colors.hsv_to_rgb((hue, 0.8, 0.75)))
    return '0.4'


def _size(num_train: int) -> str:
    return f'n = {layout.size_name(num_train)}'


def _grid(study: Study) -> tuple[int, int]:
    """Rows x columns of panels: targets by sizes, or the targets in a row for one size."""
    if len(study.sizes) > 1:
        return len(study.targets), len(study.sizes)
    cols = min(len(study.cells), 3)
    return math.ceil(len(study.cells) / cols), cols


def _panels(
    study: Study, draw: Callable, path: str, *, width=4.4, height=3.3
) -> tuple[list[str], tuple[str, ...]]:
    """Calls draw(ax, target, num_train) -> number of points, for each cell; hides panels with
    fewer than two; saves if any is left. Returns the hidden panels' titles and the legend."""
    rows, cols = _grid(study)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    hidden = []
    for ax in axes.ravel()[len(study.cells) :]:
        ax.set_visible(False)
    for (target, num_train), ax in zip(study.cells, axes.ravel()):
        ax.set_title(f'{study.title(target)}, {_size(num_train)}', fontsize=10)
        if draw(ax, target, num_train) < 2:
            ax.set_visible(False)
            hidden.append(f'{target}, {_size(num_train)}')
        ax.grid(alpha=0.3)
    labels = _save(fig, axes, path) if len(hidden) < len(study.cells) else ()
    plt.close(fig)
    return hidden, labels


def _log_axis(ax, values: Sequence[float], fmt: Callable[[float], str]) -> None:
    """Log x with labels at 1, 2, 5 x 10^n (at 10^n only over more than two decades)."""
    values = np.asarray([v for v in values if np.isfinite(v) and v > 0])
    ax.set_xscale('log')
    decades = np.log10(values.max() / values.min()) if values.size else 0
    subs = (1.0,) if decades > 2 else (1.0, 2.0, 5.0)
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=subs))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: fmt(v)))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _save(fig, axes, path: str) -> tuple[str, ...]:
    """One legend for all panels, right of them (any number of panels or lines fits)."""
    fig.tight_layout()
    seen = {}
    for ax in np.ravel(axes):
        if ax.get_visible():
            for handle, label in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(label, handle)
    if seen:
        fig.legend(
            list(seen.values()), list(seen), loc='center left', bbox_to_anchor=(1.0, 0.5),
            fontsize=8,
        )  # fmt: skip
    fig.savefig(path, dpi=110, bbox_inches='tight')
    return tuple(seen)


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


def _panel_figure(
    study: Study, draw: Callable, path: str, caption: str, **size: float
) -> Figure | None:
    """The figure of `_panels`, its caption naming the panels not drawn; None if none is."""
    hidden, labels = _panels(study, draw, path, **size)
    if len(hidden) == len(study.cells):
        return None
    return Figure(os.path.basename(path), caption + _hidden_note(hidden), labels)


def _hidden_note(hidden: Sequence[str]) -> str:
    if not hidden:
        return ''
    return f' Not drawn (fewer than two points): {"; ".join(hidden)}.'


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

    return _panel_figure(
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

    return _panel_figure(
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
    ax.set_xticks(range(len(cells)), [f'{t}\n{_size(n)}' for t, n in cells])
    ax.set_ylabel('test Dice (lesion images)')
    ax.set_ylim(0, 1)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=8, loc='center left', bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches='tight')
    plt.close(fig)
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
    labels = _save(fig, axes, path)
    plt.close(fig)
    return Figure(
        os.path.basename(path),
        'Test Dice of the reference configurations against the training-set size.',
        labels,
    )


# ----------------------------------------------------------------------------- curves


def validation_curves(study: Study, analysis: Analysis, folder: str) -> Figure | None:
    """Validation Dice during training of the reference configurations that train."""
    names = [r for r in families.REFERENCES if r in study.plan['families'] and family(r).trains]
    curves, runs = study.curves, study.runs
    if curves.empty or not names:
        return None
    path = os.path.join(folder, 'val_curves.png')

    def draw(ax, target, num_train):
        points, windows = 0, set()
        for name in names:
            rows = runs[
                (runs['target'] == target) & (runs['num_train'] == num_train)
                & (runs['configuration'] == name) & (runs['status'] == 'done')
            ]  # fmt: skip
            for _, run in rows.iterrows():
                curve = curves[curves['name'] == run['name']].sort_values('step')
                if len(curve) < 2:
                    continue
                color = family_color(name)
                ax.plot(
                    curve['step'], curve['dice'], color=color, linewidth=1, alpha=0.8,
                    label=family(name).label,
                )  # fmt: skip
                if run['still_improving'] is True:
                    ax.plot(
                        curve['step'].iloc[-1], curve['dice'].iloc[-1], marker='^', color=color,
                        markersize=8, markeredgecolor='k', linestyle='none',
                        label='run still improving at its end',
                    )  # fmt: skip
                windows.add(run['num_steps'])
                points += len(curve)
        for num_steps in windows - {math.nan}:
            if np.isfinite(num_steps):
                cut = (1 - stats.LATE_FRACTION) * num_steps
                ax.axvspan(cut, num_steps, color='0.5', alpha=0.12, linewidth=0)
        ax.set_xlabel('training step')
        ax.set_ylabel('validation Dice (lesion images)')
        return points

    return _panel_figure(
        study,
        draw,
        path,
        'Validation Dice during training, one line per seed. Shaded: the last '
        f"{stats.LATE_FRACTION:.0%} of each run's steps; a run whose best validation Dice "
        f'there beats its best before by more than {stats.CONVERGENCE_TOLERANCE} is flagged '
        '"still improving" (triangle at its end).',
        width=5.0,
    )


# ----------------------------------------------------------------------------- which layers change

# written into a run folder by unet_jax.representation_change
CKA_FILE = 'representation_change.json'


def _cka_records(study: Study, target: str, num_train: int) -> list[dict]:
    runs = study.runs
    rows = runs[
        (runs['target'] == target) & (runs['num_train'] == num_train) & (runs['family'] == FULL)
    ]
    records = []
    for directory in dict.fromkeys(rows['dir']):
        path = os.path.join(directory, CKA_FILE)
        if os.path.exists(path):
            with open(path) as f:
                records.append(json.load(f))
    return records


def representation_change(study: Study, analysis: Analysis, folder: str) -> Figure | None:
    """Per target and size, linear CKA (pre-trained vs fine-tuned) per unit of the `full` runs,
    mean over seeds, units in forward order; the weight change on a second axis."""
    del analysis
    path = os.path.join(folder, 'representation_change.png')

    def draw(ax, target, num_train):
        records = _cka_records(study, target, num_train)
        if not records:
            return 0
        names = [u['name'] for u in records[0]['units']]
        cka = np.array(
            [[np.nan if u['cka'] is None else u['cka'] for u in r['units']] for r in records]
        )
        change = np.array([[u['weight_change'] for u in r['units']] for r in records])
        x = np.arange(len(names))
        ax.plot(x, np.nanmean(cka, axis=0), marker='o', markersize=3, color='tab:blue',
                label='CKA pre-trained vs tuned')  # fmt: skip
        twin = ax.twinx()
        twin.plot(x, change.mean(axis=0), color='tab:orange', linestyle='--')
        # The shared legend reads the panel's own axes: a proxy line there names the twin's.
        ax.plot([], [], color='tab:orange', linestyle='--',
                label='relative weight change (right axis)')  # fmt: skip
        twin.set_ylabel('relative weight change', fontsize=8)
        ax.set_xticks(x, names, rotation=90, fontsize=6)
        ax.set_ylabel(f'linear CKA ({len(records)} run(s))')
        ax.set_ylim(0, 1.05)
        return len(names)

    return _panel_figure(
        study,
        draw,
        path,
        'Which layers full fine-tuning changed: per unit (forward order), linear CKA between '
        "the pre-trained and the fine-tuned model's outputs on test images (1 = unchanged up "
        'to rotation and scale; mean over seeds) and the relative weight change '
        "||w_tuned - w_pre|| / ||w_pre|| (dashed, right axis), from each run's "
        f'{CKA_FILE} (python -m unet_jax.representation_change).',
    )


def primary_endpoint(study: Study, analysis: Analysis, folder: str) -> Figure | None:
    """The primary endpoint as a forest plot: each gap and interaction with its 95% CI."""
    rows = [c for c in analysis.comparisons.primary if c.test is not None and c.test.defined]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(rows) + 1.4))
    names = []
    for y, c in enumerate(reversed(rows)):
        t = c.test
        color = 'tab:blue' if c.decision == 'rejected' else '0.45'
        ax.errorbar(t.estimate, y, xerr=[[t.estimate - t.low], [t.high - t.estimate]], fmt='o',
                    color=color, capsize=4)  # fmt: skip
        names.append(c.definition.figure_label(c))
        ax.annotate(f'{t.estimate:+.3f}  p = {t.p:.2g}  ({c.decision})', (t.high, y),
                    xytext=(6, 0), textcoords='offset points', va='center', fontsize=8)  # fmt: skip
    ax.axvline(0, color='k', lw=0.8)
    ax.set_yticks(range(len(rows)), names)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    low = min(c.test.low for c in rows)
    high = max(c.test.high for c in rows)
    span = max(high - low, 1e-3)
    ax.set_xlim(min(low, 0) - 0.05 * span, max(high, 0) + 0.55 * span)
    plan = analysis.comparisons.primary_plan
    gap = f'{family(plan.a).label} - {family(plan.b).label}'
    ax.set_xlabel(f'{gap}, test Dice (averaged over k), 95% CI')
    ax.set_title(f'Primary endpoint, {_size(plan.num_train)}', fontsize=10)
    path = os.path.join(folder, 'primary_endpoint.png')
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches='tight')
    plt.close(fig)
    return Figure(
        os.path.basename(path),
        f'The primary endpoint: the {gap} gap per target (paired by pre-training, fold and '
        'image; the design\'s t-test) and its difference between targets (interaction, paired '
        'by pre-training), each with its '
        '95% CI; blue: rejected in the fixed sequence at 0.05, grey: not rejected or not '
        'reached.',
        tuple(names),
    )
