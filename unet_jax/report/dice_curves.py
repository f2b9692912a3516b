"""The study's Dice against k in TensorBoard (`write_study_curves`: event files in
WORKDIR/report/, written with TensorBoard's own writer).

No TensorFlow and no JAX: the study writes its curves from the runs' results.json alone.
"""

from __future__ import annotations

import os
import time

STUDY_CURVES_PREFIX = 'dice_vs_k'


def study_curves(workdir: str) -> dict[str, dict[int, float]]:
    """{tag: {k: mean test Dice}} of the study's families that have a k (shallow_to_deep,
    deep_to_shallow, their parameter-efficient kin, auto), over every finished run (seeds,
    folds) of each target: tag `dice_vs_k/<target>/<family>`, with `/n<size>` after the target
    when the study has several sizes, and `-<order>`, `-<granularity>` after the family when
    it has several of them. From the runs' results.json (unet_jax.report.load)."""
    import pandas as pd

    from unet_jax.report.load import load

    runs = load(workdir).runs
    runs = runs.assign(k=pd.to_numeric(runs['k'], errors='coerce'))
    runs = runs[(runs['status'] == 'done') & (runs['k'] > 0) & runs['test_dice'].notna()]
    keys = ['target', 'num_train', 'family', 'order', 'granularity']
    several = {key: runs[key].nunique() > 1 for key in ('num_train', 'order', 'granularity')}
    curves: dict[str, dict[int, float]] = {}
    for values, rows in runs.groupby(keys, sort=True):
        target, num_train, family, order, granularity = values
        where = [str(target)] + ([f'n{num_train}'] if several['num_train'] else [])
        name = str(family)
        name += f'-{order}' if several['order'] else ''
        name += f'-{granularity}' if several['granularity'] else ''
        tag = '/'.join([STUDY_CURVES_PREFIX, *where, name])
        means = rows.groupby('k')['test_dice'].mean()
        curves[tag] = {int(k): float(v) for k, v in means.items()}
    return curves


def write_study_curves(workdir: str, folder: str) -> dict[str, dict[int, float]]:
    """`study_curves` as TensorBoard scalars (step = k) in `folder` (the study's report
    folder: `tensorboard --logdir WORKDIR` shows them as the run `report`), replacing the
    event files written there before, with a layout of TensorBoard's Custom Scalars tab that
    draws every family of a target (and size) in one chart. Returns the curves."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    curves = study_curves(workdir)
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.startswith('events.out.tfevents.'):
            os.remove(os.path.join(folder, name))
    if not curves:
        return curves
    writer = EventFileWriter(folder)  # TensorBoard's own writer: no TensorFlow to import
    for k in sorted({k for curve in curves.values() for k in curve}):
        values = [
            summary_pb2.Summary.Value(tag=tag, simple_value=curve[k])
            for tag, curve in curves.items()
            if k in curve
        ]
        summary = summary_pb2.Summary(value=values)
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=k, summary=summary))
    layout = curves_layout(curves)
    writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=layout))
    writer.close()
    return curves


def curves_layout(curves: dict[str, dict[int, float]]):
    """A summary holding the Custom Scalars layout: a chart per target (and size) with its
    families' curves (the tags of `study_curves`, each but its last part)."""
    import re

    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata
    from tensorboard.util import tensor_util

    cells = sorted({tag.rsplit('/', 1)[0] for tag in curves})
    charts = [
        layout_pb2.Chart(
            title=cell.removeprefix(STUDY_CURVES_PREFIX + '/'),
            multiline=layout_pb2.MultilineChartContent(tag=[re.escape(cell) + '/[^/]+$']),
        )
        for cell in cells
    ]
    layout = layout_pb2.Layout(
        category=[layout_pb2.Category(title='mean test Dice against k', chart=charts)]
    )
    value = summary_pb2.Summary.Value(
        tag=metadata.CONFIG_SUMMARY_TAG,
        metadata=metadata.create_summary_metadata(),
        tensor=tensor_util.make_tensor_proto(layout.SerializeToString()),
    )
    return summary_pb2.Summary(value=[value])
