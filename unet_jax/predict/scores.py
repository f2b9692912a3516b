"""Scores of the segmentations against masks: Dice, IoU and HD95 per image, the means and
what they are over, scores.csv.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import csv
import io
import math
from typing import Any

import numpy as np

from unet_jax import io_utils
from unet_jax.models import metrics

SCORE_COLUMNS = (
    'image', 'mask', 'height', 'width', 'mask_pixels', 'predicted_pixels', 'empty',
    'dice', 'iou', 'hd95',
)  # fmt: skip


def score(prediction: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """Dice, IoU and HD95 of one image, with what is empty.

    `empty` is '' | 'prediction' | 'mask' | 'both'. HD95 is a distance between two contours,
    so it is None (missing) when either is empty, instead of metrics.hd95's image diagonal,
    which would stand for a distance that was never measured and dominate a mean."""
    predicted, truth = int(prediction.sum()), int(mask.sum())
    empty = {(True, True): 'both', (True, False): 'prediction', (False, True): 'mask'}.get(
        (predicted == 0, truth == 0), ''
    )
    scores = metrics.per_image_scores(prediction[None, ..., None], mask[None, ..., None])
    return {
        'mask_pixels': truth,
        'predicted_pixels': predicted,
        'empty': empty,
        'dice': float(scores['dice'][0]),
        'iou': float(scores['iou'][0]),
        'hd95': None if empty else float(scores['hd95'][0]),
    }


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The means and what they are over, as the study scores a test split: Dice and IoU over
    images whose mask is not empty (a missed lesion counts, with Dice 0); HD95 over those
    whose prediction is not empty either. Images with an empty mask are counted apart."""
    lesion = [r for r in rows if r['empty'] not in ('mask', 'both')]
    measured = [r for r in lesion if r['hd95'] is not None]
    empty_masks = [r for r in rows if r['empty'] in ('mask', 'both')]
    mean = lambda rs, k: float(np.mean([r[k] for r in rs])) if rs else None
    return {
        'dice': mean(lesion, 'dice'),
        'iou': mean(lesion, 'iou'),
        'hd95': mean(measured, 'hd95'),
        'images': len(rows),
        'scored': len(lesion),
        'hd95_scored': len(measured),
        'empty_prediction': sum(r['empty'] == 'prediction' for r in rows),
        'empty_mask': len(empty_masks),
        'empty_mask_predicted': sum(r['empty'] == 'mask' for r in rows),
    }


def describe(summary: Mapping[str, Any]) -> str:
    """What the means are over, in words (scores.csv's mean row and the screen)."""
    text = f'Dice and IoU over the {summary["scored"]} images with a non-empty mask'
    if summary['empty_prediction']:
        text += f' ({summary["empty_prediction"]} with an empty prediction: Dice 0, HD95 missing)'
    text += f'; HD95 over {summary["hd95_scored"]}'
    if summary['empty_mask']:
        text += (
            f'; {summary["empty_mask"]} images with an empty mask are not in the means '
            f'({summary["empty_mask_predicted"]} of them with a predicted foreground)'
        )
    return text


def _number(value: float | None, digits: int) -> str:
    return '' if value is None or math.isnan(value) else f'{value:.{digits}f}'


def write_scores(path: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """scores.csv: a row per image, then the mean row whose `empty` cell says what the means
    are over (describe); written atomically. Returns the summary."""
    summary = summarise(rows)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(SCORE_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r['image'], ';'.join(r['mask']), r['height'], r['width'], r['mask_pixels'],
                r['predicted_pixels'], r['empty'], _number(r['dice'], 6), _number(r['iou'], 6),
                _number(r['hd95'], 4),
            ]
        )  # fmt: skip
    writer.writerow(
        [
            'mean', '', '', '', '', '', describe(summary), _number(summary['dice'], 6),
            _number(summary['iou'], 6), _number(summary['hd95'], 4),
        ]
    )  # fmt: skip
    io_utils.write_text_atomically(path, text.getvalue())
    return summary


def mean_line(summary: Mapping[str, Any], scores_file: str) -> str:
    if summary['dice'] is None:
        return f'No image has a non-empty mask, so no mean: {describe(summary)} ({scores_file}).'
    hd95 = f'{summary["hd95"]:.2f} px' if summary['hd95'] is not None else 'missing'
    return (
        f'Mean: Dice {summary["dice"]:.4f}, IoU {summary["iou"]:.4f}, HD95 {hd95}. '
        f'{describe(summary)} ({scores_file}).'
    )
