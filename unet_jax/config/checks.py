"""The checks of a config's plain fields: ranges, names and the study's declared inference.

What only the model knows (norms, the image pyramid, the freeze spec) and what the sweep's
points set are checked on top of these by unet_jax.study.checks, which imports JAX.
"""

from __future__ import annotations

from collections.abc import Callable
import math
import re
from typing import Any

import ml_collections

from unet_jax.config.defaults import OPTIMIZERS, SCHEDULES
from unet_jax.data import duplicates, fields


def inference_problems(study: ml_collections.ConfigDict) -> list[str]:
    """What is wrong with the study's declared inference: `study.primary` and `study.margin`."""
    problems = []
    margin = study.get('margin', 0.02)
    if not (_is_number(margin) and margin > 0):
        problems.append(
            f'config.study.margin={margin!r}: the TOST margin is a positive Dice, e.g. 0.02.'
        )
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


def field_problems(config: ml_collections.ConfigDict, where: str = 'config') -> list[str]:
    """What is wrong with the plain fields of one run config, one line each ([] when it is
    fine); unet_jax.study.checks then checks the model's fields and the freeze spec."""
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))
