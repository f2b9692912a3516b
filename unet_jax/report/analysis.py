"""What the report concludes from the tidy tables: per-configuration summaries, the headline
comparisons (Holm-corrected together), directions at a matched budget, the answer per cell.

A cell is one target and training size. The headline comparisons of a cell:
  * tuning the contracting vs the expanding path;
  * every pair of directions (families.DIRECTIONS) in each depth order and granularity,
    averaged over k and at each k (k where both train the same units left out);
  * the same pairs at matched budgets: each direction's Dice interpolated, linearly in
    log(cost), at 16 costs evenly spaced in log over the range both cover, for the
    trained-parameter fraction and for the training FLOPs; the difference is averaged over
    the 16 costs (per seed and image, so the bootstrap pairs it like any other);
  * full fine-tuning (from pre-training) vs training from scratch.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import functools
import itertools
import math

import numpy as np
import pandas as pd

from unet_jax import families
from unet_jax.report import stats
from unet_jax.report.load import Study

FULL, SCRATCH = 'full', 'scratch'
PATH_PAIR = ('contracting', 'expanding')
WITHIN_FULL = 0.01  # "within 1 Dice point of full"
COST_AXES = {'trained_fraction': 'trained-parameter fraction', 'train_flops': 'training FLOPs'}
TIME_PARTS = ('compile_s', 'steps_s', 'eval_s', 'checkpoint_s', 'write_s', 'wall_s')


@dataclasses.dataclass(frozen=True)
class Settings:
    margin: float = stats.DEFAULT_MARGIN
    resamples: int = stats.DEFAULT_RESAMPLES
    seed: int = stats.DEFAULT_SEED


@dataclasses.dataclass
class Comparison:
    """A - B in one cell; `difference` None when no seed has both."""

    target: str
    num_train: int
    kind: str  # 'paths', 'directions' (over k), 'direction_k', 'budget', 'pretraining'
    a: str
    b: str
    difference: stats.Difference | None
    flagged: tuple[tuple[str, int, int], ...] = ()  # (configuration, runs still improving, of)
    pretrain_runs: int = 1
    order: str = ''
    granularity: str = ''
    ks: tuple[int, ...] = ()  # the k compared (one for 'direction_k')
    axis: str = ''  # 'budget': the cost axis (a key of COST_AXES)
    cost_range: tuple[float, float] = (math.nan, math.nan)
    p_holm: float = math.nan
    p_tost_holm: float = math.nan

    @property
    def where(self) -> str:
        """'forward order, by block' for direction comparisons, else ''."""
        return f'{self.order} order, by {self.granularity}' if self.order else ''

    @property
    def scope(self) -> str:
        """What is compared beyond the two names, e.g. 'forward order, by block, k = 3'."""
        if self.kind == 'direction_k':
            return f'{self.where}, k = {self.ks[0]}'
        if self.kind == 'directions':
            ks = f'{self.ks[0]}..{self.ks[-1]}' if len(self.ks) > 1 else str(self.ks[0])
            return f'{self.where}, averaged over k = {ks}'
        if self.kind == 'budget':
            low, high = (cost_text(self.axis, c) for c in self.cost_range)
            span = f' ({low} to {high})' if np.isfinite(self.cost_range[0]) else ''
            return f'{self.where}, at equal {COST_AXES[self.axis]}{span}'
        return ''

    @property
    def verdict(self) -> str:
        """'a', 'b' (the better one), 'equivalent', 'no evidence' or 'untested'."""
        if self.difference is None or not np.isfinite(self.p_holm):
            return 'untested'
        if self.p_holm < stats.ALPHA:
            return 'a' if self.difference.estimate > 0 else 'b'
        if self.p_tost_holm < stats.ALPHA:
            return 'equivalent'
        return 'no evidence'


def cost_text(axis: str, value: float) -> str:
    if not np.isfinite(value):
        return '-'
    if axis == 'trained_fraction':
        percent = 100 * value
        return f'{percent:.0f}%' if percent >= 10 else f'{percent:.2g}%'
    return f'{value:.2g} FLOPs'.replace('e+', 'e')


@dataclasses.dataclass
class Answer:
    """Per cell: the best configuration, its margin and rank stability, the cheapest near full."""

    target: str
    num_train: int
    best: str | None = None
    best_dice: float = math.nan
    runner_up: str | None = None
    margin: stats.Difference | None = None
    share_best: float = math.nan
    cheapest: str | None = None
    cheapest_vs_full: stats.Difference | None = None
    cheapest_cost: dict[str, float] = dataclasses.field(default_factory=dict)
    budget: list[Comparison] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Analysis:
    summary: pd.DataFrame
    comparisons: list[Comparison]
    answers: list[Answer]
    settings: Settings


# ----------------------------------------------------------------------------- score matrices


class Scores:
    """Lesion test Dice as seed x image matrices per (target, size, configuration)."""

    def __init__(self, study: Study):
        images = study.images
        lesion = images[images['lesion'].astype(bool)] if len(images) else images
        self._per_image = _matrices(lesion, 'image_id', 'dice')
        done = study.runs[study.runs['status'] == 'done'].assign(image_id='(mean)')
        self._per_seed = _matrices(done, 'image_id', 'test_dice')

    def matrices(self, target: str, num_train: int, names: list[str]) -> list[np.ndarray]:
        """The configurations' matrices on the seeds and images all of them have.

        Per-image scores where every one has them, else per-seed means (one column)."""
        keys = [(target, num_train, n) for n in names]
        if all(k in self._per_image for k in keys):
            found = [self._per_image[k] for k in keys]
        elif all(k in self._per_seed for k in keys):
            found = [self._per_seed[k] for k in keys]
        else:
            return []
        seeds = functools.reduce(np.intersect1d, [f[0] for f in found])
        images = functools.reduce(np.intersect1d, [f[1] for f in found])
        matrices = [
            m[np.ix_(np.searchsorted(s, seeds), np.searchsorted(i, images))] for s, i, m in found
        ]
        if not seeds.size or not images.size or any(np.isnan(m).any() for m in matrices):
            return []
        return matrices


def _matrices(table: pd.DataFrame, column: str, value: str) -> dict:
    """(target, size, configuration) -> (sorted seeds, sorted columns, seeds x columns)."""
    out = {}
    if table.empty:
        return out
    seeds, ids = table['seed'].to_numpy(), table[column].astype(str).to_numpy()
    values = table[value].to_numpy(float)
    for key, rows in table.groupby(['target', 'num_train', 'configuration']).indices.items():
        seed_values, seed_index = np.unique(seeds[rows], return_inverse=True)
        id_values, id_index = np.unique(ids[rows], return_inverse=True)
        matrix = np.full((seed_values.size, id_values.size), np.nan)
        matrix[seed_index, id_index] = values[rows]
        out[key] = (seed_values, id_values, matrix)
    return out


# ----------------------------------------------------------------------------- summary


def summarize(study: Study, scores: Scores, settings: Settings) -> pd.DataFrame:
    """One row per cell and configuration: Dice over seeds with its CI, costs, times, flags."""
    rows = []
    for (target, num_train), cell in _cells(study):
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
                pretrain_runs=max(1, done['pretrain_index'].nunique()),
            )
            row.update(_dice_over_seeds(done, scores, target, num_train, configuration, settings))
            for column in ('test_iou', 'test_hd95', 'normal_fp_rate', 'num_lesion', 'num_normal'):
                row[column] = done[column].mean()
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
    matrices = scores.matrices(target, num_train, [configuration])
    if matrices:
        interval = stats.bootstrap_interval(
            matrices[0], resamples=settings.resamples, seed=settings.seed
        )
        out.update(dice_ci_low=interval.low, dice_ci_high=interval.high)
        out['num_images'] = interval.num_images
    return out


def _cells(study: Study) -> Iterator[tuple[tuple[str, int], pd.DataFrame]]:
    runs = study.runs
    for target, num_train in study.cells:
        cell = runs[(runs['target'] == target) & (runs['num_train'] == num_train)]
        if len(cell):
            yield (target, num_train), cell


# ----------------------------------------------------------------------------- comparisons


def _compare(scores, target, num_train, a, b, settings) -> stats.Difference | None:
    """a - b (configuration names, or lists of names averaged with weights (name, w))."""
    a_terms, b_terms = _terms(a), _terms(b)
    names = [n for n, _ in a_terms + b_terms]
    matrices = scores.matrices(target, num_train, names)
    if not matrices:
        return None
    weights = [w for _, w in a_terms] + [-w for _, w in b_terms]
    d = sum(w * m for w, m in zip(weights, matrices))
    return stats.paired_difference(
        d, margin=settings.margin, resamples=settings.resamples, seed=settings.seed
    )


def _terms(side) -> list[tuple[str, float]]:
    return [(side, 1.0)] if isinstance(side, str) else list(side)


def _flagged(summary_cell: pd.DataFrame, names) -> tuple[tuple[str, int, int], ...]:
    """The configurations among `names` with a run still improving: (name, flagged, known)."""
    rows = summary_cell[summary_cell['configuration'].isin(list(names))]
    rows = rows[rows['still_improving'] > 0]
    return tuple(
        (r.configuration, int(r.still_improving), int(r.convergence_known))
        for r in rows.itertuples()
    )


def _direction_points(cell: pd.DataFrame, name: str, order: str, granularity: str):
    rows = cell[
        (cell['family'] == name) & (cell['order'] == order) & (cell['granularity'] == granularity)
    ]
    return rows.drop_duplicates('configuration').sort_values('k')


def headline_comparisons(
    study: Study, scores: Scores, summary: pd.DataFrame, settings: Settings
) -> list[Comparison]:
    """Every headline comparison of every cell, Holm-adjusted together."""
    out = []
    for (target, num_train), cell in _cells(study):
        summary_cell = summary[(summary['target'] == target) & (summary['num_train'] == num_train)]
        out += _cell_comparisons(study, scores, cell, summary_cell, settings)
    p = stats.holm([c.difference.p if c.difference else math.nan for c in out])
    p_tost = stats.holm([c.difference.p_tost if c.difference else math.nan for c in out])
    for c, adjusted, adjusted_tost in zip(out, p, p_tost):
        c.p_holm, c.p_tost_holm = float(adjusted), float(adjusted_tost)
    return out


def _cell_comparisons(study, scores, cell, summary_cell, settings) -> list[Comparison]:
    target, num_train = cell['target'].iloc[0], cell['num_train'].iloc[0]
    present = set(study.plan['families'])
    directions = [d for d in families.DIRECTIONS if d in present]
    pretrain_runs = int(summary_cell['pretrain_runs'].max())
    out = []

    def add(kind, a, b, a_side, b_side, involved, **fields):
        difference = _compare(scores, target, num_train, a_side, b_side, settings)
        flagged = _flagged(summary_cell, involved)
        out.append(
            Comparison(target, num_train, kind, a, b, difference, flagged, pretrain_runs, **fields)
        )

    if set(PATH_PAIR) <= present:
        add('paths', *PATH_PAIR, *PATH_PAIR, PATH_PAIR)
    for order, granularity in study.orders():
        where = dict(order=order, granularity=granularity)
        for a, b in itertools.combinations(directions, 2):
            pa, pb = (_direction_points(cell, d, order, granularity) for d in (a, b))
            pairs = _pairs_by_k(pa, pb)
            if pairs:
                weight = 1 / len(pairs)
                add(
                    'directions', a, b,
                    [(ca, weight) for _, ca, _ in pairs], [(cb, weight) for _, _, cb in pairs],
                    [n for _, ca, cb in pairs for n in (ca, cb)],
                    ks=tuple(k for k, _, _ in pairs), **where,
                )  # fmt: skip
            for k, ca, cb in pairs:
                add('direction_k', a, b, ca, cb, (ca, cb), ks=(k,), **where)
            for axis in COST_AXES:
                sides, grid = _budget_sides(summary_cell, pa, pb, axis)
                if sides is not None:
                    add(
                        'budget', a, b, *sides, [n for side in sides for n, _ in side],
                        axis=axis, cost_range=(grid[0], grid[-1]), **where,
                    )  # fmt: skip
    if {FULL, SCRATCH} <= present:
        add('pretraining', FULL, SCRATCH, FULL, SCRATCH, (FULL, SCRATCH))
    return out


def _pairs_by_k(pa: pd.DataFrame, pb: pd.DataFrame) -> list[tuple[int, str, str]]:
    """(k, configuration of a, of b) for every k both have, unless both train the same units."""
    units_b = {k: set(u.split()) for k, u in zip(pb['k'], pb['trained_units'])}
    name_b = dict(zip(pb['k'], pb['configuration']))
    return [
        (int(k), ca, name_b[k])
        for k, ca, units in zip(pa['k'], pa['configuration'], pa['trained_units'])
        if k in units_b and set(units.split()) != units_b[k]
    ]


def _budget_sides(summary_cell, pa, pb, axis):
    """Each direction's weights on its k points so that weights @ Dice is its Dice averaged
    over a log-spaced grid of costs both reach (linear in log(cost) between points)."""
    curves = [_cost_curve(summary_cell, points, axis) for points in (pa, pb)]
    if not all(len(c) >= 2 for c in curves):
        return None, None
    grid = stats.common_log_grid(curves[0][axis], curves[1][axis])
    if grid is None:
        return None, None
    sides = [
        list(zip(c['configuration'], stats.log_interpolation_weights(c[axis], grid).mean(0)))
        for c in curves
    ]
    return sides, grid


def _cost_curve(summary_cell: pd.DataFrame, points: pd.DataFrame, axis: str) -> pd.DataFrame:
    """The direction's finished k points with a positive cost, by increasing cost."""
    rows = summary_cell[summary_cell['configuration'].isin(points['configuration'])]
    rows = rows[(rows[axis] > 0) & rows['dice_mean'].notna()].sort_values(axis)
    return rows.drop_duplicates(axis)


# ----------------------------------------------------------------------------- the answer


def answers(
    study: Study, scores: Scores, summary: pd.DataFrame, comparisons, settings: Settings
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
            for c in comparisons
            if (c.target, c.num_train, c.kind) == (target, num_train, 'budget')
        ]
        out.append(answer)
        if cell.empty:
            continue
        runs = cell[(cell['same_run_as'] == '') | ~cell['same_run_as'].isin(cell['configuration'])]
        ranked = runs.sort_values('dice_mean', ascending=False)
        answer.best, answer.best_dice = ranked['configuration'].iloc[0], ranked['dice_mean'].iloc[0]
        if len(ranked) > 1:
            answer.runner_up = ranked['configuration'].iloc[1]
            answer.margin = _compare(
                scores, target, num_train, answer.best, answer.runner_up, settings
            )
            names = list(ranked['configuration'])
            matrices = scores.matrices(target, num_train, names)
            if matrices:
                x = np.stack(matrices)
                answer.share_best = float(
                    stats.share_ranked_first(x, resamples=settings.resamples, seed=settings.seed)[0]
                )
        _cheapest_near_full(answer, runs, scores, settings)
    return out


def _cheapest_near_full(answer: Answer, runs: pd.DataFrame, scores: Scores, settings) -> None:
    """The cheapest configuration within 1 Dice point of full (and inside full's 95% CI)."""
    full = runs[runs['configuration'] == FULL]
    if full.empty:
        return
    full = full.iloc[0]
    floor = full['dice_mean'] - WITHIN_FULL
    if np.isfinite(full['dice_ci_low']):
        floor = max(floor, full['dice_ci_low'])
    cost = 'train_flops' if runs['train_flops'].notna().all() else 'trained_fraction'
    near = runs[(runs['dice_mean'] >= floor) & runs[cost].notna()]
    near = near.sort_values([cost, 'dice_mean'], ascending=[True, False])
    if near.empty:
        return
    best = near.iloc[0]
    answer.cheapest = best['configuration']
    answer.cheapest_cost = {
        'trained_fraction': best['trained_fraction_vs_full'],
        'train_flops': best['train_flops_vs_full'],
        'dice': best['dice_mean'],
    }
    if answer.cheapest != FULL:
        answer.cheapest_vs_full = _compare(
            scores, answer.target, answer.num_train, answer.cheapest, FULL, settings
        )


def analyse(study: Study, settings: Settings | None = None) -> Analysis:
    settings = settings or Settings()
    scores = Scores(study)
    summary = summarize(study, scores, settings)
    if summary.empty:
        return Analysis(summary, [], [], settings)
    comparisons = headline_comparisons(study, scores, summary, settings)
    return Analysis(
        summary, comparisons, answers(study, scores, summary, comparisons, settings), settings
    )
