"""The report's lines about a study's pre-registration (WORKDIR/registration.json, written by
unet_jax.config.registration): when its declaration was recorded, what it declared, and every
amendment, with the runs finished by then. The report's first screen prints `lines`; the
primary endpoint's heading takes `heading`. No JAX."""

from __future__ import annotations

from typing import Any

from unet_jax import layout
from unet_jax.config import families
from unet_jax.config.registration import AMEND_FIELD, FIELDS, PRIMARY_FIELDS

NO_RECORD = (
    'No registration record: the declaration is the config\'s (study.json), with no time; '
    'nothing shows whether it was made before the runs.'
)


def _label(name: str) -> str:
    family = families.BY_NAME.get(name)
    return family.label if family else name


def _time(text: str) -> str:
    """'2026-12-06T01:40:12Z' -> '2026-12-06 01:40 UTC'."""
    if len(text) >= 16 and text[10] == 'T':
        return f'{text[:10]} {text[11:16]} UTC'
    return text or 'at an unknown time'


def _numbers(values: list[Any]) -> str:
    """'0-2' for a run of consecutive integers, else '1, 4'."""
    if len(values) >= 3 and all(isinstance(v, int) for v in values):
        if values == list(range(values[0], values[0] + len(values))):
            return f'{values[0]}-{values[-1]}'
    return ', '.join(str(v) for v in values)


def _sizes(values: list[Any]) -> str:
    return ', '.join(layout.size_name(int(v)) for v in values)


def endpoint(end: dict[str, Any]) -> str:
    """'shallow->deep minus deep->shallow (test Dice averaged over k = 1, 4, forward order by
    block) on us at n = 16, then each gap minus the gap on xray'."""
    ks = end.get('k') or []
    over = f'k = {_numbers(ks)}' if ks else 'every k'
    where = ', '.join(end.get('targets') or []) or 'no target'
    size = layout.size_name(int(end.get('num_train', 0)))
    text = (
        f'{_label(end.get("a", ""))} minus {_label(end.get("b", ""))} (test Dice averaged over '
        f'{over}, {end.get("order", "")} order by {end.get("granularity", "")}) on {where} at '
        f'n = {size}'
    )
    if end.get('versus'):
        text += f', then each gap minus the gap on {end["versus"]}'
    if end.get('larger'):
        larger = layout.size_name(int(end['larger']))
        text += f', then each gap at n = {size} minus its gap at n = {larger}'
    return text


def power_line(entry: dict[str, Any]) -> str:
    """The registered power plan in one sentence ('' without one)."""
    planned = entry.get('power')
    if not planned:
        return ''
    source = (entry.get('declaration', {}).get('power_plan') or {}).get('components_from', '')
    return (
        f'Power planned at registration: {planned["pretrainings"]} pre-trainings x '
        f'{planned["folds"]} outer folds ({planned["images_per_fold"]} test images per fold) '
        f'give {planned["power"]:.2f} power at {planned["effect"]:+g} Dice for the first '
        f'primary test (alpha {planned["alpha"]:g}, {planned["simulations"]} simulated studies), '
        + (f'and {planned["target_power"]:g} power at {planned["effect_with_power"]:+g}'
           if planned.get('effect_with_power') is not None else
           f'and no effect up to {planned.get("largest_effect", 0.2):+g} has '
           f'{planned["target_power"]:g} power')  # fmt: skip
        + f'; variance components (SD) {planned["components"].split("; ", 1)[-1]}'
        + (f', from {source}' if source else '')
        + '.'
    )


def describe(declared: dict[str, Any]) -> str:
    """The whole declaration in one line (the primary endpoint first)."""
    parts = []
    if 'primary_endpoint' in declared:
        parts.append(f'primary = {endpoint(declared["primary_endpoint"])}')
    if 'margin' in declared:
        parts.append(f'margin {declared["margin"]:g}')
    if declared.get('families'):
        parts.append(f'families {", ".join(declared["families"])}')
    if 'k_values' in declared:
        ks = declared['k_values']
        parts.append(f'k {_numbers(ks)}' if ks else 'every k')
    if declared.get('auto_k_values'):
        parts.append(f'auto k {_numbers(declared["auto_k_values"])}')
    if declared.get('orders') or declared.get('granularities'):
        orders, units = declared.get('orders') or [], declared.get('granularities') or []
        parts.append(f'orders {", ".join(orders)} by {", ".join(units)}')
    if declared.get('sizes'):
        parts.append(f'sizes {_sizes(declared["sizes"])}')
    for size, subset in (declared.get('size_subsets') or {}).items():
        parts.append(
            f'{size} only on {", ".join(subset.get("targets") or [])} with '
            f'{", ".join(subset.get("configurations") or [])}'
        )
    if declared.get('targets'):
        parts.append(f'targets {", ".join(declared["targets"])}')
    if declared.get('external'):
        parts.append(f'external test sets {", ".join(declared["external"])}')
    if 'seeds' in declared:
        pretrainings = declared.get('pretrain_seeds', 1)
        parts.append(
            f'seeds {_numbers(declared["seeds"])} with {pretrainings} pre-training'
            + ('s' if pretrainings != 1 else '')
        )
    if declared.get('outer_folds'):
        parts.append(f'{declared["outer_folds"]} outer folds')
    return '; '.join(parts)


def _of(entry: dict[str, Any], total: Any) -> str:
    return f'{entry.get("runs_finished", "?")} of {total if total is not None else "?"} runs'


def _primary_changed(entry: dict[str, Any]) -> bool:
    return any(field in PRIMARY_FIELDS for field in entry.get('changed') or [])


def _change(old: dict[str, Any], new: dict[str, Any], field: str) -> str:
    show = lambda v: ', '.join(map(str, v)) if isinstance(v, list) else str(v)
    return f'{FIELDS.get(field, field)} {show(old.get(field))} -> {show(new.get(field))}'


def lines(record: dict[str, Any] | None) -> list[str]:
    """What the report's first screen says about the registration: when the declaration was
    recorded (before any run, or after how many) and every amendment since."""
    if not record or not record.get('entries'):
        return [NO_RECORD]
    entries = record['entries']
    first = entries[0]
    when = _time(first.get('time', ''))
    if first.get('runs_finished', 0) == 0:
        out = [f'Registered {when}, before any run: {describe(first["declaration"])}.']
    else:
        out = [
            f'Registered {when}, after {_of(first, first.get("total_runs"))} had finished (the '
            'study started before its registration was recorded; what it declared until then '
            f'is not known): {describe(first["declaration"])}.'
        ]
    out += [line for line in [power_line(first)] if line]
    for previous, entry in zip(entries, entries[1:]):
        old, new = previous['declaration'], entry['declaration']
        of = _of(entry, previous.get('total_runs'))  # of the study as declared until then
        size = entry.get('total_runs')
        resized = (
            f'; the amended study has {size} runs' if size != previous.get('total_runs') else ''
        )
        changed = [f for f in entry.get('changed') or [] if f != 'primary_endpoint']
        fields = ', '.join(FIELDS.get(f, f) for f in changed) or 'the primary endpoint'
        stamp = f'{_time(entry.get("time", ""))}, {AMEND_FIELD}'
        if _primary_changed(entry):
            out.append(
                f'Primary endpoint amended after {of} had finished ({stamp}; {fields} '
                f'changed{resized}): from {endpoint(old.get("primary_endpoint", {}))} to '
                f'{endpoint(new.get("primary_endpoint", {}))}.'
            )
        else:
            what = '; '.join(_change(old, new, f) for f in changed)
            out.append(
                f'Declaration amended ({what}) after {of} had finished ({stamp}{resized}); '
                'the primary endpoint is as registered.'
            )
    return out


def heading(record: dict[str, Any] | None) -> str:
    """How the primary endpoint's heading qualifies it: 'registered before any run',
    'registered after N of M runs', 'amended after N of M runs', 'no registration record'."""
    if not record or not record.get('entries'):
        return 'no registration record'
    entries = record['entries']
    amended = [
        (previous, entry)
        for previous, entry in zip(entries, entries[1:])
        if _primary_changed(entry)
    ]  # fmt: skip
    if amended:
        previous, entry = amended[-1]
        return f'amended after {_of(entry, previous.get("total_runs"))}'
    first = entries[0]
    if first.get('runs_finished', 0) == 0:
        return 'registered before any run'
    return f'registered after {_of(first, first.get("total_runs"))}'
