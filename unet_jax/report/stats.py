"""The report's statistics: hierarchical bootstrap, paired t, Holm, TOST, cost curves.

Hierarchical bootstrap (the headline evidence). A comparison of configurations A and B on one
target and training size has a matrix of paired differences d[s, i] = score_A(s, i) -
score_B(s, i) over the seeds s both finished and the lesion test images i (matched by image
id). The test images are the same for every seed, so seeds and images are crossed, not
nested: each resample draws S seeds with replacement and, independently, I images with
replacement, and takes the mean of d over the drawn seeds x drawn images (an image drawn
twice counts twice for every drawn seed). The 95% CI is the 2.5 and 97.5 percentiles of
`DEFAULT_RESAMPLES` resamples drawn from a generator with a fixed seed (`DEFAULT_SEED`), so
a report is reproducible. With one seed only the images are resampled: the CI then covers
test-set sampling only. Pre-training is not resampled (one pre-training run, or as many as
the study made, each paired with its seeds): its variance is in the CI only when the study
pre-trained several times. The percentile interval covers the true mean in about 95% of
simulated studies with 10 seeds x 100 images, 93% with 10 x 30, and only about 88% with 3
seeds x 100 images when most of the uncertainty comes from the seeds (3 seeds say little
about their spread): read a CI together with its number of seeds and the t-test over seeds.

p-values. The bootstrap p of "difference = 0" inverts the percentile interval: two-sided
p = min(1, 2 * min(#{t <= 0} + 1, #{t >= 0} + 1) / (B + 1)) over the B resampled means t.
The report corrects the p-values of all its headline comparisons together with Holm's
step-down method (family-wise error 0.05), once for the difference tests and once for the
equivalence tests.

Equivalence is claimed only from a TOST (two one-sided tests) at a stated margin delta
(default 0.02 Dice): p_TOST = max(#{t <= -delta} + 1, #{t >= delta} + 1) / (B + 1); the
difference is equivalent to zero when the Holm-adjusted p_TOST < 0.05 (at alpha 0.05 this
is the 90% bootstrap interval lying inside (-delta, delta)).

The paired t-test over seeds (secondary): the per-seed mean differences over the images,
t = mean / (sd / sqrt(S)) with S - 1 degrees of freedom, two-sided p.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import functools
import math

import numpy as np
from scipy import stats as scipy_stats

from unet_jax.report import DEFAULT_MARGIN, DEFAULT_RESAMPLES, DEFAULT_SEED

ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the report bootstraps: the TOST margin, the resamples and their seed."""

    margin: float = DEFAULT_MARGIN
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED


def bootstrap_means(
    x: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> np.ndarray:
    """Means of `x[seeds, images]` over crossed resamples of its seeds and its images.

    Each resample's counts (how often each seed / image was drawn) weight the rows and
    columns: mean = c_seeds @ x @ c_images / (S * I), one matrix product for all resamples.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f'bootstrap_means: expected a non-empty seeds x images matrix, {x.shape}.')
    num_seeds, num_images = x.shape
    seed_counts, image_counts = _resample_counts(num_seeds, num_images, resamples, seed)
    return np.sum((seed_counts @ x) * image_counts, axis=1) / (num_seeds * num_images)


@functools.lru_cache(maxsize=4)
def _resample_counts(num_seeds: int, num_images: int, resamples: int, seed: int):
    """counts[b, j]: how often seed / image j is drawn in resample b. The same for every
    comparison of the same shape (common random numbers), so drawn once."""
    rng = np.random.default_rng(seed)
    counts = []
    for n in (num_seeds, num_images):
        draws = rng.integers(0, n, (resamples, n)) + n * np.arange(resamples)[:, None]
        counts.append(
            np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n).astype(float)
        )
    return tuple(counts)


@dataclasses.dataclass(frozen=True)
class Interval:
    """Mean over seeds and images with its hierarchical-bootstrap 95% CI."""

    estimate: float
    low: float
    high: float
    num_seeds: int
    num_images: int


def bootstrap_interval(
    x: np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Interval:
    x = np.asarray(x, np.float64)
    means = bootstrap_means(x, resamples=resamples, seed=seed)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(x.mean()), float(low), float(high), x.shape[0], x.shape[1])


@dataclasses.dataclass(frozen=True)
class PairedT:
    """Paired t-test over seeds (per-seed mean differences); nan where it is undefined."""

    mean: float
    t: float
    df: int
    p: float


def paired_t(a: Sequence[float], b: Sequence[float]) -> PairedT:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = d.size
    if n < 2:
        return PairedT(float(d.mean()) if n else math.nan, math.nan, max(n - 1, 0), math.nan)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd <= 1e-12 * max(1.0, abs(mean)):  # identical differences: t is undefined
        return PairedT(mean, math.nan, n - 1, math.nan)
    t = mean / (sd / math.sqrt(n))
    return PairedT(mean, t, n - 1, float(2 * scipy_stats.t.sf(abs(t), n - 1)))


@dataclasses.dataclass(frozen=True)
class Difference:
    """A - B, paired by seed and image: the bootstrap CI, its p, the TOST p, the t over seeds."""

    interval: Interval
    p: float  # bootstrap, two-sided, difference = 0
    p_tost: float  # bootstrap TOST at `margin`
    margin: float
    t_test: PairedT

    @property
    def estimate(self) -> float:
        return self.interval.estimate


def paired_difference(
    d: np.ndarray,
    *,
    margin: float = DEFAULT_MARGIN,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Difference:
    """The comparison of two configurations from their paired differences d[seed, image]."""
    d = np.asarray(d, np.float64)
    means = bootstrap_means(d, resamples=resamples, seed=seed)
    low, high = np.percentile(means, [2.5, 97.5])
    interval = Interval(float(d.mean()), float(low), float(high), d.shape[0], d.shape[1])
    tail = lambda count: (count + 1) / (resamples + 1)
    p = min(1.0, 2 * min(tail(np.sum(means <= 0)), tail(np.sum(means >= 0))))
    p_tost = max(tail(np.sum(means <= -margin)), tail(np.sum(means >= margin)))
    per_seed = d.mean(axis=1)
    return Difference(interval, p, p_tost, margin, paired_t(per_seed, np.zeros_like(per_seed)))


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


def share_ranked_first(
    x: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED
) -> np.ndarray:
    """x[configuration, seed, image]: in which share of common resamples each one is best."""
    means = np.stack([bootstrap_means(c, resamples=resamples, seed=seed) for c in x])
    best = np.argmax(means, axis=0)
    return np.bincount(best, minlength=len(x)) / resamples


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


def common_log_grid(a: Sequence[float], b: Sequence[float], num: int = 16) -> np.ndarray | None:
    """`num` costs evenly spaced in log on the overlap of two cost ranges; None if < 2x wide."""
    low, high = max(min(a), min(b)), min(max(a), max(b))
    if not high > low * (1 + 1e-9):
        return None
    return np.exp(np.linspace(math.log(low), math.log(high), num))


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
