"""Scoring of a split: lesion images and normal (empty-mask) images apart."""

import numpy as np
import pytest

from unet_jax.data import pipeline
from unet_jax.models import metrics
from unet_jax.train import lanes, outputs


def masks_and_predictions():
    """Two lesion images (a perfect and a half-found lesion), two normal images (one clean, one
    with 3 false pixels)."""
    true = np.zeros((4, 4, 4, 1), np.float32)
    pred = np.zeros_like(true)
    true[0, :2, :2] = pred[0, :2, :2] = 1  # 4 pixels, all found
    true[1, 2:, 2:] = 1  # 4 pixels, 2 of them found
    pred[1, 2:, 3:] = 1
    pred[3, 0, :3] = 1  # a normal image with 3 false pixels
    return true, pred


def test_split_metrics_score_lesions_and_normals_apart():
    true, pred = masks_and_predictions()
    counts = {k: np.asarray(v) for k, v in metrics.overlap_counts(pred, true).items()}
    scores = metrics.split_metrics(loss=np.array([0.1, 0.2, 0.3, 0.4]), **counts)
    assert scores['num_lesion'] == 2 and scores['num_normal'] == 2
    assert scores['dice'] == pytest.approx((1 + 2 * 2 / 6) / 2, abs=1e-6)
    assert scores['iou'] == pytest.approx((1 + 2 / 4) / 2, abs=1e-6)
    assert scores['dice_pooled'] == pytest.approx(2 * 6 / (6 + 8), abs=1e-6)
    assert scores['precision'] == pytest.approx(1.0) and scores['recall'] == pytest.approx(0.75)
    assert scores['normal_fp_rate'] == 0.5
    assert scores['loss'] == pytest.approx(0.25)  # every image

    lesions_only = {k: v[:2] for k, v in counts.items()}
    assert metrics.split_metrics(loss=np.ones(2), **lesions_only)['normal_fp_rate'] is None
    normals_only = {k: v[2:] for k, v in counts.items()}
    assert metrics.split_metrics(loss=np.ones(2), **normals_only)['dice'] is None


def test_per_image_table_keeps_every_image_with_its_kind_and_predicted_pixels():
    true, pred = masks_and_predictions()
    counts = {k: np.asarray(v) for k, v in metrics.overlap_counts(pred, true).items()}
    split = pipeline.Split(image=true, mask=true, ids=['a', 'b', 'c', 'd'])
    evaluation = lanes.Evaluation(dict(counts, loss=np.zeros(4)), probs=pred)
    summary, per_image = outputs.scores(evaluation, split)
    assert per_image['ids'] == ['a', 'b', 'c', 'd']
    assert per_image['lesion'] == [True, True, False, False]
    assert per_image['pred_pixels'] == [4, 2, 0, 3]
    assert per_image['dice'][2] == pytest.approx(1.0) and per_image['dice'][3] < 1e-6
    assert per_image['hd95'][0] == 0.0 and per_image['hd95'][3] == pytest.approx(np.hypot(4, 4))
    assert summary['hd95'] == pytest.approx(np.mean(per_image['hd95'][:2]))
