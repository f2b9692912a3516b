"""The kinds of comparison the report makes, each one `ComparisonKind` registered in `KINDS`.

A kind says what it compares (the contrasts it makes in a cell: which configurations A and B
average, with their weights) and how it reads: its scope, the words of its verdicts, its name
in the comparisons table, its hypothesis in the primary sentence, table and forest plot, the
base of its evidence line, its plain-words answer, and whether it is a difference of two gaps
(between targets or training sizes: tabled and concluded apart). The comparisons
(compare.Comparison, by its `kind` name), the conclusions, the tables and the forest plot ask
the kind; adding a kind is one entry in KINDS (docs/extending.md).

Within one cell (one target and training size), A - B:
  paths        tuning the contracting vs the expanding path;
  directions   two directions (families.DIRECTIONS) in one depth order and granularity,
               averaged over the k both ran (k where both train the same units left out);
  direction_k  the same pair at each k (where there is more than one);
  budget       the same pair averaged over a common cost range: each direction's Dice
               interpolated, linearly in log(cost), at 16 costs evenly spaced in log over the
               range both cover, for the trained-parameter fraction and for the training
               FLOPs; made only where that range is at least 2x wide and no curve is
               interpolated across more than a decade without a point;
  pretraining  full fine-tuning (from pre-training) vs training from scratch, and vs the
               pre-trained weights' matched scales;
  pair         any two other families (a primary endpoint that names them; no contrasts).
Differences of two gaps (compare.interaction and compare.size_change make them from the
gaps; no contrasts of their own):
  interaction  a gap on one target minus the same gap on another;
  size         a gap at one training size minus the same gap at a larger one (one target).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import dataclasses
import itertools

import numpy as np
import pandas as pd

from unet_jax.config import families
from unet_jax.report import stats
from unet_jax.report.load import Study, family

FULL, SCRATCH, MATCHED = 'full', 'scratch', 'matched'
PATH_PAIR = ('contracting', 'expanding')
COST_AXES = {'trained_fraction': 'trained-parameter fraction', 'train_flops': 'training FLOPs'}


def label(name: str) -> str:
    return family(name).label


def cost_text(axis: str, value: float) -> str:
    if not np.isfinite(value):
        return '-'
    if axis == 'trained_fraction':
        percent = 100 * value
        return f'{percent:.0f}%' if percent >= 10 else f'{percent:.2g}%'
    return f'{value:.2g} FLOPs'.replace('e+', 'e')


# ----------------------------------------------------------------------------- what is compared


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


def cell_contrasts(cell: Cell) -> list[Contrast]:
    """Every kind's contrasts of one cell, in report order: the kinds' in the order of KINDS,
    where the kinds that compare two directions (pair_contrasts) take their turn together, at
    the first of them, per depth order, granularity and pair."""
    out, walked = [], False
    for kind in KINDS.values():
        if kind.cell_contrasts is not None:
            out += kind.cell_contrasts(cell)
        if kind.pair_contrasts is not None and not walked:
            walked = True
            by_pair = [k.pair_contrasts for k in KINDS.values() if k.pair_contrasts is not None]
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


def _paths(cell: Cell) -> list[Contrast]:
    if not set(PATH_PAIR) <= cell.families:
        return []
    return [Contrast('paths', *PATH_PAIR, *PATH_PAIR, PATH_PAIR, {})]


def _directions(cell: Cell, pair: DirectionPair) -> list[Contrast]:
    return [directions_contrast(pair.a, pair.b, pair.pairs, pair.where)] if pair.pairs else []


def _per_k(cell: Cell, pair: DirectionPair) -> list[Contrast]:
    if len(pair.pairs) < 2:  # one k: the average is it
        return []
    return [
        Contrast('direction_k', pair.a, pair.b, ca, cb, (ca, cb), dict(ks=(k,), **pair.where))
        for k, ca, cb in pair.pairs
    ]


def _budget(cell: Cell, pair: DirectionPair) -> list[Contrast]:
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


def _pretraining(cell: Cell) -> list[Contrast]:
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


# ----------------------------------------------------------------------------- how it reads


def no_scope(c) -> str:
    return ''


def k_list(ks) -> str:
    """'1..4' for consecutive k, '1, 2, 4, 7' otherwise (a range would claim k it never ran)."""
    ks = [int(k) for k in ks]
    if len(ks) > 2 and ks == list(range(ks[0], ks[-1] + 1)):
        return f'{ks[0]}..{ks[-1]}'
    return ', '.join(str(k) for k in ks)


def over_k(c) -> str:
    """'forward order, by block, averaged over k = 1..4' (or 'k = 1, 2, 4, 7')."""
    return f'{c.where}, averaged over k = {k_list(c.ks)}'


def _at_k(c) -> str:
    return f'{c.where}, k = {c.ks[0]}'


def _over_costs(c) -> str:
    low, high = (cost_text(c.axis, v) for v in c.cost_range)
    return f'{c.where}, averaged over the common range [{low}, {high}] of {COST_AXES[c.axis]}'


def better(c) -> tuple[str, str]:
    """Verdicts 'a' and 'b' of a comparison within a cell: 'shallow->deep better'."""
    return f'{label(c.a)} better', f'{label(c.b)} better'


def larger(c) -> tuple[str, str]:
    """Verdicts 'a' and 'b' of a difference of gaps: 'larger on busi', 'larger with 20 images'."""
    at = c.definition.at
    return f'larger {at} {c.between[0]}', f'larger {at} {c.between[1]}'


def a_minus_b(c) -> str:
    return f'{label(c.a)} - {label(c.b)}'


def a_minus_b_gap(c) -> str:
    return f'the {label(c.a)} minus {label(c.b)} gap'


def gap_on_target(c) -> str:
    return f'the gap on {c.target}'


def cell_evidence(c) -> str:
    """n, what varies and the test behind a comparison within a cell."""
    t = c.test
    images = (
        f'{t.num_images} lesion test images'
        if t.num_images > 1
        else 'per-seed means (no per-image scores)'
    )
    replicates = f'{t.num_replicates} seed{"s" if t.num_replicates != 1 else ""}'
    if c.pretrain_runs > 1 and t.num_replicates < c.pretrain_runs:
        replicates = f'{t.num_replicates} of {c.pretrain_runs} pre-trainings'
    elif c.pretrain_runs > 1 and t.num_replicates == c.pretrain_runs:
        replicates = (
            f'{t.num_replicates} pre-trainings (seeds averaged within each)'
            if c.seeds_averaged
            else f'{t.num_replicates} seeds (each from its own pre-training)'
        )
    runs = (
        '1 pre-training run (the answer is about that pre-trained model)'
        if c.pretrain_runs <= 1
        else f'{c.pretrain_runs} pre-training runs'
    )
    folds = f' x {t.num_folds} outer folds' if t.num_folds > 1 else ''
    method = (
        f'paired t-test over test images, df = {t.df:.0f}'
        if t.num_replicates == 1 and t.num_folds == 1
        else f"the design's t-test (components, SD: {t.component_sds()}), Satterthwaite "
        f'df = {t.df:.1f}'
    )
    return (
        f'n = {replicates}{folds} x {images}, {runs}; paired by replicate, fold and image; {method}'
    )


def _plain_ci(t, *, reversed_: bool = False) -> str:
    """The 95% CI of the difference a sentence states: of B - A when it names B first."""
    low, high = (-t.high, -t.low) if reversed_ else (t.low, t.high)
    return f'95% CI {low:+.3f} to {high:+.3f}'


def within_plain(c, title: Callable[[str], str] = str) -> str:
    """A tested answer within a cell in plain words: which is better, by how much; `title`
    names a target as a person reads it (`Study.title`)."""
    a, b, t = label(c.a), label(c.b), c.test
    on = title(c.target)
    ci = _plain_ci(t)
    over = f' averaged over k = {", ".join(str(k) for k in c.ks)}' if c.ks else ''
    if c.verdict in ('a', 'b'):
        first, second = (a, b) if c.verdict == 'a' else (b, a)
        return (
            f'On {on} with {c.num_train} training images, {first} beats {second} by '
            f'{abs(t.estimate):.3f} Dice{over} ({_plain_ci(t, reversed_=c.verdict == "b")}).'
        )
    return (
        f'On {on} with {c.num_train} training images, the data cannot tell {a} from '
        f'{b}{over} (difference {t.estimate:+.3f} Dice, {ci}); this is no evidence of a '
        'difference, not evidence that they are equal.'
    )


def between_plain(c, title: Callable[[str], str] = str) -> str:
    """A tested difference of gaps in plain words (two targets by their `title`)."""
    a, b, t, at = label(c.a), label(c.b), c.test, c.definition.at
    ci = _plain_ci(t)
    first, second = map(title, c.between) if c.versus else c.between
    if c.verdict in ('a', 'b'):
        more, less = (first, second) if c.verdict == 'a' else (second, first)
        return (
            f'The advantage of {a} over {b} is {abs(t.estimate):.3f} Dice larger {at} '
            f'{more} than {at} {less} ({_plain_ci(t, reversed_=c.verdict == "b")}).'
        )
    return (
        f'Whether the advantage of {a} over {b} differs between {first} and {second} stays '
        f'open: difference {t.estimate:+.3f} Dice ({ci}).'
    )


def _between_targets(c) -> tuple[str, str]:
    return c.target, c.versus


def _interaction_scope(c) -> str:
    """The scope of the gap it compares ('paths': none; 'directions': over k)."""
    return KINDS[c.of].scope(c)


def _interaction_gap(c) -> str:
    return a_minus_b_gap(c) + (' (paths)' if c.of == 'paths' else '')


def _interaction_evidence(c) -> str:
    t = c.test
    pairing = (
        f'paired by the {t.num_replicates} pre-trainings both fine-tune from'
        if t.layout == 'difference'
        else 'unpaired (no shared pre-trainings), Welch-Satterthwaite'
    )
    return (
        f'two test sets ({c.target} and {c.versus}, {t.num_images} lesion test images in '
        f'all), each gap paired by pre-training, fold and image; the difference of the two '
        f'gaps {pairing}, df = {t.df:.1f}'
    )


def _between_sizes(c) -> tuple[str, str]:
    return f'{c.num_train} images', f'{c.larger} images'


def _size_evidence(c) -> str:
    t = c.test
    return (
        f'{t.num_replicates} pre-trainings x {t.num_folds} outer folds x {t.num_images} '
        f'lesion test images of {c.target}, scored by the runs of both sizes: the two gaps '
        "paired by pre-training, fold and image; the design's t-test (components, SD: "
        f'{t.component_sds()}), Satterthwaite df = {t.df:.1f}'
    )


# ----------------------------------------------------------------------------- the kinds


@dataclasses.dataclass(frozen=True)
class ComparisonKind:
    """One kind of comparison: what it compares and how the report words it. Every reading
    takes a compare.Comparison (not named in the annotations: compare imports this module);
    the defaults read a comparison within a cell."""

    name: str  # Comparison.kind and the `kind` column of comparisons.csv
    # what it compares: its contrasts of one cell (None: made elsewhere, see the module)
    cell_contrasts: Callable[[Cell], list[Contrast]] | None = None
    # ... or of one direction pair of a cell (every such kind's, pair by pair)
    pair_contrasts: Callable[[Cell, DirectionPair], list[Contrast]] | None = None
    between_targets: bool = False  # its gap is also compared between targets (interaction)
    by_k: bool = False  # concluded as one finding per pair over its k (per_k_finding)
    # how it reads
    scope: Callable[..., str] = no_scope  # beyond A and B: 'forward order, ...'
    named: Callable[[str], str] = label  # A or B in a finding's claim
    verdict_words: Callable[..., tuple[str, str]] = better  # verdicts 'a' and 'b'
    title: Callable[..., str] = a_minus_b  # its 'A - B' cell in the tables
    hypothesis: Callable[..., str] = gap_on_target  # primary sentence and table
    figure_label: Callable[..., str] = lambda c: f'gap on {c.target}'  # forest plot
    evidence: Callable[..., str] = cell_evidence  # n, design and test, before p
    plain: Callable[..., str] = within_plain  # a tested primary answer in words
    # a difference of two gaps: what the two gaps are of (None: a comparison within a cell),
    # the word before each ('larger on busi'), the gap in words, its conclusions section
    between: Callable[..., tuple[str, str]] | None = None
    at: str = 'on'
    gap: Callable[..., str] = a_minus_b_gap
    section: str = ''


def register(*kinds: ComparisonKind) -> dict[str, ComparisonKind]:
    return {k.name: k for k in kinds}


KINDS: dict[str, ComparisonKind] = register(
    ComparisonKind('paths', cell_contrasts=_paths, between_targets=True,
                   named=lambda name: f'tuning the {label(name)}'),
    ComparisonKind('directions', pair_contrasts=_directions, between_targets=True,
                   scope=over_k),
    ComparisonKind('direction_k', pair_contrasts=_per_k, by_k=True, scope=_at_k),
    ComparisonKind('budget', pair_contrasts=_budget, scope=_over_costs),
    ComparisonKind('pretraining', cell_contrasts=_pretraining),
    ComparisonKind(
        'interaction', scope=_interaction_scope, verdict_words=larger,
        title=lambda c: f'({a_minus_b(c)}) on {c.target} - on {c.versus}',
        hypothesis=lambda c: f'the gap on {c.target} minus the gap on {c.versus}',
        figure_label=lambda c: f'{c.target} - {c.versus}', evidence=_interaction_evidence,
        plain=between_plain, between=_between_targets, gap=_interaction_gap,
        section='Between targets (secondary interactions)',
    ),
    ComparisonKind(
        'size', scope=over_k, verdict_words=larger,
        title=lambda c: f'({a_minus_b(c)}) on {c.target}: {c.between[0]} - {c.between[1]}',
        hypothesis=lambda c: (
            f'the gap on {c.target} with {c.between[0]} minus with {c.between[1]}'
        ),
        figure_label=lambda c: f'{c.target}: n = {c.num_train} - n = {c.larger}',
        evidence=_size_evidence, plain=between_plain, between=_between_sizes, at='with',
        gap=lambda c: f'{a_minus_b_gap(c)} on {c.target}',
        section='Between training sizes (secondary)',
    ),
    ComparisonKind('pair'),
)  # fmt: skip
