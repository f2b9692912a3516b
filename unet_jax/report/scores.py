"""The score matrices every test of the report rests on: lesion test Dice per target, training
size and configuration as replicate x image arrays, aligned across configurations, with the
layout the design's test needs (images nested in outer folds, or crossed with every fold's run
for an external set).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd

from unet_jax.report import stats
from unet_jax.report.load import Study


class Scores:
    """Lesion test Dice per (target, size, configuration) as replicate x image matrices, with
    the layout the design's test needs (stats.design_test): the outer fold of each image
    (images nested in folds), or, for an external set scored by every fold's run, replicate
    x fold x image arrays (crossed).

    A replicate is a seed; where the study pre-trained R times and several seeds share a
    pre-training (the i-th seed starts from pre-training i mod R, R < seeds), the seeds of each
    pre-training are averaged, so that a replicate is a pre-training."""

    def __init__(self, study: Study):
        images = study.images
        lesion = images[images['lesion'].astype(bool)] if len(images) else images
        self._per_image = _tables(lesion, 'image_id', 'dice')
        done = study.runs[study.runs['status'] == 'done']
        # per-run means: one column per outer fold (one column without folds)
        done = done.assign(image_id=[f'(fold {f})' for f in done['fold']])
        self._per_seed = _tables(done, 'image_id', 'test_dice')
        self.pretrain_runs = max(1, len(study.plan.get('pretrain_dirs') or []))
        self._seeds = list(study.plan.get('seeds') or [])
        self.seeds_averaged = 1 < self.pretrain_runs < len(self._seeds)
        self.replicate = 'pre-training' if self.pretrain_runs > 1 else 'seed'

    def labelled(self, target: str, num_train: int, names: list[str]) -> Labelled | None:
        """The configurations' score arrays on the replicates, folds and images all of them
        have: per-image scores where every one has them, else per-run means (one column per
        outer fold). None when there are none."""
        keys = [(target, num_train, n) for n in names]
        if all(k in self._per_image for k in keys):
            found = [self._per_image[k] for k in keys]
        elif all(k in self._per_seed for k in keys):
            found = [self._per_seed[k] for k in keys]
        else:
            return None
        common = lambda field: functools.reduce(np.intersect1d, [getattr(f, field) for f in found])
        seeds, folds, images = common('seeds'), common('folds'), common('images')
        if not seeds.size or not images.size or not folds.size:
            return None
        values = [f.take(seeds, folds, images) for f in found]
        crossed = found[0].crossed
        if not crossed:  # each image tested by its own fold's runs only
            fold_of = np.argmax(np.isfinite(values[0]).any(axis=0), axis=0)
            values = [np.take_along_axis(v, fold_of[None, None], axis=1)[:, 0] for v in values]
            fold_labels = folds[fold_of]
        else:
            fold_labels = folds
        if any(np.isnan(v).any() for v in values):
            return None
        replicates, values = self._by_pretraining(seeds, values)
        return Labelled(replicates, images, fold_labels, crossed, values, self.replicate)

    def _by_pretraining(self, seeds: np.ndarray, matrices: list[np.ndarray]):
        r = self.pretrain_runs
        if not 1 < r < seeds.size:
            return seeds, matrices
        order = [int(s) for s in self._seeds]  # the study's seeds: the i-th starts from i mod R
        index = np.array([order.index(int(s)) % r for s in seeds])
        used = np.unique(index)
        return used, [np.stack([m[index == p].mean(axis=0) for p in used]) for m in matrices]


@dataclasses.dataclass(frozen=True)
class Labelled:
    """Aligned score arrays of some configurations: values[k][replicate, image] with `folds`
    the fold of each image (nested), or values[k][replicate, fold, image] (crossed)."""

    replicates: np.ndarray
    images: np.ndarray
    folds: np.ndarray
    crossed: bool
    values: list[np.ndarray]
    replicate: str = 'seed'

    def restrict(self, array: np.ndarray, replicates: np.ndarray, images: np.ndarray):
        """An array shaped as `values` on some of the replicates and images (sorted ids)."""
        rows = np.searchsorted(self.replicates, replicates)
        return array[rows][..., np.searchsorted(self.images, images)]

    def subset(self, replicates: np.ndarray, images: np.ndarray) -> Labelled:
        """The same arrays on some of the replicates and images (sorted ids)."""
        columns = np.searchsorted(self.images, images)
        return dataclasses.replace(
            self, replicates=replicates, images=images,
            folds=self.folds if self.crossed else self.folds[columns],
            values=[self.restrict(v, replicates, images) for v in self.values],
        )  # fmt: skip

    def test(self, d: np.ndarray, margin: float) -> stats.Test:
        """The design's test of the mean of d (an array shaped as `values`)."""
        folds = None if self.crossed else self.folds
        return stats.design_test(
            d, folds=folds, margin=margin, replicates=tuple(self.replicates.tolist()),
            replicate=self.replicate,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class _Table:
    """One configuration's scores: values[seed, fold, column] (nan where not scored)."""

    seeds: np.ndarray
    folds: np.ndarray
    images: np.ndarray
    values: np.ndarray

    @property
    def crossed(self) -> bool:
        """Whether a column is scored by more than one fold's run (an external set)."""
        return bool((np.isfinite(self.values).any(axis=0).sum(axis=0) > 1).any())

    def take(self, seeds, folds, images) -> np.ndarray:
        index = (np.searchsorted(self.seeds, seeds), np.searchsorted(self.folds, folds),
                 np.searchsorted(self.images, images))  # fmt: skip
        return self.values[np.ix_(*index)]


def _tables(table: pd.DataFrame, column: str, value: str) -> dict:
    """(target, size, configuration) -> _Table of `value` by seed, fold and `column`."""
    out = {}
    if table.empty:
        return out
    seeds, ids = table['seed'].to_numpy(), table[column].astype(str).to_numpy()
    folds = table['fold'].to_numpy(int) if 'fold' in table else np.zeros(len(table), int)
    values = table[value].to_numpy(float)
    for key, rows in table.groupby(['target', 'num_train', 'configuration']).indices.items():
        axes = [np.unique(a[rows], return_inverse=True) for a in (seeds, folds, ids)]
        array = np.full(tuple(u.size for u, _ in axes), np.nan)
        array[tuple(index for _, index in axes)] = values[rows]
        out[key] = _Table(*(u for u, _ in axes), array)
    return out
