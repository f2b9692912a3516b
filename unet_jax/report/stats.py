"""The report's statistics: the design-based t-test, Holm, TOST, power, cost curves.

The test (every comparison, every CI). A comparison of configurations A and B on one target
and training size has paired differences d = score_A - score_B per replicate r (a
pre-training, the seeds fine-tuned from it averaged; or a seed where the study pre-trained
once), outer fold f and lesion test image i (matched by image id). Its mean is tested with the
variance the study's design gives it (unet_jax.report.variance): a random-effects model with
a pre-training effect shared by every fold (and every target), a fold effect shared by every
replicate (the fold's split chooses every run's stopping step), their interaction (the run),
the image and image x run effects; images nested in the outer folds that test them, or
crossed with every run for an external set. Each component's variance comes from the
balanced ANOVA's mean squares (method of moments, truncated at 0), the variance of the mean
is their sum over their numbers of levels, and the t statistic has Satterthwaite's degrees of
freedom. With every component kept this is the crossed analysis of the pre-training x fold
table of run means; without folds, the crossed analysis of replicates x images; with one
replicate, the paired t over images.

What varies, and what the CI is about: test images (drawn from the same source as the test
set), folds (training subsets and validation splits) and replicates (pre-trainings where the
study made several; else seeds, and the answer is about that one pre-trained model).

Error rates, simulated with every source of variation of the outer-fold design
(tests/test_calibration.py, benchmarks/calibration_table.py): with 3 pre-trainings x 5 folds x
130 images the false-positive rate at 0.05 stays at or below 0.058 whatever the pre-training
and fold components; where a component is absent the test is conservative (0.010 with neither),
the price of allowing for it with 3 pre-trainings; at 0.002 a pre-training component 1.5x the
run's rejects at 0.008 with 3 pre-trainings and 0.002 with 5. The test it replaced (folds as
independent blocks, a pre-training counted once per fold) rejected at 0.28 there.

Two-sided p of "difference = 0", and a CI from the same t. Equivalence is claimed only from
a TOST (two one-sided t-tests) at a stated margin delta: p_TOST = max(P(T >= (est + delta) /
se), P(T <= (est - delta) / se)). The minimum detectable difference at 80% power is
(t_{1-alpha/2} + t_{0.8}) * se with the same df: a difference this large would have been
found 80% of the time at alpha 0.05 (before any adjustment). No p-value floor: any p is
reachable, so Holm's smallest threshold 0.05/m can always be met.

Interactions (does a gap differ between targets?): both targets fine-tune from the same
pre-trainings, so the difference of their gaps is paired by pre-training
(`difference_of_gaps`: the pre-training component of the difference from the pre-trainings'
differences); folds and images are each target's own. Without shared replicates, the two
tests are independent: V = V_1 + V_2 with the Welch-Satterthwaite df.

Holm's step-down method adjusts the secondary comparisons together (family-wise 0.05), once
for the difference tests and once for the equivalence tests. The primary endpoint is tested
apart, at 0.05, by fixed sequence: its hypotheses are tested in their declared order, each at
0.05 while every earlier one was rejected (family-wise 0.05 without dilution).
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import math

import numpy as np
from scipy import stats as scipy_stats

from unet_jax.report import variance
from unet_jax.report.plan import DEFAULT_MARGIN

ALPHA = 0.05
SIDES = ('first', 'second')  # the two sides of a difference of gaps, unless named
POWER = 0.8


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the report tests: the TOST margin (Dice)."""

    margin: float = DEFAULT_MARGIN


@dataclasses.dataclass(frozen=True)
class Test:
    """A mean (or a difference of means) with its standard error, t df, CI and p-values."""

    estimate: float
    se: float
    df: float
    num_replicates: int  # pre-trainings (or seeds); 0 for an interaction
    num_images: int
    margin: float = DEFAULT_MARGIN
    num_folds: int = 1
    layout: str = 'nested'  # images nested in folds; 'crossed': an external set; 'difference'
    # Estimated variance components (name, variance), as the design gives them.
    components: tuple[tuple[str, float], ...] = ()
    skewness: float = 0.0  # |skewness| of the replicate-averaged image differences, at most 2
    replicates: tuple = dataclasses.field(default=(), compare=False, repr=False)
    # The balanced ANOVA and the per-replicate means (pairing two targets' tests).
    anova: variance.Anova | None = dataclasses.field(default=None, compare=False, repr=False)
    row_means: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def defined(self) -> bool:
        return bool(np.isfinite(self.se) and self.se > 0 and np.isfinite(self.df) and self.df > 0)

    @property
    def low(self) -> float:
        return self._p_and_interval()[1]

    @property
    def high(self) -> float:
        return self._p_and_interval()[2]

    @property
    def t(self) -> float:
        return self.estimate / self.se if self.defined else math.nan

    @property
    def p(self) -> float:
        """Two-sided p of 'difference = 0'."""
        return self._p_and_interval()[0]

    def _p_and_interval(self) -> tuple[float, float, float]:
        if not self.defined:
            return math.nan, math.nan, math.nan
        p, low, high = t_p_and_interval(self.estimate, self.se, self.df)
        return float(p), float(low), float(high)

    @property
    def p_tost(self) -> float:
        """TOST p of 'the difference lies outside +-margin'."""
        if not self.defined:
            return math.nan
        above = scipy_stats.t.sf((self.estimate + self.margin) / self.se, self.df)
        below = scipy_stats.t.cdf((self.estimate - self.margin) / self.se, self.df)
        return float(max(above, below))

    @property
    def mdd(self) -> float:
        """Minimum detectable difference at 80% power, two-sided alpha 0.05."""
        if not self.defined:
            return math.nan
        quantiles = scipy_stats.t.ppf(1 - ALPHA / 2, self.df) + scipy_stats.t.ppf(POWER, self.df)
        return float(quantiles * self.se)

    @property
    def base(self) -> str:
        """'3 x 5 folds x 647' (replicates x folds x test images: what the test rests on)."""
        if not self.num_replicates:
            return f'{self.num_images} test images'
        folds = f' x {self.num_folds} folds' if self.num_folds > 1 else ''
        return f'{self.num_replicates}{folds} x {self.num_images}'

    def component_sds(self) -> str:
        """'pre-training 0.012, fold 0, run 0.040, image 0.129, residual 0.164' (SDs)."""
        return ', '.join(f'{name} {math.sqrt(max(v, 0.0)):.3g}' for name, v in self.components)


def design_test(
    x: np.ndarray,
    *,
    folds: Sequence | None = None,
    margin: float = DEFAULT_MARGIN,
    replicates: Sequence = (),
    replicate: str = 'pre-training',
) -> Test:
    """The mean of paired differences with the design's variance (module doc).

    x[replicate, image] with `folds`, the outer fold of each image column (None: one fold):
    images nested in folds. Or x[replicate, fold, image]: an external set, every run scoring
    every image (crossed). replicate: what a row is ('pre-training', or 'seed' where the
    study pre-trained once), the name of its component."""
    x = np.asarray(x, np.float64)
    if x.ndim not in (2, 3) or x.size == 0:
        raise ValueError(f'design_test: expected replicates x images (x folds), got {x.shape}.')
    if x.ndim == 2:
        labels = _fold_labels(x, folds)
        table, estimate = variance.nested_anova(x, labels), x.mean()
        num_folds, layout, rows = np.unique(labels).size, 'nested', x.mean(axis=-1)
    else:
        table, estimate = variance.anova(x, nested=False), x.mean()
        num_folds, layout, rows = x.shape[1], 'crossed', x.mean(axis=(-2, -1))
    moments = variance.mean_moments(table)
    if replicate != 'pre-training':
        moments.components[replicate] = moments.components.pop('pre-training', 0.0)
    return _test(
        float(estimate), moments, x.shape[0], x.shape[-1], margin, num_folds=num_folds,
        layout=layout, replicates=tuple(replicates), anova=table, row_means=rows,
        skewness=_skewness(x.mean(axis=0).ravel()),
    )  # fmt: skip


def _skewness(values: np.ndarray) -> float:
    if values.size < 3 or not values.std() > 0:
        return 0.0
    centred = values - values.mean()
    return float(min(2.0, abs(np.mean(centred**3)) / values.std() ** 3))


def design_moments(x: np.ndarray, folds: Sequence):
    """(mean, variance of the mean, Satterthwaite df) of x[..., replicate, image] with images
    nested in `folds`, batched over leading axes (for the calibration simulations)."""
    x = np.asarray(x, np.float64)
    moments = variance.mean_moments(variance.nested_anova(x, _fold_labels(x, folds)))
    return x.mean(axis=(-2, -1)), moments.variance, moments.df


def _fold_labels(x: np.ndarray, folds: Sequence | None) -> np.ndarray:
    labels = np.zeros(x.shape[-1], int) if folds is None else np.asarray(folds)
    if labels.shape != (x.shape[-1],):
        raise ValueError(f'design_test: {labels.shape[0]} fold labels for {x.shape[-1]} images.')
    return labels


# How the report lists components: by the first of these each name starts with.
COMPONENT_ORDER = (
    'pre-training', 'seed', 'fold', 'run', 'image', 'pre-training x', 'fold x', 'residual'
)


def _component_rank(name: str) -> int:
    return next((k for k, w in enumerate(COMPONENT_ORDER) if name.startswith(w)), 99)


def _test(estimate, moments: variance.Moments, num_replicates, num_images, margin, **fields):
    v, df = float(moments.variance), float(moments.df)
    se = math.sqrt(v) if np.isfinite(v) and v > 0 else math.nan
    found = moments.components
    components = tuple((n, float(found[n])) for n in sorted(found, key=_component_rank))
    return Test(estimate, se, df, num_replicates, num_images, margin, components=components,
                **fields)  # fmt: skip


def difference_of_gaps(
    a: Test, b: Test, *, margin: float | None = None, labels: tuple[str, str] = SIDES
) -> Test:
    """a - b for two tests on different test sets: paired by replicate where both rest on the
    same replicates (pre-trainings shared by two targets), else independent (Welch).
    labels: the two sides' names in the components ('fold (busi)')."""
    margin = a.margin if margin is None else margin
    shared = (
        a.anova is not None and b.anova is not None and len(a.replicates) > 1
        and a.replicates == b.replicates
    )  # fmt: skip
    if not shared:
        return unpaired_difference(a, b, margin=margin, labels=labels)
    moments = variance.paired_difference(a.anova, b.anova, a.row_means - b.row_means, labels)
    return _test(
        a.estimate - b.estimate, moments, a.num_replicates, a.num_images + b.num_images, margin,
        num_folds=max(a.num_folds, b.num_folds), layout='difference', replicates=a.replicates,
    )  # fmt: skip


def _satterthwaite(total: float, terms: Sequence[tuple[float, float]]) -> float:
    """Satterthwaite's df of a sum of scaled mean squares (terms: (value, df))."""
    if not np.isfinite(total) or total <= 0:
        return math.nan
    denominator = sum(value**2 / df for value, df in terms if df > 0 and value != 0)
    return float(total**2 / denominator) if denominator > 0 else math.nan


def t_p_and_interval(estimate, se, df):
    """Two-sided p and 95% CI of a t statistic estimate / se with df (arrays or floats)."""
    with np.errstate(divide='ignore', invalid='ignore'):
        p = 2 * scipy_stats.t.sf(np.abs(estimate / se), df)
        half = scipy_stats.t.ppf(1 - ALPHA / 2, df) * se
    return p, estimate - half, estimate + half


def unpaired_difference(
    a: Test, b: Test, *, margin: float | None = None, labels: tuple[str, str] = SIDES
) -> Test:
    """a - b for two tests on independent test sets (Welch-Satterthwaite df); labels: the
    two sides' names in the components."""
    total = a.se**2 + b.se**2
    df = _satterthwaite(total, [(a.se**2, a.df), (b.se**2, b.df)])
    components = tuple(
        (f'{n} ({label})', v) for label, t in zip(labels, (a, b)) for n, v in t.components
    )
    return Test(
        a.estimate - b.estimate, math.sqrt(total), df, 0, a.num_images + b.num_images,
        a.margin if margin is None else margin, layout='independent', components=components,
    )  # fmt: skip


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down; nan stays nan and is not counted)."""
    p = np.asarray(p_values, np.float64)
    valid = np.flatnonzero(np.isfinite(p))
    adjusted = np.full(p.shape, math.nan)
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind='stable')]):
        running = max(running, min(1.0, (valid.size - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def fixed_sequence(p_values: Sequence[float], alpha: float = ALPHA) -> list[str]:
    """Per hypothesis in declared order: 'rejected', 'not rejected' or 'not reached' (an
    earlier one was not rejected; or untestable, nan, which stops the sequence too)."""
    out, going = [], True
    for p in p_values:
        if not going:
            out.append('not reached')
        elif np.isfinite(p) and p < alpha:
            out.append('rejected')
        else:
            out.append('not rejected' if np.isfinite(p) else 'not reached')
            going = False
    return out


# ----------------------------------------------------------------------------- cost curves


def log_interpolation_weights(costs: Sequence[float], grid: Sequence[float]) -> np.ndarray:
    """W[g, k]: the value at cost grid[g], linear in log(cost) between the points `costs`.

    Dice at a budget is then W @ dice_k; the grid must lie inside [min(costs), max(costs)].
    """
    costs, grid = np.log(np.asarray(costs, np.float64)), np.log(np.asarray(grid, np.float64))
    if np.any(np.diff(costs) <= 0):
        raise ValueError('log_interpolation_weights: costs must increase strictly.')
    if grid.min() < costs[0] - 1e-9 or grid.max() > costs[-1] + 1e-9:
        raise ValueError('log_interpolation_weights: grid outside the range of the costs.')
    identity = np.eye(len(costs))
    return np.stack([np.interp(grid, costs, row) for row in identity], axis=1)


MIN_COMMON_RANGE = 2.0  # matched budget: the two directions' common cost range, high / low
MAX_UNMEASURED_SPAN = 10.0  # ... and no interpolation across more than a decade unmeasured


def common_log_grid(
    a: Sequence[float], b: Sequence[float], num: int = 16
) -> tuple[np.ndarray | None, str]:
    """(`num` costs evenly spaced in log on the overlap of two cost ranges, '') or (None,
    why not): the overlap must be at least MIN_COMMON_RANGE wide, and neither curve may
    interpolate across more than MAX_UNMEASURED_SPAN (high / low) between measured points
    inside it."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    low, high = max(a[0], b[0]), min(a[-1], b[-1])
    if not high >= low * MIN_COMMON_RANGE * (1 - 1e-9):
        width = high / low if high > 0 and low > 0 else 0.0
        return None, (
            f'the common cost range is {width:.2g}x wide (at least {MIN_COMMON_RANGE:g}x needed)'
            if width >= 1
            else 'the cost ranges do not overlap'
        )
    for costs in (a, b):
        inside = np.concatenate([[low], costs[(costs > low) & (costs < high)], [high]])
        span = float(np.max(inside[1:] / inside[:-1]))
        if span > MAX_UNMEASURED_SPAN:
            return None, (
                f'a curve would be interpolated across {span:.3g}x without a measured point '
                f'(at most {MAX_UNMEASURED_SPAN:g}x)'
            )
    return np.exp(np.linspace(math.log(low), math.log(high), num)), ''


def pareto_front(costs: Sequence[float], values: Sequence[float]) -> np.ndarray:
    """Indices of the points no cheaper-or-equal point beats, by increasing cost.

    A point is on the front when its value is higher than that of every point that costs at
    most as much (ties in cost: only the best of them).
    """
    costs, values = np.asarray(costs, np.float64), np.asarray(values, np.float64)
    order = np.lexsort((-values, costs))
    front, best = [], -math.inf
    for i in order:
        if np.isfinite(values[i]) and values[i] > best:
            front.append(i)
            best = values[i]
    return np.asarray(front, int)


# ----------------------------------------------------------------------------- convergence

LATE_FRACTION = 0.2  # the last 20% of a run's steps
CONVERGENCE_TOLERANCE = 0.005  # Dice


def still_improving(
    steps: Sequence[float],
    dice: Sequence[float],
    num_steps: float,
    *,
    late_fraction: float = LATE_FRACTION,
    tolerance: float = CONVERGENCE_TOLERANCE,
) -> tuple[bool | None, float]:
    """(flag, gain): the run's best validation Dice among evaluations after step
    (1 - late_fraction) * num_steps exceeds its best before by more than `tolerance`.

    gain is that difference; (None, nan) when either window holds no evaluation.
    """
    steps, dice = np.asarray(steps, np.float64), np.asarray(dice, np.float64)
    ok = np.isfinite(dice)
    steps, dice = steps[ok], dice[ok]
    cut = (1 - late_fraction) * num_steps
    late, early = dice[steps > cut], dice[steps <= cut]
    if not late.size or not early.size:
        return None, math.nan
    gain = float(late.max() - early.max())
    return gain > tolerance, gain
