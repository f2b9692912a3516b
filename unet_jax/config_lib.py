"""Configuration building blocks shared by the files in configs/ (one source of truth).

`configs/*.py` are what users pass to `--config`; they call these functions, so a field, a
table of sets and a config argument are defined and documented once, here. See
configs/default.py for how a run is configured.

Target definitions. A target set of the study (and of `configs/finetune.py:target=NAME`) is a
nested mapping of overrides of the run config, with two sections:

  {'data': {...fields of config.data, folder.* nested...}, 'augment': {...config.augment...}}

e.g. `{'data': {'name': 'jsrt', 'manual_dir': '/data'}, 'augment': {'flip': False}}`.
`builtin_target(name)` gives the built-in ones; `apply_target(config, target)` applies one to a
run config, failing with the field's name on anything it does not know.

Over 400 lines because it is the single place for every config field, table of sets and
argument parser; splitting it would spread one source of truth over several files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import math
import re
import runpy
from typing import Any

import ml_collections

from unet_jax import auto_spec, cli, modalities
from unet_jax.data import duplicates, fields

ConfigError = cli.ConfigError

# The arguments of configs/default.py (every config accepts them).
DEFAULT_ARGUMENTS = {'quick': 'CPU scale: a small U-Net at 64x64 that trains in about a minute'}

# Pre-training sources (`source=`): the set each names.
SOURCES = {
    'natural': 'synthetic_natural',
    'natural_speckle': 'synthetic_natural_speckle',  # the natural scenes imaged as B-mode
    'natural_imaging': 'synthetic_natural_imaging',  # the same imaging chain, without speckle
    'ultrasound': 'synthetic_ultrasound',
}
# Generation seed of simulated pre-training sets. Example i of a synthetic set is a function
# of (seed, i) only, so a pre-training set with a target's seed would contain the target's
# images, test images included; every target keeps the default seed 0.
PRETRAIN_DATA_SEED = 1000

# What a target may set: these sections of the run config.
TARGET_SECTIONS = ('data', 'augment')
# Fields a target must not set, with the reason (the study sets them per point or shares them).
STUDY_OWNED_FIELDS = {
    'data.image_size': 'the model and the pre-training share it: set --config.data.image_size',
    'data.num_train': 'the study sets it per point from config.study.num_train (sizes=)',
    'data.subset_seed': "the study sets it per point from the point's seed",
    'data.outer_folds': 'every target runs on the same folds: set --config.data.outer_folds',
    'data.outer_fold': 'the study runs every fold of config.data.outer_folds',
}
# X-ray sets train without flips, ultrasound sets leave out normal cases (unet_jax.modalities).
XRAY_SETS, ULTRASOUND_SETS = modalities.XRAY_SETS, modalities.ULTRASOUND_SETS
# Built-in targets: short name (used in sweep-point names) -> `data.name`.
SYNTHETIC_TARGETS = {
    'us': 'synthetic_ultrasound',
    'xray': 'synthetic_xray',
    'natural': 'synthetic_natural',
}
OPTIMIZERS = ('adam', 'adamw')
SCHEDULES = ('cosine', 'constant')
REAL_TARGETS = fields.REAL
# Real natural-image saliency sets a study may pre-train on (`pretrain_data=`).
REAL_SOURCES = ('ecssd', 'duts', 'xpie', 'msra10k')
_TARGET_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')


def default_config(arg: str = '') -> ml_collections.ConfigDict:
    """Every field of a run, with its default; `arg` is '' or 'quick' (see DEFAULT_ARGUMENTS)."""
    args = parse_args(arg, DEFAULT_ARGUMENTS, where='configs/default.py')
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict(
        dict(
            depth=4,  # poolings; blocks enc0..enc{depth-1}, bottleneck, dec{depth-1}..dec0, head
            base_width=64,  # channels of enc0; doubles at each level (classic U-Net: 64 -> 1024)
            in_channels=1,  # grey images; RGB natural images are converted on load
            out_channels=1,  # one foreground logit per pixel
            norm='none',  # none | batch | group
            dropout=0.0,
            upsample='transpose',  # transpose (2x2 stride-2 up-conv) | bilinear (resize + conv)
        )
    )
    config.data = fields.default_data_config()

    config.finetune = ml_collections.ConfigDict(
        dict(
            train='@all',  # freeze spec: what trains; the rest is frozen
            order='forward',  # forward | level: the depth order of first:N / last:N
            granularity='unit',  # unit | block: what first:N / last:N count
            auto=auto_spec.default_auto_config(),  # what an `auto:` spec looks at
            # A spec that freezes layers needs init_from (frozen random weights are almost never
            # meant); True allows it, e.g. for a control that freezes a random part on purpose.
            allow_random_frozen=False,
        )
    )
    # External test sets, {name: data config}: every case of each is scored with the run's best
    # params (chosen on val) once training ends, never trained or selected on (a study sets
    # them from config.study.external).
    config.external = ml_collections.ConfigDict()
    config.init_from = ''  # workdir (or best/ folder) of a pre-training run; '' = scratch
    # With init_from: random params with each tensor's mean and std taken from init_from's
    # (a statistics-matched initialisation, Raghu et al. 2019); BatchNorm statistics start fresh.
    config.init_matched = False
    config.dont_load = ()  # regexes of variable paths left at their initialisation

    config.loss = ml_collections.ConfigDict(dict(bce_weight=1.0, dice_weight=1.0))
    config.optimizer = ml_collections.ConfigDict(
        dict(
            name='adam',  # OPTIMIZERS: adam | adamw (decoupled weight decay, trained params only)
            learning_rate=1e-3,
            weight_decay=0.0,
            schedule='cosine',  # SCHEDULES: cosine | constant, both after a linear warm-up
            grad_clip_norm=0.0,  # 0 = no clipping
        )
    )
    config.augment = ml_collections.ConfigDict(
        dict(
            flip=True,  # left-right (targets of chest X-ray sets turn it off)
            affine=True,
            max_rotation_deg=10.0,
            max_scale=0.1,
            max_shift=0.05,
            intensity=True,
            max_log_gamma=0.3,
            max_contrast=0.1,  # the image std becomes 1 +- this
            max_brightness=0.1,  # the image mean becomes 0 +- this (in units of its std)
        )
    )

    config.batch_size = 8  # global; split over all devices
    config.half_precision = False  # bfloat16 compute, float32 params and loss (GPU/TPU)
    config.num_train_steps = 2000  # the cap, with early stopping
    config.warmup_steps = 100
    # Early stopping on validation lesion Dice (unet_jax.ledger.EarlyStopping), checked at every
    # evaluation: a run stops once the mean of its last `smoothing` validation Dice values has
    # not risen by more than `min_delta` for `patience_steps`, never before `min_steps`, and
    # never while that mean has not yet exceeded `min_dice` (a run collapsed to empty masks is
    # flat at zero: not a plateau). patience_steps=0: off (every run trains num_train_steps). Use it with
    # optimizer.schedule='constant': cosine decay flattens a curve by itself.
    config.early_stopping = ml_collections.ConfigDict(
        dict(patience_steps=0, min_delta=0.0, min_steps=0, smoothing=1, min_dice=0.0)
    )
    config.log_every_steps = 50
    config.eval_every_steps = 200
    config.checkpoint_every_steps = 200
    config.num_saved_predictions = 8  # test images kept in predictions.npz for figures

    if args.get('quick'):
        apply_quick(config)
    return config


def apply_quick(config: ml_collections.ConfigDict) -> None:
    """CPU scale: a small U-Net at 64x64 that trains in about a minute on 2 cores."""
    config.model.depth = 3
    config.model.base_width = 16
    config.data.image_size = 64
    config.data.num_examples = 120
    config.num_train_steps = 150
    config.warmup_steps = 10
    config.log_every_steps = 25
    config.eval_every_steps = 50
    config.checkpoint_every_steps = 50


def parse_args(arg: str, valid: Mapping[str, str], *, where: str) -> dict[str, object]:
    """'quick,seed=3' -> {'quick': True, 'seed': 3} (big_vision-style config arguments).

    `valid` maps each argument a config file accepts to a one-line help; any other argument
    (a typo) is an error naming it and listing the valid ones with their help.
    """
    parsed: dict[str, object] = {}
    for item in filter(None, (a.strip() for a in arg.split(','))):
        key, eq, value = item.partition('=')
        key = key.strip()
        if key not in valid:
            listed = '\n'.join(f'  {name}: {help_}' for name, help_ in valid.items())
            raise ConfigError(
                f'{where}: unknown argument {key!r} in {arg!r}. Valid arguments '
                f'(comma-separated after {where}:):\n{listed}'
            )
        if not eq:
            parsed[key] = True
            continue
        for cast in (int, float):
            try:
                parsed[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            parsed[key] = value
    return parsed


def apply_source(config: ml_collections.ConfigDict, source: str, *, where: str) -> None:
    """Makes `config` a pre-training run on the simulated set `source` (all layers train),
    generated with its own seed so that it never contains a target's images."""
    if source not in SOURCES:
        raise ConfigError(f'{where}: source={source!r} is not one of {sorted(SOURCES)}.')
    config.data.name = SOURCES[source]
    config.data.seed = PRETRAIN_DATA_SEED
    config.finetune.train = '@all'
    config.init_from = ''


# ----------------------------------------------------------------------------- targets


def target_names() -> list[str]:
    return list(SYNTHETIC_TARGETS) + list(REAL_TARGETS)


def builtin_target(name: str, *, data_root: str = '', where: str) -> ml_collections.ConfigDict:
    """The definition of a built-in target (see the module docstring): the set, its folder
    (`data_root` for real sets), whether normal cases are dropped and whether flips are on."""
    if name not in SYNTHETIC_TARGETS and name not in REAL_TARGETS:
        raise ConfigError(f'{where}: unknown target {name!r}; valid: {", ".join(target_names())}.')
    data_name = SYNTHETIC_TARGETS.get(name, name)
    data: dict[str, Any] = dict(name=data_name, drop_normal=data_name in ULTRASOUND_SETS)
    if name in REAL_TARGETS:
        data['manual_dir'] = data_root
    return ml_collections.ConfigDict(dict(data=data, augment=dict(flip=data_name not in XRAY_SETS)))


def folder_target() -> ml_collections.ConfigDict:
    """A folder-set target with every `data.folder` field present (empty), so that each can be
    set on the command line: --config.study.targets.NAME.data.folder.images=DIR."""
    folder = fields.default_folder_config()
    return ml_collections.ConfigDict(
        dict(data=dict(name='folder', drop_normal=False, folder=folder), augment=dict(flip=True))
    )


def check_target_name(name: str, *, where: str) -> None:
    if not _TARGET_NAME.fullmatch(name):
        raise ConfigError(
            f'{where}: target name {name!r} must be a Python identifier (letters, digits, _), '
            'so that --config.study.targets.NAME... can address it.'
        )


def apply_target(
    config: ml_collections.ConfigDict, target: Mapping[str, Any], *, where: str = 'target'
) -> None:
    """Applies a target definition to a run config in place (see the module docstring).

    `where` names the definition in errors (e.g. 'config.study.targets.mine'). Unknown sections
    or fields, values of the wrong type, fields the study owns, an unknown set and a folder set
    without images are errors naming the field and the fix.
    """
    if not _is_mapping(target):
        raise ConfigError(
            f'{where}: a target definition is a mapping with sections {TARGET_SECTIONS}, '
            f'got {type(target).__name__}.'
        )
    for section, overrides in target.items():
        if section not in TARGET_SECTIONS:
            raise ConfigError(
                f'{where}.{section}: a target sets fields of {" and ".join(TARGET_SECTIONS)} '
                f'only (e.g. {where}.data.name), not {section!r}.'
            )
        _apply_fields(config[section], overrides, f'{where}.{section}', section)
    data = config.data
    if data.name != 'folder' and data.name not in fields.SETS:
        raise ConfigError(
            f'{where}.data.name={data.name!r} is not a data set; valid: '
            f'{", ".join(fields.SETS)}, folder.'
        )
    if data.name == 'folder' and not data.folder.images:
        raise ConfigError(
            f'{where} is a folder set without images: set {where}.data.folder.images to a '
            f'folder or glob of its images (e.g. --{where}.data.folder.images=/data/mine/images) '
            f'and {where}.data.folder.masks to its masks.'
        )


def _is_mapping(value: Any) -> bool:
    return isinstance(value, (Mapping, ml_collections.ConfigDict))


def _apply_fields(fields: ml_collections.ConfigDict, overrides: Any, where: str, path: str) -> None:
    if not _is_mapping(overrides):
        raise ConfigError(
            f'{where}: expected a mapping of config.{path} fields, got {overrides!r}.'
        )
    for key, value in overrides.items():
        field = f'{path}.{key}'
        if key not in fields:
            raise ConfigError(
                f'{where}.{key}: config.{path} has no field {key!r}; valid: {", ".join(fields)}.'
            )
        if field in STUDY_OWNED_FIELDS:
            reason = STUDY_OWNED_FIELDS[field]
            raise ConfigError(f'{where}.{key}: a target cannot set it ({reason}).')
        if isinstance(fields[key], ml_collections.ConfigDict):
            _apply_fields(fields[key], value, f'{where}.{key}', field)
            continue
        try:
            fields[key] = value
        except TypeError as e:
            raise ConfigError(
                f'{where}.{key}={value!r}: config.{field} takes a '
                f'{type(fields[key]).__name__} ({e}).'
            ) from None


def load_target_file(path: str, *, where: str) -> dict[str, ml_collections.ConfigDict]:
    """Target definitions from a Python file whose `get_targets()` returns {name: definition}.

    Read at config time, so a missing file or a malformed definition fails before any run.
    """
    try:
        namespace = runpy.run_path(path)
    except FileNotFoundError:
        raise ConfigError(f'{where}: target file {path!r} does not exist.') from None
    get_targets = namespace.get('get_targets')
    if not callable(get_targets):
        raise ConfigError(
            f'{where}: target file {path} has no function get_targets() returning '
            "{name: {'data': {...}, 'augment': {...}}} (see docs/data.md, 'Targets')."
        )
    definitions = get_targets()
    if not _is_mapping(definitions) or not definitions:
        raise ConfigError(f'{where}: get_targets() in {path} must return a non-empty mapping.')
    targets = {}
    for name, definition in definitions.items():
        check_target_name(str(name), where=f'{where} ({path})')
        if not _is_mapping(definition):
            raise ConfigError(
                f'{where}: target {name!r} of {path} is {definition!r}, not a mapping with '
                f'sections {TARGET_SECTIONS}.'
            )
        targets[str(name)] = ml_collections.ConfigDict(definition)
    return targets


# ----------------------------------------------------------------------------- checks


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
                apply_target(ml_collections.ConfigDict(config.to_dict()), target, where=where)
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


def inference_problems(study: ml_collections.ConfigDict) -> list[str]:
    """What is wrong with the study's declared inference: `study.primary` and `study.margin`."""
    problems = []
    margin = study.get('margin', 0.02)
    if not (_is_number(margin) and margin > 0):
        problems.append(f'config.study.margin={margin!r}: the TOST margin is a positive Dice, e.g. 0.02.')
    primary = study.get('primary')
    if primary is None:
        return problems
    where = 'config.study.primary'
    for side in ('a', 'b'):
        name = primary.get(side, '')
        if name and name not in study.families:  # '' = the default (shallow vs deep)
            problems.append(
                f'{where}.{side}={name!r} is not a family of this study; choose one of '
                f'{", ".join(study.families)} (or add it with families=...).'
            )
    targets = [t for t in str(primary.get('targets', '')).split('+') if t]
    versus = str(primary.get('versus', ''))
    for name in targets + ([versus] if versus not in ('', 'none') else []):
        if name not in study.targets:
            problems.append(
                f'{where}: target {name!r} is not a target of this study; choose among '
                f'{", ".join(study.targets)} (targets are \'+\'-separated; versus may be \'none\').'
            )
    num_train = primary.get('num_train', 0)
    if num_train not in (0, *study.num_train):
        problems.append(
            f'{where}.num_train={num_train!r} is not a training size of this study; choose among '
            f'{", ".join(map(str, study.num_train))} (0 = the first).'
        )
    return problems


def run_problems(
    config: ml_collections.ConfigDict, where: str = 'config', *, spec: bool = True
) -> list[str]:
    """What is wrong with the fields of one run config, one line each ([] when it is fine).

    The plain fields come first; the model's fields and, with `spec`, the freeze spec are
    checked against the model (importing JAX) once those are fine.
    """
    problems: list[str] = []

    def need(field: str, ok: Callable[[Any], bool], rule: str) -> bool:
        """Appends `rule` for `field` unless ok(value); True when it is fine."""
        value = config
        for key in field.split('.'):
            value = value[key]
        try:
            fine = bool(ok(value))
        except TypeError:
            fine = False
        if not fine:
            problems.append(f'{where}.{field}={value!r} {rule}.')
        return fine

    positive = lambda v: _is_int(v) and v >= 1
    not_negative = lambda v: _is_number(v) and v >= 0
    under_one = lambda v: _is_number(v) and 0 <= v < 1

    need('batch_size', positive, 'must be a positive integer (the global batch), e.g. 8')
    need('num_train_steps', lambda v: _is_int(v) and v >= 0, 'must be >= 0 (0: evaluate only)')
    need('warmup_steps', lambda v: _is_int(v) and v >= 0, 'must be >= 0')
    for field in ('log_every_steps', 'eval_every_steps', 'checkpoint_every_steps'):
        need(field, positive, 'must be a positive number of steps')
    need('num_saved_predictions', lambda v: _is_int(v) and v >= 0, 'must be >= 0')
    if 'early_stopping' in config:
        stop = 'early_stopping'
        count = lambda v: _is_int(v) and v >= 0
        need(f'{stop}.patience_steps', count, 'must be >= 0 steps (0: no early stopping)')
        need(f'{stop}.min_steps', count, 'must be >= 0 steps (the floor)')
        need(f'{stop}.min_delta', not_negative, 'must be a finite Dice difference >= 0')
        need(f'{stop}.smoothing', positive, 'must be >= 1 evaluations (1: no smoothing)')
        if 'min_dice' in config.early_stopping:
            need(f'{stop}.min_dice', under_one, 'must be a Dice in [0, 1) (0: off)')
        rule = config.early_stopping
        if not problems and 0 < rule.patience_steps < config.eval_every_steps:
            problems.append(
                f'{where}.early_stopping.patience_steps={rule.patience_steps} is shorter than '
                f'eval_every_steps={config.eval_every_steps}: the rule is checked at each '
                'evaluation, so patience must span at least one; raise patience_steps (e.g. '
                f'{4 * config.eval_every_steps}) or evaluate more often.'
            )

    need('model.depth', positive, 'must be >= 1 (the number of poolings)')
    need('model.base_width', positive, 'must be >= 1 (channels of enc0)')
    need('model.in_channels', lambda v: v in (1, 3), 'must be 1 (grey) or 3 (RGB)')
    need('model.out_channels', positive, 'must be >= 1')
    need('model.dropout', under_one, 'must be in [0, 1)')

    opt = 'optimizer'
    need(f'{opt}.name', lambda v: v in OPTIMIZERS, f'is not an optimiser; use one of {OPTIMIZERS}')
    need(f'{opt}.schedule', lambda v: v in SCHEDULES, f'is not a schedule; use one of {SCHEDULES}')
    need(
        f'{opt}.learning_rate',
        lambda v: _is_number(v) and v > 0,
        'must be a positive, finite number, e.g. 1e-3',
    )
    need(f'{opt}.weight_decay', not_negative, 'must be a finite number >= 0')
    need(f'{opt}.grad_clip_norm', not_negative, 'must be a finite number >= 0 (0: no clipping)')
    need('loss.bce_weight', not_negative, 'must be a finite number >= 0')
    need('loss.dice_weight', not_negative, 'must be a finite number >= 0')
    if not problems and config.loss.bce_weight == config.loss.dice_weight == 0:
        problems.append(f'{where}.loss.bce_weight and dice_weight are both 0: nothing to train on.')
    for field in ('max_rotation_deg', 'max_log_gamma', 'max_brightness'):
        need(f'augment.{field}', not_negative, 'must be a finite number >= 0')
    for field in ('max_scale', 'max_shift', 'max_contrast'):
        need(f'augment.{field}', under_one, 'must be in [0, 1)')
    for pattern in config.dont_load:
        try:
            re.compile(pattern)
        except (re.error, TypeError) as e:
            problems.append(f'{where}.dont_load: {pattern!r} is not a regex ({e}).')

    _data_problems(config.data, f'{where}.data', need, problems)
    if problems:
        return problems  # The model-level checks below import JAX: only when these pass.
    return _model_problems(config, where, spec=spec)


def _point_problems(config: ml_collections.ConfigDict) -> list[str]:
    """What is wrong with the runs of a study's sweep points: the fields a point sets (its
    training-set size, seed and step budget; study.point_config) checked as for one run, each
    problem once with a point that has it. The freeze specs are checked by the enumeration."""
    from unet_jax import study, sweep  # JAX: only once the study's own fields are fine

    alike: dict[tuple, list[Any]] = {}  # points whose runs differ in seed and spec only
    for point in sweep.enumerate_sweep(config).runs:
        alike.setdefault((point.target, point.num_train, point.family), []).append(point)
    first_point: dict[str, tuple[str, int]] = {}
    for points in alike.values():
        run = study.point_config(config, points[0], workdir='')
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


def _data_problems(data, where: str, need, problems: list[str]) -> None:
    """Appends what is wrong with config.data to `problems`."""
    names = (*fields.SETS, 'folder')
    need('data.name', lambda v: v in names, f'is not a data set; use one of {", ".join(names)}')
    need('data.image_size', lambda v: _is_int(v) and v >= 2, 'must be an integer >= 2')
    methods = fields.RESIZE_METHODS
    need('data.resize', lambda v: v in methods, f'is not a resize method; use one of {methods}')
    fraction = lambda v: _is_number(v) and 0 < v < 1
    need('data.test_fraction', fraction, 'must be in (0, 1)')
    need('data.val_fraction', fraction, 'must be in (0, 1)')
    if fraction(data.test_fraction) and fraction(data.val_fraction):
        if data.test_fraction + data.val_fraction >= 1:
            problems.append(
                f'{where}.test_fraction + val_fraction = '
                f'{data.test_fraction + data.val_fraction:g} leaves no training cases; '
                'their sum must be below 1.'
            )
    need(
        'data.num_train',
        lambda v: _is_int(v) and (v == -1 or v >= 1),
        'must be -1 (every training case) or a positive number of cases',
    )
    need('data.num_examples', lambda v: _is_int(v) and v >= 1, 'must be >= 1')
    need('data.max_size', lambda v: _is_int(v) and v >= 0, 'must be >= 0 (0: original size)')
    if need('data.num_folds', lambda v: _is_int(v) and v >= 0, 'must be >= 0 (0 or 1: no folds)'):
        if data.num_folds > 1:
            need(
                'data.fold',
                lambda v: _is_int(v) and 0 <= v < data.num_folds,
                f'must be in 0..{data.num_folds - 1} (config.data.num_folds={data.num_folds})',
            )
    if need(
        'data.outer_folds',
        lambda v: _is_int(v) and (v == 0 or v >= 2),
        'must be 0 (no outer cross-validation) or at least 2 (test folds)',
    ):
        if data.outer_folds:
            need(
                'data.outer_fold',
                lambda v: _is_int(v) and 0 <= v < data.outer_folds,
                f'must be in 0..{data.outer_folds - 1} '
                f'(config.data.outer_folds={data.outer_folds})',
            )
            if fraction(data.val_fraction) and 1 / data.outer_folds + data.val_fraction >= 1:
                problems.append(
                    f'{where}.val_fraction={data.val_fraction:g} with outer_folds='
                    f'{data.outer_folds} (test folds of 1/{data.outer_folds}) leaves no training '
                    'cases; lower val_fraction or use more folds.'
                )
    need('data.allow_near_duplicates', lambda v: isinstance(v, bool), 'must be True or False')
    need(
        'data.near_duplicate_bits',
        lambda v: _is_int(v) and (v == -1 or 0 <= v < duplicates.HASH_BITS),
        f"must be -1 (the set's own) or in 0..{duplicates.HASH_BITS - 1} (perceptual-hash bits)",
    )
    if data.name == 'folder':
        need(
            'data.folder.pairing',
            lambda v: v in fields.PAIRINGS,
            f'is not a pairing rule; use one of {fields.PAIRINGS}',
        )
        need(
            'data.folder.images',
            bool,
            'is empty: set it to the folder (or a glob) of your images, '
            f'e.g. --{where}.folder.images=/data/mine/images',
        )


def _model_problems(config: ml_collections.ConfigDict, where: str, *, spec: bool) -> list[str]:
    """Model fields that only the model knows (norms, up-sampling, the image pyramid) and the
    freeze spec, resolved against the layer registry of this model."""
    from unet_jax import freeze, layers, models  # JAX: once the plain fields are fine
    from unet_jax.models import unet

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
    registry = layers.build_registry(
        models.create_model(config.model),
        image_size=size,
        in_channels=config.model.in_channels,
    )
    spec, granularity = config.finetune.train, config.finetune.granularity
    try:
        if auto_spec.is_auto(spec):  # resolved when the run starts; check its form and k here
            auto_spec.parse_auto(spec, len(registry.order('forward', granularity)))
        else:
            plan = freeze.compile_spec(
                spec, registry, order=config.finetune.order, granularity=granularity
            )
            problems += _random_frozen_problems(config, plan, where)
    except (freeze.FreezeSpecError, auto_spec.AutoSpecError) as e:
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))
