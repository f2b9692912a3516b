"""The study's report: tables, statistics over seeds, plots, the qualitative figure, html.

`python -m unet_jax.report WORKDIR` (also run at the end of a study) reads WORKDIR/study.json
(the plan written by unet_jax.study) and every finished run's results.json, and writes
WORKDIR/report/: results.csv (one row per named point and seed), summary.csv and summary.md
(per target, size and configuration: mean, std and 95% CI over seeds), dice_vs_units.png,
dice_vs_size.png, contracting_vs_expanding.png, qualitative_<target>.png, conclusions.md and
a self-contained report.html (images embedded).

Statistics: the 95% CI of a mean over seeds uses the t distribution (n-1 degrees of freedom).
Comparisons pair two configurations by seed (same subset, same pre-training); the effect size
is the mean paired difference and Cohen's d_z = mean(diff) / sd(diff); p is the two-sided
paired t-test (Wilcoxon signed-rank as well when there are at least 6 pairs).
"""

import base64
from collections.abc import Sequence
import csv
import dataclasses
import html
import math
import os
import sys
from typing import Any

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from unet_jax.layout import ERROR_FILE, REPORT_DIR, read_plan, read_results  # noqa: E402

ALPHA = 0.05
MAIN_CONFIGURATIONS = ('scratch', 'pretrained', 'full', 'contracting', 'expanding')
REFERENCE_STYLE = {  # reference lines of the Dice-vs-units plot
    'scratch': dict(color='0.5', linestyle=':'),
    'pretrained': dict(color='k', linestyle=':'),
    'full': dict(color='tab:green', linestyle='-.'),
    'contracting': dict(color='tab:purple', linestyle='--'),
    'expanding': dict(color='tab:orange', linestyle='--'),
}
DIRECTION_COLOR = {'shallow_to_deep': 'tab:blue', 'deep_to_shallow': 'tab:red'}
ORDER_LINESTYLE = {'forward': '-', 'level': '--'}
GRANULARITY_MARKER = {'block': 'o', 'unit': '.'}
METRICS = ('dice', 'iou', 'hd95')


# ----------------------------------------------------------------------------- statistics


@dataclasses.dataclass(frozen=True)
class Summary:
    """Mean over seeds with sample std (ddof=1) and the t-based 95% CI; nan where n < 2."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if x.size < 2:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1)) * std / math.sqrt(x.size)
    return Summary(int(x.size), mean, std, mean - half, mean + half)


@dataclasses.dataclass(frozen=True)
class Paired:
    """a - b paired by seed. t, p, d_z are nan when no test is possible (n < 2, or sd = 0)."""

    n: int
    mean_diff: float
    sd_diff: float
    d_z: float
    t: float
    p: float
    p_wilcoxon: float


def paired_comparison(a: Sequence[float], b: Sequence[float]) -> Paired:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f'paired_comparison: {a.size} vs {b.size} values; pairs must match.')
    d = a - b
    n = int(d.size)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if n < 2:
        return Paired(n, mean, math.nan, math.nan, math.nan, math.nan, math.nan)
    sd = float(d.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):  # equal differences up to rounding: t undefined
        return Paired(n, mean, 0.0, math.nan, math.nan, math.nan, math.nan)
    t = mean / (sd / math.sqrt(n))
    p = float(2 * stats.t.sf(abs(t), n - 1))
    p_w = math.nan
    if n >= 6 and np.any(d != 0):
        p_w = float(stats.wilcoxon(a, b).pvalue)
    return Paired(n, mean, sd, mean / sd, float(t), p, p_w)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (nan stays nan): several k tested at once."""
    p = np.asarray(p_values, np.float64)
    valid = np.flatnonzero(np.isfinite(p))
    adjusted = np.full(p.shape, math.nan)
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind='stable')]):
        running = max(running, min(1.0, (valid.size - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


# ----------------------------------------------------------------------------- loading


def load_plan(workdir: str) -> dict[str, Any]:
    return read_plan(workdir)


def load_rows(workdir: str, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per named point; status 'done' (with metrics), 'failed' or 'pending'."""
    results: dict[str, Any] = {}
    rows = []
    for point in plan['points']:
        directory = os.path.join(workdir, point['dir'])
        if directory not in results:
            results[directory] = read_results(directory)
        res = results[directory]
        row = {
            key: point[key]
            for key in (
                'name',
                'index',
                'run',
                'target',
                'num_train',
                'seed',
                'family',
                'order',
                'granularity',
                'k',
            )
        }
        row['configuration'] = point['name'].rsplit('/', 1)[1]
        row['run_configuration'] = point['run'].rsplit('/', 1)[1]
        row['num_units'] = len(point['trained_units'])
        row['dir'] = directory
        if res is None:
            failed = os.path.exists(os.path.join(directory, ERROR_FILE))
            row['status'] = 'failed' if failed else 'pending'
        else:
            row['status'] = 'done'
            for split in ('val', 'test'):
                for metric in METRICS:
                    row[f'{split}_{metric}'] = _float(res[split].get(metric))
            row['trained_fraction'] = _float(res['params']['trained_fraction'])
            row['step_time_s'] = _float(res.get('step_time_s'))
            row['wall_time_s'] = _float(res.get('wall_time_s'))
            row['num_train_examples'] = res.get('num_train_examples')
        rows.append(row)
    return rows


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


# ----------------------------------------------------------------------------- tables


def configurations_in_order(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r['configuration'] for r in rows))


def group(rows, **where) -> list[dict[str, Any]]:
    return [r for r in rows if all(r[k] == v for k, v in where.items())]


def done_values(rows, metric: str, seeds: Sequence[int] | None = None) -> dict[int, float]:
    """seed -> value of the finished rows (the pairing key of comparisons)."""
    return {
        r['seed']: r[metric]
        for r in rows
        if r['status'] == 'done' and (seeds is None or r['seed'] in seeds)
    }


def summary_rows(rows: Sequence[dict[str, Any]], plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Per target, size and configuration: statistics over seeds."""
    out = []
    for target in plan['targets']:
        for num_train in plan['num_train']:
            sub = group(rows, target=target, num_train=num_train)
            for configuration in configurations_in_order(sub):
                cell = group(sub, configuration=configuration)
                done = [r for r in cell if r['status'] == 'done']
                dice = summarize([r['test_dice'] for r in done])
                runs = {r['run_configuration'] for r in cell}
                out.append(
                    dict(
                        target=target,
                        num_train=num_train,
                        configuration=configuration,
                        family=cell[0]['family'],
                        order=cell[0]['order'],
                        granularity=cell[0]['granularity'],
                        k=cell[0]['k'],
                        num_units=cell[0]['num_units'],
                        same_run_as=(
                            runs.pop() if len(runs) == 1 and configuration not in runs else ''
                        ),
                        seeds_done=len(done),
                        seeds_failed=sum(r['status'] == 'failed' for r in cell),
                        seeds_total=len(cell),
                        dice_mean=dice.mean,
                        dice_std=dice.std,
                        dice_ci_low=dice.ci_low,
                        dice_ci_high=dice.ci_high,
                        iou_mean=_nanmean(r['test_iou'] for r in done),
                        hd95_mean=_nanmean(r['test_hd95'] for r in done),
                        trained_fraction=_nanmean(r['trained_fraction'] for r in done),
                        step_time_ms=1000 * _nanmean(r['step_time_s'] for r in done),
                        wall_time_s=_nanmean(r['wall_time_s'] for r in done),
                    )
                )
    return out


def _nanmean(values) -> float:
    x = np.asarray([v for v in values if v is not None], np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def write_csv(path: str, rows: Sequence[dict[str, Any]]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=keys, restval='')
        writer.writeheader()
        writer.writerows(rows)


def _fmt(value: float, digits: int = 3) -> str:
    return '-' if value is None or not np.isfinite(value) else f'{value:.{digits}f}'


SUMMARY_COLUMNS = (
    'configuration',
    'seeds',
    'test Dice',
    '95% CI',
    'IoU',
    'HD95 (px)',
    'trained %',
    'step ms',
    'wall s',
)


def _summary_cells(s: dict[str, Any]) -> list[str]:
    name = s['configuration'] + (f' (= {s["same_run_as"]})' if s['same_run_as'] else '')
    seeds = f'{s["seeds_done"]}/{s["seeds_total"]}'
    if s['seeds_failed']:
        seeds += f' ({s["seeds_failed"]} failed)'
    dice = _fmt(s['dice_mean'])
    if np.isfinite(s['dice_std']):
        dice += f' ± {_fmt(s["dice_std"])}'
    ci = (
        f'[{_fmt(s["dice_ci_low"])}, {_fmt(s["dice_ci_high"])}]'
        if np.isfinite(s['dice_ci_low'])
        else '-'
    )
    return [
        name,
        seeds,
        dice,
        ci,
        _fmt(s['iou_mean']),
        _fmt(s['hd95_mean'], 1),
        _fmt(100 * s['trained_fraction'], 1),
        _fmt(s['step_time_ms'], 1),
        _fmt(s['wall_time_s'], 0),
    ]


def _table_groups(summary: Sequence[dict[str, Any]]):
    keys = list(dict.fromkeys((s['target'], s['num_train']) for s in summary))
    for target, num_train in keys:
        yield (
            target,
            num_train,
            [s for s in summary if s['target'] == target and s['num_train'] == num_train],
        )


def _size_label(num_train: int) -> str:
    return 'all' if num_train < 0 else str(num_train)


def markdown_tables(summary: Sequence[dict[str, Any]]) -> str:
    parts = []
    for target, num_train, cells in _table_groups(summary):
        parts.append(f'### {target}, n = {_size_label(num_train)} training images\n')
        parts.append('| ' + ' | '.join(SUMMARY_COLUMNS) + ' |')
        parts.append('|' + '---|' * len(SUMMARY_COLUMNS))
        parts.extend('| ' + ' | '.join(_summary_cells(s)) + ' |' for s in cells)
        parts.append('')
    return '\n'.join(parts)


# ----------------------------------------------------------------------------- conclusions


def _describe(label_a: str, label_b: str, c: Paired) -> str:
    """One sentence that claims no more than the paired comparison supports."""
    if c.n == 0:
        return f'{label_a} vs {label_b}: no seed has both results yet.'
    diff = f'{c.mean_diff:+.3f} Dice'
    if c.n < 2:
        return (
            f'{label_a} vs {label_b}: only one seed, so no test is possible '
            f'(observed difference {diff}).'
        )
    if c.sd_diff == 0:
        return (
            f'{label_a} vs {label_b}: identical difference {diff} on all {c.n} seeds; '
            'the t-test is undefined (no variation).'
        )
    p_text = f'paired t-test p = {c.p:.3g}'
    if np.isfinite(c.p_wilcoxon):
        p_text += f', Wilcoxon p = {c.p_wilcoxon:.3g}'
    if c.p < ALPHA:
        better, worse = (label_a, label_b) if c.mean_diff > 0 else (label_b, label_a)
        return (
            f'{better} beat {worse} by {abs(c.mean_diff):.3f} Dice (mean paired '
            f'difference; d_z = {abs(c.d_z):.2f}, {p_text}, {c.n} seeds).'
        )
    return (
        f'{label_a} vs {label_b}: no evidence of a difference (mean paired difference '
        f'{diff}, d_z = {c.d_z:.2f}, {p_text}, {c.n} seeds).'
    )


def compare(rows, a: dict[str, Any], b: dict[str, Any], metric: str = 'test_dice') -> Paired:
    va, vb = done_values(group(rows, **a), metric), done_values(group(rows, **b), metric)
    seeds = sorted(set(va) & set(vb))
    return paired_comparison([va[s] for s in seeds], [vb[s] for s in seeds])


def direction_comparison(rows, order: str, granularity: str) -> tuple[Paired, list, list]:
    """shallow_to_deep vs deep_to_shallow: over k = 1..N-1 averaged per seed, and at each k.

    k = N is left out (both directions train everything there).
    """
    where = dict(order=order, granularity=granularity)
    s2d = group(rows, family='shallow_to_deep', **where)
    d2s = group(rows, family='deep_to_shallow', **where)
    ks = sorted({r['k'] for r in s2d} & {r['k'] for r in d2s})[:-1]
    per_k, means_a, means_b = [], {}, {}
    for k in ks:
        va = done_values(group(s2d, k=k), 'test_dice')
        vb = done_values(group(d2s, k=k), 'test_dice')
        seeds = sorted(set(va) & set(vb))
        per_k.append((k, paired_comparison([va[s] for s in seeds], [vb[s] for s in seeds])))
        for s in seeds:
            means_a.setdefault(s, []).append(va[s])
            means_b.setdefault(s, []).append(vb[s])
    complete = [s for s in means_a if len(means_a[s]) == len(ks)]
    overall = paired_comparison(
        [np.mean(means_a[s]) for s in complete], [np.mean(means_b[s]) for s in complete]
    )
    adjusted = holm([c.p for _, c in per_k])
    return overall, per_k, adjusted


def conclusions(rows: Sequence[dict[str, Any]], plan: dict[str, Any]) -> list[str]:
    """Plain-language findings per target and size, each backed by a paired comparison."""
    lines = []
    families = set(plan['families'])
    for target in plan['targets']:
        for num_train in plan['num_train']:
            sub = group(rows, target=target, num_train=num_train)
            head = f'**{target}, n = {_size_label(num_train)}**: '
            if {'contracting', 'expanding'} <= families:
                c = compare(sub, dict(family='contracting'), dict(family='expanding'))
                lines.append(
                    head + _describe('tuning the contracting path', 'tuning the expanding path', c)
                )
            if {'shallow_to_deep', 'deep_to_shallow'} <= families:
                for order in plan['orders']:
                    for granularity in plan['granularities']:
                        overall, per_k, adjusted = direction_comparison(sub, order, granularity)
                        label = f'({order} order, by {granularity})'
                        lines.append(
                            head
                            + 'averaged over k, '
                            + _describe(f'shallow->deep {label}', f'deep->shallow {label}', overall)
                        )
                        wins = [
                            (k, c)
                            for (k, c), p in zip(per_k, adjusted)
                            if np.isfinite(p) and p < ALPHA
                        ]
                        tested = sum(np.isfinite(p) for p in adjusted)
                        if tested:
                            detail = ', '.join(
                                f'k={k}: {"shallow->deep" if c.mean_diff > 0 else "deep->shallow"}'
                                f' by {abs(c.mean_diff):.3f}'
                                for k, c in wins
                            )
                            lines.append(
                                head + f'per k {label}: {len(wins)} of {tested} tested values of k '
                                'differ after Holm correction' + (f' ({detail}).' if wins else '.')
                            )
            if {'full', 'scratch'} <= families:
                c = compare(sub, dict(family='full'), dict(family='scratch'))
                lines.append(
                    head
                    + _describe(
                        'fine-tuning everything from pre-training', 'training from scratch', c
                    )
                )
    return lines


# ----------------------------------------------------------------------------- plots


def _panel_grid(num_rows: int, num_cols: int, *, width=4.2, height=3.2):
    fig, axes = plt.subplots(
        num_rows, num_cols, figsize=(width * num_cols, height * num_rows), squeeze=False
    )
    return fig, axes


def plot_dice_vs_units(summary: Sequence[dict[str, Any]], plan: dict[str, Any], path: str) -> None:
    """Test Dice against the number of tuned units, both directions and orders, CI bands."""
    targets, sizes = list(plan['targets']), plan['num_train']
    fig, axes = _panel_grid(len(targets), len(sizes))
    for i, target in enumerate(targets):
        for j, num_train in enumerate(sizes):
            ax = axes[i][j]
            cells = [s for s in summary if s['target'] == target and s['num_train'] == num_train]
            for family, color in DIRECTION_COLOR.items():
                for order in plan['orders']:
                    for granularity in plan['granularities']:
                        line = sorted(
                            (
                                s
                                for s in cells
                                if s['family'] == family
                                and s['order'] == order
                                and s['granularity'] == granularity
                                and np.isfinite(s['dice_mean'])
                            ),
                            key=lambda s: s['num_units'],
                        )
                        if not line:
                            continue
                        x = [s['num_units'] for s in line]
                        ax.plot(
                            x,
                            [s['dice_mean'] for s in line],
                            color=color,
                            linestyle=ORDER_LINESTYLE[order],
                            marker=GRANULARITY_MARKER[granularity],
                            markersize=4,
                            label=f'{family.replace("_to_", "->")} ({order}, {granularity})',
                        )
                        ax.fill_between(
                            x,
                            [s['dice_ci_low'] for s in line],
                            [s['dice_ci_high'] for s in line],
                            color=color,
                            alpha=0.12,
                            linewidth=0,
                        )
            for family, style in REFERENCE_STYLE.items():
                ref = [s for s in cells if s['configuration'] == family]
                if ref and np.isfinite(ref[0]['dice_mean']):
                    ax.axhline(ref[0]['dice_mean'], label=family, linewidth=1, **style)
            if not cells or all(not np.isfinite(s['dice_mean']) for s in cells):
                ax.text(0.5, 0.5, 'no finished runs yet', ha='center', transform=ax.transAxes)
            ax.set_title(f'{target}, n = {_size_label(num_train)}')
            ax.set_xlabel('number of tuned units')
            ax.set_ylabel('test Dice')
            ax.grid(alpha=0.3)
    _save_with_legend(fig, axes, path)


def _save_with_legend(fig, axes, path: str) -> None:
    """One legend for all panels, right of them (any number of panels or lines fits)."""
    fig.tight_layout()
    handles, labels = _unique_legend(axes)
    if handles:
        fig.legend(handles, labels, loc='center left', bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches='tight')
    plt.close(fig)


def _unique_legend(axes):
    seen = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)


def plot_dice_vs_size(summary: Sequence[dict[str, Any]], plan: dict[str, Any], path: str) -> None:
    """Test Dice against the training-set size for the main configurations (95% CI bars)."""
    targets, sizes = list(plan['targets']), plan['num_train']
    fig, axes = _panel_grid(1, len(targets))
    for j, target in enumerate(targets):
        ax = axes[0][j]
        for family, style in REFERENCE_STYLE.items():
            cells = {
                s['num_train']: s
                for s in summary
                if s['target'] == target and s['configuration'] == family
            }
            if not cells:
                continue
            y = [cells[n]['dice_mean'] if n in cells else math.nan for n in sizes]
            err = [_half_ci(cells.get(n)) for n in sizes]
            ax.errorbar(
                range(len(sizes)),
                y,
                yerr=err,
                marker='o',
                capsize=3,
                label=family,
                color=style['color'],
            )
        ax.set_xticks(range(len(sizes)), [_size_label(n) for n in sizes])
        ax.set_xlabel('training images')
        ax.set_ylabel('test Dice')
        ax.set_title(target)
        ax.grid(alpha=0.3)
    _save_with_legend(fig, axes, path)


def _half_ci(cell: dict[str, Any] | None) -> float:
    if cell is None or not np.isfinite(cell['dice_ci_high']):
        return 0.0
    return cell['dice_ci_high'] - cell['dice_mean']


def plot_contracting_vs_expanding(summary: Sequence[dict[str, Any]], path: str) -> None:
    """Bars per target and size: pre-trained only, contracting, expanding, full (95% CI)."""
    configurations = ('pretrained', 'contracting', 'expanding', 'full')
    groups = list(dict.fromkeys((s['target'], s['num_train']) for s in summary))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.8 * len(groups)), 3.6))
    width = 0.8 / len(configurations)
    for i, configuration in enumerate(configurations):
        cells = [
            next(
                (
                    s
                    for s in summary
                    if (s['target'], s['num_train']) == g and s['configuration'] == configuration
                ),
                None,
            )
            for g in groups
        ]
        if all(c is None for c in cells):
            continue
        x = np.arange(len(groups)) + (i - (len(configurations) - 1) / 2) * width
        ax.bar(
            x,
            [c['dice_mean'] if c else math.nan for c in cells],
            width,
            yerr=[_half_ci(c) for c in cells],
            capsize=3,
            label=configuration,
            color=REFERENCE_STYLE[configuration]['color'],
        )
    ax.set_xticks(range(len(groups)), [f'{t}\nn = {_size_label(n)}' for t, n in groups])
    ax.set_ylabel('test Dice')
    ax.set_ylim(bottom=0)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=8, ncol=4, loc='lower center', bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


QUALITATIVE_COLUMNS = ('pretrained', 'expanding', 'contracting')


def plot_qualitative(
    rows: Sequence[dict[str, Any]], target: str, path: str, *, max_images: int = 4
) -> bool:
    """Image, ground truth and the pre-trained / tuned-expanding / tuned-contracting predictions
    for a few test images (smallest size, first seed that has all three). False if none has."""
    sizes = sorted(
        {r['num_train'] for r in rows if r['target'] == target},
        key=lambda n: math.inf if n < 0 else n,
    )
    for num_train in sizes:
        for seed in sorted({r['seed'] for r in rows}):
            found = {}
            for configuration in QUALITATIVE_COLUMNS:
                cell = group(
                    rows, target=target, num_train=num_train, seed=seed, configuration=configuration
                )
                npz = os.path.join(cell[0]['dir'], 'predictions.npz') if cell else ''
                if cell and cell[0]['status'] == 'done' and os.path.exists(npz):
                    found[configuration] = dict(np.load(npz))
            if len(found) == len(QUALITATIVE_COLUMNS):
                _draw_qualitative(
                    found, f'{target}, n = {_size_label(num_train)}, seed {seed}', path, max_images
                )
                return True
    return False


def _draw_qualitative(
    found: dict[str, dict[str, np.ndarray]], title: str, path: str, max_images: int
) -> None:
    reference = found[QUALITATIVE_COLUMNS[0]]
    count = min(max_images, len(reference['image']))
    columns = ('image', 'ground truth', 'pre-trained only', 'tuned expanding', 'tuned contracting')
    fig, axes = plt.subplots(
        count, len(columns), figsize=(2.1 * len(columns), 2.1 * count), squeeze=False
    )
    for i in range(count):
        mask = reference['mask'][i, ..., 0] > 0.5
        axes[i][0].imshow(reference['image'][i, ..., 0], cmap='gray')
        axes[i][1].imshow(mask, cmap='gray', vmin=0, vmax=1)
        for j, configuration in enumerate(QUALITATIVE_COLUMNS, start=2):
            prediction = found[configuration]['prob'][i, ..., 0] > 0.5
            axes[i][j].imshow(prediction, cmap='gray', vmin=0, vmax=1)
            axes[i][j].set_xlabel(f'Dice {_dice(prediction, mask):.2f}', fontsize=8)
        for j, name in enumerate(columns):
            axes[i][j].set_xticks([])
            axes[i][j].set_yticks([])
            if i == 0:
                axes[i][j].set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _dice(prediction: np.ndarray, mask: np.ndarray) -> float:
    total = prediction.sum() + mask.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(prediction, mask).sum() / total)


# ----------------------------------------------------------------------------- html


def _img_tag(path: str, alt: str) -> str:
    with open(path, 'rb') as f:
        data = base64.b64encode(f.read()).decode('ascii')
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html_tables(summary: Sequence[dict[str, Any]]) -> str:
    parts = []
    for target, num_train, cells in _table_groups(summary):
        parts.append(f'<h3>{html.escape(target)}, n = {_size_label(num_train)}</h3><table>')
        parts.append(
            '<tr>' + ''.join(f'<th>{html.escape(c)}</th>' for c in SUMMARY_COLUMNS) + '</tr>'
        )
        for s in cells:
            parts.append(
                '<tr>' + ''.join(f'<td>{html.escape(c)}</td>' for c in _summary_cells(s)) + '</tr>'
            )
        parts.append('</table>')
    return '\n'.join(parts)


def _markdown_bold_to_html(text: str) -> str:
    pieces = html.escape(text).split('**')
    return ''.join(f'<b>{p}</b>' if i % 2 else p for i, p in enumerate(pieces))


def write_html(
    path: str,
    *,
    workdir: str,
    status: str,
    findings: Sequence[str],
    summary: Sequence[dict[str, Any]],
    figures: Sequence[tuple[str, str]],
    problems: Sequence[str],
) -> None:
    body = [
        f'<h1>Layer-wise fine-tuning study</h1><p>{html.escape(workdir)}: {html.escape(status)}</p>'
    ]
    if problems:
        body.append(
            '<h2>Failed runs</h2><ul>'
            + ''.join(f'<li>{html.escape(p)}</li>' for p in problems)
            + '</ul>'
        )
    body.append(
        '<h2>Conclusions</h2><ul>'
        + ''.join(f'<li>{_markdown_bold_to_html(f)}</li>' for f in findings)
        + '</ul>'
    )
    body.append('<h2>Figures</h2>')
    for file, caption in figures:
        body.append(
            f'<figure>{_img_tag(os.path.join(os.path.dirname(path), file), caption)}'
            f'<figcaption>{html.escape(caption)}</figcaption></figure>'
        )
    body.append(
        '<h2>Tables</h2><p>Test Dice: mean ± std over seeds, 95% CI (t distribution). '
        'HD95 in pixels. "(= X)" marks a configuration that trains the same units as X '
        'and shares its run.</p>'
    )
    body.append(_html_tables(summary))
    style = (
        'body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}'
        'table{border-collapse:collapse;font-size:13px;margin-bottom:1em}'
        'td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}'
        'td:first-child{text-align:left}img{max-width:100%}'
    )
    text = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>unet_jax study report'
        f'</title><style>{style}</style></head><body>' + '\n'.join(body) + '</body></html>'
    )
    with open(path, 'w') as f:
        f.write(text)


# ----------------------------------------------------------------------------- the report


def write_report(workdir: str) -> str:
    """Writes WORKDIR/report/ from whatever has finished so far; returns report.html's path."""
    plan = load_plan(workdir)
    rows = load_rows(workdir, plan)
    out = os.path.join(workdir, REPORT_DIR)
    os.makedirs(out, exist_ok=True)
    summary = summary_rows(rows, plan)
    write_csv(os.path.join(out, 'results.csv'), rows)
    write_csv(os.path.join(out, 'summary.csv'), summary)
    findings = conclusions(rows, plan)
    runs = {r['run']: r['status'] for r in rows}
    counts = {s: sum(v == s for v in runs.values()) for s in ('done', 'failed', 'pending')}
    status = (
        f'{counts["done"]} of {len(runs)} runs finished, {counts["failed"]} failed, '
        f'{counts["pending"]} pending ({len(rows)} named points, duplicates included).'
    )
    problems = [
        f'{r["name"]}: failed (see {os.path.join(r["dir"], ERROR_FILE)})'
        for r in rows
        if r['status'] == 'failed' and not _is_alias(r)
    ]

    figures = [
        (
            'dice_vs_units.png',
            'Test Dice against the number of tuned units: '
            'shallow->deep (blue) and deep->shallow (red), forward order solid, level order '
            'dashed; bands are 95% CIs over seeds; horizontal lines are the reference '
            'configurations.',
        ),
        ('dice_vs_size.png', 'Test Dice against the training-set size (95% CI).'),
        (
            'contracting_vs_expanding.png',
            'Tuning the contracting vs the expanding path, '
            'with the pre-trained-only and fully tuned levels (95% CI).',
        ),
    ]
    plot_dice_vs_units(summary, plan, os.path.join(out, figures[0][0]))
    plot_dice_vs_size(summary, plan, os.path.join(out, figures[1][0]))
    plot_contracting_vs_expanding(summary, os.path.join(out, figures[2][0]))
    for target in plan['targets']:
        file = f'qualitative_{target}.png'
        if plot_qualitative(rows, target, os.path.join(out, file)):
            figures.append(
                (
                    file,
                    f'{target}: test images, ground truth and the predictions '
                    'of the pre-trained-only, tuned-expanding and tuned-contracting '
                    'networks (threshold 0.5; Dice per image).',
                )
            )

    markdown = ['# Layer-wise fine-tuning study', '', status, '']
    if problems:
        markdown += ['## Failed runs', ''] + [f'- {p}' for p in problems] + ['']
    markdown += ['## Conclusions', '']
    markdown += [f'- {f}' for f in findings]
    markdown += ['', '## Test Dice (mean ± std over seeds, 95% CI)', '', markdown_tables(summary)]
    markdown += ['## Figures', ''] + [f'![{c}]({f})' for f, c in figures]
    with open(os.path.join(out, 'summary.md'), 'w') as f:
        f.write('\n'.join(markdown) + '\n')
    with open(os.path.join(out, 'conclusions.md'), 'w') as f:
        f.write('\n'.join(f'- {x}' for x in findings) + '\n')
    path = os.path.join(out, 'report.html')
    write_html(
        path,
        workdir=workdir,
        status=status,
        findings=findings,
        summary=summary,
        figures=figures,
        problems=problems,
    )
    return path


def _is_alias(row: dict[str, Any]) -> bool:
    return row['run'] != row['name']


def main(argv: Sequence[str]) -> None:
    if len(argv) != 2:
        sys.exit('usage: python -m unet_jax.report WORKDIR   (a study workdir with study.json)')
    print(write_report(argv[1]))


if __name__ == '__main__':
    main(sys.argv)
