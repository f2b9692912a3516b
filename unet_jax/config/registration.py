"""A study's pre-registration record: what it declares, when, and every amendment (no JAX).

When a study starts (unet_jax.study.run_configs.write_plan: the whole-study run, each launcher step,
launch/sweep.py; a study of several sources registers each source's study in its own
folder), `register` compares what the config declares (`declaration`: the primary endpoint,
the margin, the sweep) with WORKDIR/registration.json:

  no record          the declaration is recorded with its time and the number of runs finished
                     (0 for a new study; more for one started before this record existed)
  the same           nothing is written
  another            refused (RegistrationError, exit 2) with each changed field, unless
                     config.study.amend_registration is True: then an amendment (its time, the
                     runs finished by then, the fields changed, the new declaration) is appended;
                     earlier entries are never rewritten (their bytes stay as they were)

registration.json, one entry per start that changed something, the last one in force:

  {"entries": [
  {"kind": "registration", "time": "2026-12-06T01:40:12Z", "runs_finished": 0,
   "total_runs": 60, "declaration": {...}, "code": {"commit": "...", "modified": false}},
  {"kind": "amendment", "time": ..., "runs_finished": 12, "total_runs": 48,
   "changed": ["k_values", "primary_endpoint"], "declaration": {...}, "code": ...}
  ]}

The report (unet_jax.report.registration) prints it in its first screen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import datetime
import json
import os
import subprocess
from typing import Any

import ml_collections

from unet_jax import errors, io_utils, layout
from unet_jax.config import families
from unet_jax.data import modalities

FILE = layout.REGISTRATION_FILE
AMEND_FIELD = 'study.amend_registration'
AMEND_FLAG = f'--config.{AMEND_FIELD}=True'
SHALLOW, DEEP = families.DIRECTIONS[:2]  # the default primary (unet_jax.report.compare)
_END = '\n]}\n'  # how the file ends: an amendment is inserted before it, nothing else moves

# Each field of a declaration and the config field that sets it (for the user's messages).
FIELDS = {
    'primary': 'study.primary',
    'primary_endpoint': 'the primary endpoint (study.primary with its defaults filled in)',
    'margin': 'study.margin',
    'families': 'study.families',
    'k_values': 'study.k_values',
    'auto_k_values': 'study.auto_k_values',
    'sizes': 'study.num_train',
    'size_subsets': 'study.size_subsets',
    'targets': 'study.targets',
    'external': 'study.external',
    'outer_folds': 'data.outer_folds',
    'seeds': 'study.seeds',
    'pretrain_seeds': 'study.pretrain_seeds',
    'orders': 'study.orders',
    'granularities': 'study.granularities',
    'power_plan': 'study.power',
}
PRIMARY_FIELDS = ('primary', 'primary_endpoint')  # a change of these amends the primary
# Declared only when set (so that records made before they existed still match).
OPTIONAL_FIELDS = ('size_subsets', 'power_plan')


class RegistrationError(errors.ConfigError):
    """A start that declares other than the registration, or an unreadable record (exit 2)."""


def plain(value: Any) -> Any:
    """JSON-ready: ConfigDicts, tuples and FieldReferences as plain dicts, lists, values (the
    declaration here, study.json in unet_jax.study.run_configs)."""
    if isinstance(value, ml_collections.ConfigDict):
        return plain(value.to_dict())
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, ml_collections.FieldReference):
        return plain(value.get())
    return value


def _target_modality(definition: Any) -> str:
    data = definition.get('data') if hasattr(definition, 'get') else None
    name = data.get('name', '') if hasattr(data, 'get') else ''
    return modalities.modality(str(name or ''))


def primary_endpoint(config: Any) -> dict[str, Any]:
    """What the primary endpoint tests, study.primary's defaults filled in as the report fills
    them (unet_jax.report.endpoint.primary_plan): the gap a - b, averaged over `k`, in the first
    order and granularity, at size num_train on each of `targets`, then minus the gap on
    `versus` ('' = no interaction). A change of any of these changes the primary endpoint."""
    study = config.study
    primary = plain(study.get('primary') or {})
    targets_declared = [t for t in str(primary.get('targets') or '').split('+') if t]
    by_modality = lambda m: [
        t for t in study.targets if _target_modality(study.targets[t]) == m
    ]  # fmt: skip
    versus = str(primary.get('versus') or '')
    if not versus:
        xray = by_modality(modalities.XRAY)
        versus = xray[0] if xray else ''
    sizes = list(study.get('num_train') or ())
    orders = list(study.get('orders') or ())
    granularities = list(study.get('granularities') or ())
    return {
        'a': primary.get('a') or SHALLOW,
        'b': primary.get('b') or DEEP,
        'targets': targets_declared or by_modality(modalities.ULTRASOUND),
        'versus': '' if versus == 'none' else versus,
        'num_train': int(primary.get('num_train') or (sizes[0] if sizes else 0)),
        'k': [int(k) for k in study.get('k_values') or ()],  # [] = every k
        'order': orders[0] if orders else '',
        'granularity': granularities[0] if granularities else '',
    } | ({'larger': int(primary['larger'])} if primary.get('larger') else {})


def declaration(config: Any) -> dict[str, Any]:
    """What a study declares before it runs (plain JSON values; FIELDS names the config
    field of each): its inference (primary endpoint, margin) and its sweep."""
    study = config.study
    folds = int(config.data.get('outer_folds', 0) or 0)
    # `larger` only when set: records made before it existed still match
    primary = {k: v for k, v in plain(study.get('primary') or {}).items() if k != 'larger' or v}
    declared = {
        'primary': primary,
        'primary_endpoint': primary_endpoint(config),
        'margin': study.get('margin', 0.02),
        'families': list(study.families),
        'k_values': list(study.get('k_values') or ()),
        'auto_k_values': list(study.get('auto_k_values') or ()),
        'sizes': list(study.num_train),
        'targets': list(study.targets),
        'external': list(study.get('external') or {}),
        'outer_folds': folds if folds >= 2 else 0,  # sweep_points.outer_folds: < 2 = none
        'seeds': list(study.seeds),
        'pretrain_seeds': int(study.get('pretrain_seeds', 1)),
        'orders': list(study.get('orders') or ()),
        'granularities': list(study.get('granularities') or ()),
    }
    if study.get('size_subsets'):
        declared['size_subsets'] = plain(study.size_subsets)
    plan = plain(study.get('power') or {})
    if float(plan.get('effect') or 0) > 0:
        declared['power_plan'] = plan
    return json.loads(json.dumps(plain(declared)))


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The fields of `old` whose value `new` changes, in FIELDS order. A field an older record
    lacks (added to declarations since) is not a change."""
    order = list(FIELDS) + sorted(set(old) - set(FIELDS))
    return [k for k in order if k in old and k in new and old[k] != new[k]]


def count_finished(workdir: str) -> int:
    """Run folders under WORKDIR/points holding results.json (finished runs, of any plan)."""
    count = 0
    for _, _, files in os.walk(os.path.join(workdir, layout.POINTS_DIR)):
        count += layout.RESULTS_FILE in files
    return count


def read(workdir: str) -> dict[str, Any] | None:
    """WORKDIR/registration.json, or None when the study has none."""
    path = os.path.join(workdir, FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
        entries = record['entries']
        if not entries or not all(isinstance(e.get('declaration'), dict) for e in entries):
            raise ValueError('an entry without a declaration, or no entry')
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise RegistrationError(
            f'{path} cannot be read ({error}): it is this study\'s pre-registration record. '
            'To fix: restore it (e.g. from version control or a backup); only if it is lost, '
            'delete it, and the next start records the declaration anew with the number of '
            'runs finished by then (the report then says it was registered after them).'
        ) from None
    return record


def in_force(record: dict[str, Any]) -> dict[str, Any]:
    """The entry whose declaration holds now: the last one."""
    return record['entries'][-1]


def now_utc() -> str:
    return datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def repository_root() -> str:
    """The folder holding the `unet_jax` package (the checkout's root when run from one)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # unet_jax/
    return os.path.dirname(package)


def code_version() -> dict[str, Any] | None:
    """The git commit of this code and whether tracked files differ from it; None outside a
    git checkout (e.g. an installed package) or without git."""
    root = repository_root()
    if not os.path.exists(os.path.join(root, '.git')):
        return None
    try:
        git = lambda *args: subprocess.run(
            ['git', '-C', root, *args], capture_output=True, text=True, timeout=20, check=True
        ).stdout.strip()
        commit = git('rev-parse', 'HEAD')
        modified = bool(git('status', '--porcelain', '--untracked-files=no'))
    except (OSError, subprocess.SubprocessError):
        return None
    return {'commit': commit, 'modified': modified}


def _entry_text(entry: dict[str, Any]) -> str:
    return json.dumps(entry, indent=1)


def _file_text(entries_text: list[str]) -> str:
    return '{"entries": [\n' + ',\n'.join(entries_text) + _END


def _show(value: Any) -> str:
    return json.dumps(value)


def refusal(path: str, record: dict[str, Any], new: dict[str, Any], changed: list[str], *,
            runs_finished: int, total_runs: int) -> str:  # fmt: skip
    """The message of a start that declares other than the record (what, where, how to fix)."""
    entry = in_force(record)
    old = entry['declaration']
    lines = '\n'.join(
        f'  {FIELDS.get(k, k)}: {_show(old[k])} -> {_show(new[k])}' for k in changed
    )  # fmt: skip
    when = 'registered' if entry.get('kind') == 'registration' else 'amended'
    return (
        f'this start declares another study than {path} registers ({when} '
        f'{entry.get("time", "at an unknown time")}, {entry.get("runs_finished", "?")} runs '
        f'finished then; {runs_finished} of {total_runs} have finished now). Changed:\n{lines}\n'
        'A declaration changed after a study started may have been chosen with its results in '
        'view, so this is refused. To fix: set these fields back to the registered '
        f'values; or amend the registration with {AMEND_FLAG}, which appends the change with '
        'its time and the runs finished by then (the report states it in its first screen); '
        'or start a new study in another --workdir.'
    )


def register(
    workdir: str,
    config: Any,
    *,
    total_runs: int,
    runs_finished: int | None = None,
    write: bool = True,
    time: str | None = None,
    power_fn: Callable[[Any], dict[str, Any] | None] | None = None,
) -> dict[str, Any] | None:
    """Records the declaration of `config` for the study in `workdir` (module doc); returns the
    entry written, or None when the record already holds this declaration.

    runs_finished: default count_finished(workdir). write: False on all but the chief process
    (each still refuses a changed declaration; only the chief writes). power_fn: the power
    plan's result of a config (unet_jax.report.power.simulated_power), recorded with a new
    registration only."""
    path = os.path.join(workdir, FILE)
    new = declaration(config)
    record = read(workdir)
    finished = count_finished(workdir) if runs_finished is None else runs_finished
    entry: dict[str, Any] = {
        'kind': 'registration',
        'time': time or now_utc(),
        'runs_finished': finished,
        'total_runs': total_runs,
    }
    if record is None:
        entry.update(declaration=new, code=code_version())
        planned = power_fn(config) if power_fn else None
        if planned is not None:
            entry['power'] = planned
        if write:
            io_utils.write_text_atomically(path, _file_text([_entry_text(entry)]))
        return entry
    changed = changed_fields(in_force(record)['declaration'], new)
    if not changed:
        return None
    if not bool(config.study.get('amend_registration', False)):
        raise RegistrationError(
            refusal(path, record, new, changed, runs_finished=finished, total_runs=total_runs)
        )
    entry.update(kind='amendment', changed=changed, declaration=new, code=code_version())
    if write:
        with open(path) as f:
            text = f.read()
        if text.endswith(_END):  # append: the earlier entries keep their bytes
            text = text[: -len(_END)] + ',\n' + _entry_text(entry) + _END
        else:  # edited by hand: the same entries, written anew
            text = _file_text([_entry_text(e) for e in record['entries'] + [entry]])
        json.loads(text)  # never write a record that cannot be read back
        io_utils.write_text_atomically(path, text)
    return entry
