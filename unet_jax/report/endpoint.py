"""The primary endpoint as declared: study.json's `primary` with its defaults filled
(`primary_plan`; the gap a - b on the ultrasound targets at the first size, then each minus
the first X-ray target's), and the modality of a target, which the plan and the comparisons
between targets go by."""

from __future__ import annotations

import dataclasses

from unet_jax.data import modalities
from unet_jax.report.contrasts import DEEP, SHALLOW
from unet_jax.report.load import Study, family


@dataclasses.dataclass(frozen=True)
class PrimaryPlan:
    """The primary endpoint as declared (study.json's `primary`), with its defaults filled."""

    a: str
    b: str
    targets: tuple[str, ...]
    versus: str
    num_train: int
    larger: int = 0  # a larger training size: then the gap's change (0: none)

    def describe(self) -> str:
        gap = f'{family(self.a).label} minus {family(self.b).label}'
        where = ', '.join(self.targets) or 'no target'
        text = f'the gap {gap} (test Dice averaged over k) on {where} at n = {self.num_train}'
        if self.versus:
            text += f', then each gap minus the gap on {self.versus} (interaction)'
        if self.larger:
            text += (
                f', then each gap at n = {self.num_train} minus its gap at n = {self.larger} '
                '(over the k both sizes ran)'
            )
        return text


def target_modality(study: Study, target: str) -> str:
    known = (study.plan.get('modalities') or {}).get(target)
    if known is not None:
        return known
    definition = study.plan['targets'].get(target) or {}
    data = definition.get('data', definition) if isinstance(definition, dict) else {}
    return modalities.modality(str(data.get('name', '')))


def primary_plan(study: Study) -> PrimaryPlan | None:
    """study.json's `primary` (older plans: the default), or None when it cannot be made."""
    declared = dict(study.plan.get('primary') or {})
    a = declared.get('a') or SHALLOW
    b = declared.get('b') or DEEP
    if not {a, b} <= set(study.plan['families']) or not study.sizes:
        return None
    by_modality = lambda m: [t for t in study.targets if target_modality(study, t) == m]
    targets = [t for t in str(declared.get('targets') or '').split('+') if t]
    targets = targets or by_modality(modalities.ULTRASOUND)
    versus = str(declared.get('versus') or '')
    if not versus:
        xray = by_modality(modalities.XRAY)
        versus = xray[0] if xray else ''
    versus = '' if versus == 'none' else versus
    num_train = int(declared.get('num_train') or study.sizes[0])
    if not targets:
        return None
    larger = int(declared.get('larger') or 0)
    return PrimaryPlan(a, b, tuple(targets), versus, num_train, larger)
