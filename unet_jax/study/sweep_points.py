"""The study's sweep: every named point, the unique runs and their groups, from a config.

`enumerate_sweep(config)` is the one place that turns `configs/layerwise.py` into runs; the
study runner, `launch/sweep.py` (local processes, SLURM arrays) and the report all use it. What
each family expands to, and which configurations run at each size: unet_jax.study.configurations.

Glossary (every module of the package uses these words in these meanings only):
  point   one named cell of the study: target, training-set size, seed (and outer fold) and
          configuration,
          e.g. `us/n16/s0/full` (`SweepPoint`). The report reads results by point.
  run     one training of one config into one folder, ending with its results.json. Points
          that train the same (same target, size, seed, fold, initialisation and trained units;
          e.g. shallow_to_deep k=N and `full`, or `pretrained`, which trains nothing, under
          every seed that uses the same pre-training) are aliases of one run: a run is named
          after its first point (`SweepPoint.run_name`, `run` in study.json), and `Sweep.runs`
          holds every run's first point.
  group   runs that differ only in seed, up to `study.group_size` of them, trained together
          in one compiled step (`RunGroup`, its `index` the --sweep_index;
          unet_jax.train.trainer.train_group).
  member  a run as its group trains it: its config, folder and name
          (unet_jax.train.groups.Member).
  lane    the members that one compiled program steps at once: all of a group on an
          accelerator, one on CPU (unet_jax.train.lanes).

With outer cross-validation (`config.data.outer_folds` = F >= 2) every (target, size, seed)
runs on each of the F test folds: the replication unit is fold x seed, the point names carry
the fold (`busi/n10/s0/f3/full`), and the F runs of one seed test every image once. A group
never mixes folds (its runs share the validation and test splits).
"""

from collections.abc import Sequence
import dataclasses
import math
from typing import Any

import ml_collections

from unet_jax import freeze, models
from unet_jax.config import auto_spec, families
from unet_jax.layout import size_name
from unet_jax.models import layer_registry
from unet_jax.study import configurations


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One named point of the study; `index`/`run_name` say which run produces its results.

    For a duplicate (same target, size, seed, initialisation and trained units as an earlier
    point) `run_name` is the earlier point's name and `index` its index.
    """

    name: str
    index: int
    run_name: str
    target: str
    num_train: int
    seed: int
    family: str
    spec: str
    trained_units: tuple[str, ...]
    order: str = ''
    granularity: str = ''
    k: int = 0
    pretrain_index: int | None = None  # which pre-training it starts from (None: scratch)
    group: str = ''  # the group its run is trained in
    fold: int | None = None  # the outer test fold (config.data.outer_fold); None: no folds

    @property
    def configuration(self) -> str:
        """The name without target, size and seed: what the report aggregates over seeds."""
        return self.name.rsplit('/', 1)[1]

    @property
    def is_alias(self) -> bool:
        return self.run_name != self.name


@dataclasses.dataclass(frozen=True)
class RunGroup:
    """Runs that differ only in seed (one fold), trained together; `runs` are their first
    points, `index` is its --sweep_index."""

    name: str
    index: int
    runs: tuple[SweepPoint, ...]


@dataclasses.dataclass(frozen=True)
class Sweep:
    points: tuple[SweepPoint, ...]  # every named point, duplicates included
    runs: tuple[SweepPoint, ...]  # every run's first point, runs[i].index == i
    groups: tuple[RunGroup, ...] = ()  # every run in exactly one group, groups[i].index == i

    @property
    def aliases(self) -> dict[str, str]:
        """Duplicate name -> name of the run that produces it."""
        return {p.name: p.run_name for p in self.points if p.is_alias}


# ----------------------------------------------------------------------------- enumeration


def registry_for(config: ml_collections.ConfigDict) -> layer_registry.LayerRegistry:
    """The layer registry of the study's model (the source of N, the number of units)."""
    model = models.create_model(config.model)
    return layer_registry.build_registry(
        model, image_size=config.data.image_size, in_channels=config.model.in_channels
    )


def _check_study(study: ml_collections.ConfigDict) -> None:
    def fail(field, value, valid):
        raise ValueError(
            f'config.study.{field}: {value!r} is not valid; choose from {valid} '
            f'(configs/layerwise.py, or --config.study.{field}=...).'
        )

    for family in study.families:
        if family not in families.NAMES:
            fail('families', family, families.NAMES)
    for order in study.orders:
        if order not in layer_registry.ORDERS:
            fail('orders', order, layer_registry.ORDERS)
    for granularity in study.granularities:
        if granularity not in layer_registry.GRANULARITIES:
            fail('granularities', granularity, layer_registry.GRANULARITIES)
    for criterion in study.get('auto_criteria', auto_spec.CRITERIA):
        if criterion not in auto_spec.CRITERIA:
            fail('auto_criteria', criterion, auto_spec.CRITERIA)
    for field in ('targets', 'num_train', 'seeds', 'families'):
        if not len(study[field]):
            raise ValueError(f'config.study.{field} is empty: the study would have no points.')
    for field, low in (('group_size', 0), ('pretrain_seeds', 1), ('scratch_steps_factor', 1e-9)):
        if field in study and not study[field] >= low:
            raise ValueError(
                f'config.study.{field}={study[field]!r} must be >= {low:g} '
                f'(--config.study.{field}=...).'
            )
    for name, external in (study.get('external') or {}).items():
        unknown = [t for t in external.get('of', ()) if t not in study.targets]
        if not external.get('of') or unknown:
            raise ValueError(
                f'config.study.external.{name}.of={tuple(external.get("of", ()))}: name the '
                f'targets whose runs it scores, among {list(study.targets)} (e.g. '
                f'external={name}@{next(iter(study.targets))} in configs/layerwise.py).'
            )
        if name in study.targets:
            raise ValueError(
                f'config.study.external.{name}: {name!r} is also a target; an external test set '
                'is never trained on, so give it another name.'
            )
    if any(seed < 0 for seed in study.seeds):
        raise ValueError(f'config.study.seeds={tuple(study.seeds)}: seeds must be >= 0.')


def enumerate_sweep(
    config: ml_collections.ConfigDict, *, registry: layer_registry.LayerRegistry | None = None
) -> Sweep:
    """Every point of the study, in run order (seed, fold, target, size, configuration), and
    groups.

    Seeds vary slowest, so the first part of a study is one complete replicate (with outer
    folds: every image tested once). Two points are duplicates when they share target, size,
    seed, outer fold, initialisation (scratch, or which pre-training) and train the same
    parameters (`freeze.FreezePlan.signature`, whatever the order/granularity said,
    parameter-efficient parts included); `pretrained`
    points (no training) are also duplicates across seeds (of one fold) that use the same
    pre-training.
    """
    study = config.study
    _check_study(study)
    registry = registry or registry_for(config)
    configured = []  # (name, configuration, what it trains)
    for c in configurations.configurations(study, registry):
        name = configurations.configuration_name(
            c['family'],
            order=c.get('order', ''),
            granularity=c.get('granularity', ''),
            k=c.get('k', 0),
            spec=c['spec'],
        )
        # What an auto: spec trains is only known once its run has scored the blocks (but for
        # k = N: everything, the same run as `full`).
        plan = None if auto_spec.is_auto(c['spec']) else _plan(c, registry)
        units = plan.trained_units if plan else ()
        trains = plan.signature if plan else c['spec']  # what it trains, leaf by leaf
        num_names = len(registry.order('forward', c.get('granularity') or 'unit'))
        if auto_spec.is_auto(c['spec']) and c['k'] == num_names:
            c, units = dict(c, spec=freeze.ALL), registry.unit_names
            trains = _plan(c, registry).signature
        configured.append((name, dict(c, trained_units=units), trains))

    num_pretrain = num_pretrainings(config)
    subsets = configurations.size_subsets(study, [name for name, _, _ in configured])
    points, runs, first_of = [], [], {}
    for seed, fold in ((s, f) for s in study.seeds for f in outer_folds(config)):
        for target in study.targets:
            for num_train in study.num_train:
                for configuration, c, trains in configured:
                    subset = subsets.get(num_train)
                    if subset and (target, configuration) not in subset:
                        continue
                    replicate = f's{seed}' if fold is None else f's{seed}/f{fold}'
                    name = f'{target}/n{size_name(num_train)}/{replicate}/{configuration}'
                    init = families.get(c['family']).init
                    uses = families.get(c['family']).uses_pretraining
                    pretrain_index = pretraining_of(study.seeds, seed, num_pretrain)
                    pretrain_index = pretrain_index if uses else None
                    key = (target, num_train, fold, init, pretrain_index, trains)
                    if families.get(c['family']).trains or config.dont_load:
                        key += (c['family'] == 'pretrained', seed)
                    run = first_of.get(key)
                    point = SweepPoint(
                        name=name,
                        index=run.index if run else len(runs),
                        run_name=run.name if run else name,
                        target=target,
                        num_train=num_train,
                        seed=seed,
                        pretrain_index=pretrain_index,
                        fold=fold,
                        **c,
                    )
                    if run is None:
                        first_of[key] = point
                        runs.append(point)
                    points.append(point)
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise ValueError(
            'config.study lists a target, size, seed or family twice; '
            'every sweep point name must be unique.'
        )
    groups = _groups(runs, group_size(config, registry))
    group_of = {p.name: g.name for g in groups for p in g.runs}
    points = [dataclasses.replace(p, group=group_of[p.run_name]) for p in points]
    runs = [dataclasses.replace(p, group=group_of[p.name]) for p in runs]
    groups = [dataclasses.replace(g, runs=tuple(runs[p.index] for p in g.runs)) for g in groups]
    return Sweep(points=tuple(points), runs=tuple(runs), groups=tuple(groups))


def pretraining_of(seeds: Sequence[int], seed: int, count: int) -> int:
    """The pre-training that fine-tuning seed `seed` starts from: the i-th seed of the study
    starts from pre-training i mod R (R = `count`), whose own seed is study.pretrain.seed + i;
    with study.pretrain.seed equal to the first seed, seed s starts from pre-training s."""
    return list(seeds).index(seed) % count


def _plan(c: dict[str, Any], registry: layer_registry.LayerRegistry) -> freeze.FreezePlan:
    return freeze.compile_spec(
        c['spec'],
        registry,
        order=c.get('order') or 'forward',
        granularity=c.get('granularity') or 'unit',
    )


def _groups(runs: Sequence[SweepPoint], size: int) -> list[RunGroup]:
    """Runs that differ only in seed, in chunks of `size` (in seed order); chunk 0 of every
    configuration comes first, so the first groups hold one complete set of seeds. An automatic
    choice depends on the pre-training, so its groups never mix pre-trainings; runs of
    different outer folds have other validation and test splits, so groups never mix folds."""
    by_key: dict[tuple, list[SweepPoint]] = {}
    for p in runs:
        key = (p.target, p.num_train, p.fold, p.configuration, p.family)
        if families.get(p.family).is_auto:
            key += (p.pretrain_index,)
        by_key.setdefault(key, []).append(p)
    chunks = [
        (i // size, n, members[i : i + size])
        for n, members in enumerate(by_key.values())
        for i in range(0, len(members), size)
    ]
    groups = []
    for _, _, members in sorted(chunks, key=lambda chunk: chunk[:2]):
        first = members[0]
        seeds = [p.seed for p in members]
        fold = [] if first.fold is None else [f'f{first.fold}']
        name = '/'.join(
            first.name.split('/')[:2] + fold + [first.configuration, _seeds_name(seeds)]
        )
        groups.append(RunGroup(name=name, index=len(groups), runs=tuple(members)))
    return groups


def _seeds_name(seeds: Sequence[int]) -> str:
    """'s3', 's0-4' for a range, else 's0_2_5'."""
    if len(seeds) == 1:
        return f's{seeds[0]}'
    if list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
        return f's{seeds[0]}-{seeds[-1]}'
    return 's' + '_'.join(map(str, seeds))


def group_size(config: ml_collections.ConfigDict, registry: layer_registry.LayerRegistry) -> int:
    """`study.group_size`, or (0, automatic) as many seeds as fit `study.group_memory_mb`.

    The estimate depends on the config only (never on the machine), so a launcher on a login
    node and its tasks on accelerators agree on the groups: per run, params, gradients and
    Adam's two moments (16 bytes a parameter) plus three float32 copies of every unit's
    activations of a batch (forward, gradient, augmentation and slack).
    """
    study = config.study
    size = study.get('group_size', 1)
    if size:
        return int(size)
    activations = sum(math.prod(u.output_shape) for u in registry.units)
    per_run = 16 * registry.param_count + 3 * 4 * config.batch_size * activations
    budget = study.get('group_memory_mb', 8192) * 2**20
    return int(max(1, min(len(study.seeds), budget // per_run)))


def outer_folds(config: ml_collections.ConfigDict) -> tuple[int | None, ...]:
    """The outer test folds each (target, size, seed) runs on: 0..F-1 with
    `config.data.outer_folds` = F >= 2, else (None,): the one test split of each target."""
    count = int(config.data.get('outer_folds', 0))
    return tuple(range(count)) if count >= 2 else (None,)


def num_pretrainings(config: ml_collections.ConfigDict) -> int:
    """R = `study.pretrain_seeds`: seed s fine-tunes from pre-training s mod R."""
    return int(config.study.get('pretrain_seeds', 1))
