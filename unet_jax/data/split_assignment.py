"""Which case goes where: the test, validation and training splits of a set's case ids.

Drawn after the cases are loaded and clustered (unet_jax.data.pipeline), in this order:
  2. units: each near-duplicate cluster of the kept cases (`duplicates.find_clusters`, on the
     preprocessed images) is one unit of the draws below, so it falls into one fold and one
     split; every other case is a unit of its own (one example per case, so a case never
     straddles); `allow_near_duplicates` makes every case its own unit;
  3. test split: with `outer_folds` > 1, fold `outer_fold` of the seeded outer folds of every
     case (official splits pooled; over the folds every case is tested once); else the
     official one where the set has it (JSRT Test, DUTS-TE), else a seeded fraction
     (`split_seed`, `test_fraction`);
  4. validation, from what the test split left: the official split (JSRT Val; not with outer
     folds), else a seeded fraction (`val_fraction` of all cases), or fold `fold` of
     `num_folds` (then the official val is pooled with train);
  5. training subset: the first `num_train` of one `subset_seed` permutation of the rest, so
     subsets of one seed are nested (n=5 is inside n=10) and the test and validation splits do
     not depend on `num_train` or `subset_seed`.
Folds are dealt unit by unit to the fold with the fewest cases (round-robin when no case has a
near-duplicate), so fold sizes differ by at most the size of a cluster.
Splits are drawn on sorted case ids, never on record order (TFDS returns records hashed).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

SPLITS = ('train', 'val', 'test')
# The fields that only choose which cases go where (assign_splits); every other field changes
# the cases themselves (their arrays, which are kept, their near-duplicate clusters).
SPLIT_FIELDS = (
    'num_train', 'subset_seed', 'split_seed', 'test_fraction', 'val_fraction',
    'num_folds', 'fold', 'outer_folds', 'outer_fold',
)  # fmt: skip


def _permutation(ids: list[str], seed: int) -> list[str]:
    """A seeded permutation of ids that does not depend on their incoming order."""
    ids = sorted(ids)
    return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]


def _count(fraction: float, n: int, field: str) -> int:
    if not 0 < fraction < 1:
        raise ValueError(f'config.data.{field}={fraction} must be in (0, 1).')
    return max(1, round(fraction * n))


def _units(order: list[str], group_of: Mapping[str, str]) -> list[list[str]]:
    """The ids of `order` as units that are never split: a near-duplicate cluster (its members in
    the order they come) or a single case, the units in the order their first member comes."""
    units: dict[str, list[str]] = {}
    for id_ in order:
        units.setdefault(group_of.get(id_, id_), []).append(id_)
    return list(units.values())


def _take(units: list[list[str]], n: int) -> tuple[list[str], list[str]]:
    """(the first units up to n cases or just over, the rest), ids in unit order."""
    taken, rest = [], []
    for unit in units:
        (taken if len(taken) < n else rest).extend(unit)
    return taken, rest


def _deal(units: list[list[str]], k: int) -> list[list[str]]:
    """k folds of the units: each unit goes to the fold with the fewest cases so far (the first
    of those), which is round-robin when every unit is one case."""
    folds: list[list[str]] = [[] for _ in range(k)]
    for unit in units:
        min(folds, key=len).extend(unit)
    return folds


def _folds_field(folds: int, fold: int, names: tuple[str, str]) -> None:
    if not 0 <= fold < folds:
        raise ValueError(
            f'config.data.{names[1]}={fold} must be in 0..{folds - 1} '
            f'(config.data.{names[0]}={folds}).'
        )


def outer_folds(
    official: Mapping[str, list[str]], data_config, group_of: Mapping[str, str] | None = None
) -> list[list[str]]:
    """The `outer_folds` test folds of every case (official splits pooled), sorted ids each:
    seeded by `split_seed`, near-duplicate clusters (`group_of`) kept in one fold."""
    pool = [i for ids in official.values() for i in ids]
    units = _units(_permutation(pool, data_config.split_seed), group_of or {})
    return [sorted(f) for f in _deal(units, data_config.outer_folds)]


def assign_splits(
    official: dict[str, list[str]], data_config, group_of: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """Ids of train/val/test (train already cut to the subset) from the official splits.

    `group_of` maps each case of a near-duplicate cluster to its cluster's name (cases not in it
    are alone); every cluster falls into one fold and one split of the seeded draws, and a
    cluster that official splits put into two splits is an error (see `_check_grouped`).
    """
    unknown = set(official) - set(SPLITS)
    if unknown:
        raise ValueError(f'Unexpected splits {sorted(unknown)} in the data set.')
    group_of = group_of or {}
    n_all = sum(len(v) for v in official.values())
    pool = list(official.get('train', []))
    if data_config.get('outer_folds', 0):
        if data_config.outer_folds < 2:
            raise ValueError(
                f'config.data.outer_folds={data_config.outer_folds}: use 0 (no outer '
                'cross-validation) or at least 2 folds (one fold would test every case and '
                'train on none).'
            )
        _folds_field(data_config.outer_folds, data_config.outer_fold, ('outer_folds', 'outer_fold'))
        test_folds = outer_folds(official, data_config, group_of)
        test = test_folds[data_config.outer_fold]
        pool = [i for k, f in enumerate(test_folds) if k != data_config.outer_fold for i in f]
        official = {'train': pool}  # the official val is pooled too
    elif 'test' in official:
        test = sorted(official['test'])
    else:
        units = _units(_permutation(pool, data_config.split_seed), group_of)
        test, pool = _take(units, _count(data_config.test_fraction, n_all, 'test_fraction'))
        test = sorted(test)

    folds, fold = data_config.num_folds, data_config.fold
    if folds and folds > 1:
        _folds_field(folds, fold, ('num_folds', 'fold'))
        pool = pool + list(official.get('val', []))
        val_folds = _deal(_units(_permutation(pool, data_config.split_seed + 1), group_of), folds)
        val = sorted(val_folds[fold])
        pool = [i for k, f in enumerate(val_folds) if k != fold for i in f]
    elif 'val' in official:
        val = sorted(official['val'])
    else:
        units = _units(_permutation(pool, data_config.split_seed + 1), group_of)
        val, pool = _take(units, _count(data_config.val_fraction, n_all, 'val_fraction'))
        val = sorted(val)

    train = _permutation(pool, data_config.subset_seed)
    if data_config.num_train > 0:
        if data_config.num_train > len(train):
            raise ValueError(
                f'config.data.num_train={data_config.num_train} but the training split '
                f'of {data_config.name!r} has only {len(train)} cases: set it to at most '
                f'{len(train)}, or -1 for all of them.'
            )
        train = train[: data_config.num_train]
    elif data_config.num_train == 0:
        raise ValueError('config.data.num_train=0: use -1 for all training cases or a positive n.')
    for name, ids in (('training', train), ('validation', val), ('test', test)):
        if not ids:
            raise ValueError(
                f'The {name} split of {data_config.name!r} is empty ({n_all} cases); '
                'use a larger set, or lower config.data.test_fraction and val_fraction.'
            )
    splits = {'train': train, 'val': val, 'test': test}
    _check_grouped(splits, pool, group_of, data_config)
    return splits


def _check_grouped(
    splits: dict[str, list[str]], pool: list[str], group_of: Mapping[str, str], data_config
) -> None:
    """Raises when a near-duplicate cluster lies in more than one split (only official splits
    can do that; the training pool counts as train even where the subset leaves a case out)."""
    split_of = {i: 'train' for i in pool} | {i: s for s in ('val', 'test') for i in splits[s]}
    members: dict[str, list[str]] = {}
    for id_, group in group_of.items():
        if id_ in split_of:
            members.setdefault(group, []).append(id_)
    straddling = [ids for ids in members.values() if len({split_of[i] for i in ids}) > 1]
    if not straddling:
        return
    shown = '; '.join(
        ' ~ '.join(f'{split_of[i]}/{i}' for i in sorted(ids)) for ids in straddling[:10]
    )
    more = f' ... ({len(straddling)} in all)' if len(straddling) > 10 else ''
    raise ValueError(
        f'{len(straddling)} near-duplicate clusters of {data_config.name!r} lie in two splits '
        f'of its official split: {shown}{more}. A model tested on an image it was trained or '
        'selected on scores too well. Fix: set config.data.outer_folds (e.g. 5; the folds '
        'keep each cluster in one split), remove the duplicate files, or set '
        'config.data.allow_near_duplicates=True to keep the official split as it is (the leak '
        'check still lists them).'
    )
