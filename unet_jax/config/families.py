"""The study's families of configurations, declared once (standard library only).

The enumerator (unet_jax.study.runner) turns each family into sweep points; the report iterates over
the same table, so a family or direction added here appears in every table and figure.

A reference family trains one fixed freeze spec. A direction trains the first or last k
units/blocks of a depth order (`first:k` / `last:k`), for k = 1..N. The automatic family trains
what `auto:<criterion>:k` (k = 1..N) and `auto:<criterion>:soft` (not greedy) choose
(config.auto_spec), for each criterion of `study.auto_criteria`; it is not in the default list
(DEFAULTS): it adds N + 1 runs per criterion with a soft variant and N for greedy, per target,
size and seed. Neither is `matched` (random weights with the
pre-trained tensors' means and standard deviations), the control that tells pre-trained
features from pre-trained weight scales. Nor are the parameter-efficient families (METHODS):
`lora-r2`, `lora-r8` (low-rank adapters of every 3x3 and up-conv kernel), `norm` (norm layers'
scale and shift only) and `bias` (biases only) over the whole network, and each as a direction
over the shallowest / deepest k blocks, named by their direction like the plain ones
(`lora-r8-shallow_to_deep`: `lora:8@first:k`, `lora-r8-deep_to_shallow`: `lora:8@last:k`).

One word per idea: a direction (a sweep over k) is `shallow_to_deep` / `deep_to_shallow`
wherever a family is named, and reads `shallow->deep` / `deep->shallow` in the report; `first:k`
/ `last:k` is the freeze spec of the set of blocks a direction trains at one k.
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
    # Parameter-efficient directions: what each selected block trains, as the method part of a
    # freeze spec ('lora:8', 'norm', 'bias'); a direction's spec is then `method@first:k`.
    method: str = ''
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

    def direction_spec(self, k: int) -> str:
        """The freeze spec of a direction at k: 'first:3', or 'lora:8@first:3'."""
        spec = f'{self.selector}:{k}'
        return f'{self.method}@{spec}' if self.method else spec


# Parameter-efficient methods (name, label, freeze-spec method part): each is a reference family
# over the whole network and two directions over the shallowest / deepest k blocks.
METHODS = (
    ('lora-r2', 'LoRA r=2', 'lora:2'),
    ('lora-r8', 'LoRA r=8', 'lora:8'),
    ('norm', 'norm only', 'norm'),
    ('bias', 'bias only', 'bias'),
)
# Names that stand for several families in config lists (configs/layerwise.py families=).
ALIASES = {
    'lora': ('lora-r2', 'lora-r8'),
    'peft': tuple(name for name, _, _ in METHODS),
}
# Names a family had before (a command line or config that uses one still works).
FORMER_NAMES = {
    f'{name}-{old}': f'{name}-{new}'
    for name, _, _ in METHODS
    for old, new in (('shallow', 'shallow_to_deep'), ('deep', 'deep_to_shallow'))
}


DIRECTION_SUFFIXES = (
    ('shallow_to_deep', 'first', 'shallow->deep'),
    ('deep_to_shallow', 'last', 'deep->shallow'),
)


def _method_families() -> tuple[Family, ...]:
    out = []
    for name, label, method in METHODS:
        out.append(Family(name, label, init='pretrained', spec=f'{method}@@all', default=False))
    for name, label, method in METHODS:
        for suffix, selector, arrow in DIRECTION_SUFFIXES:
            out.append(
                Family(
                    f'{name}-{suffix}',
                    f'{label}, {arrow}',
                    init='pretrained',
                    selector=selector,
                    method=method,
                    default=False,
                )
            )
    return tuple(out)


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
    *_method_families(),
)
BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}
NAMES: tuple[str, ...] = tuple(BY_NAME)
REFERENCES: tuple[str, ...] = tuple(f.name for f in FAMILIES if f.spec)
DIRECTIONS: tuple[str, ...] = tuple(f.name for f in FAMILIES if f.is_direction)
DEFAULTS: tuple[str, ...] = tuple(f.name for f in FAMILIES if f.default)


def expand(names) -> tuple[str, ...]:
    """Family names with every alias (ALIASES: 'lora', 'peft') replaced by its families."""
    out = []
    for name in names:
        name = FORMER_NAMES.get(name, name)
        for family in ALIASES.get(name, (name,)):
            if family not in out:
                out.append(family)
    return tuple(out)


def needs_norm_layers(names) -> bool:
    """Whether a family of `names` trains norm layers only (the model must have them)."""
    return any(get(n).method == 'norm' or get(n).spec.startswith('norm@') for n in names)


def get(name: str) -> Family:
    if name in FORMER_NAMES:
        raise ValueError(f'Family {name!r} is now called {FORMER_NAMES[name]!r}; use that name.')
    if name not in BY_NAME:
        raise ValueError(f'Unknown family {name!r}; valid: {", ".join(NAMES)}.')
    return BY_NAME[name]
