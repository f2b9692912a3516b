"""Every check of a config before anything is written: its plain fields (unet_jax.config.
checks), then what only the model knows (norms, the image pyramid, the freeze spec against the
layer registry) and the runs of a study's sweep points.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from unet_jax.config import target_sets
from unet_jax.config.auto_spec import AutoSpecError, is_auto, parse_auto
from unet_jax.config.checks import field_problems, inference_problems
from unet_jax.config.target_sets import STUDY_OWNED_FIELDS
from unet_jax.errors import ConfigError


def check_config(config: ml_collections.ConfigDict) -> None:
    """Fails with every out-of-range field of a run (or of a study's runs) and its fix.

    Called before a run writes anything (unet_jax.main), so that a bad value is named at once
    instead of surfacing later as a NaN loss, a shape error deep in JAX or a failed sweep
    point. A study config is its base run (every point) with each of its targets applied,
    plus `study.pretrain`.
    """
    runs = [('config', config)]
    problems = []
    if 'study' in config:
        runs.append(('config.study.pretrain', config.study.pretrain))
        for name, source in (config.study.get('source_pretrain') or {}).items():
            runs.append((f'config.study.source_pretrain.{name}', source))
        for name, target in config.study.targets.items():
            where = f'config.study.targets.{name}'
            try:
                copy = ml_collections.ConfigDict(config.to_dict())
                target_sets.apply_target(copy, target, where=where)
            except ConfigError as e:
                problems.append(str(e))
        problems += inference_problems(config.study)
    problems += [
        p for where, run in runs for p in run_problems(run, where, spec='study' not in run)
    ]
    if 'study' in config and not problems:
        problems += _point_problems(config)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f'{len(problems)} config fields are wrong:\n  ' + '\n  '.join(problems))


def run_problems(
    config: ml_collections.ConfigDict, where: str = 'config', *, spec: bool = True
) -> list[str]:
    """What is wrong with the fields of one run config, one line each ([] when it is fine).

    The plain fields come first; the model's fields and, with `spec`, the freeze spec are
    checked against the model (importing JAX) once those are fine.
    """
    problems = field_problems(config, where)
    if problems:
        return problems  # The model-level checks below import JAX: only when these pass.
    return _model_problems(config, where, spec=spec)


def _point_problems(config: ml_collections.ConfigDict) -> list[str]:
    """What is wrong with the runs of a study's sweep points: the fields a point sets (its
    training-set size, seed and step budget; study.run_configs.point_config) checked as for one
    run, each problem once with a point that has it. The freeze specs are checked by the
    enumeration."""
    from unet_jax.study import run_configs, sweep_points

    alike: dict[tuple, list[Any]] = {}  # points whose runs differ in seed and spec only
    for point in sweep_points.enumerate_sweep(config).runs:
        alike.setdefault((point.target, point.num_train, point.family), []).append(point)
    first_point: dict[str, tuple[str, int]] = {}
    for points in alike.values():
        run = run_configs.point_config(config, points[0], workdir='')
        for problem in run_problems(run, spec=False):
            name, count = first_point.get(problem, (points[0].name, 0))
            first_point[problem] = (name, count + len(points))
    problems = []
    for problem, (name, count) in first_point.items():
        field = problem.removeprefix('config.').split('=', 1)[0]
        origin = STUDY_OWNED_FIELDS.get(field, 'the study sets it per point')
        others = f' and {count - 1} other run(s)' if count > 1 else ''
        problems.append(f'{problem[:-1]}, in sweep point {name}{others}: {origin}.')
    return problems


def _model_problems(config: ml_collections.ConfigDict, where: str, *, spec: bool) -> list[str]:
    """Model fields that only the model knows (norms, up-sampling, the image pyramid) and the
    freeze spec, resolved against the layer registry of this model."""
    from unet_jax import freeze, models
    from unet_jax.models import layer_registry, unet

    problems = []
    if config.model.norm not in unet.NORMS:
        problems.append(
            f'{where}.model.norm={config.model.norm!r} is not a norm; use one of {unet.NORMS}.'
        )
    if config.model.upsample not in unet.UPSAMPLES:
        problems.append(
            f'{where}.model.upsample={config.model.upsample!r} is not an up-sampling; use one of '
            f'{unet.UPSAMPLES}.'
        )
    size, depth = config.data.image_size, config.model.depth
    try:
        unet.check_image_size(size, size, depth)
        if size < 2**depth:
            raise ValueError(
                f'Image size {size} is smaller than 2**depth = {2**depth} (model.depth={depth}).'
            )
    except ValueError as e:
        problems.append(f'{where}.data.image_size: {e}')
    if problems or not spec:
        return problems
    registry = layer_registry.build_registry(
        models.create_model(config.model),
        image_size=size,
        in_channels=config.model.in_channels,
    )
    spec, granularity = config.finetune.train, config.finetune.granularity
    try:
        if is_auto(spec):  # resolved when the run starts; check its form and k here
            parse_auto(spec, len(registry.order('forward', granularity)))
        else:
            plan = freeze.compile_spec(
                spec, registry, order=config.finetune.order, granularity=granularity
            )
            problems += _random_frozen_problems(config, plan, where)
    except (freeze.FreezeSpecError, AutoSpecError) as e:
        problems.append(str(e))
    return problems


def _random_frozen_problems(config: ml_collections.ConfigDict, plan, where: str) -> list[str]:
    """A spec that freezes units of a run without init_from keeps them random (an error
    unless config.finetune.allow_random_frozen says it is meant)."""
    frozen_units = plan.frozen_units + tuple(unit for unit, _ in plan.partial)
    if not frozen_units or config.init_from or config.finetune.get('allow_random_frozen'):
        return []
    frozen = ', '.join(frozen_units[:4]) + (', ...' if len(frozen_units) > 4 else '')
    return [
        f'{where}.finetune.train={config.finetune.train!r} freezes {len(frozen_units)} of '
        f'{len(plan.registry.unit_names)} units in whole or in part ({frozen}), but '
        f'{where}.init_from is empty: '
        'they would stay at their random initialisation. To fix: set --config.init_from to a '
        'pre-training workdir, or train everything with --config.finetune.train=@all '
        '(or set --config.finetune.allow_random_frozen=True if random frozen layers are meant).'
    ]
