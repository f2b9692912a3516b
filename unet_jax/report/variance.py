"""The variance of a comparison's mean, from the study's design (a random-effects model).

A comparison's paired differences d[r, f, i] (configuration A minus B, Dice) vary with
    r  the replicate: a pre-training (where the study pre-trained several times; seeds of one
       pre-training are averaged first), or a seed (one pre-training: the answer is then about
       that pre-trained model);
    f  the outer fold: its training and validation split, shared by every replicate's run of
       that fold (early stopping and the best step are chosen on it);
    i  the test image.
Two layouts:
    nested   the outer folds' own test sets: image i is tested only by the runs of its fold
             (images nested in folds). Components: pre-training (r), fold (f), run (r x f),
             image (i within f), residual (r x i within f);
    crossed  an external test set: every run scores every image. Components: r, f, i, run
             (r x f), r x i, f x i and the residual (r x f x i).
A study without outer folds has one fold: pre-training, image and residual (the crossed
seeds x images design of the report before the fold and pre-training terms).

Every component is a random effect. The mean squares of the balanced ANOVA give each
component's variance by the method of moments (expected mean squares; each component
truncated at 0 when its estimate is not positive), and the variance of the mean is
    V = sum over components C of s2_C / n_C      (n_C: the number of levels of C),
a linear combination of mean squares, referred to a t distribution with Satterthwaite's
degrees of freedom. With every component kept this is exactly the crossed two-way analysis of
the pre-training x fold table of run means (a pre-training shared by every fold counts once;
the fold effect counts once); truncation lets components that are absent give their degrees
of freedom back. Folds of unequal size (at most one image apart in a k-fold split) are
trimmed to the smallest for the mean squares (the estimate uses every image).

Two targets fine-tuned from the same pre-trainings share the pre-training effect: their
difference (a target interaction) is paired by pre-training (`paired_difference`): the
pre-training component of the difference is estimated from the pre-trainings' differences of
their means, less what the other components put into those means.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

R, F, IMAGE = 'r', 'f', 'i'  # the axes of d[r, f, i]
NAMES = {
    frozenset(R): 'pre-training',
    frozenset(F): 'fold',
    frozenset(IMAGE): 'image',
    frozenset(R + F): 'run',
    frozenset(R + IMAGE): 'pre-training x image',
    frozenset(F + IMAGE): 'fold x image',
    frozenset(R + F + IMAGE): 'residual',
}
NESTED_NAMES = {frozenset(F + IMAGE): 'image', frozenset(R + F + IMAGE): 'residual'}


@dataclasses.dataclass(frozen=True)
class Anova:
    """The balanced ANOVA of d[..., r, f, i] (batched over leading axes).

    components: the random components with at least one degree of freedom (frozensets of
    axes), largest first; ms, df: their mean squares and degrees of freedom; levels: n_C;
    inverse: K^-1 of the expected-mean-squares matrix (s2 = inverse @ ms)."""

    nested: bool
    components: tuple[frozenset, ...]
    ms: np.ndarray  # [..., component]
    df: np.ndarray  # [component]
    levels: np.ndarray  # [component]
    inverse: np.ndarray  # [component, component]

    @property
    def raw(self) -> np.ndarray:
        """Each component's variance by the method of moments, untruncated: [..., component]."""
        return self.ms @ self.inverse.T

    def name(self, component: frozenset) -> str:
        return (NESTED_NAMES.get(component) if self.nested else None) or NAMES[component]


def _valid(component: frozenset, nested: bool) -> bool:
    """Nested: an image component always names its fold (i within f)."""
    return not nested or IMAGE not in component or F in component


def anova(d: np.ndarray, nested: bool) -> Anova:
    """Mean squares of every random component of d[..., r, f, i] (balanced, no nan)."""
    d = np.asarray(d, np.float64)
    shape = d.shape[-3:]
    axes = {R: -3, F: -2, IMAGE: -1}
    sizes = dict(zip((R, F, IMAGE), shape))
    subsets = [
        frozenset(c)
        for n in range(4)
        for c in itertools.combinations((R, F, IMAGE), n)
        if _valid(frozenset(c), nested)
    ]
    effects, dfs = {}, {}
    for c in subsets:  # by increasing size: every proper subset comes first
        mean = d.mean(axis=tuple(axes[a] for a in (R, F, IMAGE) if a not in c), keepdims=True)
        below = [b for b in effects if b < c]
        effects[c] = mean - sum((effects[b] for b in below), np.zeros_like(mean))
        cells = int(np.prod([sizes[a] for a in c])) if c else 1
        dfs[c] = cells - sum(dfs[b] for b in below)
    total = int(np.prod(shape))
    components = sorted((c for c in subsets if c and dfs[c] > 0), key=len, reverse=True)
    levels = np.array([np.prod([sizes[a] for a in c]) for c in components], np.float64)
    ms = np.stack(
        [
            (total / n) * np.sum(effects[c] ** 2, axis=(-3, -2, -1)) / dfs[c]
            for c, n in zip(components, levels)
        ],
        axis=-1,
    ) if components else np.zeros(d.shape[:-3] + (0,))  # fmt: skip
    # E[MS_A] = sum over components C containing A of (total / n_C) s2_C
    ems = np.array(
        [[total / n if a <= c else 0.0 for c, n in zip(components, levels)] for a in components]
    ).reshape(len(components), len(components))
    inverse = np.linalg.inv(ems) if components else ems
    df = np.array([dfs[c] for c in components], np.float64)
    return Anova(nested, tuple(components), ms, df, levels, inverse)


@dataclasses.dataclass(frozen=True)
class Moments:
    """The variance of a mean and its Satterthwaite df (arrays, batched), with the estimated
    variance components (name -> s2, truncated at 0) that make it."""

    variance: np.ndarray
    df: np.ndarray
    components: dict[str, np.ndarray]


def _satterthwaite(coefficients: np.ndarray, ms: np.ndarray, df: np.ndarray) -> Moments:
    """V = sum coefficients * ms and its df, over the last axis (independent mean squares)."""
    terms = coefficients * ms
    variance = terms.sum(axis=-1)
    with np.errstate(divide='ignore', invalid='ignore'):
        denominator = np.sum(terms**2 / df, axis=-1)
        dof = np.where((variance > 0) & (denominator > 0), variance**2 / denominator, np.nan)
    return Moments(variance, dof, {})


def mean_moments(table: Anova) -> Moments:
    """V = sum of s2_C / n_C over the components kept (estimate > 0), with its df."""
    raw = table.raw
    if not table.components:
        nan = np.full(raw.shape[:-1], np.nan)
        return Moments(nan, nan, {})
    weights = (raw > 0) / table.levels  # truncated components weigh nothing
    weights[..., 0] = 1.0 / table.levels[0]  # the residual (largest component) always counts
    out = _satterthwaite(weights @ table.inverse, table.ms, table.df)
    components = {
        table.name(c): np.maximum(raw[..., k], 0.0) for k, c in enumerate(table.components)
    }
    return Moments(out.variance, out.df, components)


def paired_difference(
    a: Anova, b: Anova, row_difference: np.ndarray, labels: tuple[str, str] = ('a', 'b')
) -> Moments:
    """The variance of mean(a) - mean(b) where both share the replicates (pre-trainings):
    row_difference[..., r] = a's mean over its folds and images minus b's, per replicate.

    The pre-training component of the difference is var_r(row_difference) less what the
    other components containing r put into a row's mean (sum of s2_C * R / n_C), truncated
    at 0; every other component is each side's own (independent folds and images)."""
    num_r = row_difference.shape[-1]
    batch = row_difference.shape[:-1]
    sides = [_side(table) for table in (a, b)]
    if num_r > 1:
        spread = row_difference.var(axis=-1, ddof=1)
        noise = sum(
            (raw * in_rows * num_r / t.levels).sum(axis=-1) for t, raw, _, _, in_rows in sides
        )
        keep_rows = spread - noise > 0
        s2_rows = np.where(keep_rows, spread - noise, 0.0)
    else:  # one pre-training: the answer is about it (no pre-training term)
        spread, keep_rows, s2_rows = np.zeros(batch), np.zeros(batch, bool), np.zeros(batch)
    coefficients = [(keep_rows / num_r)[..., None]]
    ms, dfs = [spread[..., None]], [np.full(batch + (1,), num_r - 1.0)]
    components = {'pre-training': s2_rows}
    for label, (table, raw, keep, own, in_rows) in zip(labels, sides):
        weights = keep * own / table.levels - keep_rows[..., None] * in_rows / table.levels
        coefficients.append(weights @ table.inverse)
        ms.append(table.ms)
        dfs.append(np.broadcast_to(table.df, table.ms.shape))
        for k, c in enumerate(table.components):
            if c != frozenset(R):
                components[f'{table.name(c)} ({label})'] = np.maximum(raw[..., k], 0.0)
    out = _satterthwaite(*(np.concatenate(x, axis=-1) for x in (coefficients, ms, dfs)))
    return Moments(out.variance, out.df, components)


def _side(table: Anova):
    """(table, raw components, kept, not the pre-training main effect, in a row's mean)."""
    raw = table.raw
    keep = raw > 0
    if table.components:
        keep[..., 0] = True  # the residual
    own = np.array([c != frozenset(R) for c in table.components], np.float64)
    in_rows = np.array([R in c and c != frozenset(R) for c in table.components], np.float64)
    return table, raw, keep, own, in_rows


def balanced(d: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """d[..., r, image] with each image's fold -> d[..., r, f, i] (nested), every fold trimmed
    to the smallest fold's number of images (its first images by column order)."""
    labels = np.asarray(folds)
    unique = np.unique(labels)
    smallest = min(int(np.sum(labels == f)) for f in unique)
    columns = [np.flatnonzero(labels == f)[:smallest] for f in unique]
    return np.stack([d[..., c] for c in columns], axis=-2)


def nested_anova(d: np.ndarray, folds: np.ndarray) -> Anova:
    """The ANOVA of d[..., r, image] with images nested in `folds` (each image's fold)."""
    return anova(balanced(d, folds), nested=True)
