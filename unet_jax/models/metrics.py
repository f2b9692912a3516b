"""Losses and segmentation scores; lesion images and normal images are scored apart.

A lesion image has a non-empty ground-truth mask, a normal image an empty one (BUSI's normal
class; about 15% of simulated ultrasound). Dice on a normal image is 1 or 0 depending only on
whether a single pixel is predicted: that is detection, not segmentation. So Dice, IoU, HD95,
precision and recall of a split are over its lesion images only (the headline Dice and what
picks the best checkpoint), and normal images are scored by `normal_fp_rate`, the fraction of
them with any predicted foreground pixel.

Dice is reported two ways because they answer different questions: `dice` is the mean of
per-image Dice (each image counts once, the usual number in papers), `dice_pooled` pools the
pixels of all lesion images (large lesions dominate).
"""

from __future__ import annotations

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


def overlap_counts(predictions, masks) -> dict:
    """Per-image true positives, predicted and true pixel counts of binary maps [N,H,W,1]."""
    axes = tuple(range(1, predictions.ndim))
    tp = (predictions * masks).sum(axis=axes)
    return {'tp': tp, 'pred': predictions.sum(axis=axes), 'true': masks.sum(axis=axes)}


def dice_from_counts(tp, pred, true):
    return (2.0 * tp + _EPS) / (pred + true + _EPS)


def iou_from_counts(tp, pred, true):
    return (tp + _EPS) / (pred + true - tp + _EPS)


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


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(np.mean(values)) if len(values) else None


def split_metrics(
    *, tp: np.ndarray, pred: np.ndarray, true: np.ndarray, loss: np.ndarray, hd95=None
) -> dict[str, float | int | None]:
    """The metrics of a split from per-image pixel counts (and HD95 when computed).

    Segmentation scores are over lesion images (None when the split has none); `loss` is the
    mean over every image; `normal_fp_rate` is None when the split has no normal image.
    """
    tp, pred, true = (np.asarray(a, np.float64) for a in (tp, pred, true))
    lesion = true > 0
    num_lesion, num_normal = int(lesion.sum()), int((~lesion).sum())
    tp_l, pred_l, true_l = tp[lesion], pred[lesion], true[lesion]
    pooled = num_lesion > 0
    metrics = {
        'loss': float(np.mean(loss)),
        'dice': _mean_or_none(dice_from_counts(tp_l, pred_l, true_l)),
        'iou': _mean_or_none(iou_from_counts(tp_l, pred_l, true_l)),
        'dice_pooled': float(dice_from_counts(tp_l.sum(), pred_l.sum(), true_l.sum()))
        if pooled
        else None,
        'precision': float((tp_l.sum() + _EPS) / (pred_l.sum() + _EPS)) if pooled else None,
        'recall': float((tp_l.sum() + _EPS) / (true_l.sum() + _EPS)) if pooled else None,
        'num_lesion': num_lesion,
        'num_normal': num_normal,
        'normal_fp_rate': float(np.mean(pred[~lesion] > 0)) if num_normal else None,
    }
    if hd95 is not None:
        metrics['hd95'] = _mean_or_none(np.asarray(hd95, np.float64)[lesion])
    return metrics
