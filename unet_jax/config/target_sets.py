"""Target sets: what a study (or `configs/finetune.py:target=NAME`) fine-tunes on.

A target set is a nested mapping of overrides of the run config, with two sections:

  {'data': {...fields of config.data, folder.* nested...}, 'augment': {...config.augment...}}

e.g. `{'data': {'name': 'jsrt', 'manual_dir': '/data'}, 'augment': {'flip': False}}`.
`builtin_target(name)` gives the built-in ones; `apply_target(config, target)` applies one to a
run config, failing with the field's name on anything it does not know.
"""

from __future__ import annotations

from collections.abc import Mapping
import re
import runpy
from typing import Any

import ml_collections

from unet_jax import errors
from unet_jax.data import catalogue, fields, modalities

ConfigError = errors.ConfigError
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
# X-ray sets (no flips) and ultrasound sets (normal cases left out): their catalogue entries.
XRAY_SETS, ULTRASOUND_SETS = modalities.XRAY_SETS, modalities.ULTRASOUND_SETS
# Built-in targets: short name (used in sweep-point names) -> `data.name`.
SYNTHETIC_TARGETS = {
    'us': 'synthetic_ultrasound',
    'xray': 'synthetic_xray',
    'natural': 'synthetic_natural',
}
REAL_TARGETS = fields.REAL
_TARGET_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')



def target_names() -> list[str]:
    return list(SYNTHETIC_TARGETS) + list(REAL_TARGETS)


def builtin_target(name: str, *, data_root: str = '', where: str) -> ml_collections.ConfigDict:
    """The definition of a built-in target (see the module docstring): the set, its folder
    (`data_root` for real sets), and its catalogue entry's target defaults (whether normal
    cases are dropped and whether flips are on)."""
    if name not in SYNTHETIC_TARGETS and name not in REAL_TARGETS:
        raise ConfigError(f'{where}: unknown target {name!r}; valid: {", ".join(target_names())}.')
    entry = catalogue.BY_NAME[SYNTHETIC_TARGETS.get(name, name)]
    data: dict[str, Any] = dict(name=entry.name, drop_normal=entry.drop_normal)
    if name in REAL_TARGETS:
        data['manual_dir'] = data_root
    return ml_collections.ConfigDict(dict(data=data, augment=dict(flip=entry.flip)))


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
