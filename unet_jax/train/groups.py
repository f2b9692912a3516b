"""A group's set-up: its members and what they share (config, model, layer registry, freeze
plan, data), made once before training (`set_up`); nothing of it changes while the group trains.

The members of a group differ only in seed (their own initialisation or pre-training, training
subset, data order and augmentation); everything else of their configs is equal, so they share
one model, freeze plan, optimiser, validation and test split, and one compiled step. An
`auto:` spec is resolved here, once for the group (`resolve_auto`), before the freeze plan.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import functools
import json
import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from unet_jax import freeze, models
from unet_jax.config import auto_spec
from unet_jax.data import pipeline
from unet_jax.freeze import auto_choice
from unet_jax.models import layer_registry
from unet_jax.train import hosts, initial_state, steps

# Config fields in which the members of a group may differ: what the seed decides.
PER_RUN_FIELDS = (('seed',), ('data', 'subset_seed'), ('init_from',))

SplitsFn = Callable[[ml_collections.ConfigDict], Mapping[str, pipeline.Split]]


@dataclasses.dataclass(frozen=True)
class Member:
    """A run as its group trains it: its config, its folder, its name in logs and checkpoints.

    `extra` holds results.json keys that the caller knows and training does not (the study's
    pre-training index and group name).
    """

    config: ml_collections.ConfigDict
    workdir: str
    name: str = ''
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or os.path.basename(self.workdir)


def shared_part(config: ml_collections.ConfigDict) -> str:
    """The config without the per-run fields, as canonical JSON (equal within a group)."""
    plain = config.to_dict()
    for path in PER_RUN_FIELDS:
        parent = plain
        for key in path[:-1]:
            parent = parent.get(key, {})
        parent.pop(path[-1], None)
    return json.dumps(plain, sort_keys=True, default=str)


def _sorted_by_id(split: pipeline.Split) -> pipeline.Split:
    order = np.argsort(np.asarray(split.ids, dtype=str), kind='stable')
    return pipeline.Split(split.image[order], split.mask[order], [split.ids[i] for i in order])


def _check_members(
    members: Sequence[Member], splits: Sequence[Mapping[str, pipeline.Split]]
) -> None:
    shared = shared_part(members[0].config)
    for member, member_splits in zip(members[1:], splits[1:]):
        if shared_part(member.config) != shared:
            raise ValueError(
                f'{member.label} cannot be trained in a group with {members[0].label}: their '
                'configs differ in more than seed, data.subset_seed and init_from.'
            )
        for split in ('val', 'test'):
            if list(member_splits[split].ids) != list(splits[0][split].ids):
                raise ValueError(
                    f'{member.label} and {members[0].label} have different {split} splits; '
                    'the runs of a group share them (keep config.data.split_seed equal).'
                )
    val = splits[0]['val']
    if not (val.mask.reshape(len(val), -1).max(axis=1) > 0).any():
        raise ValueError(
            f'The validation split of {members[0].config.data.name!r} has no image with a '
            'lesion (every mask is empty), so no checkpoint can be chosen by lesion Dice. Use a '
            'larger config.data.val_fraction or another data set.'
        )


@dataclasses.dataclass(frozen=True)
class GroupSetup:
    """The set-up record of a group: members, shared config, model, registry, plan and data."""

    name: str
    directory: str  # where the group's checkpoint lives
    members: tuple[Member, ...]
    config: ml_collections.ConfigDict  # the first member's; equal to the others' but the seed
    model: Any
    registry: layer_registry.LayerRegistry
    plan: freeze.FreezePlan
    train_splits: tuple[pipeline.Split, ...]  # each member's own training subset
    val: pipeline.Split
    test: pipeline.Split
    choice: auto_choice.Choice | None = None  # what an `auto:` spec resolved to
    # External test sets (config.external): every case of each, scored with every run's best
    # params once training ends; never trained or selected on.
    external: Mapping[str, pipeline.Split] = dataclasses.field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return [m.label for m in self.members]

    @property
    def scales(self) -> dict[str, float] | None:
        """Learning-rate factors of a soft `auto:` spec (steps.create_train_tx), else None."""
        return self.choice.scales if self.choice else None

    @property
    def eval_batch_size(self) -> int:
        return 2 * self.config.batch_size  # no gradients: twice the training batch fits

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """[runs, batch, ...]: each run's batch of the step, from its own subset and order."""
        size = self.config.batch_size
        picks = [
            batch_indices(step, size, len(split), m.config.seed)
            for split, m in zip(self.train_splits, self.members)
        ]
        images, masks = (
            np.stack([getattr(s, key)[i] for s, i in zip(self.train_splits, picks)])
            for key in ('image', 'mask')
        )
        return steps.train_batch(images, masks, [m.config for m in self.members])


def set_up(
    members: Sequence[Member], directory: str, splits_fn: SplitsFn, *, name: str
) -> GroupSetup:
    """The members' data (checked to fit one group), the model and its registry, an `auto:`
    spec's choice, and the freeze plan."""
    splits = [splits_fn(m.config) for m in members]
    _check_members(members, splits)
    config = members[0].config
    model = models.create_model(config.model, half_precision=config.get('half_precision', False))
    registry = layer_registry.build_registry(
        model, image_size=config.data.image_size, in_channels=config.model.in_channels
    )
    choice = None
    if auto_spec.is_auto(config.finetune.train):  # its time counts in setup_s and probe_s
        choice = resolve_auto(members, splits_fn, model=model, registry=registry)
    plan = freeze.compile_spec(
        choice.spec if choice else config.finetune.train,
        registry,
        order=config.finetune.order,
        granularity=config.finetune.granularity,
    )
    for member, member_splits in zip(members, splits):
        logging.info(
            '%s: data %s: %s',
            member.label,
            config.data.name,
            ', '.join(f'{k} {len(v)}' for k, v in member_splits.items()),
        )
    return GroupSetup(
        name=name,
        directory=directory,
        members=tuple(members),
        config=config,
        model=model,
        registry=registry,
        plan=plan,
        train_splits=tuple(s['train'] for s in splits),
        val=_sorted_by_id(splits[0]['val']),
        test=_sorted_by_id(splits[0]['test']),
        choice=choice,
        external=external_sets(config),
    )


_EXTERNAL: dict[str, pipeline.Split] = {}  # the process's external sets, by their data config


def external_sets(config: ml_collections.ConfigDict) -> dict[str, pipeline.Split]:
    """{name: every case} of config.external ({name: data config}), loaded once per process."""
    out = {}
    for name, data in (config.get('external') or {}).items():
        key = json.dumps([data.to_dict(), config.model.in_channels], sort_keys=True, default=str)
        if key not in _EXTERNAL:
            _EXTERNAL[key] = hosts.first_then_others(
                functools.partial(pipeline.load_all, data, in_channels=config.model.in_channels)
            )
            logging.info('external test set %s: %d images', name, len(_EXTERNAL[key]))
        out[name] = _EXTERNAL[key]
    return out


def resolve_auto(
    members: Sequence[Member],
    splits_fn: Callable[[ml_collections.ConfigDict], Mapping[str, pipeline.Split]],
    *,
    model: Any,
    registry: layer_registry.LayerRegistry,
) -> auto_choice.Choice:
    """Resolves the group's `auto:` spec once, from the pre-trained weights (config.init_from)
    and the probe images of the training split (and, for `greedy`, the validation split).

    The choice is a function of the target, the training-set size and the pre-training only:
    the probe images come from the training subset of seed `finetune.auto.seed` (not each run's
    own seed), so every seed of a group trains the same blocks and shares one compiled step.
    The validation split is the group's (in id order, as training validates on it); the test
    split is never read. The choice is kept in each run's auto_choice.json, so a resumed run
    keeps it.
    """
    config = members[0].config
    spec = config.finetune.train
    if not config.init_from:
        raise auto_choice.AutoSpecError(
            f'Freeze spec {spec!r} (config.finetune.train) scores the pre-trained weights, but '
            'config.init_from is empty: set --config.init_from=DIR of a pre-training run.'
        )
    if len({m.config.init_from for m in members}) > 1:
        raise auto_choice.AutoSpecError(
            f'Freeze spec {spec!r}: the runs of group {[m.label for m in members]} start from '
            'different pre-trainings (config.init_from), so they may choose differently; train '
            'them in separate groups.'
        )
    probe_config = config.copy_and_resolve_references()
    if 'subset_seed' in probe_config.data:
        probe_config.data.subset_seed = config.finetune.auto.seed
    splits = splits_fn(probe_config)
    train, val = splits['train'], _sorted_by_id(splits['val'])
    variables = initial_state.load_init_from(initial_state.initial_variables(model, config), config)
    choice = auto_choice.load_or_choose(
        members[0].workdir,
        spec,
        model=model,
        registry=registry,
        variables=variables,
        images=train.image,
        masks=train.mask,
        val_images=val.image,
        val_masks=val.mask,
        granularity=config.finetune.granularity,
        loss_weights=config.loss.to_dict(),
        learning_rate=config.optimizer.learning_rate,
        auto=config.finetune.auto,
    )
    if jax.process_index() == 0:
        for member in members[1:]:
            auto_choice.save_choice(member.workdir, spec, choice)
    logging.info(
        '%s: %s chose %s; scores %s (probe: %d images, %.1f s, %.3g FLOPs).',
        members[0].label,
        spec,
        ', '.join(choice.chosen),
        ', '.join(f'{n} {v:.3f}' for n, v in choice.scores.items()),
        choice.cost['num_examples'],
        choice.cost['seconds'],
        choice.cost['flops'],
    )
    return choice


def batch_indices(step: int, batch_size: int, num_examples: int, seed: int) -> np.ndarray:
    """Example indices of a step: epochs are seeded permutations, so data order is keyed by step."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs = positions // num_examples
    indices = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):
        permutation = np.random.default_rng([seed, int(epoch)]).permutation(num_examples)
        selected = epochs == epoch
        indices[selected] = permutation[positions[selected] % num_examples]
    return indices
