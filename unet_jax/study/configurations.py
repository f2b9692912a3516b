"""The configurations of a study: what each of its families expands to (every order,
granularity and k of a direction, the `auto` variants), their names as in the run names, and
which of them run at each training size (`study.size_subsets`).

unet_jax.study.sweep_points crosses them with targets, sizes, seeds and folds into points.
"""

from collections.abc import Iterator, Sequence
from typing import Any

import ml_collections

from unet_jax.config import auto_spec, families
from unet_jax.layout import size_name
from unet_jax.models import layer_registry


def configuration_name(
    family: str, *, order: str = '', granularity: str = '', k: int = 0, spec: str = ''
) -> str:
    """'full', 'shallow_to_deep-level-block-k3' for the layer-by-layer families, and
    'auto-rgn-block-k3' / 'auto-rgn-block-soft' for the automatic choice."""
    if families.get(family).is_direction:
        return f'{family}-{order}-{granularity}-k{k}'
    if families.get(family).is_auto:
        criterion = spec.split(':')[1]
        return f'{family}-{criterion}-{granularity}-' + (f'k{k}' if k else auto_spec.SOFT)
    return family


def configurations(
    study: ml_collections.ConfigDict, registry: layer_registry.LayerRegistry
) -> Iterator[dict[str, Any]]:
    """Every configuration of `study.families`, in their order: its family and freeze spec,
    and for a direction or `auto` its order, granularity and k (k = 0: the soft variant)."""
    for name in study.families:
        family = families.get(name)
        if family.is_auto:
            yield from _auto_configurations(study, registry)
            continue
        if not family.is_direction:
            yield dict(family=name, spec=family.spec)
            continue
        for order in study.orders:
            for granularity in study.granularities:
                n = len(registry.order(order, granularity))
                for k in _k_values(study, n, granularity):
                    yield dict(
                        family=name,
                        spec=family.direction_spec(k),
                        order=order,
                        granularity=granularity,
                        k=k,
                    )


def _k_values(study: ml_collections.ConfigDict, n: int, granularity: str) -> list[int]:
    """The k of shallow_to_deep / deep_to_shallow: study.k_values (() = every k, 1..n)."""
    chosen = tuple(study.get('k_values', ()))
    if not chosen:
        return list(range(1, n + 1))
    return _checked_k_values(chosen, n, granularity, 'k_values')


def _checked_k_values(chosen: tuple, n: int, granularity: str, field: str) -> list[int]:
    wrong = [k for k in chosen if not (isinstance(k, int) and 1 <= k <= n)]
    argument = {'k_values': 'ks', 'auto_k_values': 'auto_ks'}[field]
    if wrong:
        raise ValueError(
            f'config.study.{field}={chosen}: {wrong} not in 1..{n} (the model has {n} '
            f'{granularity}s); choose k among them, e.g. {argument}=1+2+{n} '
            '(configs/layerwise.py).'
        )
    return sorted(set(chosen))


def _auto_configurations(
    study: ml_collections.ConfigDict, registry: layer_registry.LayerRegistry
) -> Iterator[dict[str, Any]]:
    """`auto:<criterion>:k` for k = 1..N and `auto:<criterion>:soft` (for a criterion that has
    it: not greedy), per criterion and granularity (k counts blocks or units, whatever their
    order); with `study.auto_k_values`, only those k (fixed in advance) and no soft."""
    fixed = tuple(study.get('auto_k_values', ()))
    for criterion in study.get('auto_criteria', auto_spec.CRITERIA):
        soft = [0] if auto_spec.has_soft(criterion) and not fixed else []
        for granularity in study.granularities:
            n = len(registry.order('forward', granularity))
            ks = _checked_k_values(fixed, n, granularity, 'auto_k_values') if fixed else None
            for k in [*(ks or range(1, n + 1)), *soft]:
                spec = auto_spec.format_auto(criterion, k or None)
                yield dict(family=families.AUTO, spec=spec, granularity=granularity, k=k)


def size_subsets(
    study: ml_collections.ConfigDict, configurations: Sequence[str]
) -> dict[int, set[tuple[str, str]]]:
    """{training size: the (target, configuration) pairs it runs} for the sizes that
    `study.size_subsets` restricts (e.g. a larger size run only where its hypothesis needs it);
    a size it does not list runs every target and configuration."""
    out = {}
    for size, subset in (study.get('size_subsets') or {}).items():
        where = f'config.study.size_subsets.{size}'
        named = {f'n{size_name(n)}': n for n in study.num_train}
        if size not in named:
            raise ValueError(
                f"{where}: {size!r} names none of the study's training sizes; use one of "
                f'{list(named)} (n and the size, as in the run names).'
            )
        num_train = named[size]
        targets = tuple(subset.get('targets') or study.targets)
        chosen = tuple(subset.get('configurations') or ())
        unknown = [t for t in targets if t not in study.targets] + [
            c for c in chosen if c not in configurations
        ]
        if unknown or not chosen:
            raise ValueError(
                f'{where}: {unknown or "no configurations"}: list targets among '
                f'{list(study.targets)} and configurations among {list(configurations)}.'
            )
        out[num_train] = {(t, c) for t in targets for c in chosen}
    return out
