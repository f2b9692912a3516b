"""A study's run results as tidy tables, read from study.json and results.json (no JAX).

`load(workdir)` gives three pandas tables:
  runs    one row per named point (target x size x seed x configuration): its run's results,
          aliases resolved (a point whose run is another point's reports that run's numbers)
  images  one row per named point x test image: the per-image scores of its run (with outer
          folds, a seed's folds together test every image once; `fold` says which)
  curves  one row per named point x validation evaluation (its run's val_curve)
A key missing from an older results.json becomes nan (shown as '-').
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
import dataclasses
import json
import math
import os
from typing import Any

import pandas as pd

from unet_jax import layout
from unet_jax.config import families
from unet_jax.config import registration as registration_record
from unet_jax.data import catalogue
from unet_jax.report import registration as registration_lines
from unet_jax.report import stats
from unet_jax.report.plan import ReportError, read_checked_plan


@dataclasses.dataclass
class Study:
    workdir: str
    plan: dict[str, Any]
    runs: pd.DataFrame
    images: pd.DataFrame
    curves: pd.DataFrame
    problems: list[str]
    # registration.json (config.registration): what the study declared and when; None = none
    registration: dict[str, Any] | None = None

    @property
    def registration_note(self) -> str:
        """'registered before any run', 'amended after N of M runs', ... (the primary
        endpoint's heading; unet_jax.report.registration.heading)."""
        return registration_lines.heading(self.registration)

    @property
    def targets(self) -> list[str]:
        """The study's targets, then each external test set's cells (external_cell)."""
        return list(self.plan['targets']) + [
            external_cell(target, name)
            for name, external in (self.plan.get('external') or {}).items()
            for target in external.get('of', [])
            if target in self.plan['targets']
        ]

    def title(self, target: str) -> str:
        """What a person reads for a target: 'simulated breast ultrasound (us)', 'BUSI breast
        ultrasound (busi)' (its data set's catalogue title), else the target's own name (a
        folder set); an external cell 'A_on_B' as 'B scored by A's runs'."""
        for name, external in (self.plan.get('external') or {}).items():
            for trained_on in external.get('of', []):
                if target == external_cell(trained_on, name):
                    return f'{self.title(name) if name in self.plan["targets"] else name} ' \
                        f'scored by the runs of {self.title(trained_on)}'
        definition = self.plan['targets'].get(target) or {}
        data = definition.get('data', definition) if isinstance(definition, dict) else {}
        entry = catalogue.get(str((data or {}).get('name', '')))
        return f'{entry.title} ({target})' if entry is not None and entry.title else target

    @property
    def sizes(self) -> list[int]:
        return list(self.plan['num_train'])

    @property
    def cells(self) -> list[tuple[str, int]]:
        """(target, size) pairs the sweep has points in: the unit of every table, panel and
        conclusion (a size drawn for some targets only, `study.size_subsets`, is no cell of
        the others)."""
        planned = set(zip(self.runs['target'], self.runs['num_train'])) if len(self.runs) else None
        return [
            (t, n)
            for t in self.targets
            for n in self.sizes
            if planned is None or (t, n) in planned
        ]

    def cell_runs(self) -> Iterator[tuple[tuple[str, int], pd.DataFrame]]:
        """((target, size), its rows of `runs`) for every cell with points."""
        runs = self.runs
        for target, num_train in self.cells:
            rows = runs[(runs['target'] == target) & (runs['num_train'] == num_train)]
            if len(rows):
                yield (target, num_train), rows

    def pretrainings(self) -> pd.DataFrame:
        """One row per pre-training of the study (study.json's pretrain_dirs): its index, seed,
        data set and Dice on its own set's test split (nan while it is not finished)."""
        rows = []
        for index, directory in enumerate(self.plan.get('pretrain_dirs') or []):
            results = layout.read_results(directory) or {}
            config, test = results.get('config') or {}, results.get('test') or {}
            rows.append(
                dict(
                    index=index,
                    seed=config.get('seed', math.nan),
                    data=(config.get('data') or {}).get('name', ''),
                    test_dice=_float(test.get('dice')),
                    num_test=_float(test.get('num_lesion')),
                    steps=_float((results.get('stop') or {}).get('step')),
                    dir=directory,
                )
            )
        return pd.DataFrame(rows)

    def orders(self) -> list[tuple[str, str]]:
        """(order, granularity) pairs of the direction families."""
        return [
            (o, g) for o in self.plan.get('orders', []) for g in self.plan.get('granularities', [])
        ]


TEST_METRICS = ('dice', 'iou', 'hd95', 'precision', 'recall', 'dice_pooled')


def family(name: str) -> families.Family:
    """The family table's entry; a family an older plan names but the table lacks still shows."""
    return families.BY_NAME.get(name) or families.Family(name, name, init='pretrained')


def _float(value: Any) -> float:
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def _run_fields(results: dict[str, Any]) -> dict[str, Any]:
    test, val = results.get('test') or {}, results.get('val') or {}
    params, cost = results.get('params') or {}, results.get('cost') or {}
    time = results.get('time') or {}
    config = results.get('config') or {}
    fields = {f'test_{m}': _float(test.get(m)) for m in TEST_METRICS}
    fields.update(
        val_dice=_float(val.get('dice')),
        num_lesion=_float(test.get('num_lesion')),
        num_normal=_float(test.get('num_normal')),
        normal_fp_rate=_float(test.get('normal_fp_rate')),
        best_step=_float(results.get('best_step')),
        trained_params=_float(params.get('trained')),
        trained_fraction=_float(params.get('trained_fraction')),
        num_steps=_float(cost.get('num_steps', config.get('num_train_steps'))),
        train_flops=_float(cost.get('train_flops')),
        probe_flops=_float(cost.get('probe_flops')),
        step_time_s=_float(results.get('step_time_s')),
        wall_s=_float(time.get('wall_s', results.get('wall_time_s'))),
        pretrain_index=_float((results.get('pretrain') or {}).get('index')),
        group_size=_float((results.get('group') or {}).get('size', 1)),
    )
    for part in ('compile', 'steps', 'eval', 'checkpoint', 'write'):
        fields[f'{part}_s'] = _float(time.get(f'{part}_s'))
    curve = results.get('val_curve') or {}
    steps = curve.get('step') or []
    num_steps = fields['num_steps'] if math.isfinite(fields['num_steps']) else max(steps, default=0)
    flag, gain = stats.still_improving(steps, curve.get('dice') or [], num_steps)
    stop = results.get('stop') or {}
    if stop.get('reason') in ('plateau', 'nan'):  # only a run stopped by the cap can be cut off
        flag = False
    cap = cost.get('step_cap', config.get('num_train_steps'))
    fields.update(
        still_improving=flag,
        late_gain=gain,
        stop=stop.get('reason') or 'cap',
        stop_step=_float(stop.get('step', fields['num_steps'])),
        step_cap=_float(cap),
    )
    return fields


def _external_rows(row: dict[str, Any], results: dict[str, Any], images) -> list[dict]:
    """A run's rows for its external test sets: its row with the external set's scores, the
    target named by external_cell, no fold (every fold's run scores the same images), and
    its per-image scores appended to `images` with the run's fold."""
    out = []
    for name, external in (results.get('external') or {}).items():
        cell = external_cell(row['target'], name)
        out_row = dict(row, target=cell, name=f"{cell}/{row['name'].split('/', 1)[1]}")
        out_row.update(fold=NO_FOLD, external=name)
        out_row.update({f'test_{m}': _float(external.get(m)) for m in TEST_METRICS})
        out_row.update(num_lesion=_float(external.get('num_lesion')))
        out_row.update(num_normal=_float(external.get('num_normal')))
        keys = {k: out_row[k] for k in ('name', 'target', 'num_train', 'seed', 'configuration')}
        # the run's outer fold: every fold's run scores the external images (crossed)
        keys['fold'] = row['fold']
        _extend(images, _per_image(external.get('per_image')), keys)
        out.append(out_row)
    return out


def _per_image(scores: dict[str, Any] | None) -> dict[str, list]:
    """A run's per-image scores (results.json test_per_image) as columns (nan for a score an
    older run did not keep)."""
    scores = scores or {}
    ids = [str(i) for i in scores.get('ids') or []]
    columns: dict[str, list] = {'image_id': ids}
    for key in ('dice', 'iou', 'hd95', 'pred_pixels'):
        values = scores.get(key)
        ok = values is not None and len(values) == len(ids)
        columns[key] = [_float(v) for v in values] if ok else [math.nan] * len(ids)
    lesion = scores.get('lesion')
    # Older runs did not record which images are normal: all count as lesion images.
    ok = lesion is not None and len(lesion) == len(ids)
    columns['lesion'] = [bool(v) for v in lesion] if ok else [True] * len(ids)
    return columns


def _read(directory: str, problems: list[str]) -> tuple[str, dict[str, Any] | None]:
    try:
        results = layout.read_results(directory)
    except (OSError, json.JSONDecodeError) as e:
        problems.append(
            f'{os.path.join(directory, layout.RESULTS_FILE)} cannot be read ({e}): delete it '
            'and run that point again.'
        )
        return 'unreadable', None
    if results is not None:
        return 'done', results
    if layout.has_failed(directory):
        return 'failed', None
    return 'pending', None


def external_cell(target: str, name: str) -> str:
    """The report's name of external set `name` scored by the runs trained on `target`."""
    return f'{target}_on_{name}'


POINT_KEYS = ('name', 'run', 'target', 'num_train', 'seed', 'family', 'order', 'granularity', 'k')
NO_FOLD = -1  # the `fold` of a point of a study without outer folds


def load(workdir: str) -> Study:
    """Every named point of the plan with its run's results (finished or not)."""
    plan = read_checked_plan(workdir)
    problems: list[str] = []
    read: dict[str, tuple[str, dict[str, Any] | None]] = {}
    run_configuration = {p['name']: p['name'].rsplit('/', 1)[1] for p in plan['points']}
    rows = []
    images = collections.defaultdict(list)
    curves = collections.defaultdict(list)
    for point in plan['points']:
        directory = os.path.join(workdir, point['dir'])
        if directory not in read:
            read[directory] = _read(directory, problems)
        status, results = read[directory]
        row = {key: point.get(key, '') for key in POINT_KEYS}
        row['fold'] = NO_FOLD if point.get('fold') is None else int(point['fold'])
        row.update(
            configuration=point['name'].rsplit('/', 1)[1],
            run_configuration=run_configuration.get(point['run'], point['run']),
            alias=point['run'] != point['name'],
            num_units=len(point.get('trained_units', [])),
            trained_units=' '.join(point.get('trained_units', [])),
            status=status,
            dir=directory,
            family_label=family(point['family']).label,
        )
        if results is not None:
            row.update(_run_fields(results))
            if results.get('auto'):  # what an auto: spec trains is known once it has run
                units = results.get('trained_units') or []
                row.update(num_units=len(units), trained_units=' '.join(units))
            keys = {
                k: row[k] for k in ('name', 'target', 'num_train', 'seed', 'fold', 'configuration')
            }
            _extend(images, _per_image(results.get('test_per_image')), keys)
            rows.extend(_external_rows(row, results, images))
            curve = results.get('val_curve') or {}
            steps = curve.get('step') or []
            dice = curve.get('dice') or []
            if steps and len(dice) == len(steps):
                _extend(curves, {'step': steps, 'dice': [_float(d) for d in dice]}, keys)
        rows.append(row)
    if not rows:
        raise ReportError(f'{os.path.join(workdir, layout.PLAN_FILE)} lists no points.')
    runs = pd.DataFrame(rows)
    for column in _run_fields({}):
        if column not in runs:
            runs[column] = math.nan
    runs['still_improving'] = runs['still_improving'].astype(object)
    try:
        registered = registration_record.read(workdir)
    except registration_record.RegistrationError as error:
        registered = None
        problems.append(str(error))
    return Study(
        workdir=workdir,
        plan=plan,
        runs=runs,
        images=pd.DataFrame(images or {k: [] for k in ('name', 'image_id', 'dice', 'lesion')}),
        curves=pd.DataFrame(curves or {k: [] for k in ('name', 'step', 'dice')}),
        problems=problems,
        registration=registered,
    )


def _extend(table: dict[str, list], columns: dict[str, list], keys: dict[str, Any]) -> None:
    """Appends columns (equal lengths) to a table of lists, with `keys` repeated on each row."""
    length = len(next(iter(columns.values())))
    for key, values in columns.items():
        table[key].extend(values)
    for key, value in keys.items():
        table[key].extend([value] * length)
