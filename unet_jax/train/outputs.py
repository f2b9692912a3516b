"""Everything a run leaves in its folder: config.json, metric writers (TensorBoard events, the
log, metrics.jsonl), the best params (Orbax, best/), predictions.npz and results.json.

`RunFolders` holds the members' folders while their group trains; `write_runs` ends every
unfinished member: best params first (every run's, asynchronously), then its test scalars,
predictions and results.json. results.json is written last and atomically (a run is finished
iff it exists); its keys are listed in the README ("What a run writes").
"""

from __future__ import annotations

from collections.abc import Mapping
import json
import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from unet_jax import freeze, io_utils, layout
from unet_jax.data import pipeline
from unet_jax.models import layer_registry, metrics
from unet_jax.train import checkpoint, writers
from unet_jax.train.groups import GroupSetup
from unet_jax.train.lanes import Evaluation
from unet_jax.train.ledger import Ledger, NonFiniteLossError

SUMMARY_IMAGES = 3  # validation images (the first lesion images by id) shown at each evaluation
FREEZE_FILE = 'freeze.txt'  # a run's freeze spec and its trained / frozen parameters per block


class RunFolders:
    """The metric writers of a group's unfinished members (None for a finished member of a
    resumed group: it only trains along); config.json, freeze.txt (`freeze_text`: the spec
    and its parameter table) and hyper-parameters when the group starts afresh."""

    def __init__(self, setup: GroupSetup, *, fresh: bool, freeze_text: str = ''):
        self.writers = []
        for member in setup.members:
            if layout.is_finished(member.workdir):
                self.writers.append(None)
                continue
            os.makedirs(member.workdir, exist_ok=True)
            if jax.process_index() == 0:
                with open(os.path.join(member.workdir, 'config.json'), 'w') as f:
                    f.write(member.config.to_json_best_effort(indent=2))
                if freeze_text:
                    io_utils.write_text_atomically(
                        os.path.join(member.workdir, FREEZE_FILE), freeze_text + '\n'
                    )
            writer = writers.create_writer(member.workdir)
            if fresh:
                writer.write_hparams(_flat_hparams(member.config))
            self.writers.append(writer)

    def write(self, r: int, step: int, prefix: str, values: Mapping[str, Any]) -> None:
        """Member r's scalars `prefix/name` at `step` (None values left out)."""
        if self.writers[r] is not None:
            scalars = {f'{prefix}/{k}': v for k, v in values.items() if v is not None}
            self.writers[r].write_scalars(step, scalars)

    def write_predictions(
        self, r: int, step: int, split: pipeline.Split, probs: np.ndarray, shown: np.ndarray
    ) -> None:
        """Member r's predictions on `split`'s images `shown` as the image summary
        `val/predictions`, each overlaid on its image (writers.overlays)."""
        if self.writers[r] is not None and len(shown):
            images = writers.overlays(split.image[shown], split.mask[shown], probs[shown])
            self.writers[r].write_images(step, {'val/predictions': images})

    def close(self) -> None:
        for writer in self.writers:
            if writer is not None:
                writer.close()


def write_runs(
    setup: GroupSetup,
    ledger: Ledger,
    folders: RunFolders,
    best: Any,
    final: Mapping[str, Evaluation],
    *,
    time: dict[str, float],
    watch: io_utils.Stopwatch,
) -> dict[str, dict[str, Any] | Exception]:
    """Every unfinished member's folder: best params, test scalars, predictions, results.json.

    `best`: every run's best variables and `final` ('val', 'test'): their per-image stats and
    probabilities, run axis first, on the host. The best params of every run are saved
    (asynchronously) before any results.json is written, so a finished run has them. Returns
    {workdir: results, or the NonFiniteLossError of a run that diverged}.
    """
    outcomes: dict[str, dict[str, Any] | Exception] = {}
    pending = []
    for r, member in enumerate(setup.members):
        record = ledger.runs[r]
        if layout.is_finished(member.workdir):
            continue
        if record.failure is not None:
            outcomes[member.workdir] = NonFiniteLossError(record.failure)
            continue
        variables = {'params': _run(best['params'], r)}
        if jax.tree.leaves(best['batch_stats']):
            variables['batch_stats'] = _run(best['batch_stats'], r)
        with watch('eval'):
            run_final = {split: evaluation.run(r) for split, evaluation in final.items()}
            results = run_results(setup, ledger, r, run_final)
        with watch('checkpoint'):
            manager = start_saving_best(
                member.workdir, results['best_step'], variables, results['val']
            )
        pending.append((r, member, manager, results))
    with watch('checkpoint'):
        for _, _, manager, _ in pending:
            manager.wait_until_finished()
            manager.close()
    share = time_share(setup, ledger, time)
    for r, member, _, results in pending:
        with watch('write'):
            folders.write(r, results['best_step'], 'test', results['test'])
            folders.writers[r].flush()
            if jax.process_index() == 0:
                count = member.config.num_saved_predictions
                save_predictions(member.workdir, setup.test, final['test'].probs[r], count)
                for name, split in setup.external.items():  # each external set's first images
                    probs = final[f'external/{name}'].probs[r]
                    save_predictions(member.workdir, split, probs, count, external=name)
        results.update(share)
        if jax.process_index() == 0:
            write_results(member.workdir, results)
        logging.info(
            '%s: test (best step %d): dice %s over %d lesion images, normal FP rate %s',
            member.label,
            results['best_step'],
            _fmt(results['test']['dice']),
            results['test']['num_lesion'],
            _fmt(results['test']['normal_fp_rate']),
        )
        outcomes[member.workdir] = results
    folders.close()
    return outcomes


def run_results(
    setup: GroupSetup, ledger: Ledger, r: int, final: Mapping[str, Evaluation]
) -> dict[str, Any]:
    """results.json of member r (`final`: its own evaluations), but for the times (known
    once everything is written)."""
    member, record = setup.members[r], ledger.runs[r]
    val, _ = scores(final['val'], setup.val)
    test, test_per_image = scores(final['test'], setup.test)
    external = {}
    for name, split in setup.external.items():
        summary, per_image = scores(final[f'external/{name}'], split)
        external[name] = {**summary, 'per_image': per_image}
    init_from = member.config.init_from
    cost = training_cost(setup.registry, setup.plan, member.config, steps=record.stop_step)
    auto = {}
    if setup.choice:
        cost['probe_flops'] = setup.choice.cost['flops']
        auto = {'auto': setup.choice.to_dict()}
    return {
        'name': os.path.basename(member.workdir),
        'config': member.config.to_dict(),
        'spec': setup.plan.canonical,
        'trained_units': list(setup.plan.trained_units),
        'best_step': int(record.best_step),
        'stop': {'reason': record.stop, 'step': int(record.stop_step)},
        'num_train_examples': len(setup.train_splits[r]),
        'val': val,
        'test': test,
        'test_per_image': test_per_image,
        # external test sets: scored with the best params (chosen on val), never trained on
        **({'external': external} if external else {}),
        'val_curve': record.val_curve,
        'params': setup.plan.param_counts,
        'cost': cost,
        'pretrain': {'dir': init_from, 'index': 0} if init_from else None,
        'group': {'name': setup.name, 'size': len(setup.members)},
        **auto,
        **member.extra,
    }


def time_share(setup: GroupSetup, ledger: Ledger, time: dict[str, float]) -> dict[str, Any]:
    """A member's share of the group's time (`time`, seconds per section): over its size."""
    size = len(setup.members)
    share = {k: v / size for k, v in time.items()}
    if setup.choice:  # the probe ran once for the group, and every run needed all of it
        share['probe_s'] = setup.choice.cost['seconds']
    steps = ledger.interval_times
    return {
        'time': share,
        'step_time_s': float(np.median(steps)) / size if steps else None,
        'wall_time_s': share['wall_s'],
    }


def training_cost(
    registry: layer_registry.LayerRegistry,
    plan: freeze.FreezePlan,
    config: ml_collections.ConfigDict,
    *,
    steps: int | None = None,
) -> dict[str, Any]:
    """Training FLOPs from the layer registry's model of forward + partial backward (and a
    `lora:` plan's adapters, per step), over the `steps` the run trained (default, or negative:
    the cap, config.num_train_steps)."""
    per_image = plan.step_flops_per_image
    per_step = plan.adapter_flops_per_step
    trained = int(config.num_train_steps) if steps is None or steps < 0 else int(steps)
    return {
        'num_steps': trained,
        'step_cap': int(config.num_train_steps),
        'batch_size': int(config.batch_size),
        'forward_flops_per_image': registry.forward_flops(),
        'step_flops_per_image': per_image,
        'adapter_flops_per_step': per_step,
        'train_flops': (per_image * config.batch_size + per_step) * trained,
    }


def scores(evaluation: Evaluation, split: pipeline.Split):
    """(split metrics, per-image table) of one run's evaluation: Dice/IoU from the on-device
    pixel counts, HD95 from the predicted masks (host side, only for the best params)."""
    stats = evaluation.stats
    predicted = evaluation.probs > 0.5
    hd95 = np.array([metrics.hd95(p, m) for p, m in zip(predicted, split.mask)])
    summary = metrics.split_metrics(hd95=hd95, **stats)
    per_image = {
        'ids': list(split.ids),
        'dice': metrics.dice_from_counts(stats['tp'], stats['pred'], stats['true']).tolist(),
        'iou': metrics.iou_from_counts(stats['tp'], stats['pred'], stats['true']).tolist(),
        'hd95': hd95.tolist(),
        'lesion': (np.asarray(stats['true']) > 0).tolist(),
        'pred_pixels': np.asarray(stats['pred']).astype(int).tolist(),
    }
    return summary, per_image


def summary_indices(split: pipeline.Split, count: int = SUMMARY_IMAGES) -> np.ndarray:
    """The images of `split` shown in the summaries: its first `count` lesion images (then
    normal ones if it has fewer), in the split's order (sorted ids: the same at every
    evaluation and in every run of the target)."""
    lesion = split.mask.reshape(len(split), -1).max(axis=1) > 0
    order = np.concatenate([np.flatnonzero(lesion), np.flatnonzero(~lesion)])
    return order[:count]


def save_predictions(
    workdir: str, split: pipeline.Split, probs: np.ndarray, count: int, *, external: str = ''
) -> None:
    """The first `count` test images (of the external set `external`, if named), masks and
    probabilities, for figures (layout.predictions_file)."""
    count = min(count, len(split))
    path = os.path.join(workdir, layout.predictions_file(external))
    tmp = path + '.tmp.npz'
    np.savez_compressed(
        tmp,
        image=split.image[:count],
        mask=split.mask[:count],
        prob=probs[:count],
        ids=np.asarray(list(split.ids)[:count]),
    )
    os.replace(tmp, path)


def start_saving_best(workdir: str, step: int, variables: Any, val: dict[str, Any]):
    """Saves the run's best params (Orbax, asynchronous); returns the manager to wait on."""
    manager = checkpoint.create_manager(os.path.join(workdir, checkpoint.BEST_DIR))
    checkpoint.save(manager, step, {'variables': variables}, {'val': val})
    return manager


def write_results(workdir: str, results: dict[str, Any]) -> None:
    io_utils.write_text_atomically(
        os.path.join(workdir, layout.RESULTS_FILE),
        json.dumps(results, indent=2, default=_json_default),
    )


def _json_default(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


def _run(tree: Any, r: int) -> Any:
    return jax.tree.map(lambda x: x[r], tree)


def _fmt(value: float | None) -> str:
    return '-' if value is None else f'{value:.4f}'


def _flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
    from flax import traverse_util

    flat = traverse_util.flatten_dict(config.to_dict(), sep='.')
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()}
