"""What the sources page holds (sources.j2, rendered by render.py as the report is): the
sources, how to read the gap, each pre-training, each source's gap (figure and table), each
kind's table under its section (source_change, source_target: kinds.KINDS), the calibration
note and the answers in words."""

from __future__ import annotations

from collections.abc import Sequence
import os

import numpy as np

from unet_jax.report import calibration, stats
from unet_jax.report.compare import Comparison
from unet_jax.report.conclusions import p_text
from unet_jax.report.figures import Figure, write_png
from unet_jax.report.kinds import KINDS, cell_name, interval, source_where
from unet_jax.report.load import Study
from unet_jax.report.sources_compare import SourcesComparison, headline
from unet_jax.report.tables import Table

CALIBRATION_SIMULATIONS = 4000
FIGURE_FILE = 'sources_gap.png'
SOURCE_COLORS = ('0.35', 'tab:orange', 'tab:purple', 'tab:green', 'tab:brown')


# ----------------------------------------------------------------------------- what varies


def replicates_note(studies: Sequence[Study]) -> str:
    """What the seeds of the change are, and whether pre-training variance is in its CI."""
    pretrainings = min(max(1, len(s.plan.get('pretrain_dirs') or [])) for s in studies)
    seeds = max(len(s.plan.get('seeds') or []) for s in studies)
    if pretrainings >= seeds:
        return (
            f'Each of the {seeds} seeds fine-tunes from its own pre-training of each source '
            f'({pretrainings} per source), so the seed-to-seed spread of the change, and its '
            'CI, contain run-to-run pre-training variance. Pre-training s of every source has '
            'the same seed (initial weights, batch order) and the generated sources share their '
            'scenes and masks, so a change also pairs the pre-trainings: where two sources '
            'differ little (natural_speckle and natural_imaging differ only in speckle) their '
            'pre-trainings stay alike and the change varies little from seed to seed.'
        )
    if pretrainings == 1:
        return (
            'Each source was pre-trained once: the change includes run-to-run pre-training '
            'variance, which no CI here contains, so a change is not evidence about the source '
            'alone (pre-train several times: study.pretrain_seeds, as sources= does).'
        )
    return (
        f'{seeds} seeds share {pretrainings} pre-trainings per source: the seeds of one '
        'pre-training are not independent, and the CIs, which treat them as such, are too '
        'narrow (set study.pretrain_seeds to the number of seeds).'
    )


def pretraining_table(studies: Sequence[Study], names: Sequence[str]) -> Table:
    """Each pre-training's own test Dice, per source."""
    rows = []
    for name, study in zip(names, studies):
        for r in study.pretrainings().to_dict('records'):
            dice = '-' if not np.isfinite(r['test_dice']) else f'{r["test_dice"]:.3f}'
            images = '-' if not np.isfinite(r['num_test']) else f'{int(r["num_test"])}'
            rows.append((name, str(r['index']), str(r['seed']), str(r['data']), dice, images))
    return Table(
        "Each pre-training's test Dice on its own set",
        ('source', 'pre-training', 'seed', 'data', 'test Dice on its own set', 'test images'),
        tuple(rows),
    )


# ----------------------------------------------------------------------------- the tables


def _mdd(t: stats.Test) -> str:
    return f'{t.mdd:.3f}' if t.defined else '-'


def _p(c: Comparison) -> str:
    return f'{p_text(c.test.p)} ({p_text(c.p_adjusted)})'


def gap_table(found: SourcesComparison) -> Table | None:
    """Each source's gap with its 95% CI, per cell, order, granularity and set of k."""
    rows = found.gap_rows()
    if not rows:
        return None
    return Table(
        'The gap per source: shallow->deep minus deep->shallow test Dice [95% CI]',
        ('where', *found.sources),
        tuple((source_where(g[0]), *(interval(c.test) for c in g)) for g in rows.values()),
    )


def change_table(found: SourcesComparison) -> Table:
    """The source_change comparisons: one row each, in the kind's words."""
    kind = KINDS['source_change']
    return Table(
        'The change of the gap: gap with B minus gap with A',
        ('where', 'B - A', 'change [95% CI]', 'p (Holm)', 'replicates x images',
         'detectable (80%)', 'verdict'),
        tuple(
            (source_where(c), kind.title(c), interval(c.test), _p(c), c.test.base,
             _mdd(c.test), kind.verdict_text(c))
            for c in found.changes
        ),
    )  # fmt: skip


def target_table(found: SourcesComparison) -> Table:
    """The source_target comparisons: one row each, in the kind's words."""
    kind = KINDS['source_target']
    return Table(
        'The change on an ultrasound target minus the change on an X-ray target',
        ('sources', 'ultrasound - X-ray', 'where', 'difference of changes [95% CI]',
         'p (Holm)', 'detectable (80%)', 'verdict'),
        tuple(
            (kind.title(c), ' - '.join(kind.between(c)), kind.scope(c), interval(c.test),
             _p(c), _mdd(c.test), kind.verdict_text(c))
            for c in found.between
        ),
    )  # fmt: skip


def calibration_note(between: Sequence[Comparison]) -> str:
    """The error rates of the first source x direction x target interaction (all k, or the
    only k), simulated with its two changes' own sizes and estimated components, their
    pre-training effects shared (unet_jax.report.calibration)."""
    usable = lambda t: t.defined and t.layout == 'nested' and t.num_images >= 3
    first = next(
        (i for i in between if headline(i) and usable(i.parts[0]) and usable(i.parts[1])), None
    )
    if first is None:
        return ''
    on_target, on_versus = first.parts
    designs = [
        calibration.design_of(on_versus, first.versus),
        calibration.design_of(on_target, first.target),
    ]
    rates = calibration.interaction_error_rates(
        *designs, simulations=CALIBRATION_SIMULATIONS, effect=0.0
    )
    return (
        f'Error rate of the target interaction at these sizes, simulated {rates.simulations} '
        f"times with the changes' estimated components ("
        + '; '.join(calibration.describe(d) for d in designs)
        + f'; pre-training effects shared): false-positive rate {rates.false_positive_05:.3f} '
        f'at 0.05 and {rates.false_positive_002:.4f} at 0.002, 95% CI coverage '
        f'{rates.coverage:.3f}. (With 3 pre-trainings the test is conservative where a '
        'component is absent and rejects too often at 0.002 where pre-trainings carry most of '
        'the variance: tests/test_calibration.py.)'
    )


# ----------------------------------------------------------------------------- the figure


def gap_figure(found: SourcesComparison, path: str) -> Figure | None:
    """One panel per target, size, order and granularity: each source's gap with its 95% CI
    at every set of k. None when there is no gap to draw."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels: dict[tuple, list[tuple[str, list[stats.Test]]]] = {}
    for (target, num_train, order, granularity, k_set), row in found.gap_rows().items():
        key = (target, num_train, order, granularity)
        panels.setdefault(key, []).append((k_set, [c.test for c in row]))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    width = 0.7 / len(found.sources)
    for ax, ((target, num_train, order, granularity), rows) in zip(axes[0], panels.items()):
        for s, name in enumerate(found.sources):
            x = np.arange(len(rows)) + (s - (len(found.sources) - 1) / 2) * width
            tests = [t[s] for _, t in rows]
            y = [t.estimate for t in tests]
            err = [[t.estimate - t.low if t.defined else 0 for t in tests],
                   [t.high - t.estimate if t.defined else 0 for t in tests]]  # fmt: skip
            ax.errorbar(x, y, yerr=err, fmt='o', ms=4, capsize=3, label=name,
                        color=SOURCE_COLORS[s % len(SOURCE_COLORS)])  # fmt: skip
        ax.axhline(0, color='k', lw=0.7)
        ax.set_xticks(range(len(rows)), [label for label, _ in rows], rotation=45, fontsize=8)
        ax.set_title(f'{cell_name(target, num_train)} ({order}, by {granularity})', fontsize=9)
        ax.set_ylabel('shallow->deep minus deep->shallow Dice')
    axes[0][-1].legend(fontsize=8, title='pre-training source', title_fontsize=8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_png(fig, path)
    return Figure(
        os.path.basename(path),
        "Each point: one source's gap (shallow->deep minus deep->shallow test Dice) with its "
        '95% CI, at every set of k.',
        tuple(found.sources),
    )


# ----------------------------------------------------------------------------- the page


def page(
    studies: Sequence[Study],
    names: Sequence[str],
    dirs: Sequence[str],
    found: SourcesComparison,
    figure: Figure | None,
) -> dict:
    """The data sources.j2 names."""
    sections = [
        (KINDS[kind].section, table)
        for kind, comparisons, table in (
            ('source_change', found.changes, change_table),
            ('source_target', found.between, target_table),
        )
        if comparisons
    ]
    return dict(
        sources='Sources (the first is the baseline): '
        + ', '.join(f'{n} (`{d}`)' for n, d in zip(names, dirs))
        + '.',
        reading='Gap: shallow->deep minus deep->shallow test Dice on lesion images, averaged '
        "over the k named (mean over seeds and images, 95% CI of the design's t-test: "
        'pre-training, fold, run, image and residual components). Change (source x '
        'direction): gap with B minus gap with A, paired by seed, fold and image; '
        'Holm-adjusted p in brackets. '
        + replicates_note(studies)
        + ' Not adjusted for the number of tests.',
        pretrainings=pretraining_table(studies, names),
        figure=figure,
        gap_table=gap_table(found),
        sections=[(section, make(found)) for section, make in sections],
        calibration=calibration_note(found.between),
        sentences=[c.definition.plain(c) for c in (*found.changes, *found.between) if headline(c)],
    )
