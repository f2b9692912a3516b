"""The qualitative figure: test images with the ground-truth and predicted outlines drawn on
them, one column per configuration, the per-image Dice each run recorded in results.json."""

from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)
import numpy as np  # noqa: E402

from unet_jax import layout
from unet_jax.config import families
from unet_jax.report.analysis import Analysis  # noqa: E402
from unet_jax.report.conclusions import named  # noqa: E402
from unet_jax.report.contrasts import DEEP, FULL, SHALLOW, direction_points  # noqa: E402
from unet_jax.report.figures import GT_COLOR, PREDICTION_COLOR, Figure  # noqa: E402
from unet_jax.report.load import Study  # noqa: E402

MAX_COLUMNS, MAX_LESION_ROWS = 6, 3


def columns_for(study: Study, analysis: Analysis, target: str, num_train: int) -> list[str]:
    """The study's question side by side: shallow->deep k against deep->shallow k at the k
    of the cell's recommendation (else the middle k both ran), beside full fine-tuning and the
    pre-trained model; then the recommendation itself and the other references that fit."""
    answer = next(
        (a for a in analysis.answers if (a.target, a.num_train) == (target, num_train)), None
    )
    chosen = None
    if answer is not None:
        chosen = answer.cheapest if answer.cheapest not in (None, FULL) else answer.best
    names = [FULL, *_directions_at(study, target, num_train, chosen), 'pretrained']
    names += [chosen] + [r for r in families.REFERENCES if r != 'scratch'] + ['scratch']
    present = set(study.runs['configuration'][
        (study.runs['target'] == target) & (study.runs['num_train'] == num_train)
    ])  # fmt: skip
    return list(dict.fromkeys(n for n in names if n and n in present))[:MAX_COLUMNS]


def _directions_at(study: Study, target: str, num_train: int, chosen: str | None) -> list[str]:
    """[shallow->deep k, deep->shallow k] of the first order and granularity, at the k of
    `chosen` when it is one of them, else the middle k both directions ran ([] if none)."""
    runs = study.runs
    cell = runs[(runs['target'] == target) & (runs['num_train'] == num_train)]
    if not study.orders() or cell.empty:
        return []
    order, granularity = study.orders()[0]
    points = {
        d: direction_points(cell, d, order, granularity) for d in (SHALLOW, DEEP)
    }  # fmt: skip
    common = sorted(set(points[SHALLOW]['k']) & set(points[DEEP]['k']))
    if not common:
        return []
    picked = cell[cell['configuration'] == chosen]['k'] if chosen else []
    k = int(picked.iloc[0]) if len(picked) and picked.iloc[0] in common else common[
        (len(common) - 1) // 2]  # fmt: skip
    return [
        points[d][points[d]['k'] == k]['configuration'].iloc[0] for d in (SHALLOW, DEEP)
    ]  # fmt: skip


def qualitative(study: Study, analysis: Analysis, folder: str, target: str) -> Figure | None:
    """The smallest size and first seed that has predictions of every column."""
    runs = study.runs
    for num_train in sorted(study.sizes, key=lambda n: math.inf if n < 0 else n):
        names = columns_for(study, analysis, target, num_train)
        for seed in study.plan['seeds']:
            found = {}
            for name in names:
                row = runs[
                    (runs['target'] == target) & (runs['num_train'] == num_train)
                    & (runs['seed'] == seed) & (runs['configuration'] == name)
                    & (runs['status'] == 'done')
                ]  # fmt: skip
                path = _predictions_path(row)
                if path and os.path.exists(path):
                    with np.load(path) as data:
                        found[name] = (row['name'].iloc[0], {k: data[k] for k in data.files})
            if len(found) == len(names) and names:
                file = f'qualitative_{target}.png'
                title = f'{study.title(target)}, n = {layout.size_name(num_train)}, seed {seed}'
                if _draw(study, found, title, os.path.join(folder, file)):
                    return Figure(
                        file,
                        f'{target}: test images with the ground truth (green) and the '
                        'prediction (red, probability > 0.5) of full fine-tuning, of '
                        "shallow->deep and deep->shallow at one k (the recommendation's, "
                        'else the middle k) and of the references, outlined; '
                        'Dice per image as recorded by the run (results.json). Normal images '
                        '(empty ground truth) show how many pixels were predicted instead.',
                        tuple(names),
                    )
    return None


def _predictions_path(row) -> str:
    """The run's saved predictions for this cell: its own test split's, or, for an external
    set's cell, that set's (never the run's own test images under the external set's name)."""
    if not len(row):
        return ''
    external = row['external'].iloc[0] if 'external' in row else ''
    external = external if isinstance(external, str) else ''
    return os.path.join(row['dir'].iloc[0], layout.predictions_file(external))


def _rows(study: Study, point_name: str, ids: np.ndarray, masks: np.ndarray) -> list[int]:
    """Up to 3 lesion images and 1 normal image among the saved predictions."""
    scores = study.images[study.images['name'] == point_name].set_index('image_id')
    lesion = [
        bool(scores['lesion'].get(str(i), masks[j].any())) and masks[j].any()
        for j, i in enumerate(ids)
    ]
    rows = [j for j, is_lesion in enumerate(lesion) if is_lesion][:MAX_LESION_ROWS]
    rows += [j for j, is_lesion in enumerate(lesion) if not is_lesion][:1]
    return rows


def _draw(study: Study, found: dict, title: str, path: str) -> bool:
    names = list(found)
    first_name, first = found[names[0]]
    ids = np.asarray(first['ids']).astype(str)
    rows = _rows(study, first_name, ids, first['mask'][..., 0] > 0.5)
    if not rows:
        return False
    fig, axes = plt.subplots(
        len(rows), len(names) + 1, figsize=(2.2 * (len(names) + 1), 2.35 * len(rows)),
        squeeze=False,
    )  # fmt: skip
    for r, j in enumerate(rows):
        image, mask = first['image'][j, ..., 0], first['mask'][j, ..., 0] > 0.5
        _outlined(axes[r][0], image, mask, None)
        axes[r][0].set_xlabel(ids[j] + ('' if mask.any() else ' (normal)'), fontsize=8)
        for c, name in enumerate(names, start=1):
            point_name, data = found[name]
            prediction = data['prob'][j, ..., 0] > 0.5
            _outlined(axes[r][c], image, mask, prediction)
            axes[r][c].set_xlabel(_score_text(study, point_name, ids[j], mask.any()), fontsize=8)
    axes[0][0].set_title('image + ground truth', fontsize=9)
    for c, name in enumerate(names, start=1):
        axes[0][c].set_title(column_title(study, name), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def column_title(study: Study, name: str) -> str:
    """'first 4 blocks\n(shallow->deep)', 'full fine-tuning': readable, in two short lines."""
    text = named(study.runs, name)
    return text.replace(' (', '\n(', 1)


def _outlined(ax, image: np.ndarray, mask: np.ndarray, prediction: np.ndarray | None) -> None:
    ax.imshow(image, cmap='gray')
    if mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=[GT_COLOR], linewidths=1.3)
    if prediction is not None and prediction.any():
        ax.contour(
            prediction.astype(float), levels=[0.5], colors=[PREDICTION_COLOR], linewidths=1.1
        )
    ax.set_xticks([])
    ax.set_yticks([])


def _score_text(study: Study, point_name: str, image_id: str, is_lesion: bool) -> str:
    images = study.images
    row = images[(images['name'] == point_name) & (images['image_id'] == image_id)]
    if row.empty:
        return 'Dice -'
    if is_lesion:
        dice = row['dice'].iloc[0]
        return f'Dice {dice:.2f}' if np.isfinite(dice) else 'Dice -'
    pixels = row['pred_pixels'].iloc[0] if 'pred_pixels' in row else np.nan
    return f'{int(pixels)} px predicted' if np.isfinite(pixels) else 'normal'
