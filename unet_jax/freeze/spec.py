"""Freeze specs: which units a run trains, compiled to optax labels.

A spec names what trains; everything else is frozen. It is a comma-separated list of
selectors, resolved against the layer registry (so every name is checked):

  enc2                  a block
  enc1/conv0            a unit
  enc0..enc2            a range in forward (data-path) order, from the first unit of the left
                        end to the last unit of the right end; ends may be blocks or units
                        (enc0/conv1..enc1/conv0)
  @contracting          a group: @contracting, @bottleneck, @expanding, @head, @all;
                        @none (trains nothing) must be the whole spec
  first:N, last:N       the N shallowest / deepest blocks or units in the configured order
                        ('forward' | 'level') and granularity ('block' | 'unit')
  re:PATTERN            units whose full name matches the regex (re.fullmatch)
  -SELECTOR             subtraction, applied after all additions; a spec of subtractions
                        only subtracts from @all ('-enc0' trains everything but enc0)

Parameter-efficient selectors train a part of each unit that SELECTOR (any selector above)
stands for, the rest of the unit frozen; they combine with the others ('enc0,norm@@all'):

  lora:R@SELECTOR       a rank-R adapter of every 3x3 and up-conv kernel (unet_jax.freeze.adapters:
                        W + scale * reshape(A @ B), A and B trained, W frozen, B zero at first);
                        a unit without one (the head's 1x1 conv) trains whole, as the task
                        head does in parameter-efficient fine-tuning
  norm@SELECTOR         only the norm layers' scale and shift (and BatchNorm statistics); the
                        model needs norms (config.model.norm='batch' or 'group')
  bias@SELECTOR         only biases: of the convs (there are none before a norm) and the
                        norms' shift

A unit trained whole trains every part, so 'enc0,lora:4@@all' trains enc0 whole and adapters
elsewhere. A unit of a parameter-efficient selector counts as trained (its BatchNorm updates
its statistics, as in full fine-tuning), and its kernel is frozen.

Canonical form (names the run and its results row): '@all' or '@none' when the trained
set is everything or nothing; the group name when it is exactly one group; otherwise the
trained units split into runs of consecutive units in forward order, joined by ',', each run
written 'a..b' (a single name when it is one block or one unit), where an end is written as
its block when the run covers that whole block, else as the unit. So 'enc1,enc0,-enc0/conv0'
becomes 'enc0/conv1..enc1', and 'first:2' at block granularity in forward order 'enc0..enc1'.
Parameter-efficient parts follow, as METHOD@NAME with NAME the canonical form of the units
selected for that method ('lora:8@@all', 'enc0,norm@dec0..head').

The plan it resolves to (what trains, its labels and costs): unet_jax.freeze.plan.
"""

from collections.abc import Iterable, Mapping, Sequence
import re

from unet_jax import errors
from unet_jax.freeze import adapters
from unet_jax.freeze.plan import (
    LORA,
    METHODS,
    NORM,
    FreezePlan,
    is_lora,
    leaf_adapter_shapes,
    trains_leaf,
)
from unet_jax.models.layer_registry import GRANULARITIES, ORDERS, LayerRegistry

ALL = '@all'
NONE = '@none'
_METHOD_SELECTOR = re.compile(r'(?P<method>lora:[^@,]*|norm|bias)@(?P<selector>.*)')


class FreezeSpecError(errors.ConfigError):
    """A freeze spec that names something the model does not have, or trains nothing."""


def compile_spec(
    spec: str, registry: LayerRegistry, *, order: str = 'forward', granularity: str = 'unit'
) -> FreezePlan:
    """Resolves ``spec`` (config.finetune.train) against the registry; see the module doc."""
    if order not in ORDERS:
        raise FreezeSpecError(f'config.finetune.order={order!r} is not one of {ORDERS}.')
    if granularity not in GRANULARITIES:
        raise FreezeSpecError(
            f'config.finetune.granularity={granularity!r} is not one of {GRANULARITIES}.'
        )
    tokens = [t.strip() for t in spec.split(',')]
    methods: dict[str, set[str]] = {}  # method part ('lora:8', 'norm', 'bias') -> its units
    if tokens == [NONE]:
        whole = set()
    else:
        if any(not t for t in tokens):
            raise FreezeSpecError(
                f'Freeze spec {spec!r} (config.finetune.train) has an empty selector. Write '
                "comma-separated selectors such as 'enc0..enc2,-enc1/conv0', '@all', or '@none' to "
                'train nothing.'
            )
        if NONE in tokens:
            raise FreezeSpecError(
                f'Freeze spec {spec!r} (config.finetune.train): {NONE} trains nothing and must '
                'be the whole spec; remove it or the other selectors.'
            )
        added, removed = set(), set()
        subtracts_only = all(t.startswith('-') for t in tokens)
        for token in tokens:
            if token.startswith('-'):
                if _METHOD_SELECTOR.fullmatch(token[1:].strip()):
                    raise FreezeSpecError(
                        f'{token!r} in freeze spec {spec!r} (config.finetune.train): a '
                        'subtraction removes whole units; subtract from the selector instead '
                        "(e.g. 'norm@@all' with '-enc0' trains the norms of every unit but enc0)."
                    )
                removed.update(_select(token[1:].strip(), spec, registry, order, granularity))
            elif match := _METHOD_SELECTOR.fullmatch(token):
                part = _method_part(match.group('method'), spec)
                units = _select(match.group('selector').strip(), spec, registry, order, granularity)
                methods.setdefault(part, set()).update(units)
            else:
                added.update(_select(token, spec, registry, order, granularity))
        whole = (set(registry.unit_names) if subtracts_only else added) - removed
        methods = {part: units - removed - whole for part, units in methods.items()}
        _check_one_rank(methods, spec)
    canonical = _canonical(whole, methods, registry)
    trained_whole = whole | _unadaptable(methods, registry)
    partial = _partial_parts(methods, registry, whole=trained_whole)
    trained = trained_whole | {unit for unit, _ in partial}
    if not trained and tokens != [NONE]:
        raise FreezeSpecError(
            f'Freeze spec {spec!r} (config.finetune.train) trains nothing. '
            + _nothing_to_train_hint(methods, registry)
            + f"If that is meant (evaluate a pre-trained model), write exactly '{NONE}'."
        )
    trained_units = tuple(n for n in registry.unit_names if n in trained)
    return FreezePlan(
        spec=spec,
        canonical=canonical,
        trained_units=trained_units,
        frozen_units=tuple(n for n in registry.unit_names if n not in trained),
        registry=registry,
        partial=partial,
    )


def _method_part(method: str, spec: str) -> str:
    """'norm', 'bias', or 'lora:R' with R checked."""
    if not method.startswith(LORA):
        return method
    rank = method.split(':', 1)[1].strip()
    if not rank.isdigit() or int(rank) < 1:
        raise FreezeSpecError(
            f'{method!r} in freeze spec {spec!r} (config.finetune.train): the rank R of '
            "'lora:R@SELECTOR' must be a positive integer, e.g. 'lora:8@@all'."
        )
    return f'{LORA}:{int(rank)}'


def _check_one_rank(methods: Mapping[str, set[str]], spec: str) -> None:
    ranks = [p for p in methods if is_lora(p)]
    for i, a in enumerate(ranks):
        for b in ranks[i + 1 :]:
            if both := sorted(methods[a] & methods[b]):
                raise FreezeSpecError(
                    f'Freeze spec {spec!r} (config.finetune.train) gives {", ".join(both[:3])} '
                    f'two adapter ranks ({a}, {b}); give each unit one rank.'
                )


def _unadaptable(methods: Mapping[str, set[str]], registry: LayerRegistry) -> set[str]:
    """The units of a `lora:` selector without a kernel wider than 1x1 (the head): they train
    whole, as the task head does in parameter-efficient fine-tuning (its [cin, cout] kernel is
    smaller than an adapter of it)."""
    selected = set().union(*(units for part, units in methods.items() if is_lora(part)))
    return {
        unit.name
        for unit in registry.units
        if unit.name in selected
        and not any(adapters.adapts(p, s) for p, s in zip(unit.param_paths, unit.param_shapes))
    }


def _partial_parts(
    methods: Mapping[str, set[str]], registry: LayerRegistry, *, whole: set[str]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(unit, its parts) of every unit not trained `whole` where a method trains at least one
    leaf, forward order. A part that trains nothing in a unit (no norm, no bias) is left out of
    that unit."""
    out = []
    for unit in registry.units:
        if unit.name in whole:
            continue
        parts = tuple(
            part
            for part in sorted(methods, key=_method_order)
            if unit.name in methods[part] and _part_trains(part, unit)
        )
        if parts:
            out.append((unit.name, parts))
    return tuple(out)


def _method_order(part: str) -> tuple[int, str]:
    return METHODS.index(part.split(':')[0]), part


def _part_trains(part: str, unit) -> bool:
    return any(
        trains_leaf((part,), path) or leaf_adapter_shapes((part,), path, shape)
        for path, shape in zip(unit.param_paths, unit.param_shapes)
    )


def _nothing_to_train_hint(methods: Mapping[str, set[str]], registry: LayerRegistry) -> str:
    if NORM in methods and methods[NORM]:
        return (
            'norm@ trains norm layers and the model has none there (config.model.norm='
            "'none' unless set): use --config.model.norm=batch (for pre-training too). "
        )
    if methods:
        return 'Its parameter-efficient selectors select no parameter of those units. '
    return ''


def _canonical(whole: set[str], methods: Mapping[str, set[str]], registry: LayerRegistry) -> str:
    """canonical_spec of the whole units, then METHOD@<canonical of its units> per method."""
    names = [canonical_spec(whole, registry)] if whole or not methods else []
    for part in sorted(methods, key=_method_order):
        if methods[part]:
            names.append(f'{part}@{canonical_spec(methods[part], registry)}')
    if not names:
        return NONE
    return ','.join(names)


def _valid_names(registry: LayerRegistry) -> str:
    groups = ', '.join('@' + g for g in (*registry.groups, 'all', 'none'))
    return (
        f'blocks: {", ".join(registry.block_names)}; units: {", ".join(registry.unit_names)}'
        f'; groups: {groups}; also first:N, last:N, a..b, re:PATTERN, -SELECTOR'
    )


def _select(
    selector: str, spec: str, registry: LayerRegistry, order: str, granularity: str
) -> tuple[str, ...]:
    """The units one selector (without its '-') stands for."""
    where = f'in freeze spec {spec!r} (config.finetune.train)'
    if selector.startswith('@'):
        group = selector[1:]
        if group == 'all':
            return registry.unit_names
        if group not in registry.groups:
            raise FreezeSpecError(
                f'Unknown group {selector!r} {where}. Valid names: {_valid_names(registry)}.'
            )
        return registry.groups[group]
    if selector.startswith('re:'):
        try:
            pattern = re.compile(selector[3:])
        except re.error as e:
            raise FreezeSpecError(f'Bad regex {selector!r} {where}: {e}.') from e
        units = tuple(n for n in registry.unit_names if pattern.fullmatch(n))
        if not units:
            raise FreezeSpecError(
                f'{selector!r} {where} matches no unit (full match); units: '
                f'{", ".join(registry.unit_names)}.'
            )
        return units
    if match := re.fullmatch(r'(first|last):(.*)', selector):
        names = registry.order(order, granularity)
        count = match.group(2).strip()
        if not count.isdigit() or not 1 <= int(count) <= len(names):
            raise FreezeSpecError(
                f'{selector!r} {where}: N must be an integer from 1 to {len(names)} (the number of '
                f'{granularity}s; config.finetune.granularity={granularity!r}).'
            )
        n = int(count)
        return registry.expand(names[:n] if match.group(1) == 'first' else names[-n:])
    if '..' in selector:
        left, right = (s.strip() for s in selector.split('..', 1))
        start = registry.expand([_name(left, where, registry)])[0]
        end = registry.expand([_name(right, where, registry)])[-1]
        units = registry.unit_names
        if units.index(start) > units.index(end):
            raise FreezeSpecError(
                f'Range {selector!r} {where} runs backwards: ranges follow the forward (data-path) '
                f"order {', '.join(registry.block_names)}; write '{right}..{left}'."
            )
        return units[units.index(start) : units.index(end) + 1]
    return registry.expand([_name(selector, where, registry)])


def _name(name: str, where: str, registry: LayerRegistry) -> str:
    if name not in registry.block_names and name not in registry.unit_names:
        raise FreezeSpecError(
            f'Unknown layer {name!r} {where}. Valid names: {_valid_names(registry)}.'
        )
    return name


def canonical_spec(trained_units: Iterable[str], registry: LayerRegistry) -> str:
    """The stable name of a trained set (rule in the module docstring)."""
    trained = set(trained_units)
    units = registry.unit_names
    if trained == set(units):
        return ALL
    if not trained:
        return NONE
    for group, members in registry.groups.items():
        if trained == set(members) and len({registry.unit(u).block for u in members}) > 1:
            return '@' + group
    runs, run = [], []
    for name in units:
        if name in trained:
            run.append(name)
        elif run:
            runs.append(run)
            run = []
    if run:
        runs.append(run)
    return ','.join(_run_name(run, registry) for run in runs)


def _run_name(run: Sequence[str], registry: LayerRegistry) -> str:
    first, last = registry.unit(run[0]), registry.unit(run[-1])
    left = first.block if registry.block(first.block).units[0] == first.name else first.name
    right = last.block if registry.block(last.block).units[-1] == last.name else last.name
    if first.block == last.block and left == right == first.block:
        return first.block
    if len(run) == 1:
        return first.name
    return f'{left}..{right}'
