"""What a finished run writes into its folder: best params, predictions.npz, results.json.

results.json is written last and atomically (a run is finished iff it exists); its keys are
listed in the README ("What a run writes").
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from unet_jax import checkpoint, freeze, io_utils, layers, layout, metrics
from unet_jax.data import pipeline


def param_counts(params: Any, labels: Any) -> dict[str, Any]:
    """Trained and frozen parameter counts of a run's params (labels: FreezePlan.labels)."""
    trainable, frozen = freeze.split_trainable(params, labels)
    trained = sum(int(np.size(x)) for x in jax.tree.leaves(trainable))
    total = trained + sum(int(np.size(x)) for x in jax.tree.leaves(frozen))
    return {
        'trained': trained,
        'frozen': total - trained,
        'total': total,
        'trained_fraction': trained / max(total, 1),
    }


def training_cost(
    registry: layers.LayerRegistry, plan: freeze.FreezePlan, config: ml_collections.ConfigDict
) -> dict[str, Any]:
    """Training FLOPs from the layer registry's model of forward + partial backward."""
    per_image = registry.train_step_flops(plan.trained_units)
    return {
        'num_steps': int(config.num_train_steps),
        'batch_size': int(config.batch_size),
        'forward_flops_per_image': registry.forward_flops(),
        'step_flops_per_image': per_image,
        'train_flops': per_image * config.batch_size * config.num_train_steps,
    }


def scores(stats: dict[str, np.ndarray], probs: np.ndarray, split: pipeline.Split):
    """(split metrics, per-image table) of one run: Dice/IoU from the on-device pixel counts,
    HD95 from the predicted masks (host side, only for the best params)."""
    predicted = probs > 0.5
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


def save_predictions(workdir: str, split: pipeline.Split, probs: np.ndarray, count: int) -> None:
    """The first `count` test images, masks and probabilities, for figures."""
    count = min(count, len(split))
    path = os.path.join(workdir, 'predictions.npz')
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
