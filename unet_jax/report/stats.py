"""The report's statistics: a crossed-design t-test, Holm, TOST, power, cost curves.

The test (every comparison, every CI). A comparison of configurations A and B on one target
and training size has a matrix of paired differences d[r, i] = score_A(r, i) - score_B(r, i)
over its replicates r (the seeds both finished; or, where the study pre-trained R times and
seeds share pre-trainings, the seeds averaged within each pre-training, so that r is a
pre-training) and its lesion test images i (matched by image id). Replicates and images are
crossed (every replicate is tested on every image), so d follows the two-way random-effects
model d = mu + a_r + b_i + e_ri, and the variance of the mean of d is

    V = s2_r / R + s2_i / I + s2_e / (R I),

estimated from the two-way ANOVA's mean squares (MS_r, MS_i, MS_e, method of moments, each
component truncated at 0) and referred to a t distribution with Satterthwaite's degrees of
freedom. When the replicates vary little this is the paired t over test images of the
differences averaged over replicates (df = I - 1); when they vary a lot, their spread enters
V with its own, small df. With one replicate it is exactly that paired t over images; with
one column (per-replicate means only) the t over replicates. Images tested in separate outer
folds (a different model per fold) are blocks: each block is its own crossed table, and the
blocks' means and variances are pooled by their numbers of images.

What varies, and what the CI is about: test images (drawn from the same source as the test
set) and replicates (seeds: initialisation, training subset, data order, augmentation; and
pre-trainings where the study made several). With one pre-training run the answer is about
that pre-trained model.

Error rates, simulated at the study's own sizes (tests/test_calibration.py and
benchmarks/calibration_table.py): false-positive rates at 0.05 and 0.002 and 95% CI
coverage within their binomial error of nominal at 3 seeds x 12 images and at 3 seeds x
5 outer folds x 130 images, and with skewed image effects. The earlier hierarchical
percentile bootstrap rejected 2x too often at 0.05 and 5x too often at 0.002 at 3 x 12.

Two-sided p of "difference = 0", and a CI from the same t. Equivalence is claimed only from
a TOST (two one-sided t-tests) at a stated margin delta: p_TOST = max(P(T >= (est + delta) /
se), P(T <= (est - delta) / se)). The minimum detectable difference at 80% power is
(t_{1-alpha/2} + t_{0.8}) * se with the same df: a difference this large would have been
found 80% of the time at alpha 0.05 (before any adjustment). No p-value floor: any p is
reachable, so Holm's smallest threshold 0.05/m can always be met.

Interactions (does a gap differ between targets?): two gaps measured on independent test
sets are compared unpaired, est = gap_1 - gap_2, V = V_1 + V_2, with the Welch-Satterthwaite
df from the two tests' own (V, df).

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

from unet_jax.report import DEFAULT_MARGIN

ALPHA = 0.05
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
    num_replicates: int  # seeds (or pre-trainings); 0 for an interaction
    num_images: int
    margin: float = DEFAULT_MARGIN
    # The replicates x images matrix tested (None for an interaction); for calibration.
    data: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)

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
        """'3 seeds x 12 test images' (what the test rests on)."""
        if not self.num_replicates:
            return f'{self.num_images} test images'
        return f'{self.num_replicates} x {self.num_images}'


def crossed_test(
    x: np.ndarray, *, blocks: Sequence | None = None, margin: float = DEFAULT_MARGIN
) -> Test:
    """The mean of x[replicate, image] with the crossed-design standard error (module doc).

    blocks: one label per image column (its outer fold), or None for one block."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f'crossed_test: expected a non-empty replicates x images matrix, {x.shape}.')
    estimate, variance, df = crossed_moments(x, blocks)
    se = math.sqrt(variance) if np.isfinite(variance) and variance > 0 else math.nan
    return Test(float(estimate), se, float(df), x.shape[0], x.shape[1], margin, x)


def crossed_moments(x: np.ndarray, blocks: Sequence | None = None):
    """(mean, variance of the mean, Satterthwaite df) of x[..., replicate, image], batched over
    any leading axes (the report passes one matrix; the calibration simulations many)."""
    x = np.asarray(x, np.float64)
    labels = np.zeros(x.shape[-1], int) if blocks is None else np.asarray(blocks)
    if labels.shape != (x.shape[-1],):
        raise ValueError(f'crossed_test: {labels.shape[0]} block labels for {x.shape[-1]} images.')
    estimate = variance = denominator = 0.0
    for label in np.unique(labels):
        block = x[..., labels == label]
        weight = block.shape[-1] / x.shape[-1]
        estimate = estimate + weight * block.mean(axis=(-2, -1))
        for value, df in _block_terms(block):
            variance = variance + weight**2 * value
            denominator = denominator + np.divide(
                (weight**2 * value) ** 2, df, out=np.zeros_like(value), where=df > 0
            )
    with np.errstate(divide='ignore', invalid='ignore'):
        df = np.where((variance > 0) & (denominator > 0), variance**2 / denominator, np.nan)
    return estimate, variance, df


def _block_terms(x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(term, its df)] of one crossed table: the variance of its mean is the sum of the terms
    (each a scaled mean square of the two-way ANOVA)."""
    num_r, num_i = x.shape[-2:]
    if num_r == 1 or num_i == 1:  # one way: the t over images (or over replicates)
        n = num_r * num_i
        flat = x.reshape(*x.shape[:-2], n)
        var = flat.var(axis=-1, ddof=1) if n > 1 else np.full(flat.shape[:-1], np.nan)
        return [(var / n, np.full_like(var, n - 1.0))]
    ms_r, ms_i, ms_e = mean_squares(x)
    df_e = (num_r - 1) * (num_i - 1)
    keep_r, keep_i = ms_r > ms_e, ms_i > ms_e  # components s2_r, s2_i truncated at 0 otherwise
    scale = 1.0 / (num_r * num_i)
    full = lambda value: np.full_like(ms_e, value)
    return [
        (scale * ms_e * (1.0 - keep_r - keep_i), full(df_e)),
        (scale * ms_r * keep_r, full(num_r - 1.0)),
        (scale * ms_i * keep_i, full(num_i - 1.0)),
    ]


def mean_squares(x: np.ndarray):
    """(MS_replicate, MS_image, MS_residual) of the two-way ANOVA without interaction of
    x[..., replicate, image] (at least 2 x 2), batched over leading axes."""
    num_r, num_i = x.shape[-2:]
    mean = x.mean(axis=(-2, -1), keepdims=True)
    row, column = x.mean(axis=-1, keepdims=True), x.mean(axis=-2, keepdims=True)
    ms_r = num_i * np.sum((row - mean) ** 2, axis=(-2, -1)) / (num_r - 1)
    ms_i = num_r * np.sum((column - mean) ** 2, axis=(-2, -1)) / (num_i - 1)
    ms_e = np.sum((x - row - column + mean) ** 2, axis=(-2, -1)) / ((num_r - 1) * (num_i - 1))
    return ms_r, ms_i, ms_e


def _satterthwaite(variance: float, terms: Sequence[tuple[float, float]]) -> float:
    """Satterthwaite's df of a sum of scaled mean squares (terms: (value, df))."""
    if not np.isfinite(variance) or variance <= 0:
        return math.nan
    denominator = sum(value**2 / df for value, df in terms if df > 0 and value != 0)
    return float(variance**2 / denominator) if denominator > 0 else math.nan


def t_p_and_interval(estimate, se, df):
    """Two-sided p and 95% CI of a t statistic estimate / se with df (arrays or floats)."""
    with np.errstate(divide='ignore', invalid='ignore'):
        p = 2 * scipy_stats.t.sf(np.abs(estimate / se), df)
        half = scipy_stats.t.ppf(1 - ALPHA / 2, df) * se
    return p, estimate - half, estimate + half


def unpaired_difference(a: Test, b: Test, *, margin: float | None = None) -> Test:
    """a - b for two tests on independent test sets (Welch-Satterthwaite df)."""
    variance = a.se**2 + b.se**2
    df = _satterthwaite(variance, [(a.se**2, a.df), (b.se**2, b.df)])
    return Test(
        a.estimate - b.estimate,
        math.sqrt(variance),
        df,
        0,
        a.num_images + b.num_images,
        a.margin if margin is None else margin,
    )


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
