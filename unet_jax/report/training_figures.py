"""The figures of what training did: validation Dice during training (the reference
configurations, each seed a line, the runs still improving flagged) and which layers full
fine-tuning changed (linear CKA and weight change per unit)."""

from __future__ import annotations

import json
import math
import os

import numpy as np

from unet_jax.config import families
from unet_jax.report import stats
from unet_jax.report.analysis import Analysis
from unet_jax.report.contrasts import FULL
from unet_jax.report.figures import Figure, family_color, panel_figure
from unet_jax.report.load import Study, family

# ----------------------------------------------------------------------------- curves


def validation_curves(study: Study, analysis: Analysis, folder: str) -> Figure | None:
    """Validation Dice during training of the reference configurations that train."""
    names = [r for r in families.REFERENCES if r in study.plan['families'] and family(r).trains]
    curves, runs = study.curves, study.runs
    if curves.empty or not names:
        return None
    path = os.path.join(folder, 'val_curves.png')

    def draw(ax, target, num_train):
        points, windows = 0, set()
        for name in names:
            rows = runs[
                (runs['target'] == target) & (runs['num_train'] == num_train)
                & (runs['configuration'] == name) & (runs['status'] == 'done')
            ]  # fmt: skip
            for _, run in rows.iterrows():
                curve = curves[curves['name'] == run['name']].sort_values('step')
                if len(curve) < 2:
                    continue
                color = family_color(name)
                ax.plot(
                    curve['step'], curve['dice'], color=color, linewidth=1, alpha=0.8,
                    label=family(name).label,
                )  # fmt: skip
                if run['still_improving'] is True:
                    ax.plot(
                        curve['step'].iloc[-1], curve['dice'].iloc[-1], marker='^', color=color,
                        markersize=8, markeredgecolor='k', linestyle='none',
                        label='run still improving at its end',
                    )  # fmt: skip
                windows.add(run['num_steps'])
                points += len(curve)
        for num_steps in windows - {math.nan}:
            if np.isfinite(num_steps):
                cut = (1 - stats.LATE_FRACTION) * num_steps
                ax.axvspan(cut, num_steps, color='0.5', alpha=0.12, linewidth=0)
        ax.set_xlabel('training step')
        ax.set_ylabel('validation Dice (lesion images)')
        return points

    return panel_figure(
        study,
        draw,
        path,
        'Validation Dice during training, one line per seed. Shaded: the last '
        f"{stats.LATE_FRACTION:.0%} of each run's steps; a run whose best validation Dice "
        f'there beats its best before by more than {stats.CONVERGENCE_TOLERANCE} is flagged '
        '"still improving" (triangle at its end).',
        width=5.0,
    )


# ----------------------------------------------------------------------------- which layers change

# written into a run folder by unet_jax.representation_change
CKA_FILE = 'representation_change.json'


def _cka_records(study: Study, target: str, num_train: int) -> list[dict]:
    runs = study.runs
    rows = runs[
        (runs['target'] == target) & (runs['num_train'] == num_train) & (runs['family'] == FULL)
    ]
    records = []
    for directory in dict.fromkeys(rows['dir']):
        path = os.path.join(directory, CKA_FILE)
        if os.path.exists(path):
            with open(path) as f:
                records.append(json.load(f))
    return records


def representation_change(study: Study, analysis: Analysis, folder: str) -> Figure | None:
    """Per target and size, linear CKA (pre-trained vs fine-tuned) per unit of the `full` runs,
    mean over seeds, units in forward order; the weight change on a second axis."""
    del analysis
    path = os.path.join(folder, 'representation_change.png')

    def draw(ax, target, num_train):
        records = _cka_records(study, target, num_train)
        if not records:
            return 0
        names = [u['name'] for u in records[0]['units']]
        cka = np.array(
            [[np.nan if u['cka'] is None else u['cka'] for u in r['units']] for r in records]
        )
        change = np.array([[u['weight_change'] for u in r['units']] for r in records])
        x = np.arange(len(names))
        ax.plot(x, np.nanmean(cka, axis=0), marker='o', markersize=3, color='tab:blue',
                label='CKA pre-trained vs tuned')  # fmt: skip
        twin = ax.twinx()
        twin.plot(x, change.mean(axis=0), color='tab:orange', linestyle='--')
        # The shared legend reads the panel's own axes: a proxy line there names the twin's.
        ax.plot([], [], color='tab:orange', linestyle='--',
                label='relative weight change (right axis)')  # fmt: skip
        twin.set_ylabel('relative weight change', fontsize=8)
        ax.set_xticks(x, names, rotation=90, fontsize=6)
        ax.set_ylabel(f'linear CKA ({len(records)} run(s))')
        ax.set_ylim(0, 1.05)
        return len(names)

    return panel_figure(
        study,
        draw,
        path,
        'Which layers full fine-tuning changed: per unit (forward order), linear CKA between '
        "the pre-trained and the fine-tuned model's outputs on test images (1 = unchanged up "
        'to rotation and scale; mean over seeds) and the relative weight change '
        "||w_tuned - w_pre|| / ||w_pre|| (dashed, right axis), from each run's "
        f'{CKA_FILE} (python -m unet_jax.representation_change).',
    )
