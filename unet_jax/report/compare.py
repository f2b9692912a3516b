"""The study's comparisons: the primary endpoint and the secondary comparisons (Holm-adjusted
together), each a test of a contrast on the paired score matrices of scores.py.

The primary endpoint (declared in the config before the study ran, `study.primary`, as
endpoint.primary_plan reads it): the shallow-vs-deep gap (shallow->deep minus deep->shallow
test Dice, averaged over k) at one training size on each ultrasound target, then each of those
gaps minus the X-ray target's gap (the target x direction interaction). Tested in that order by
fixed sequence at 0.05 (stats), apart from everything else.

The secondary comparisons of a cell (one target and training size) are every registered
kind's contrasts of it (kinds.KINDS: paths, directions over k and at each k, over a common
cost range, pre-training); and between targets (interactions, paired by pre-training: both
targets fine-tune from the same pre-trainings; stats.difference_of_gaps): the gap of every
kind that says so (paths, directions) of every ultrasound target against every X-ray target,
at each size.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import itertools
import math

import numpy as np
import pandas as pd

from unet_jax.config import families
from unet_jax.data import modalities
from unet_jax.report import kinds, stats
from unet_jax.report.contrasts import (
    PATH_PAIR,
    Cell,
    Contrast,
    Skipped,
    cell_contrasts,
    direction_points,
    directions_contrast,
    pairs_by_k,
)
from unet_jax.report.endpoint import PrimaryPlan, primary_plan, target_modality
from unet_jax.report.kinds import KINDS
from unet_jax.report.load import Study
from unet_jax.report.scores import Scores

PRIMARY, SECONDARY = 'primary', 'secondary'
ESTIMATE = 'estimate'  # a quantity shown with its CI, no hypothesis decided (source_gap)


@dataclasses.dataclass
class Comparison:
    """A - B in one cell (or, kind 'interaction', the A - B gap on `target` minus that on
    `versus`); `test` None when no replicate has both."""

    target: str
    num_train: int
    kind: str  # a name in kinds.KINDS: what it compares and how it reads (`definition`)
    a: str
    b: str
    test: stats.Test | None
    flagged: tuple[tuple[str, int, int], ...] = ()  # (configuration, runs still improving, of)
    pretrain_runs: int = 1
    order: str = ''
    granularity: str = ''
    ks: tuple[int, ...] = ()  # the k compared (one for 'direction_k')
    axis: str = ''  # 'budget': the cost axis (a key of contrasts.COST_AXES)
    cost_range: tuple[float, float] = (math.nan, math.nan)
    versus: str = ''  # 'interaction': the other target
    larger: int = 0  # 'size': the larger training size
    of: str = ''  # 'interaction': the kind of gap ('paths' or 'directions')
    role: str = SECONDARY
    p_adjusted: float = math.nan  # Holm (secondary); the raw p (primary, see `decision`)
    p_tost_adjusted: float = math.nan
    decision: str = ''  # primary: 'rejected', 'not rejected', 'not reached'
    seeds_averaged: bool = False  # several seeds share a pre-training: averaged within each
    # across pre-training sources (sources_compare): the source of a 'source_gap', the set of k
    # averaged ('all k', 'k >= 2', 'k = 3') and, for a difference of two tests, the two
    source: str = ''
    k_set: str = ''
    parts: tuple[stats.Test, stats.Test] | tuple[()] = ()

    @property
    def definition(self) -> kinds.ComparisonKind:
        """Its kind: what it compares and how it reads."""
        return kinds.KINDS[self.kind]

    @property
    def between(self) -> tuple[str, str] | None:
        """What a difference of two gaps compares: two targets ('interaction') or two
        training sizes of one target ('size'); None for a comparison within a cell."""
        between = self.definition.between
        return None if between is None else between(self)

    @property
    def where(self) -> str:
        """'forward order, by block' for direction comparisons, else ''."""
        return f'{self.order} order, by {self.granularity}' if self.order else ''

    @property
    def scope(self) -> str:
        """What is compared beyond the two names, e.g. 'forward order, by block, k = 3'."""
        return self.definition.scope(self)

    @property
    def significant(self) -> bool:
        if self.test is None or not np.isfinite(self.p_adjusted):
            return False
        if self.role == PRIMARY:
            return self.decision == 'rejected'
        return self.p_adjusted < stats.ALPHA

    @property
    def verdict(self) -> str:
        """'a', 'b' (the better one; for an interaction: the gap is larger on `target` / on
        `versus`), 'equivalent', 'no evidence', 'not reached' or 'untested'; '' for an
        estimate."""
        if self.role == ESTIMATE:
            return ''
        if self.test is None or not self.test.defined:
            return 'untested'
        if self.significant:
            return 'a' if self.test.estimate > 0 else 'b'
        if self.role == PRIMARY and self.decision == 'not reached':
            return 'not reached'
        if self.role == SECONDARY and self.p_tost_adjusted < stats.ALPHA:
            return 'equivalent'
        return 'no evidence'


# ----------------------------------------------------------------------------- tests


def compare(scores, target, num_train, a, b, settings) -> stats.Test | None:
    """a - b (configuration names, or lists of names averaged with weights (name, w))."""
    names, weights = _signed_terms(a, b)
    found = scores.labelled(target, num_train, names)
    if found is None:
        return None
    return found.test(_weighted(found.values, weights), settings.margin)


def mean_test(scores, target, num_train, name: str, settings) -> stats.Test | None:
    """The mean test Dice of one configuration with its CI (the design's test)."""
    found = scores.labelled(target, num_train, [name])
    return None if found is None else found.test(found.values[0], settings.margin)


def _signed_terms(a, b) -> tuple[list[str], list[float]]:
    """The configurations of a - b and their weights, a's positive and b's negative."""
    a_terms, b_terms = _terms(a), _terms(b)
    return [n for n, _ in a_terms + b_terms], [w for _, w in a_terms] + [-w for _, w in b_terms]


def _weighted(values, weights):
    """The weighted sum of aligned score arrays (a - b with `_signed_terms`' weights)."""
    return sum(w * m for w, m in zip(weights, values))


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


def _comparison(study, scores, cell, summary_cell, contrast: Contrast, settings) -> Comparison:
    target, num_train = cell['target'].iloc[0], cell['num_train'].iloc[0]
    return Comparison(
        target, num_train, contrast.kind, contrast.a, contrast.b,
        compare(scores, target, num_train, contrast.a_side, contrast.b_side, settings),
        _flagged(summary_cell, contrast.involved), scores.pretrain_runs, **contrast.fields,
        seeds_averaged=scores.seeds_averaged,
    )  # fmt: skip


def interaction(first: Comparison, second: Comparison, settings, kind='interaction'):
    """The gap of `first` (a - b on its target) minus the same gap on `second`'s target (kind
    'interaction'; 'source_target': a change of the gap between two sources)."""
    test = None
    if first.test is not None and second.test is not None:
        test = stats.difference_of_gaps(
            first.test, second.test, margin=settings.margin, labels=(first.target, second.target)
        )
    return Comparison(
        first.target, first.num_train, kind, first.a, first.b, test,
        first.flagged + second.flagged, first.pretrain_runs, first.order, first.granularity,
        first.ks, versus=second.target, of=first.kind, seeds_averaged=first.seeds_averaged,
        k_set=first.k_set, parts=(first.test, second.test),
    )  # fmt: skip


# ----------------------------------------------------------------------------- all of them


@dataclasses.dataclass
class Comparisons:
    primary: list[Comparison]
    primary_plan: PrimaryPlan | None
    secondary: list[Comparison]
    skipped: list[Skipped]

    def __iter__(self):
        return iter(self.primary + self.secondary)


def all_comparisons(
    study: Study, scores: Scores, summary: pd.DataFrame, settings: stats.Settings
) -> Comparisons:
    """The primary endpoint (fixed sequence) and every secondary comparison (Holm)."""
    skipped: list[Skipped] = []
    by_cell: dict[tuple[str, int], list[Comparison]] = {}
    for (target, num_train), cell in study.cell_runs():
        summary_cell = summary[(summary['target'] == target) & (summary['num_train'] == num_train)]
        by_cell[(target, num_train)] = [
            _comparison(study, scores, cell, summary_cell, c, settings)
            for c in cell_contrasts(Cell(study, cell, summary_cell, skipped), KINDS.values())
        ]
    plan = primary_plan(study)
    primary = _primary(study, scores, summary, plan, settings) if plan else []
    secondary = [c for cell in by_cell.values() for c in cell]
    secondary += _interactions(study, by_cell, settings)
    secondary = [c for c in secondary if not any(_same(c, p) for p in primary)]
    holm_adjust(secondary)
    return Comparisons(primary, plan, secondary, skipped)


def holm_adjust(comparisons: Sequence[Comparison]) -> None:
    """Sets every comparison's Holm-adjusted p (difference) and TOST p (equivalence), the
    comparisons adjusted together; one without a test counts as untested (nan)."""
    p = stats.holm([c.test.p if c.test else math.nan for c in comparisons])
    p_tost = stats.holm([c.test.p_tost if c.test else math.nan for c in comparisons])
    for c, adjusted, adjusted_tost in zip(comparisons, p, p_tost):
        c.p_adjusted, c.p_tost_adjusted = float(adjusted), float(adjusted_tost)


def _same(c: Comparison, p: Comparison) -> bool:
    """A secondary comparison that is the primary's own test (then it is not repeated)."""
    key = lambda x: (x.target, x.num_train, x.kind, x.a, x.b, x.order, x.granularity, x.versus)
    return key(c) == key(p)


def _gap_contrast(study, cell, a, b, ks=None) -> Contrast | None:
    """a - b averaged over k (directions: the first order and granularity; only the k in `ks`
    when given) or a - b."""
    if a in families.DIRECTIONS and b in families.DIRECTIONS and study.orders():
        order, granularity = study.orders()[0]
        pairs = pairs_by_k(
            direction_points(cell, a, order, granularity),
            direction_points(cell, b, order, granularity),
        )
        pairs = [p for p in pairs if ks is None or p[0] in ks]
        if not pairs:
            return None
        return directions_contrast(a, b, pairs, dict(order=order, granularity=granularity))
    return Contrast('paths' if (a, b) == PATH_PAIR else 'pair', a, b, a, b, (a, b), {})


def _cell(table: pd.DataFrame, target: str, num_train: int) -> pd.DataFrame:
    return table[(table['target'] == target) & (table['num_train'] == num_train)]


def _gap_comparison(study, scores, summary, target, num_train, a, b, settings):
    """a - b averaged over k (directions: the first order and granularity) or a - b."""
    cell = _cell(study.runs, target, num_train)
    contrast = None if cell.empty else _gap_contrast(study, cell, a, b)
    if contrast is None:
        return None
    return _comparison(study, scores, cell, _cell(summary, target, num_train), contrast, settings)


def size_change(study, scores, summary, target, plan: PrimaryPlan, settings):
    """The gap a - b at plan.num_train minus the gap at plan.larger on `target`, averaged over
    the k both sizes ran: both sizes test the same images with the same pre-trainings and
    folds, so the difference is paired by pre-training, fold and image (the design's test).
    None when a size lacks the runs."""
    small, large = (_cell(study.runs, target, n) for n in (plan.num_train, plan.larger))
    if small.empty or large.empty:
        return None
    at_large = _gap_contrast(study, large, plan.a, plan.b)
    ks = None if at_large is None else set(at_large.fields.get('ks', ()))
    at_small = None if at_large is None else _gap_contrast(study, small, plan.a, plan.b, ks)
    if at_small is None or at_small.fields.get('ks') != at_large.fields.get('ks'):
        return None
    names, weights = _signed_terms(at_small.a_side, at_small.b_side)
    found = [scores.labelled(target, n, names) for n in (plan.num_train, plan.larger)]
    test = None
    if all(f is not None for f in found):
        replicates = np.intersect1d(found[0].replicates, found[1].replicates)
        images = np.intersect1d(found[0].images, found[1].images)
        if replicates.size and images.size:
            first, second = (f.subset(replicates, images) for f in found)
            gaps = [_weighted(f.values, weights) for f in (first, second)]
            test = first.test(gaps[0] - gaps[1], settings.margin)
    involved = at_small.involved
    flagged = _flagged(_cell(summary, target, plan.num_train), involved) + _flagged(
        _cell(summary, target, plan.larger), involved
    )
    return Comparison(
        target, plan.num_train, 'size', plan.a, plan.b, test, flagged, scores.pretrain_runs,
        **at_small.fields, larger=plan.larger, seeds_averaged=scores.seeds_averaged,
    )  # fmt: skip


def _primary(study, scores, summary, plan: PrimaryPlan, settings) -> list[Comparison]:
    gaps = {
        t: _gap_comparison(study, scores, summary, t, plan.num_train, plan.a, plan.b, settings)
        for t in (*plan.targets, *([plan.versus] if plan.versus else []))
    }
    out = [gaps[t] for t in plan.targets if gaps[t] is not None]
    if plan.versus and gaps[plan.versus] is not None:
        out += [interaction(gaps[t], gaps[plan.versus], settings) for t in plan.targets if gaps[t]]
    if plan.larger:
        changes = (size_change(study, scores, summary, t, plan, settings) for t in plan.targets)
        out += [c for c in changes if c is not None]
    decisions = stats.fixed_sequence([c.test.p if c.test else math.nan for c in out])
    for c, decision in zip(out, decisions):
        c.role, c.decision = PRIMARY, decision
        c.p_adjusted = c.test.p if c.test else math.nan
    return out


def _interactions(study: Study, by_cell, settings) -> list[Comparison]:
    """The gaps of the kinds compared between targets (the paths gap and the directions gaps
    averaged over k) of every ultrasound target against every X-ray target, per size."""
    ultrasound = [t for t in study.targets if target_modality(study, t) == modalities.ULTRASOUND]
    xray = [t for t in study.targets if target_modality(study, t) == modalities.XRAY]
    out = []
    for num_train in study.sizes:
        for u, x in itertools.product(ultrasound, xray):
            for first in by_cell.get((u, num_train), []):
                if not first.definition.between_targets:
                    continue
                second = next(
                    (c for c in by_cell.get((x, num_train), []) if _same_gap(first, c)), None
                )
                if second is not None:
                    out.append(interaction(first, second, settings))
    return out


def _same_gap(first: Comparison, second: Comparison) -> bool:
    key = lambda c: (c.kind, c.a, c.b, c.order, c.granularity)
    return key(first) == key(second)
