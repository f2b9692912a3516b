"""The layer-wise study: sweep points from a config, and the runner that trains them.

`enumerate_sweep(config)` is the one place that turns `configs/layerwise.py` into runs; the
in-process runner (`main`), `launch/sweep.py` (local processes, SLURM arrays) and the report all
use it; the workdir's layout is in unet_jax.layout.

A point is finished iff its results.json exists (train writes it atomically, last), so a study
killed at any moment and started again loses nothing and runs nothing twice. Duplicate points
(e.g. shallow_to_deep k=N trains everything, like `full`; `pretrained` under every seed that
uses the same pre-training) run once and are reported under every name.

Runs that differ only in seed (same target, size, configuration and step budget) form groups
of up to `study.group_size` runs, trained together in one compiled step (unet_jax.train); a
group is what the runner, the local launcher and a SLURM array task execute.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
import dataclasses
import functools
import json
import math
import os
import shutil
import traceback
from typing import Any

from absl import logging
import ml_collections

from unet_jax import families, freeze, io_utils, layers, models
from unet_jax.layout import (
    ERROR_FILE,
    PLAN_FILE,
    PRETRAIN_DIR,
    RESULTS_FILE,
    is_finished,
    run_dir,
    size_name,
)

# run_fn(runs, group_dir, name) trains a group (train.Run objects) and returns, per run
# folder, its results or the exception that ended it.
RunFn = Callable[[Sequence[Any], str, str], Mapping[str, Any]]
PrepareFn = Callable[[ml_collections.ConfigDict], None]
GROUPS_DIR = 'groups'  # <workdir>/groups/<group name>/: a group's checkpoint while it trains


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One named point of the study; `index`/`run` name the run that produces its results.

    For a duplicate (same target, size, seed, initialisation and trained units as an earlier
    point) `run` is the earlier point's name and `index` its index.
    """

    name: str
    index: int
    run: str
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

    @property
    def configuration(self) -> str:
        """The name without target, size and seed: what the report aggregates over seeds."""
        return self.name.rsplit('/', 1)[1]

    @property
    def is_alias(self) -> bool:
        return self.run != self.name


@dataclasses.dataclass(frozen=True)
class RunGroup:
    """Runs that differ only in seed, trained together; `index` is its --sweep_index."""

    name: str
    index: int
    runs: tuple[SweepPoint, ...]


@dataclasses.dataclass(frozen=True)
class Sweep:
    points: tuple[SweepPoint, ...]  # every named point, duplicates included
    runs: tuple[SweepPoint, ...]  # one per index, runs[i].index == i
    groups: tuple[RunGroup, ...] = ()  # every run in exactly one group, groups[i].index == i

    @property
    def aliases(self) -> dict[str, str]:
        """Duplicate name -> name of the run that produces it."""
        return {p.name: p.run for p in self.points if p.is_alias}


# ----------------------------------------------------------------------------- enumeration


def configuration_name(family: str, *, order: str = '', granularity: str = '', k: int = 0) -> str:
    """'full', or 'shallow_to_deep-level-block-k3' for the layer-by-layer families."""
    if families.get(family).is_direction:
        return f'{family}-{order}-{granularity}-k{k}'
    return family


def registry_for(config: ml_collections.ConfigDict) -> layers.LayerRegistry:
    """The layer registry of the study's model (the source of N, the number of units)."""
    model = models.create_model(config.model)
    return layers.build_registry(
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
        if order not in layers.ORDERS:
            fail('orders', order, layers.ORDERS)
    for granularity in study.granularities:
        if granularity not in layers.GRANULARITIES:
            fail('granularities', granularity, layers.GRANULARITIES)
    for field in ('targets', 'num_train', 'seeds', 'families'):
        if not len(study[field]):
            raise ValueError(f'config.study.{field} is empty: the study would have no points.')
    for field, low in (('group_size', 0), ('pretrain_seeds', 1), ('scratch_steps_factor', 1e-9)):
        if field in study and not study[field] >= low:
            raise ValueError(
                f'config.study.{field}={study[field]!r} must be >= {low:g} '
                f'(--config.study.{field}=...).'
            )
    if any(seed < 0 for seed in study.seeds):
        raise ValueError(f'config.study.seeds={tuple(study.seeds)}: seeds must be >= 0.')


def _configurations(
    study: ml_collections.ConfigDict, registry: layers.LayerRegistry
) -> Iterator[dict[str, Any]]:
    for name in study.families:
        family = families.get(name)
        if not family.is_direction:
            yield dict(family=name, spec=family.spec)
            continue
        for order in study.orders:
            for granularity in study.granularities:
                n = len(registry.order(order, granularity))
                for k in range(1, n + 1):
                    yield dict(
                        family=name,
                        spec=f'{family.selector}:{k}',
                        order=order,
                        granularity=granularity,
                        k=k,
                    )


def enumerate_sweep(
    config: ml_collections.ConfigDict, *, registry: layers.LayerRegistry | None = None
) -> Sweep:
    """Every point of the study, in run order (seed, target, size, configuration), and groups.

    Seeds vary slowest, so the first part of a study is one complete replicate. Two points are
    duplicates when they share target, size, seed, initialisation (scratch, or which
    pre-training) and train the same units (compiled by `freeze.compile_spec`, whatever the
    order/granularity said); `pretrained` points (no training) are also duplicates across
    seeds that use the same pre-training.
    """
    study = config.study
    _check_study(study)
    registry = registry or registry_for(config)
    configurations = []
    for c in _configurations(study, registry):
        plan = freeze.compile_spec(
            c['spec'],
            registry,
            order=c.get('order') or 'forward',
            granularity=c.get('granularity') or 'unit',
        )
        name = configuration_name(
            c['family'],
            order=c.get('order', ''),
            granularity=c.get('granularity', ''),
            k=c.get('k', 0),
        )
        configurations.append((name, dict(c, trained_units=plan.trained_units)))

    num_pretrain = num_pretrainings(config)
    points, runs, first_of = [], [], {}
    for seed in study.seeds:
        for target in study.targets:
            for num_train in study.num_train:
                for configuration, c in configurations:
                    name = f'{target}/n{size_name(num_train)}/s{seed}/{configuration}'
                    init = families.get(c['family']).init
                    pretrain_index = seed % num_pretrain if init == 'pretrained' else None
                    key = (target, num_train, init, pretrain_index, frozenset(c['trained_units']))
                    if families.get(c['family']).trains or config.dont_load:
                        key += (c['family'] == 'pretrained', seed)
                    run = first_of.get(key)
                    point = SweepPoint(
                        name=name,
                        index=run.index if run else len(runs),
                        run=run.name if run else name,
                        target=target,
                        num_train=num_train,
                        seed=seed,
                        pretrain_index=pretrain_index,
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
    points = [dataclasses.replace(p, group=group_of[p.run]) for p in points]
    runs = [dataclasses.replace(p, group=group_of[p.name]) for p in runs]
    groups = [dataclasses.replace(g, runs=tuple(runs[p.index] for p in g.runs)) for g in groups]
    return Sweep(points=tuple(points), runs=tuple(runs), groups=tuple(groups))


def _groups(runs: Sequence[SweepPoint], size: int) -> list[RunGroup]:
    """Runs that differ only in seed, in chunks of `size` (in seed order); chunk 0 of every
    configuration comes first, so the first groups hold one complete set of seeds."""
    by_key: dict[tuple, list[SweepPoint]] = {}
    for p in runs:
        key = (p.target, p.num_train, p.configuration, p.family)
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
        name = '/'.join(first.name.split('/')[:2] + [first.configuration, _seeds_name(seeds)])
        groups.append(RunGroup(name=name, index=len(groups), runs=tuple(members)))
    return groups


def _seeds_name(seeds: Sequence[int]) -> str:
    """'s3', 's0-4' for a range, else 's0_2_5'."""
    if len(seeds) == 1:
        return f's{seeds[0]}'
    if list(seeds) == list(range(seeds[0], seeds[-1] + 1)):
        return f's{seeds[0]}-{seeds[-1]}'
    return 's' + '_'.join(map(str, seeds))


def group_size(config: ml_collections.ConfigDict, registry: layers.LayerRegistry) -> int:
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
    budget = study.get('group_memory_mb', 4096) * 2**20
    return int(max(1, min(len(study.seeds), budget // per_run)))


# ----------------------------------------------------------------------------- run configs


def num_pretrainings(config: ml_collections.ConfigDict) -> int:
    """R = `study.pretrain_seeds`: seed s fine-tunes from pre-training s mod R."""
    return int(config.study.get('pretrain_seeds', 1))


def pretrain_dirs(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
    """Where the pre-trained weights come from: `study.pretrained_workdir`, else
    <workdir>/pretrain (and pretrain_1, pretrain_2, ... with several pre-training seeds)."""
    count = num_pretrainings(config)
    if config.study.get('pretrained_workdir'):
        if count > 1:
            raise ValueError(
                f'config.study.pretrained_workdir is set, which is one pre-training, but '
                f'config.study.pretrain_seeds={count}: set one of them back.'
            )
        return [os.path.abspath(config.study.pretrained_workdir)]
    names = [PRETRAIN_DIR] + [f'{PRETRAIN_DIR}_{i}' for i in range(1, count)]
    return [os.path.abspath(os.path.join(workdir, name)) for name in names]


def pretrain_config(config: ml_collections.ConfigDict, index: int = 0) -> ml_collections.ConfigDict:
    """The pre-training run `index` (seed `study.pretrain.seed + index`)."""
    run = config.study.pretrain.copy_and_resolve_references()
    run.seed = run.seed + index
    return run


def _override(fields: ml_collections.ConfigDict, overrides: Mapping[str, Any], where: str) -> None:
    """Sets `overrides` (nested mappings merge into nested fields) into existing fields only."""
    for key, value in overrides.items():
        if key not in fields:
            raise ValueError(
                f'{where}.{key}: no field {key!r} in config.data; valid: {sorted(fields)}.'
            )
        if isinstance(fields[key], ml_collections.ConfigDict) and isinstance(value, Mapping):
            _override(fields[key], value, f'{where}.{key}')
        else:
            fields[key] = value


def point_config(
    config: ml_collections.ConfigDict, point: SweepPoint, workdir: str
) -> ml_collections.ConfigDict:
    """The base fine-tuning config (top level) changed as the point says; no `study` field."""
    run = config.copy_and_resolve_references()
    with run.unlocked():
        del run['study']
        _override(
            run.data, config.study.targets[point.target], f'config.study.targets.{point.target}'
        )
    run.seed = point.seed
    run.data.num_train = point.num_train
    if 'subset_seed' in run.data:  # the few-shot subset varies with the seed as well
        run.data.subset_seed = point.seed
    run.finetune.train = point.spec
    if point.order:
        run.finetune.order = point.order
        run.finetune.granularity = point.granularity
    if point.pretrain_index is None:
        run.init_from = ''
    else:
        run.init_from = pretrain_dirs(config, workdir)[point.pretrain_index]
    if point.family == 'scratch':
        factor = config.study.get('scratch_steps_factor', 1.0)
        run.num_train_steps = max(1, round(config.num_train_steps * factor))
    if not families.get(point.family).trains:
        run.num_train_steps = 0
    return run


# ----------------------------------------------------------------------------- the plan


def _plain(value: Any) -> Any:
    """JSON-ready: ConfigDicts, tuples and FieldReferences as plain dicts, lists, values."""
    if isinstance(value, ml_collections.ConfigDict):
        return _plain(value.to_dict())
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, ml_collections.FieldReference):
        return _plain(value.get())
    return value


def write_plan(config: ml_collections.ConfigDict, workdir: str, sweep: Sweep) -> str:
    """study.json: what the report needs to know about the sweep, without the config code."""
    plan = {
        'targets': {t: _plain(config.study.targets[t]) for t in config.study.targets},
        'num_train': list(config.study.num_train),
        'seeds': list(config.study.seeds),
        'families': list(config.study.families),
        'orders': list(config.study.orders),
        'granularities': list(config.study.granularities),
        'pretrain_dirs': pretrain_dirs(config, workdir),
        'num_runs': len(sweep.runs),
        'points': [
            dict(dataclasses.asdict(p), dir=os.path.relpath(run_dir(workdir, p.run), workdir))
            for p in sweep.points
        ],
        'groups': [
            {'name': g.name, 'index': g.index, 'runs': [p.name for p in g.runs]}
            for g in sweep.groups
        ],
    }
    path = os.path.join(workdir, PLAN_FILE)
    if is_chief():
        io_utils.write_text_atomically(path, json.dumps(_plain(plan), indent=1))
    return path


# ----------------------------------------------------------------------------- the runner


def default_run_fn(config: ml_collections.ConfigDict) -> RunFn:
    """train.train_group, with each run's data loaded once for the groups that share it, and
    the study's checkpoint policy (a group's state is only kept while it trains)."""
    from unet_jax import train  # the trainer pulls in data and TensorFlow; only runs need it
    from unet_jax.data import pipeline

    @functools.lru_cache(maxsize=16)
    def load(data_json: str, in_channels: int):
        data = ml_collections.ConfigDict(json.loads(data_json))
        return pipeline.load_splits(data, in_channels=in_channels)

    def splits(run_config: ml_collections.ConfigDict):
        return load(run_config.data.to_json(), run_config.model.in_channels)

    def run(runs: Sequence[Any], group_dir: str, name: str) -> Mapping[str, Any]:
        return train.train_group(
            runs,
            group_dir,
            name=name,
            splits_fn=splits,
            policy=train.CheckpointPolicy(
                every_secs=config.study.get('checkpoint_every_secs', 0.0), final=False
            ),
            vectorize=config.study.get('vectorize', 'auto'),
        )

    return run


def group_dir(workdir: str, group: RunGroup) -> str:
    return os.path.join(workdir, GROUPS_DIR, *group.name.split('/'))


def is_chief() -> bool:
    """Only process 0 of a multi-process run writes and deletes the study's files."""
    import jax

    return jax.process_index() == 0


def remove_group_state(directory: str) -> None:
    """Deletes a group's checkpoint folder once its runs are written, and empty folders above."""
    if not is_chief():
        return
    shutil.rmtree(directory, ignore_errors=True)
    try:
        os.removedirs(os.path.dirname(directory))  # stops at the first folder that is not empty
    except OSError:
        pass


def run_pretrain(config: ml_collections.ConfigDict, workdir: str, run_fn: RunFn) -> None:
    """Every pre-training (one group of `study.pretrain_seeds` runs) unless finished."""
    directories = pretrain_dirs(config, workdir)
    if all(is_finished(d) for d in directories):
        logging.info('study: pre-training finished earlier (%s); reusing it.', directories[0])
        return
    if config.study.get('pretrained_workdir'):
        raise FileNotFoundError(
            f'config.study.pretrained_workdir={directories[0]} has no {RESULTS_FILE}: that '
            "pre-training run did not finish. Finish it, or set the field to '' to pre-train "
            'inside the study workdir.'
        )
    from unet_jax.groups import Run

    logging.info('study: pre-training on %s in %s', config.study.pretrain.data.name, directories)
    runs = [
        Run(pretrain_config(config, i), d, name=os.path.basename(d))
        for i, d in enumerate(directories)
    ]
    directory = os.path.join(workdir, GROUPS_DIR, PRETRAIN_DIR)
    outcome = run_fn(runs, directory, PRETRAIN_DIR)
    for d in directories:
        if isinstance(outcome.get(d), Exception):
            raise outcome[d]
    if all(is_finished(d) for d in directories):
        remove_group_state(directory)


def prepare_data(data_config: ml_collections.ConfigDict, *, in_channels: int) -> None:
    """Builds a set (TFDS build + cache) once, before parallel runs would race to build it."""
    from unet_jax.data import pipeline

    pipeline.load_splits(data_config, in_channels=in_channels)


def prepare_targets(
    config: ml_collections.ConfigDict, workdir: str, sweep: Sweep, prepare_fn: PrepareFn
) -> None:
    for target in config.study.targets:
        point = next(p for p in sweep.runs if p.target == target)
        logging.info('study: preparing the data of %s', target)
        prepare_fn(point_config(config, point, workdir).data)


def _record_failure(directory: str, point: SweepPoint, error: BaseException) -> None:
    if not is_chief():
        return
    text = ''.join(traceback.format_exception(type(error), error, error.__traceback__))
    io_utils.write_text_atomically(
        os.path.join(directory, ERROR_FILE), f'sweep point {point.index}: {point.name}\n\n{text}'
    )


def run_group(
    config: ml_collections.ConfigDict, workdir: str, group: RunGroup, run_fn: RunFn
) -> dict[str, list[str]]:
    """Trains a group's unfinished runs; each failed run gets error.txt in its folder.

    Returns {'trained': run names, 'failed': run names}. The group's checkpoint folder is
    removed once every run of it is finished.
    """
    from unet_jax.groups import Run

    pending = [p for p in group.runs if not is_finished(run_dir(workdir, p.run))]
    state_dir = group_dir(workdir, group)
    if not pending:
        remove_group_state(state_dir)
        return {'trained': [], 'failed': []}
    dirs = pretrain_dirs(config, workdir)
    for point in pending:
        if point.pretrain_index is not None and not is_finished(dirs[point.pretrain_index]):
            raise FileNotFoundError(
                f'group {group.index} ({group.name}) starts from the pre-trained weights, but '
                f'{dirs[point.pretrain_index]} has no {RESULTS_FILE}. Run '
                '--sweep_index=pretrain first (launch/sweep.py and the whole-study run do).'
            )
        os.makedirs(run_dir(workdir, point.run), exist_ok=True)
        if os.path.exists(os.path.join(run_dir(workdir, point.run), ERROR_FILE)):
            os.remove(os.path.join(run_dir(workdir, point.run), ERROR_FILE))
    runs = [
        Run(
            point_config(config, p, workdir),
            run_dir(workdir, p.run),
            name=p.run,
            extra={
                'pretrain': None
                if p.pretrain_index is None
                else {'dir': dirs[p.pretrain_index], 'index': p.pretrain_index}
            },
        )
        for p in group.runs
    ]
    try:
        outcome = run_fn(runs, state_dir, group.name)
    except Exception as error:
        for point in pending:
            _record_failure(run_dir(workdir, point.run), point, error)
        raise
    trained, failed = [], []
    for point in pending:
        result = outcome.get(run_dir(workdir, point.run))
        if isinstance(result, Exception):
            _record_failure(run_dir(workdir, point.run), point, result)
            failed.append(point.run)
        elif is_finished(run_dir(workdir, point.run)):
            trained.append(point.run)
    if all(is_finished(run_dir(workdir, p.run)) for p in group.runs):
        remove_group_state(state_dir)
    return {'trained': trained, 'failed': failed}


def run_study(
    config: ml_collections.ConfigDict, workdir: str, sweep: Sweep, run_fn: RunFn
) -> dict[str, list[str]]:
    """Every unfinished group in index order; a failure is recorded and the study goes on."""
    total = len(sweep.runs)
    done = [p.run for p in sweep.runs if is_finished(run_dir(workdir, p.run))]
    failed, trained = [], []
    logging.info(
        'study: %d runs (%d names) in %d groups, %d finished earlier.',
        total,
        len(sweep.points),
        len(sweep.groups),
        len(done),
    )
    progress = io_utils.Progress(total, done=len(done), unit='runs')
    for group in sweep.groups:
        if all(is_finished(run_dir(workdir, p.run)) for p in group.runs):
            continue
        try:
            outcome = run_group(config, workdir, group, run_fn)
        except Exception as e:  # recorded in error.txt; the other groups still run
            outcome = {'trained': [], 'failed': [p.run for p in group.runs]}
            logging.error('study: group %d (%s) failed: %s', group.index, group.name, e)
        trained += outcome['trained']
        done += outcome['trained']
        failed += outcome['failed']
        for name in outcome['failed']:
            logging.error(
                'study: %s failed (see %s)',
                name,
                os.path.join(run_dir(workdir, name), ERROR_FILE),
            )
        logging.info(
            'study: group %d/%d (%s): %s; %d failed',
            group.index + 1,
            len(sweep.groups),
            group.name,
            progress.line(len(done) + len(failed)),
            len(failed),
        )
    return {'done': done, 'failed': failed, 'trained': trained}


def main(
    config: ml_collections.ConfigDict,
    workdir: str,
    sweep_index: int | str | None = None,
    *,
    run_fn: RunFn | None = None,
    prepare_fn: PrepareFn | None = None,
) -> dict[str, Any]:
    """The study from `unet_jax.main`: `sweep_index` None = everything, an int = that group of
    runs, 'report' = only the report, 'pretrain' = pre-training (if not finished) and building
    every target set: what launchers run before fanning out, so that parallel runs never race
    to build the same data set."""
    from unet_jax import report  # matplotlib; only needed where a report is written

    os.makedirs(workdir, exist_ok=True)
    sweep = enumerate_sweep(config)
    write_plan(config, workdir, sweep)
    if sweep_index == 'report':
        return {'report': report.write_report(workdir)}
    run_fn = run_fn or default_run_fn(config)
    needs_pretraining = any(p.pretrain_index is not None for p in sweep.runs)
    if sweep_index == 'pretrain':
        if needs_pretraining:
            run_pretrain(config, workdir, run_fn)
        prepare_targets(
            config,
            workdir,
            sweep,
            prepare_fn or functools.partial(prepare_data, in_channels=config.model.in_channels),
        )
        return {}
    if sweep_index is not None:
        group = sweep.groups[_parse_index(sweep_index, len(sweep.groups))]
        logging.info('study: group %d/%d: %s', group.index, len(sweep.groups), group.name)
        outcome = run_group(config, workdir, group, run_fn)
        if not outcome['trained'] and not outcome['failed']:
            logging.info('study: %s finished earlier; nothing to do.', group.name)
        if outcome['failed']:
            raise RuntimeError(
                f'study: run(s) {", ".join(outcome["failed"])} of group {group.name} failed; '
                'their error.txt says why.'
            )
        return outcome
    if needs_pretraining:
        run_pretrain(config, workdir, run_fn)
    outcome = run_study(config, workdir, sweep, run_fn)
    outcome['report'] = report.write_report(workdir)
    logging.info('study: report in %s', outcome['report'])
    if outcome['failed']:
        logging.warning(
            'study: %d run(s) failed: %s. Their error.txt says why; run the same '
            'command again to retry them.',
            len(outcome['failed']),
            ', '.join(outcome['failed']),
        )
    return outcome


def _parse_index(sweep_index: int | str, num_groups: int) -> int:
    try:
        index = int(sweep_index)
    except ValueError:
        raise ValueError(
            f"--sweep_index={sweep_index!r}: expected an integer group index, 'pretrain' or "
            "'report'."
        ) from None
    if not 0 <= index < num_groups:
        raise ValueError(
            f'--sweep_index={index} is out of range: this study has {num_groups} groups of '
            f'runs (0..{num_groups - 1}); see study.json or launch/sweep.py --dry-run.'
        )
    return index
