"""The runs of the study's sweep as configs, and the plan (study.json) the report reads.

`point_config` turns a sweep point (unet_jax.study.sweep_points) into the config of its run,
`pretrain_config` / `pretrain_dirs` the pre-trainings; `write_plan` registers the study's
declaration (unet_jax.config.registration) and writes study.json on every start.
"""

import dataclasses
import json
import os
from typing import Any

import ml_collections

from unet_jax import io_utils
from unet_jax.config import families, registration, target_sets
from unet_jax.config.registration import plain
from unet_jax.data import fields, modalities
from unet_jax.layout import PLAN_FILE, PRETRAIN_DIR, run_dir
from unet_jax.study.sweep_points import Sweep, SweepPoint, num_pretrainings, outer_folds


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


def external_data(
    config: ml_collections.ConfigDict, target: str, data: ml_collections.ConfigDict
) -> ml_collections.ConfigDict:
    """{name: data config} of the external test sets (config.study.external) that score the
    runs of `target`: the target's own data config (image size, preprocessing) with the
    external definition's data fields applied."""
    out = ml_collections.ConfigDict()
    for name, external in (config.study.get('external') or {}).items():
        if target not in external.of:
            continue
        scored = ml_collections.ConfigDict(
            dict(data=data.copy_and_resolve_references(), augment=config.augment.to_dict())
        )
        scored.data.outer_folds = 0
        scored.data.folder = fields.default_folder_config()
        target_sets.apply_target(
            scored, {'data': external.data}, where=f'config.study.external.{name}'
        )
        out[name] = scored.data
    return out


def point_config(
    config: ml_collections.ConfigDict, point: SweepPoint, workdir: str
) -> ml_collections.ConfigDict:
    """The base fine-tuning config (top level) changed as the point says; no `study` field."""
    run = config.copy_and_resolve_references()
    with run.unlocked():
        del run['study']
    target_sets.apply_target(
        run, config.study.targets[point.target], where=f'config.study.targets.{point.target}'
    )
    run.external = external_data(config, point.target, run.data)
    run.seed = point.seed
    run.data.num_train = point.num_train
    if point.fold is not None:  # outer cross-validation: this point's test fold
        run.data.outer_fold = point.fold
    if 'subset_seed' in run.data:  # the few-shot subset varies with the seed as well
        run.data.subset_seed = point.seed
    run.finetune.train = point.spec
    if point.order:
        run.finetune.order = point.order
    if point.granularity:
        run.finetune.granularity = point.granularity
    if point.pretrain_index is None:
        run.init_from = ''
    else:
        run.init_from = pretrain_dirs(config, workdir)[point.pretrain_index]
    run.init_matched = families.get(point.family).init == 'matched'
    run.num_train_steps = train_steps(config, point)
    return run


def train_steps(config: ml_collections.ConfigDict, point: SweepPoint) -> int:
    """The steps (the cap, with early stopping) a point's run trains: 0 for a family that only
    evaluates, config.study.scratch_steps_factor times the base run's for `scratch`."""
    if not families.get(point.family).trains:
        return 0
    if point.family == 'scratch':
        factor = config.study.get('scratch_steps_factor', 1.0)
        return max(1, round(config.num_train_steps * factor))
    return int(config.num_train_steps)


# ----------------------------------------------------------------------------- the plan


def _plan_point(point: SweepPoint, directory: str) -> dict[str, Any]:
    """A point as study.json lists it: its fields, `run` (its run's name) and `dir`."""
    fields = dataclasses.asdict(point)
    fields['run'] = fields.pop('run_name')
    fields['dir'] = directory
    return fields


def write_plan(config: ml_collections.ConfigDict, workdir: str, sweep: Sweep) -> str:
    """study.json: what the report needs to know about the sweep, without the config code.

    Every start of a study passes here (the whole-study run, each launcher step, the report
    step, launch/sweep.py), so here, before study.json changes, the study's declaration is
    registered (unet_jax.config.registration: recorded on the first start; a later start that
    declares otherwise raises RegistrationError unless study.amend_registration is set)."""
    from unet_jax.report import power  # numpy and the report's statistics; no JAX

    registration.register(
        workdir,
        config,
        total_runs=len(sweep.runs),
        runs_finished=registration.count_finished(workdir),
        write=is_chief(),
        power_fn=power.simulated_power,
    )
    plan = {
        'targets': {t: plain(config.study.targets[t]) for t in config.study.targets},
        'num_train': list(config.study.num_train),
        'seeds': list(config.study.seeds),
        'outer_folds': [f for f in outer_folds(config) if f is not None],  # [] without folds
        'families': list(config.study.families),
        'orders': list(config.study.orders),
        'granularities': list(config.study.granularities),
        'modalities': {
            t: modalities.modality(config.study.targets[t].data.get('name', ''))
            for t in config.study.targets
        },
        'primary': plain(config.study.get('primary', {})),
        'margin': config.study.get('margin', None),
        'pretrain_dirs': pretrain_dirs(config, workdir),
        'external': {
            name: {'of': list(external.of), 'data': plain(external.data)}
            for name, external in (config.study.get('external') or {}).items()
        },
        'num_runs': len(sweep.runs),
        'points': [
            _plan_point(p, os.path.relpath(run_dir(workdir, p.run_name), workdir))
            for p in sweep.points
        ],
        'groups': [
            {'name': g.name, 'index': g.index, 'runs': [p.name for p in g.runs]}
            for g in sweep.groups
        ],
    }
    path = os.path.join(workdir, PLAN_FILE)
    if is_chief():
        io_utils.write_text_atomically(path, json.dumps(plain(plan), indent=1))
    return path



def is_chief() -> bool:
    """Only process 0 of a multi-process run writes and deletes the study's files."""
    import jax

    return jax.process_index() == 0
