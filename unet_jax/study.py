"""The layer-wise study: sweep points from a config, and the runner that trains them.

`enumerate_sweep(config)` is the one place that turns `configs/layerwise.py` into runs; the
in-process runner (`main`), `launch/sweep.py` (local processes, SLURM arrays) and the report all
use it; the workdir's layout is in unet_jax.layout.

A point is finished iff its results.json exists (train writes it atomically, last), so a study
killed at any moment and started again loses nothing and runs nothing twice. Duplicate points
(e.g. shallow_to_deep k=N trains everything, like `full`) run once and are reported under
every name.
"""

from collections.abc import Callable, Iterator
import dataclasses
import functools
import json
import os
import time
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

RunFn = Callable[[ml_collections.ConfigDict, str], dict[str, Any]]
PrepareFn = Callable[[ml_collections.ConfigDict], None]


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

    @property
    def configuration(self) -> str:
        """The name without target, size and seed: what the report aggregates over seeds."""
        return self.name.rsplit('/', 1)[1]

    @property
    def is_alias(self) -> bool:
        return self.run != self.name


@dataclasses.dataclass(frozen=True)
class Sweep:
    points: tuple[SweepPoint, ...]  # every named point, duplicates included
    runs: tuple[SweepPoint, ...]  # one per index, runs[i].index == i

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
    """Every point of the study, in run order (seed, target, size, configuration).

    Seeds vary slowest, so the first part of a study is one complete replicate. Two points are
    duplicates when they share target, size, seed and initialisation and train the same
    units (compiled by `freeze.compile_spec`, whatever the order/granularity said).
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

    points, runs, first_of = [], [], {}
    for seed in study.seeds:
        for target in study.targets:
            for num_train in study.num_train:
                for configuration, c in configurations:
                    name = f'{target}/n{size_name(num_train)}/s{seed}/{configuration}'
                    key = (
                        target,
                        num_train,
                        seed,
                        c['family'] == 'scratch',
                        c['family'] == 'pretrained',
                        frozenset(c['trained_units']),
                    )
                    run = first_of.get(key)
                    point = SweepPoint(
                        name=name,
                        index=run.index if run else len(runs),
                        run=run.name if run else name,
                        target=target,
                        num_train=num_train,
                        seed=seed,
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
    return Sweep(points=tuple(points), runs=tuple(runs))


# ----------------------------------------------------------------------------- run configs


def pretrain_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Where the pre-trained weights come from: `study.pretrained_workdir` or <workdir>/pretrain."""
    return os.path.abspath(
        config.study.get('pretrained_workdir') or os.path.join(workdir, PRETRAIN_DIR)
    )


def pretrain_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    return config.study.pretrain.copy_and_resolve_references()


def point_config(
    config: ml_collections.ConfigDict, point: SweepPoint, workdir: str
) -> ml_collections.ConfigDict:
    """The base fine-tuning config (top level) changed as the point says; no `study` field."""
    run = config.copy_and_resolve_references()
    with run.unlocked():
        del run['study']
        for key, value in config.study.targets[point.target].items():
            if key not in run.data:
                raise ValueError(
                    f'config.study.targets.{point.target}.{key}: no field {key!r} '
                    f'in config.data; valid: {sorted(run.data)}.'
                )
            run.data[key] = value
    run.seed = point.seed
    run.data.num_train = point.num_train
    if 'subset_seed' in run.data:  # the few-shot subset varies with the seed as well
        run.data.subset_seed = point.seed
    run.finetune.train = point.spec
    if point.order:
        run.finetune.order = point.order
        run.finetune.granularity = point.granularity
    run.init_from = '' if point.family == 'scratch' else pretrain_dir(config, workdir)
    if point.family == 'pretrained':
        run.num_train_steps = 0
    return run


# ----------------------------------------------------------------------------- the plan


def write_plan(config: ml_collections.ConfigDict, workdir: str, sweep: Sweep) -> str:
    """study.json: what the report needs to know about the sweep, without the config code."""
    plan = {
        'targets': {t: dict(config.study.targets[t]) for t in config.study.targets},
        'num_train': list(config.study.num_train),
        'seeds': list(config.study.seeds),
        'families': list(config.study.families),
        'orders': list(config.study.orders),
        'granularities': list(config.study.granularities),
        'pretrain_dir': pretrain_dir(config, workdir),
        'num_runs': len(sweep.runs),
        'points': [
            dict(dataclasses.asdict(p), dir=os.path.relpath(run_dir(workdir, p.run), workdir))
            for p in sweep.points
        ],
    }
    path = os.path.join(workdir, PLAN_FILE)
    io_utils.write_text_atomically(path, json.dumps(plan, indent=1))
    return path


# ----------------------------------------------------------------------------- the runner


def default_run_fn() -> RunFn:
    """train.train_and_evaluate, loading each data subset once for the points that share it."""
    from unet_jax import train  # the trainer pulls in data and TensorFlow; only runs need it
    from unet_jax.data import pipeline

    cache: dict[str, Any] = {}

    def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
        key = config.data.to_json() + f'/in{config.model.in_channels}'
        if key not in cache:
            cache.clear()
            cache[key] = pipeline.load_splits(config.data, in_channels=config.model.in_channels)
        return train.train_and_evaluate(config, workdir, splits=cache[key])

    return run


def run_pretrain(config: ml_collections.ConfigDict, workdir: str, run_fn: RunFn) -> None:
    directory = pretrain_dir(config, workdir)
    if is_finished(directory):
        logging.info('study: pre-training finished earlier (%s); reusing it.', directory)
        return
    if config.study.get('pretrained_workdir'):
        raise FileNotFoundError(
            f'config.study.pretrained_workdir={directory} has no {RESULTS_FILE}: that '
            "pre-training run did not finish. Finish it, or set the field to '' to pre-train "
            'inside the study workdir.'
        )
    logging.info('study: pre-training on %s in %s', config.study.pretrain.data.name, directory)
    run_fn(pretrain_config(config), directory)


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


def run_point(
    config: ml_collections.ConfigDict, workdir: str, point: SweepPoint, run_fn: RunFn
) -> bool:
    """Trains one run unless finished; on failure writes error.txt there and re-raises."""
    directory = run_dir(workdir, point.run)
    if is_finished(directory):
        return False
    if point.family != 'scratch' and not is_finished(pretrain_dir(config, workdir)):
        raise FileNotFoundError(
            f'sweep point {point.index} ({point.name}) starts from the pre-trained weights, '
            f'but {pretrain_dir(config, workdir)} has no {RESULTS_FILE}. Run '
            '--sweep_index=pretrain first (launch/sweep.py and the whole-study run do).'
        )
    os.makedirs(directory, exist_ok=True)
    error_path = os.path.join(directory, ERROR_FILE)
    if os.path.exists(error_path):
        os.remove(error_path)
    try:
        run_fn(point_config(config, point, workdir), directory)
    except Exception:
        io_utils.write_text_atomically(
            error_path, f'sweep point {point.index}: {point.name}\n\n' + traceback.format_exc()
        )
        raise
    return True


def run_study(
    config: ml_collections.ConfigDict, workdir: str, sweep: Sweep, run_fn: RunFn
) -> dict[str, list[str]]:
    """Every unfinished run in index order; a failure is recorded and the study goes on."""
    total = len(sweep.runs)
    done = [p.run for p in sweep.runs if is_finished(run_dir(workdir, p.run))]
    failed, trained, durations = [], [], []
    logging.info(
        'study: %d runs (%d names), %d finished earlier.', total, len(sweep.points), len(done)
    )
    for point in sweep.runs:
        if is_finished(run_dir(workdir, point.run)):
            continue
        start = time.time()
        try:
            run_point(config, workdir, point, run_fn)
        except Exception as e:  # recorded in error.txt; the other points still run
            failed.append(point.run)
            logging.error(
                'study: point %d (%s) failed: %s (see %s)',
                point.index,
                point.name,
                e,
                os.path.join(run_dir(workdir, point.run), ERROR_FILE),
            )
        else:
            done.append(point.run)
            trained.append(point.run)
        durations.append(time.time() - start)
        remaining = total - len(done) - len(failed)
        eta = sum(durations) / len(durations) * remaining
        logging.info(
            'study: %d/%d runs done, %d failed; last %s took %.0f s; ETA %s',
            len(done),
            total,
            len(failed),
            point.name,
            durations[-1],
            io_utils.format_duration(eta),
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
    """The study from `unet_jax.main`: `sweep_index` None = everything, an int = that run,
    'report' = only the report, 'pretrain' = pre-training (if not finished) and building every
    target set: what launchers run before fanning out, so that parallel runs never race to
    build the same data set."""
    from unet_jax import report  # matplotlib; only needed where a report is written

    os.makedirs(workdir, exist_ok=True)
    sweep = enumerate_sweep(config)
    write_plan(config, workdir, sweep)
    if sweep_index == 'report':
        return {'report': report.write_report(workdir)}
    run_fn = run_fn or default_run_fn()
    if sweep_index == 'pretrain':
        if any(p.family != 'scratch' for p in sweep.runs):
            run_pretrain(config, workdir, run_fn)
        prepare_targets(
            config,
            workdir,
            sweep,
            prepare_fn or functools.partial(prepare_data, in_channels=config.model.in_channels),
        )
        return {}
    if sweep_index is not None:
        index = _parse_index(sweep_index, len(sweep.runs))
        point = sweep.runs[index]
        logging.info('study: run %d/%d: %s', index, len(sweep.runs), point.name)
        trained = run_point(config, workdir, point, run_fn)
        if not trained:
            logging.info('study: %s finished earlier; nothing to do.', point.name)
        return {'trained': [point.run] if trained else []}
    if any(p.family != 'scratch' for p in sweep.runs):
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


def _parse_index(sweep_index: int | str, num_runs: int) -> int:
    try:
        index = int(sweep_index)
    except ValueError:
        raise ValueError(
            f"--sweep_index={sweep_index!r}: expected an integer run index, 'pretrain' or 'report'."
        ) from None
    if not 0 <= index < num_runs:
        raise ValueError(
            f'--sweep_index={index} is out of range: this study has {num_runs} '
            f'runs (0..{num_runs - 1}); see study.json or launch/sweep.py --dry-run.'
        )
    return index
