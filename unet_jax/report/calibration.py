"""Simulated studies with every source of variation of the design: the error rates of the
report's test (and of the tests it replaced), so that the test is trusted for a measured reason.

A simulated comparison is a set of paired differences d[r, f, i] (see stats and variance):
    d = effect + p_r + q_f + u_rf + b_i(f) + e_ri(f)
with a pre-training effect p (shared by the replicate's runs of every fold), a fold effect q
(shared by every replicate's run of the fold), the run u, the image b (nested in its outer
fold; normal, or skewed: a centred gamma with the given skewness, as per-image Dice
differences are: in the :quick study's pairs of configurations, the per-image differences'
|skewness| has median 0.66 and 80th percentile 1.3, over 176 pairs of 20 images) and the
residual e. A study without outer folds has one fold (then p and u are one replicate effect).
`error_rates` reports how often a method rejects at 0.05 and at 0.002 and how often its 95%
CI covers the true effect; `design_of` makes a design from a test's own estimated components,
which the report simulates to state its test's error rate at its own sizes.

Used by tests/test_calibration.py (bounds) and benchmarks/calibration_table.py (the table).
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses

import numpy as np

from unet_jax.report import stats, variance


@dataclasses.dataclass(frozen=True)
class Design:
    """A study's size and variance structure (Dice units; standard deviations)."""

    name: str
    replicates: int  # pre-trainings (or seeds)
    images: int  # per fold
    folds: int = 1
    sd_run: float = 0.0015  # per replicate and fold (one fold: the replicate effect)
    sd_image: float = 0.09
    sd_residual: float = 0.01
    skewness: float = 0.0  # of the image effects (0: normal)
    sd_pretraining: float = 0.0  # per replicate, shared by its runs of every fold
    sd_fold: float = 0.0  # per fold, shared by every replicate's run of it

    def simulate(
        self, rng: np.random.Generator, count: int, effect: float = 0.0, pretraining=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(d[study, replicate, image] of `count` studies, the fold of each image).

        pretraining: standard normal draws [study, replicate, 1] to use for the pre-training
        effect (two targets sharing pre-trainings); drawn here when None."""
        num_images = self.images * self.folds
        if self.skewness > 0:  # a gamma of shape k has skewness 2 / sqrt(k)
            shape = (2 / self.skewness) ** 2
            b = (rng.gamma(shape, 1.0, (count, 1, num_images)) - shape) / np.sqrt(shape)
        else:
            b = rng.normal(0, 1.0, (count, 1, num_images))
        folds = np.repeat(np.arange(self.folds), self.images)
        if pretraining is None:
            pretraining = rng.normal(0, 1.0, (count, self.replicates, 1))
        run = rng.normal(0, self.sd_run, (count, self.replicates, self.folds))
        run = run + rng.normal(0, self.sd_fold, (count, 1, self.folds))
        e = rng.normal(0, self.sd_residual, (count, self.replicates, num_images))
        d = effect + self.sd_image * b + run[..., folds] + self.sd_pretraining * pretraining + e
        return d, folds


# The designs of tests/test_calibration.py without outer folds: the medium real-data study's
# structure (3 seeds x 12 images, seed sd 0.0015, image sd 0.09, residual 0.01), the same with
# skewed image effects (the median skewness measured), a seed-heavy small study (seed sd 0.02,
# image sd 0.05), the :quick study's 3 pre-trainings x 20 images.
DESIGNS = (
    Design('3 seeds x 12 images', 3, 12),
    Design('3 seeds x 12 images, skewness 0.66', 3, 12, skewness=0.66),
    Design('3 seeds x 20 images, seed-heavy', 3, 20, sd_run=0.02, sd_image=0.05),
)
# The outer-fold design of the :real study (3 pre-trainings x 5 folds x 130 images; run sd
# 0.04, image 0.10, residual 0.19), with a pre-training component of half and 1.5x the run's,
# a fold component equal to the run's, and low-noise designs like JSRT's (the first as the
# design-inference issue simulated it, the second with the components a re-run of :real
# estimated on JSRT: pre-training 0.0035, run 0.009, image 0.0075, residual 0.017, 50 images
# per fold).
_REAL = dict(folds=5, sd_run=0.04, sd_image=0.10, sd_residual=0.19)
FOLD_DESIGNS = (
    Design('3 x 5 folds x 130, no pre-training or fold component', 3, 130, **_REAL),
    Design('3 x 5 folds x 130, pre-training sd 0.02', 3, 130, sd_pretraining=0.02, **_REAL),
    Design('3 x 5 folds x 130, pre-training sd 0.06', 3, 130, sd_pretraining=0.06, **_REAL),
    Design('3 x 5 folds x 130, fold sd 0.04', 3, 130, sd_fold=0.04, **_REAL),
    Design('3 x 5 folds x 130, JSRT-like', 3, 130, folds=5, sd_pretraining=0.01, sd_run=0.04,
           sd_image=0.02, sd_residual=0.03),
    Design('3 x 5 folds x 50, JSRT components', 3, 50, folds=5, sd_pretraining=0.0035,
           sd_run=0.009, sd_image=0.0075, sd_residual=0.017),
    Design('5 x 5 folds x 130, pre-training sd 0.06', 5, 130, sd_pretraining=0.06, **_REAL),
    Design('3 x 5 folds x 130, skewness 1.3', 3, 130, sd_pretraining=0.02, skewness=1.3, **_REAL),
)  # fmt: skip
# Beyond what a t-test can do at 12 images (shown in benchmarks/calibration_table.py): with
# the 80th percentile's skewness, 3 seeds x 12 images reject at 0.002 about 4x too often.
HARD = Design('3 seeds x 12 images, skewness 1.3', 3, 12, skewness=1.3)

# d[study, replicate, image], folds -> p, low, high (one value per study)
Method = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def design_t(d: np.ndarray, folds: np.ndarray):
    """The report's test (stats.design_moments, batched over the studies)."""
    estimate, var, df = stats.design_moments(d, folds)
    return stats.t_p_and_interval(estimate, np.sqrt(var), df)


def folds_as_blocks_t(d: np.ndarray, folds: np.ndarray):
    """The test the report used before the design's variance model: each outer fold its own
    crossed replicates x images table, the folds' variances added as if independent (a
    pre-training shared by every fold counted once per fold, no fold effect)."""
    estimate, var, df = blocked_crossed_moments(d, folds)
    return stats.t_p_and_interval(estimate, np.sqrt(var), df)


def blocked_crossed_moments(x: np.ndarray, blocks: np.ndarray):
    """(mean, variance of the mean, Satterthwaite df) of the replaced test, batched."""
    labels = np.asarray(blocks)
    estimate = var = denominator = 0.0
    for label in np.unique(labels):
        block = x[..., labels == label]
        weight = block.shape[-1] / x.shape[-1]
        estimate = estimate + weight * block.mean(axis=(-2, -1))
        for value, df in _block_terms(block):
            var = var + weight**2 * value
            denominator = denominator + np.divide(
                (weight**2 * value) ** 2, df, out=np.zeros_like(value), where=df > 0
            )
    with np.errstate(divide='ignore', invalid='ignore'):
        df = np.where((var > 0) & (denominator > 0), var**2 / denominator, np.nan)
    return estimate, var, df


def _block_terms(x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(term, its df)] of one crossed replicates x images table of the replaced test."""
    num_r, num_i = x.shape[-2:]
    if num_r == 1 or num_i == 1:  # one way: the t over images (or over replicates)
        n = num_r * num_i
        flat = x.reshape(*x.shape[:-2], n)
        var = flat.var(axis=-1, ddof=1) if n > 1 else np.full(flat.shape[:-1], np.nan)
        return [(var / n, np.full_like(var, n - 1.0))]
    ms_r, ms_i, ms_e = mean_squares(x)
    df_e = (num_r - 1) * (num_i - 1)
    keep_r, keep_i = ms_r > ms_e, ms_i > ms_e
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


# The target interactions (the primary endpoint's, and report.sources' source x direction x
# target): a gap measured on two targets fine-tuned from the same pre-trainings, whose
# pre-training effects are shared (the same draws), paired by pre-training. Sizes of the
# speckle studies: :quick,sources= (3 x 20 us and 24 X-ray images) and :real,sources= (3 x 2
# outer folds x about 320 BUSI and 123 JSRT images), and the :real study's (3 x 5 folds).
INTERACTION_DESIGNS = (
    (
        Design('quick us: 3 x 20 images', 3, 20, sd_run=0.02, sd_image=0.05, sd_pretraining=0.02),
        Design('quick xray: 3 x 24 images', 3, 24, sd_run=0.01, sd_image=0.02, sd_pretraining=0.02),
    ),
    (
        Design('real busi: 3 x 2 folds x 320, skewed', 3, 320, folds=2, sd_run=0.02,
               sd_image=0.12, skewness=1.3, sd_pretraining=0.02),
        Design('real jsrt: 3 x 2 folds x 123', 3, 123, folds=2, sd_run=0.005, sd_image=0.03,
               sd_pretraining=0.02),
    ),
    (
        Design('busi: 3 x 5 folds x 130', 3, 130, sd_pretraining=0.03, **_REAL),
        Design('jsrt: 3 x 5 folds x 50', 3, 50, folds=5, sd_pretraining=0.03, sd_run=0.009,
               sd_image=0.0075, sd_residual=0.017),
    ),
)  # fmt: skip


def interaction_error_rates(
    a: Design, b: Design, *, simulations: int, effect: float, seed: int = 0, paired: bool = True
) -> ErrorRates:
    """Error rates of the difference b - a of two targets' gaps sharing pre-training draws:
    paired by pre-training (stats.difference_of_gaps), or, paired=False, the Welch difference
    of two tests taken as independent (the test this replaced). `effect` is added to b."""
    rng = np.random.default_rng(seed)

    def tested(count: int, true_effect: float):
        shared = rng.normal(0, 1.0, (count, a.replicates, 1))
        sides = [
            design.simulate(rng, count, e, pretraining=shared)
            for design, e in ((b, true_effect), (a, 0.0))
        ]
        if not paired:
            (mean_b, var_b, df_b), (mean_a, var_a, df_a) = (stats.design_moments(*s) for s in sides)
            total = var_a + var_b
            df = total**2 / (var_a**2 / df_a + var_b**2 / df_b)
            return stats.t_p_and_interval(mean_b - mean_a, np.sqrt(total), df)
        tables = [variance.nested_anova(d, folds) for d, folds in sides]
        rows = [d.mean(axis=-1) for d, _ in sides]
        moments = variance.paired_difference(*tables, rows[0] - rows[1])
        estimate = sides[0][0].mean(axis=(-2, -1)) - sides[1][0].mean(axis=(-2, -1))
        return stats.t_p_and_interval(estimate, np.sqrt(moments.variance), moments.df)

    method = 'paired by pre-training' if paired else 'Welch (independent)'
    return _rates(f'{b.name} minus {a.name}', method, simulations, effect, tested)


def design_of(test: stats.Test, name: str = 'this comparison') -> Design:
    """A design with the size of a test of the nested layout and its estimated variance
    components (truncated at 0) and image skewness."""
    parts = dict(test.components)
    sd = lambda key: float(np.sqrt(max(0.0, parts.get(key, 0.0))))
    folds = max(1, test.num_folds)
    return Design(
        name,
        test.num_replicates,
        max(2, test.num_images // folds),
        folds=folds,
        sd_run=sd('run') if folds > 1 else sd('pre-training'),
        sd_image=sd('image'),
        sd_residual=sd('residual'),
        skewness=test.skewness,
        sd_pretraining=sd('pre-training') if folds > 1 else 0.0,
        sd_fold=sd('fold'),
    )


def describe(design: Design) -> str:
    """'busi: 3 x 5 folds x 130 images; SD pre-training 0.010, fold 0, run 0.040, image 0.100,
    residual 0.190; skewness 0.50'."""
    folds = f' x {design.folds} folds' if design.folds > 1 else ''
    images = [('image', design.sd_image), ('residual', design.sd_residual)]
    sds = [('pre-training', design.sd_pretraining), ('fold', design.sd_fold),
           ('run', design.sd_run), *images]  # fmt: skip
    if design.folds == 1:  # one fold: the run is the replicate's effect
        sds = [('replicate', design.sd_run), *images]
    text = ', '.join(f'{n} {v:.3g}' for n, v in sds)
    return (
        f'{design.name}: {design.replicates}{folds} x {design.images} images; SD {text}; '
        f'skewness {design.skewness:.2f}'
    )
