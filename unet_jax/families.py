"""The study's families of configurations, declared once (standard library only).

The enumerator (unet_jax.study) turns each family into sweep points; the report iterates over
the same table, so a family or direction added here appears in every table and figure.

A reference family trains one fixed freeze spec. A direction trains the first or last k
units/blocks of a depth order (`first:k` / `last:k`), for k = 1..N. The automatic family trains
what `auto:<criterion>:k` (k = 1..N) and `auto:<criterion>:soft` choose (unet_jax.auto_spec), for
each criterion of `study.auto_criteria`; it is not in the default list (DEFAULTS): it adds
2(N+1) runs per target, size and seed. Neither is `matched` (random weights with the
pre-trained tensors' means and standard deviations), the control that tells pre-trained
features from pre-trained weight scales.
"""

from __future__ import annotations

import dataclasses

AUTO = 'auto'


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    label: str  # how figures and conclusions name it
    # 'pretrained' (from the pre-training run), 'scratch' (random init) or 'matched' (random
    # weights with each tensor's mean and std from the pre-training run: config.init_matched)
    init: str
    spec: str = ''  # reference families: the freeze spec they train
    selector: str = ''  # directions: 'first' (shallow->deep), 'last' (deep->shallow); or 'auto'
    trains: bool = True  # False: evaluated as initialised (no training steps)
    default: bool = True  # in a study's families unless it names them (DEFAULTS)

    @property
    def uses_pretraining(self) -> bool:
        """Whether its runs start from (something of) a pre-training run."""
        return self.init in ('pretrained', 'matched')

    @property
    def is_direction(self) -> bool:
        return bool(self.selector) and not self.is_auto

    @property
    def is_auto(self) -> bool:
        return self.selector == AUTO


FAMILIES: tuple[Family, ...] = (
    Family('scratch', 'from scratch', init='scratch', spec='@all'),
    Family('pretrained', 'pre-trained only', init='pretrained', spec='@none', trains=False),
    Family('full', 'full fine-tuning', init='pretrained', spec='@all'),
    Family('contracting', 'contracting path', init='pretrained', spec='@contracting'),
    Family('expanding', 'expanding path', init='pretrained', spec='@expanding'),
    Family('shallow_to_deep', 'shallow->deep', init='pretrained', selector='first'),
    Family('deep_to_shallow', 'deep->shallow', init='pretrained', selector='last'),
    Family('auto', 'automatic choice', init='pretrained', selector=AUTO, default=False),
    # The Transfusion control (Raghu et al., NeurIPS 2019): pre-trained weight scales without
    # pre-trained features; everything trains, as in `full`.
    Family('matched', 'statistics-matched init', init='matched', spec='@all', default=False),
)
BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}
NAMES: tuple[str, ...] = tuple(BY_NAME)
REFERENCES: tuple[str, ...] = tuple(f.name for f in FAMILIES if f.spec)
DIRECTIONS: tuple[str, ...] = tuple(f.name for f in FAMILIES if f.is_direction)
DEFAULTS: tuple[str, ...] = tuple(f.name for f in FAMILIES if f.default)


def get(name: str) -> Family:
    if name not in BY_NAME:
        raise ValueError(f'Unknown family {name!r}; valid: {", ".join(NAMES)}.')
    return BY_NAME[name]
