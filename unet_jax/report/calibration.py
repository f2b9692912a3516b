"""Simulated studies at the report's own sizes: the error rates of its test (and of the
percentile bootstrap it replaced), so that the test is trusted for a measured reason.

A simulated comparison is a replicates x images matrix of paired differences (see stats):
    d[r, i] = effect + a_r + b_i + e_ri,   a ~ N(0, s_r), b ~ image law (sd s_i), e ~ N(0, s_e),
or, with outer folds, images nested in folds and a run effect per (replicate, fold). The image
law is normal, or skewed: a centred gamma with the given skewness (a few images with large
differences, as per-image Dice differences have: in the :quick study's pairs of
configurations, the per-image differences' |skewness| has median 0.66 and 80th percentile 1.3,
over 176 pairs of 20 images). `error_rates` reports how often a method rejects at 0.05 and at
0.002 and how often its 95% CI covers the true effect; `design_of` makes a design from a
comparison's own data (its size, variance components and skewness), which the report
simulates to state its test's error rate at its own sizes.

Used by tests/test_calibration.py (bounds) and benchmarks/calibration_table.py (the table).
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses

import numpy as np

from unet_jax.report import stats


@dataclasses.dataclass(frozen=True)
class Design:
    """A study's size and variance structure (Dice units)."""

    name: str
    replicates: int
    images: int  # per fold
    folds: int = 1
    sd_replicate: float = 0.0015
    sd_image: float = 0.09
    sd_residual: float = 0.01
    skewness: float = 0.0  # of the image effects (0: normal)

    def simulate(
        self, rng: np.random.Generator, count: int, effect: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(d[study, replicate, image] of `count` studies, the fold of each image)."""
        num_images = self.images * self.folds
        if self.skewness > 0:  # a gamma of shape k has skewness 2 / sqrt(k)
            shape = (2 / self.skewness) ** 2
            b = (rng.gamma(shape, 1.0, (count, 1, num_images)) - shape) / np.sqrt(shape)
        else:
            b = rng.normal(0, 1.0, (count, 1, num_images))
        folds = np.repeat(np.arange(self.folds), self.images)
        run = rng.normal(0, self.sd_replicate, (count, self.replicates, self.folds))[..., folds]
        e = rng.normal(0, self.sd_residual, (count, self.replicates, num_images))
        return effect + self.sd_image * b + run + e, folds


# The designs of tests/test_calibration.py: the medium real-data study's structure (3 seeds x
# 12 images, seed sd 0.0015, image sd 0.09, residual 0.01), the same with skewed image
# effects (the median skewness measured), a seed-heavy small study (seed sd 0.02, image sd
# 0.05), and a powered study's (3 seeds x 5 outer folds x 130 images), also with the 80th
# percentile's skewness.
DESIGNS = (
    Design('3 seeds x 12 images', 3, 12),
    Design('3 seeds x 12 images, skewness 0.66', 3, 12, skewness=0.66),
    Design('3 seeds x 20 images, seed-heavy', 3, 20, sd_replicate=0.02, sd_image=0.05),
    Design('3 seeds x 5 folds x 130 images', 3, 130, folds=5),
    Design('3 seeds x 5 folds x 130 images, skewness 1.3', 3, 130, folds=5, skewness=1.3),
)
# Beyond what a t-test can do at 12 images (shown in benchmarks/calibration_table.py): with
# the 80th percentile's skewness, 3 seeds x 12 images reject at 0.002 about 4x too often.
HARD = Design('3 seeds x 12 images, skewness 1.3', 3, 12, skewness=1.3)

# d[study, replicate, image], folds -> p, low, high (one value per study)
Method = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def crossed_t(d: np.ndarray, folds: np.ndarray):
    """The report's test (stats.crossed_moments, batched over the studies)."""
    estimate, variance, df = stats.crossed_moments(d, folds)
    return stats.t_p_and_interval(estimate, np.sqrt(variance), df)


def percentile_bootstrap(resamples: int = 2000, seed: int = 0) -> Method:
    """The test the report used before: a hierarchical bootstrap over seeds and images (crossed,
    folds ignored), its percentile 95% CI, and p inverting it (with its floor 2 / (B + 1))."""
    rng = np.random.default_rng(seed)

    def one(d: np.ndarray) -> tuple[float, float, float]:
        num_r, num_i = d.shape
        r_counts = _counts(rng, num_r, resamples)
        i_counts = _counts(rng, num_i, resamples)
        means = np.sum((r_counts @ d) * i_counts, axis=1) / (num_r * num_i)
        tail = lambda count: (count + 1) / (resamples + 1)
        p = min(1.0, 2 * min(tail(np.sum(means <= 0)), tail(np.sum(means >= 0))))
        low, high = np.percentile(means, [2.5, 97.5])
        return p, float(low), float(high)

    def method(d: np.ndarray, folds: np.ndarray):
        return tuple(np.asarray(column) for column in zip(*map(one, d)))

    return method


def _counts(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    draws = rng.integers(0, n, (resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n).astype(float)


@dataclasses.dataclass(frozen=True)
class ErrorRates:
    design: str
    method: str
    simulations: int
    false_positive_05: float  # under no effect
    false_positive_002: float
    coverage: float  # of the 95% CI, under an effect
    power: float  # at 0.05, under that effect


def error_rates(
    design: Design, method: Method, *, name: str, simulations: int, effect: float, seed: int = 0
) -> ErrorRates:
    """Rejection rates under the null and CI coverage and power under `effect`."""
    rng = np.random.default_rng(seed)
    tested = lambda count, true_effect: method(*design.simulate(rng, count, true_effect))
    return _rates(design.name, name, simulations, effect, tested)


def _rates(design: str, method: str, simulations: int, effect: float, tested) -> ErrorRates:
    """ErrorRates of `tested(count, true effect) -> (p, low, high)`, one value per simulated
    study: `simulations` studies under no effect and as many under `effect`, in chunks."""
    null_p, covered, rejected = [], [], []
    for start in range(0, simulations, CHUNK):
        count = min(CHUNK, simulations - start)
        null_p.append(tested(count, 0.0)[0])
        p, low, high = tested(count, effect)
        covered.append((low <= effect) & (effect <= high))
        rejected.append(p < stats.ALPHA)
    null_p = np.concatenate(null_p)
    return ErrorRates(
        design,
        method,
        simulations,
        float(np.mean(null_p < 0.05)),
        float(np.mean(null_p < 0.002)),
        float(np.mean(np.concatenate(covered))),
        float(np.mean(np.concatenate(rejected))),
    )


CHUNK = 2000  # studies simulated at once


# The target interactions of report.sources and of the primary endpoint: a change measured on
# two independent test sets (an ultrasound and an X-ray target) and their Welch difference.
# Sizes of the speckle studies: :quick,sources= (3 seeds x 20 us and 24 X-ray images) and
# :real,sources= (3 seeds x 2 outer folds x about 320 BUSI and 123 JSRT images), with a heavy
# seed component (each seed's own pre-trainings differ between the sources) and skewed images.
INTERACTION_DESIGNS = (
    (
        Design('quick us: 3 seeds x 20 images, seed-heavy', 3, 20, sd_replicate=0.02, sd_image=0.05),
        Design('quick xray: 3 seeds x 24 images, seed-heavy', 3, 24, sd_replicate=0.01, sd_image=0.02),
    ),
    (
        Design('real busi: 3 seeds x 2 folds x 320, skewed', 3, 320, folds=2, sd_replicate=0.02,
               sd_image=0.12, skewness=1.3),
        Design('real jsrt: 3 seeds x 2 folds x 123', 3, 123, folds=2, sd_replicate=0.005,
               sd_image=0.03),
    ),
)  # fmt: skip


def interaction_error_rates(
    a: Design, b: Design, *, simulations: int, effect: float, seed: int = 0
) -> ErrorRates:
    """Error rates of the Welch difference (stats.unpaired_difference) of two crossed tests on
    independent sets: `effect` is added to design b's differences."""
    rng = np.random.default_rng(seed)

    def tested(count: int, true_effect: float):
        moments = [stats.crossed_moments(*design.simulate(rng, count, e)) for design, e in
                   ((a, 0.0), (b, true_effect))]  # fmt: skip
        (mean_a, var_a, df_a), (mean_b, var_b, df_b) = moments
        variance = var_a + var_b
        df = variance**2 / (var_a**2 / df_a + var_b**2 / df_b)
        return stats.t_p_and_interval(mean_b - mean_a, np.sqrt(variance), df)

    return _rates(
        f'{b.name} minus {a.name}', 'Welch difference of crossed t', simulations, effect, tested
    )


def design_of(d: np.ndarray, name: str = 'this comparison') -> Design:
    """A design with the size of d[replicate, image] and its estimated variance components
    (two-way ANOVA, method of moments, truncated at 0) and image skewness (of the
    replicate-averaged differences, its absolute value, at most 2)."""
    d = np.asarray(d, np.float64)
    num_r, num_i = d.shape
    if num_i < 3:
        raise ValueError(f'design_of: needs per-image scores (3 or more images), got {d.shape}.')
    column = d.mean(axis=0)
    skewness = 0.0
    if num_i > 2 and column.std() > 0:
        skewness = float(min(2.0, abs(np.mean((column - column.mean()) ** 3)) / column.std() ** 3))
    if num_r == 1:
        return Design(name, 1, num_i, sd_replicate=0.0, sd_image=float(column.std(ddof=1)),
                      sd_residual=0.0, skewness=skewness)  # fmt: skip
    ms_r, ms_i, ms_e = (float(ms) for ms in stats.mean_squares(d))
    return Design(
        name,
        num_r,
        num_i,
        sd_replicate=float(np.sqrt(max(0.0, (ms_r - ms_e) / num_i))),
        sd_image=float(np.sqrt(max(0.0, (ms_i - ms_e) / num_r))),
        sd_residual=float(np.sqrt(ms_e)),
        skewness=skewness,
    )
