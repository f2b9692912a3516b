"""A group of runs trained together (unet_jax.train): members, shared set-up, bookkeeping.

The members of a group differ only in seed (their own initialisation or pre-training, training
subset, data order and augmentation); everything else of their configs is equal, so they share
one model, freeze plan, optimiser, validation and test split, and one compiled step.

The ledger is each run's bookkeeping (best validation Dice and step, validation curve,
divergence) plus the group's step times and time breakdown; it is saved as the metadata of the
group's checkpoint, so a resumed group continues it.

Over 400 lines: set-up (members, data, the automatic layer choice), bookkeeping and each
run's results are one object's life cycle, kept in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import json
import os
import time
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from unet_jax import (
    freeze,
    io_utils,
    layers,
    layout,
    metrics,
    models,
    outputs,
    steps,
    surgical,
    writers,
)
from unet_jax.data import pipeline
from unet_jax.lanes import to_host

# Config fields in which the runs of a group may differ: what the seed decides.
PER_RUN_FIELDS = (('seed',), ('data', 'subset_seed'), ('init_from',))
TIME_SECTIONS = ('setup', 'compile', 'steps', 'eval', 'checkpoint', 'write')


class NonFiniteLossError(FloatingPointError):
    """Training diverged: a loss or gradient norm became NaN or Inf."""


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


@dataclasses.dataclass
class Group:
    """The members trained together and what they share; the ledger and timings of the group."""

    name: str
    directory: str
    members: list[Member]
    config: ml_collections.ConfigDict
    model: Any
    registry: layers.LayerRegistry
    plan: freeze.FreezePlan
    train_splits: list[pipeline.Split]
    val: pipeline.Split
    test: pipeline.Split
    watch: io_utils.Stopwatch
    start: float
    ledger: dict[str, Any] = dataclasses.field(default_factory=dict)
    previous_time: dict[str, float] = dataclasses.field(default_factory=dict)
    writers: list[Any] = dataclasses.field(default_factory=list)
    choice: surgical.Choice | None = None  # what an `auto:` spec resolved to

    @property
    def scales(self) -> dict[str, float] | None:
        """Learning-rate factors of a soft `auto:` spec (steps.create_train_tx), else None."""
        return self.choice.scales if self.choice else None

    @classmethod
    def create(
        cls,
        members: Sequence[Member],
        directory: str,
        splits_fn: Callable[[ml_collections.ConfigDict], Mapping[str, pipeline.Split]],
        *,
        name: str,
        watch: io_utils.Stopwatch,
        start: float,
    ) -> Group:
        splits = [splits_fn(m.config) for m in members]
        _check_members(members, splits)
        config = members[0].config
        model = models.create_model(
            config.model, half_precision=config.get('half_precision', False)
        )
        registry = layers.build_registry(
            model, image_size=config.data.image_size, in_channels=config.model.in_channels
        )
        choice = None
        if surgical.is_auto(config.finetune.train):  # its time counts in setup_s and probe_s
            choice = auto_choice(members, splits_fn, model=model, registry=registry)
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
        return cls(
            name=name,
            directory=directory,
            members=list(members),
            config=config,
            model=model,
            registry=registry,
            plan=plan,
            train_splits=[s['train'] for s in splits],
            val=_sorted_by_id(splits[0]['val']),
            test=_sorted_by_id(splits[0]['test']),
            watch=watch,
            start=start,
            ledger=new_ledger(members),
            choice=choice,
        )

    @property
    def labels(self) -> list[str]:
        return [m.label for m in self.members]

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
        return {
            key: np.stack([getattr(s, key)[i] for s, i in zip(self.train_splits, picks)])
            for key in ('image', 'mask')
        }

    def resume(self, ledger: dict[str, Any]) -> None:
        self.ledger = ledger
        self.previous_time = dict(ledger.get('time', {}))

    def open_writers(self, *, fresh: bool) -> None:
        """One metric writer per unfinished member (a finished member of a resumed group only
        trains along); config.json and hyper-parameters when the group starts afresh."""
        self.writers = []
        for member in self.members:
            if layout.is_finished(member.workdir):
                self.writers.append(None)
                continue
            os.makedirs(member.workdir, exist_ok=True)
            if jax.process_index() == 0:
                with open(os.path.join(member.workdir, 'config.json'), 'w') as f:
                    f.write(member.config.to_json_best_effort(indent=2))
            writer = writers.create_writer(member.workdir)
            if fresh:
                writer.write_hparams(_flat_hparams(member.config))
            self.writers.append(writer)
        logging.info('%s: %d run(s): %s.', self.name, len(self.members), ', '.join(self.labels))

    def _write(self, r: int, step: int, prefix: str, values: Mapping[str, Any]) -> None:
        if self.writers[r] is not None:
            scalars = {f'{prefix}/{k}': v for k, v in values.items() if v is not None}
            self.writers[r].write_scalars(step, scalars)

    def record_validation(self, step: int, stats: dict[str, np.ndarray]) -> np.ndarray:
        """Writes each run's validation metrics, extends its curve; which runs improved."""
        improved = np.zeros(len(self.members), bool)
        for r in range(len(self.members)):
            val = metrics.split_metrics(**{k: v[r] for k, v in stats.items()})
            self._write(r, step, 'val', val)
            curve = self.ledger['val_curve'][r]
            curve['step'].append(step)
            curve['dice'].append(val['dice'])
            if self.ledger['failed'][r] is None and val['dice'] > self.ledger['best_dice'][r]:
                self.ledger['best_dice'][r], self.ledger['best_step'][r] = val['dice'], step
                improved[r] = True
        return improved

    def log_train(
        self, done: int, history: list, progress: io_utils.Progress, extra: dict[str, float]
    ) -> None:
        """Each run's mean train loss, Dice and gradient norm over the interval; one log line."""
        values = to_host([summary for _, summary in history])
        means = {k: np.mean([v[k] for v in values], axis=0) for k in values[0]}
        for r in range(len(self.members)):
            self._write(r, done, 'train', {**{k: float(v[r]) for k, v in means.items()}, **extra})
        logging.info(
            '%s: %s | loss %s | dice %s',
            self.name,
            progress.line(done),
            ' '.join(f'{x:.4f}' for x in means['loss']),
            ' '.join(f'{x:.3f}' for x in means['dice']),
        )

    def times(self) -> dict[str, float]:
        """The group's time per section, summed over every process that worked on it."""
        now = dict(self.watch.seconds, wall=time.time() - self.start)
        return {
            f'{k}_s': self.previous_time.get(f'{k}_s', 0.0) + now.get(k, 0.0)
            for k in (*TIME_SECTIONS, 'wall')
        }

    def finish(self, best: Any, final: dict[str, tuple]) -> dict[str, dict[str, Any] | Exception]:
        """Scores, best params and results.json of every unfinished member.

        `best` holds every run's best variables and `final`, per split ('val', 'test'), the
        best params' per-image stats and probabilities, both with the run axis first. The best
        params of every run are saved (asynchronously) before any results.json is written, so
        a finished run has them.
        """
        outcomes: dict[str, dict[str, Any] | Exception] = {}
        pending = []
        for r, member in enumerate(self.members):
            if layout.is_finished(member.workdir):
                continue
            if self.ledger['failed'][r] is not None:
                outcomes[member.workdir] = NonFiniteLossError(self.ledger['failed'][r])
                continue
            variables = {'params': _run_slice(best['params'], r)}
            if jax.tree.leaves(best['batch_stats']):
                variables['batch_stats'] = _run_slice(best['batch_stats'], r)
            results = self._results(r, _run_slice(final, r), variables['params'])
            with self.watch('checkpoint'):
                manager = outputs.start_saving_best(
                    member.workdir, results['best_step'], variables, results['val']
                )
            pending.append((r, member, manager, results))
        with self.watch('checkpoint'):
            for _, _, manager, _ in pending:
                manager.wait_until_finished()
                manager.close()
        for r, member, _, results in pending:
            with self.watch('write'):
                self._write(r, results['best_step'], 'test', results['test'])
                self.writers[r].flush()
                if jax.process_index() == 0:
                    probs = final['test'][1][r]
                    count = member.config.num_saved_predictions
                    outputs.save_predictions(member.workdir, self.test, probs, count)
            results.update(self._time_share())
            if jax.process_index() == 0:
                outputs.write_results(member.workdir, results)
            logging.info(
                '%s: test (best step %d): dice %s over %d lesion images, normal FP rate %s',
                member.label,
                results['best_step'],
                _fmt(results['test']['dice']),
                results['test']['num_lesion'],
                _fmt(results['test']['normal_fp_rate']),
            )
            outcomes[member.workdir] = results
        for writer in self.writers:
            if writer is not None:
                writer.close()
        return outcomes

    def _results(self, r: int, final: dict[str, tuple], params: Any) -> dict:
        """results.json of member r, but for the times (known once everything is written)."""
        member = self.members[r]
        with self.watch('eval'):
            val, _ = outputs.scores(*final['val'], self.val)
            test, test_per_image = outputs.scores(*final['test'], self.test)
        init_from = member.config.init_from
        cost = outputs.training_cost(self.registry, self.plan, member.config)
        auto = {}
        if self.choice:
            cost['probe_flops'] = self.choice.cost['flops']
            auto = {'auto': self.choice.to_dict()}
        return {
            'name': os.path.basename(member.workdir),
            'config': member.config.to_dict(),
            'spec': self.plan.canonical,
            'trained_units': list(self.plan.trained_units),
            'best_step': int(self.ledger['best_step'][r]),
            'num_train_examples': len(self.train_splits[r]),
            'val': val,
            'test': test,
            'test_per_image': test_per_image,
            'val_curve': self.ledger['val_curve'][r],
            'params': outputs.param_counts(params, self.plan.labels(params)),
            'cost': cost,
            'pretrain': {'dir': init_from, 'index': 0} if init_from else None,
            'group': {'name': self.name, 'size': len(self.members)},
            **auto,
            **member.extra,
        }

    def _time_share(self) -> dict[str, Any]:
        """A member's share of the group's time: the group's time over its size."""
        size = len(self.members)
        share = {k: v / size for k, v in self.times().items()}
        if self.choice:  # the probe ran once for the group, and every run needed all of it
            share['probe_s'] = self.choice.cost['seconds']
        steps = self.ledger['interval_times']
        return {
            'time': share,
            'step_time_s': float(np.median(steps)) / size if steps else None,
            'wall_time_s': share['wall_s'],
        }


def auto_choice(
    members: Sequence[Member],
    splits_fn: Callable[[ml_collections.ConfigDict], Mapping[str, pipeline.Split]],
    *,
    model: Any,
    registry: layers.LayerRegistry,
) -> surgical.Choice:
    """Resolves the group's `auto:` spec once, from the pre-trained weights (config.init_from)
    and the probe images of the training split.

    The choice is a function of the target, the training-set size and the pre-training only:
    the probe images come from the training subset of seed `finetune.auto.seed` (not each run's
    own seed), so every seed of a group trains the same blocks and shares one compiled step.
    It is kept in each run's auto_choice.json, so a resumed run keeps its choice.
    """
    config = members[0].config
    spec = config.finetune.train
    if not config.init_from:
        raise surgical.AutoSpecError(
            f'Freeze spec {spec!r} (config.finetune.train) scores the pre-trained weights, but '
            'config.init_from is empty: set --config.init_from=DIR of a pre-training run.'
        )
    if len({m.config.init_from for m in members}) > 1:
        raise surgical.AutoSpecError(
            f'Freeze spec {spec!r}: the runs of group {[m.label for m in members]} start from '
            'different pre-trainings (config.init_from), so they may choose differently; train '
            'them in separate groups.'
        )
    probe_config = config.copy_and_resolve_references()
    if 'subset_seed' in probe_config.data:
        probe_config.data.subset_seed = config.finetune.auto.seed
    train = splits_fn(probe_config)['train']
    variables = steps.load_init_from(steps.initial_variables(model, config), config)
    choice = surgical.load_or_choose(
        members[0].workdir,
        spec,
        model=model,
        registry=registry,
        variables=variables,
        images=train.image,
        masks=train.mask,
        granularity=config.finetune.granularity,
        loss_weights=config.loss.to_dict(),
        learning_rate=config.optimizer.learning_rate,
        auto=config.finetune.auto,
    )
    if jax.process_index() == 0:
        for member in members[1:]:
            surgical.save_choice(member.workdir, spec, choice)
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


def _run_slice(tree: Any, r: int) -> Any:
    return jax.tree.map(lambda x: x[r], tree)


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


def new_ledger(members: Sequence[Member]) -> dict[str, Any]:
    """Per-run bookkeeping kept in the group checkpoint's metadata (JSON)."""
    return {
        'members': [m.label for m in members],
        'best_dice': [-1.0] * len(members),
        'best_step': [-1] * len(members),
        'val_curve': [{'step': [], 'dice': []} for _ in members],
        'failed': [None] * len(members),
        'interval_times': [],
        'time': {},
    }


def _fmt(value: float | None) -> str:
    return '-' if value is None else f'{value:.4f}'


def _flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
    from flax import traverse_util

    flat = traverse_util.flatten_dict(config.to_dict(), sep='.')
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()}
