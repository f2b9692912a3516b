"""The headline comparisons of a study, Holm-adjusted together, and the paired score
matrices they rest on.

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
COST_AXES = {'trained_fraction': 'trained-parameter fraction', 'train_flops': 'training FLOPs'}


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
        return self.labelled(target, num_train, names)[2]

    def labelled(
        self, target: str, num_train: int, names: list[str]
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """(seeds, image ids, matrices) of `matrices`; empty matrices when there are none."""
        none = (np.array([]), np.array([]), [])
        keys = [(target, num_train, n) for n in names]
        if all(k in self._per_image for k in keys):
            found = [self._per_image[k] for k in keys]
        elif all(k in self._per_seed for k in keys):
            found = [self._per_seed[k] for k in keys]
        else:
            return none
        seeds = functools.reduce(np.intersect1d, [f[0] for f in found])
        images = functools.reduce(np.intersect1d, [f[1] for f in found])
        matrices = [
            m[np.ix_(np.searchsorted(s, seeds), np.searchsorted(i, images))] for s, i, m in found
        ]
        if not seeds.size or not images.size or any(np.isnan(m).any() for m in matrices):
            return none
        return seeds, images, matrices


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


# ----------------------------------------------------------------------------- comparisons


def compare(scores, target, num_train, a, b, settings) -> stats.Difference | None:
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
    study: Study, scores: Scores, summary: pd.DataFrame, settings: stats.Settings
) -> list[Comparison]:
    """Every headline comparison of every cell, Holm-adjusted together."""
    out = []
    for (target, num_train), cell in study.cell_runs():
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
        difference = compare(scores, target, num_train, a_side, b_side, settings)
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
