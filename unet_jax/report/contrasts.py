"""What each kind of comparison compares: its contrasts, the arithmetic of A and B.

A `Contrast` names the configurations A and B average in one cell (a target and training
size), with their weights; compare.py tests it with the design's paired test. The kinds
(kinds.KINDS) name their contrast makers here:

  paths        tuning the contracting vs the expanding path;
  directions   two directions (families.DIRECTIONS) in one depth order and granularity,
               averaged over the k both ran (k where both train the same units left out);
  per_k        the same pair at each k (where there is more than one; kind 'direction_k');
  budget       the same pair averaged over a common cost range: each direction's Dice
               interpolated, linearly in log(cost), at 16 costs evenly spaced in log over the
               range both cover, for the trained-parameter fraction and for the training
               FLOPs; made only where that range is at least 2x wide and no curve is
               interpolated across more than a decade without a point;
  pretraining  full fine-tuning (from pre-training) vs training from scratch, and vs the
               pre-trained weights' matched scales.
Across studies of several pre-training sources (sources_compare.py), `gap_contrast` is one
study's shallow->deep minus deep->shallow gap in a cell, per k, and `k_sets` the sets of k its
gaps are averaged over.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import itertools

import pandas as pd

from unet_jax.config import families
from unet_jax.report import stats
from unet_jax.report.load import Study

FULL, SCRATCH, MATCHED = 'full', 'scratch', 'matched'
PATH_PAIR = ('contracting', 'expanding')
COST_AXES = {'trained_fraction': 'trained-parameter fraction', 'train_flops': 'training FLOPs'}
SHALLOW, DEEP = families.DIRECTIONS[:2]  # shallow_to_deep, deep_to_shallow
ALL_K, K_FROM_2 = 'all k', 'k >= 2'  # the sets of k a source's gap is averaged over


@dataclasses.dataclass(frozen=True)
class Contrast:
    """What one comparison averages: A's and B's configurations with their weights."""

    kind: str
    a: str
    b: str
    a_side: object
    b_side: object
    involved: tuple[str, ...]
    fields: dict


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A comparison the report does not make, and why."""

    target: str
    num_train: int
    what: str
    why: str


@dataclasses.dataclass(frozen=True)
class Cell:
    """One target and training size, as a kind makes its contrasts from it."""

    study: Study
    runs: pd.DataFrame  # the cell's rows of study.runs
    summary: pd.DataFrame  # the cell's rows of the report's summary
    skipped: list  # where a kind notes a comparison it does not make (Skipped)

    @property
    def target(self) -> str:
        return self.runs['target'].iloc[0]

    @property
    def num_train(self) -> int:
        return self.runs['num_train'].iloc[0]

    @property
    def families(self) -> set[str]:
        """The families the study ran."""
        return set(self.study.plan['families'])


@dataclasses.dataclass(frozen=True)
class DirectionPair:
    """Two directions in one depth order and granularity of a cell, with their k points."""

    a: str
    b: str
    order: str
    granularity: str
    points_a: pd.DataFrame
    points_b: pd.DataFrame
    pairs: list[tuple[int, str, str]]  # pairs_by_k

    @property
    def where(self) -> dict:
        return dict(order=self.order, granularity=self.granularity)


def direction_points(cell: pd.DataFrame, name: str, order: str, granularity: str):
    rows = cell[
        (cell['family'] == name) & (cell['order'] == order) & (cell['granularity'] == granularity)
    ]
    return rows.drop_duplicates('configuration').sort_values('k')


def pairs_by_k(pa: pd.DataFrame, pb: pd.DataFrame) -> list[tuple[int, str, str]]:
    """(k, configuration of a, of b) for every k both have, unless both train the same units."""
    units_b = {k: set(u.split()) for k, u in zip(pb['k'], pb['trained_units'])}
    name_b = dict(zip(pb['k'], pb['configuration']))
    return [
        (int(k), ca, name_b[k])
        for k, ca, units in zip(pa['k'], pa['configuration'], pa['trained_units'])
        if k in units_b and set(units.split()) != units_b[k]
    ]


def direction_pairs(cell: Cell) -> Iterator[DirectionPair]:
    """Every pair of the study's directions in each of its depth orders and granularities."""
    directions = [d for d in families.DIRECTIONS if d in cell.families]
    for order, granularity in cell.study.orders():
        for a, b in itertools.combinations(directions, 2):
            pa, pb = (direction_points(cell.runs, d, order, granularity) for d in (a, b))
            yield DirectionPair(a, b, order, granularity, pa, pb, pairs_by_k(pa, pb))


def cell_contrasts(cell: Cell, kinds) -> list[Contrast]:
    """Every kind's contrasts of one cell, in report order: the kinds' (kinds.KINDS.values())
    in their order, where the kinds that compare two directions (pair_contrasts) take their
    turn together, at the first of them, per depth order, granularity and pair."""
    out, walked = [], False
    for kind in kinds:
        if kind.cell_contrasts is not None:
            out += kind.cell_contrasts(cell)
        if kind.pair_contrasts is not None and not walked:
            walked = True
            by_pair = [k.pair_contrasts for k in kinds if k.pair_contrasts is not None]
            for pair in direction_pairs(cell):
                out += [c for make in by_pair for c in make(cell, pair)]
    return out


def directions_contrast(a: str, b: str, pairs, where: dict) -> Contrast:
    """a - b averaged over the k of `pairs` (pairs_by_k)."""
    weight = 1 / len(pairs)
    return Contrast(
        'directions', a, b,
        [(ca, weight) for _, ca, _ in pairs], [(cb, weight) for _, _, cb in pairs],
        tuple(n for _, ca, cb in pairs for n in (ca, cb)),
        dict(ks=tuple(k for k, _, _ in pairs), **where),
    )  # fmt: skip


def paths(cell: Cell) -> list[Contrast]:
    if not set(PATH_PAIR) <= cell.families:
        return []
    return [Contrast('paths', *PATH_PAIR, *PATH_PAIR, PATH_PAIR, {})]


def directions(cell: Cell, pair: DirectionPair) -> list[Contrast]:
    return [directions_contrast(pair.a, pair.b, pair.pairs, pair.where)] if pair.pairs else []


def per_k(cell: Cell, pair: DirectionPair) -> list[Contrast]:
    if len(pair.pairs) < 2:  # one k: the average is it
        return []
    return [
        Contrast('direction_k', pair.a, pair.b, ca, cb, (ca, cb), dict(ks=(k,), **pair.where))
        for k, ca, cb in pair.pairs
    ]


def budget(cell: Cell, pair: DirectionPair) -> list[Contrast]:
    out = []
    for axis in COST_AXES:
        sides, grid, why = _budget_sides(cell.summary, pair.points_a, pair.points_b, axis)
        if sides is None:
            if why:
                what = (
                    f'{pair.a} vs {pair.b} ({pair.order} order, by {pair.granularity}) over '
                    f'{COST_AXES[axis]}'
                )
                cell.skipped.append(Skipped(cell.target, cell.num_train, what, why))
            continue
        involved = tuple(n for side in sides for n, _ in side)
        fields = dict(axis=axis, cost_range=(grid[0], grid[-1]), **pair.where)
        out.append(Contrast('budget', pair.a, pair.b, *sides, involved, fields))
    return out


def pretraining(cell: Cell) -> list[Contrast]:
    # against matched: pre-trained features, or only their weight scales?
    return [
        Contrast('pretraining', FULL, other, FULL, other, (FULL, other), {})
        for other in (SCRATCH, MATCHED)
        if {FULL, other} <= cell.families
    ]


def _budget_sides(summary_cell, pa, pb, axis):
    """(each direction's weights on its k points so that weights @ Dice is its Dice averaged
    over a log-spaced grid of costs both reach, the grid, '') or (None, None, why not)."""
    curves = [_cost_curve(summary_cell, points, axis) for points in (pa, pb)]
    if not all(len(c) >= 2 for c in curves):
        return None, None, ''
    grid, why = stats.common_log_grid(curves[0][axis], curves[1][axis])
    if grid is None:
        return None, None, why
    sides = [
        list(zip(c['configuration'], stats.log_interpolation_weights(c[axis], grid).mean(0)))
        for c in curves
    ]
    return sides, grid, ''


def _cost_curve(summary_cell: pd.DataFrame, points: pd.DataFrame, axis: str) -> pd.DataFrame:
    """The direction's finished k points with a positive cost, by increasing cost."""
    rows = summary_cell[summary_cell['configuration'].isin(points['configuration'])]
    rows = rows[(rows[axis] > 0) & rows['dice_mean'].notna()].sort_values(axis)
    return rows.drop_duplicates(axis)


# ----------------------------------------------------------------------------- across sources


def gap_contrast(runs_cell: pd.DataFrame, order: str, granularity: str) -> Contrast | None:
    """shallow->deep minus deep->shallow of one study's cell (its rows of study.runs) in one
    depth order and granularity, averaged over the k both ran (`fields['ks']`; `involved`: each
    k's two configurations, in k order), or None without a k."""
    sides = [direction_points(runs_cell, d, order, granularity) for d in (SHALLOW, DEEP)]
    pairs = pairs_by_k(*sides)
    if not pairs:
        return None
    return directions_contrast(SHALLOW, DEEP, pairs, dict(order=order, granularity=granularity))


def k_sets(ks) -> list[tuple[str, list[int]]]:
    """(label, k averaged): every k, k >= 2 (when k = 1 is among others), each k alone (when
    there are several); a single k is its own set."""
    ks = sorted(ks)
    if len(ks) == 1:
        return [(f'k = {ks[0]} (the only k)', ks)]
    out = [(ALL_K, ks)]
    if 1 in ks:
        out.append((K_FROM_2, [k for k in ks if k >= 2]))
    return out + [(f'k = {k}', [k]) for k in ks]
