"""The grammar of `auto:` freeze specs, and the fields they read (standard library and
ml_collections only, so that configs, the sweep and its launchers are made without JAX).

  auto:<criterion>:<k>     train the k blocks or units (config.finetune.granularity) that the
                           criterion scores highest on the target, before training ('greedy':
                           the k it picks one at a time by validation Dice)
  auto:<criterion>:soft    train everything, each block's updates scaled by its score (not for
                           'greedy', which picks a set and scores nothing to scale by)

The criteria (CRITERIA) are computed by unet_jax.freeze.criteria; unet_jax.freeze.auto_choice
resolves a spec into a concrete freeze spec (or per-block scales) from the pre-trained weights
and the training split ('greedy' also scores on the validation split, never on test); this module
only names and checks them.
"""

from __future__ import annotations

import dataclasses

import ml_collections

PREFIX = 'auto:'
# Relative gradient norm; a short training probe per block; greedy forward selection by the
# validation Dice of short runs (SubTuning).
CRITERIA = ('rgn', 'probe', 'greedy')
SOFT = 'soft'
# Criteria that pick a set instead of scoring each block on its own: no soft variant.
SET_CRITERIA = ('greedy',)


class AutoSpecError(ValueError):
    """An `auto:` freeze spec that cannot be resolved."""


@dataclasses.dataclass(frozen=True)
class AutoSpec:
    """A parsed `auto:<criterion>:<k|soft>`; k is None for the soft variant."""

    criterion: str
    k: int | None

    @property
    def soft(self) -> bool:
        return self.k is None


def is_auto(spec: str) -> bool:
    return spec.strip().startswith(PREFIX)


def has_soft(criterion: str) -> bool:
    """Whether `auto:<criterion>:soft` exists (the criterion scores every block on its own)."""
    return criterion not in SET_CRITERIA


def format_auto(criterion: str, k: int | None) -> str:
    """The spec that trains the k best blocks by `criterion` (k None: the soft variant)."""
    return f'{PREFIX}{criterion}:{SOFT if k is None else k}'


def parse_auto(spec: str, num_names: int) -> AutoSpec:
    """Checks `auto:<criterion>:<k|soft>` against the criteria and the number of blocks/units."""
    where = f'Freeze spec {spec!r} (config.finetune.train)'
    parts = [p.strip() for p in spec.strip().split(':')]
    if len(parts) != 3 or parts[0] != PREFIX[:-1] or ',' in spec:
        raise AutoSpecError(
            f"{where}: write 'auto:CRITERION:K' (train the K highest-scoring blocks or units) or "
            f"'auto:CRITERION:{SOFT}' (train all, learning rates scaled by the scores), as the "
            f'whole spec; criteria: {", ".join(CRITERIA)}.'
        )
    _, criterion, count = parts
    if criterion not in CRITERIA:
        raise AutoSpecError(f'{where}: unknown criterion {criterion!r}; valid: {CRITERIA}.')
    if count == SOFT:
        if not has_soft(criterion):
            soft_specs = ' or '.join(f"'{format_auto(c, None)}'" for c in CRITERIA if has_soft(c))
            raise AutoSpecError(
                f"{where}: '{criterion}' has no '{SOFT}' variant: it picks blocks one at a time "
                'by validation Dice, and its scores (the Dice gain of each pick) are not '
                f"learning-rate factors. Write 'auto:{criterion}:K' (K from 1 to {num_names}), "
                f'or {soft_specs} for per-block learning rates.'
            )
        return AutoSpec(criterion, None)
    if not count.isdigit() or not 1 <= int(count) <= num_names:
        raise AutoSpecError(
            f'{where}: K must be an integer from 1 to {num_names} (the number of blocks or units '
            f"at config.finetune.granularity) or '{SOFT}'."
        )
    return AutoSpec(criterion, int(count))


def default_auto_config() -> ml_collections.ConfigDict:
    """`config.finetune.auto`: how much of the target's training set an `auto:` spec looks at."""
    return ml_collections.ConfigDict(
        dict(
            num_examples=32,  # probe images (a few batches of the training set; fewer if small)
            batch_size=8,  # images per pass of the probe (and of greedy's validation passes)
            probe_steps=10,  # 'probe', 'greedy': Adam steps of each short run
            seed=0,  # which training images are the probe images (and which training subset)
        )
    )
