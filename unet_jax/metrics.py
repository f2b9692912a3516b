"""Losses, segmentation metrics (CLU) and the run's metric writers.

Dice is reported two ways because they answer different questions: `dice` is the mean of
per-image Dice (each image counts once, the usual number in papers), `dice_pooled` pools all
pixels of the split (large lesions dominate). An image whose mask and prediction are both empty
has Dice 1 (the smoothing term below), which matters for the normal BUSI class.
"""

# No `from __future__ import annotations`: CLU reads the Collection annotations at runtime.
from collections.abc import Mapping

from clu import metrics as clu_metrics
import flax
import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage

# Smoothing of per-image Dice/IoU: 1.0 when prediction and mask are both empty.
_EPS = 1e-6


def sigmoid_bce(logits: jax.Array, masks: jax.Array) -> jax.Array:
    """Per-image binary cross-entropy on logits, averaged over pixels."""
    losses = jnp.maximum(logits, 0) - logits * masks + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    return losses.mean(axis=(1, 2, 3))


def soft_dice_loss(logits: jax.Array, masks: jax.Array, smooth: float = 1.0) -> jax.Array:
    """Per-image 1 - soft Dice of sigmoid probabilities (Milletari et al. 2016)."""
    probs = jax.nn.sigmoid(logits)
    intersection = (probs * masks).sum(axis=(1, 2, 3))
    total = probs.sum(axis=(1, 2, 3)) + masks.sum(axis=(1, 2, 3))
    return 1.0 - (2.0 * intersection + smooth) / (total + smooth)


def segmentation_loss(
    logits: jax.Array, masks: jax.Array, *, bce_weight: float, dice_weight: float
) -> jax.Array:
    """Per-image weighted BCE + soft Dice; the mean over the batch is the training loss."""
    loss = jnp.zeros(logits.shape[0], jnp.float32)
    if bce_weight:
        loss = loss + bce_weight * sigmoid_bce(logits, masks)
    if dice_weight:
        loss = loss + dice_weight * soft_dice_loss(logits, masks)
    return loss


def overlap_counts(predictions: jax.Array, masks: jax.Array) -> dict[str, jax.Array]:
    """Per-image true positives, predicted and true pixel counts of binary maps [N,H,W,1]."""
    axes = tuple(range(1, predictions.ndim))
    tp = (predictions * masks).sum(axis=axes)
    return {'tp': tp, 'pred': predictions.sum(axis=axes), 'true': masks.sum(axis=axes)}


def dice_from_counts(tp, pred, true):
    return (2.0 * tp + _EPS) / (pred + true + _EPS)


def iou_from_counts(tp, pred, true):
    return (tp + _EPS) / (pred + true - tp + _EPS)


@flax.struct.dataclass
class PooledOverlap(clu_metrics.Metric):
    """Pixel counts summed over a whole split: pooled Dice, precision and recall."""

    tp: jnp.ndarray
    pred: jnp.ndarray
    true: jnp.ndarray

    @classmethod
    def empty(cls) -> 'PooledOverlap':
        zero = jnp.array(0.0, jnp.float32)
        return cls(tp=zero, pred=zero, true=zero)

    @classmethod
    def from_model_output(cls, tp, pred, true, valid=None, **_) -> 'PooledOverlap':
        valid = jnp.ones_like(tp) if valid is None else valid.astype(tp.dtype)
        return cls(tp=(tp * valid).sum(), pred=(pred * valid).sum(), true=(true * valid).sum())

    def merge(self, other: 'PooledOverlap') -> 'PooledOverlap':
        return type(self)(self.tp + other.tp, self.pred + other.pred, self.true + other.true)

    def compute(self) -> dict[str, jnp.ndarray]:
        return {
            'dice_pooled': dice_from_counts(self.tp, self.pred, self.true),
            'precision': (self.tp + _EPS) / (self.pred + _EPS),
            'recall': (self.tp + _EPS) / (self.true + _EPS),
        }


def _average(name: str):
    return clu_metrics.Average.from_output(name)


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
    loss: _average('loss')
    dice: _average('dice')
    grad_norm: _average('grad_norm')


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
    loss: _average('loss')
    dice: _average('dice')
    iou: _average('iou')
    overlap: PooledOverlap


def compute_metrics(collection: clu_metrics.Collection) -> dict[str, float]:
    """Flattens a computed collection (PooledOverlap gives a dict) into floats."""
    flat: dict[str, float] = {}
    for name, value in collection.compute().items():
        if isinstance(value, Mapping):
            flat.update({k: float(v) for k, v in value.items()})
        else:
            flat[name] = float(value)
    return flat


def hd95(prediction: np.ndarray, mask: np.ndarray) -> float:
    """Symmetric 95th-percentile Hausdorff distance between boundaries, in pixels.

    Both empty: 0. Exactly one empty: the image diagonal (the worst possible distance), so a
    missed lesion is penalised instead of silently dropped from the mean.
    """
    prediction = np.asarray(prediction, bool).squeeze()
    mask = np.asarray(mask, bool).squeeze()
    if not prediction.any() and not mask.any():
        return 0.0
    if not prediction.any() or not mask.any():
        return float(np.hypot(*mask.shape))
    pred_edge = prediction & ~scipy.ndimage.binary_erosion(prediction)
    mask_edge = mask & ~scipy.ndimage.binary_erosion(mask)
    to_mask = scipy.ndimage.distance_transform_edt(~mask_edge)[pred_edge]
    to_pred = scipy.ndimage.distance_transform_edt(~pred_edge)[mask_edge]
    return float(np.percentile(np.concatenate([to_mask, to_pred]), 95))


def per_image_scores(predictions: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
    """Dice, IoU and HD95 of each binary prediction against its mask (numpy, host side)."""
    predictions = np.asarray(predictions, np.float32)
    masks = np.asarray(masks, np.float32)
    counts = {k: np.asarray(v) for k, v in overlap_counts(predictions, masks).items()}
    return {
        'dice': dice_from_counts(**counts),
        'iou': iou_from_counts(**counts),
        'hd95': np.array([hd95(p, m) for p, m in zip(predictions, masks)]),
    }
