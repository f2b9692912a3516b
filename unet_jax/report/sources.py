"""Does the pre-training source change the shallow-vs-deep gap? Several studies compared.

  python -m unet_jax.main --config=configs/layerwise.py:quick,sources=natural+natural_speckle \
      --workdir=W          # one study per source in W/sources/NAME, then W/report/sources.md
  python -m unet_jax.report.sources W                    # re-make W/report/sources.md
  python -m unet_jax.report.sources RUNS_A RUNS_B ...    # studies run apart, one per source

The gap. In every cell (target, training size), depth order and granularity all studies have,
a source's gap is shallow->deep minus deep->shallow test Dice per seed and lesion test image,
averaged over a set of k: every k where both directions train different layers ('all k'),
k >= 2 (at k = 1 deep->shallow trains only the head, so the gap there mostly measures how well
the untouched pre-trained model fits the target), and each k alone.

The source x direction interaction is the change of the gap, gap(B) - gap(A), for every pair
of sources (A listed before B). The studies share seeds (training subsets, data order), folds
and test images, so the change is paired by seed, fold and image and gets the report's
design-based t-test (pre-training, fold, run, image and residual components;
unet_jax.report.stats). Run-to-run pre-training variance is inside its CI only when every seed
fine-tunes from its own pre-training of each source (study.pretrain_seeds >= the number of
seeds, as sources= sets up); otherwise the output says that the change is confounded with it.
The source x direction x target interaction (is the change specific to ultrasound?) is the
change on an ultrasound target minus the change on an X-ray target, paired by pre-training
(both targets fine-tune from the same pre-trainings). The changes are Holm-adjusted together
(difference and TOST apart), and so are the target interactions: "the gap is unchanged" needs
the Holm-adjusted TOST; "no evidence of a change" is not "the same". Every test states its
minimum detectable change at 80% power; its error rates at these sizes are simulated in
tests/test_calibration.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import dataclasses
import json
import os

import numpy as np

from unet_jax import layout
from unet_jax.data import modalities
from unet_jax.report import calibration, compare, contrasts, stats
from unet_jax.report.compare import DEEP, SHALLOW
from unet_jax.report.conclusions import cell_name, p_text
from unet_jax.report.load import Study, load
from unet_jax.report.scores import Labelled, Scores

ALL_K = 'all k'
K_FROM_2 = 'k >= 2'


@dataclasses.dataclass(frozen=True)
class Cell:
    """Where a gap is measured: target, size, depth order, granularity and the k averaged."""

    target: str
    num_train: int
    order: str
    granularity: str
    ks: str  # ALL_K, K_FROM_2 or 'k = 3'

    @property
    def headline(self) -> bool:
        """Averaged over every k or over k >= 2, or the study's only k: the sets the text and
        the calibration note use (single k are in the tables)."""
        return self.ks in (ALL_K, K_FROM_2) or self.ks.endswith(' (the only k)')

    @property
    def name(self) -> str:
        return (
            f'{cell_name(self.target, self.num_train)} ({self.order} order, by '
            f'{self.granularity}, {self.ks})'
        )


@dataclasses.dataclass(frozen=True)
class Change:
    """gap(b) - gap(a) in one cell: the source x direction interaction."""

    cell: Cell
    a: str
    b: str
    gap_a: stats.Test
    gap_b: stats.Test
    change: stats.Test
    # Holm-adjusted over every change of the comparison (difference and TOST apart)
    p_adjusted: float = float('nan')
    p_tost_adjusted: float = float('nan')

    @property
    def verdict(self) -> str:
        c = self.change
        if not c.defined:
            return (
                f'untestable: the change has no spread over its {c.base} replicates x images '
                '(identical runs?)'
            )
        if self.p_adjusted < stats.ALPHA:
            smaller = abs(self.gap_b.estimate) < abs(self.gap_a.estimate)
            return f'the gap {"shrinks" if smaller else "grows"} with {self.b}'
        if self.p_tost_adjusted < stats.ALPHA:
            return (
                f'the gap is unchanged within +-{c.margin:g} Dice (TOST, Holm-adjusted p = '
                f'{self.p_tost_adjusted:.3g})'
            )
        return f'no evidence of a change (detectable at 80% power: {c.mdd:.3f} Dice)'

    def sentence(self) -> str:
        """The answer in words that claim no more than the CI allows."""
        c = self.change
        return (
            f'{self.cell.name}: shallow->deep minus deep->shallow Dice is '
            f'{_interval(self.gap_a)} with {self.a} and {_interval(self.gap_b)} with {self.b}; '
            f'change {c.estimate:+.3f} (95% CI {c.low:+.3f} to {c.high:+.3f}, p = {c.p:.3g}, '
            f'Holm-adjusted {self.p_adjusted:.3g}; the design\'s t-test over {_base(c)}, '
            f'df {c.df:.1f}): {self.verdict}.'
        )


@dataclasses.dataclass(frozen=True)
class TargetInteraction:
    """The change on an ultrasound target minus the change on an X-ray target (same sources,
    size, order, granularity and k): the source x direction x target interaction."""

    ultrasound: Change
    xray: Change
    test: stats.Test
    p_adjusted: float = float('nan')  # Holm over every target interaction

    @property
    def verdict(self) -> str:
        t = self.test
        if not t.defined:
            return 'untestable'
        if self.p_adjusted < stats.ALPHA:
            return 'the change differs between the targets'
        return f'no evidence that it differs (detectable at 80% power: {t.mdd:.3f} Dice)'

    def sentence(self) -> str:
        u, x, t = self.ultrasound, self.xray, self.test
        where = (
            f'{u.b} vs {u.a}, {u.cell.target} vs {x.cell.target} (n = '
            f'{layout.size_name(u.cell.num_train)}, {u.cell.order} order, by '
            f'{u.cell.granularity}, {u.cell.ks})'
        )
        return (
            f'{where}: change on {u.cell.target} minus change on {x.cell.target} = '
            f'{t.estimate:+.3f} (95% CI {t.low:+.3f} to {t.high:+.3f}, p = {t.p:.3g}, '
            f'Holm-adjusted {self.p_adjusted:.3g}; {_pairing(t)} over '
            f'{u.change.num_images} + {x.change.num_images} images, df {t.df:.1f}): '
            f'{self.verdict}.'
        )


def _base(t: stats.Test) -> str:
    folds = ' x folds' if t.num_folds > 1 else ''
    return f'{t.base} (pre-trainings{folds} x images)'


def _pairing(t: stats.Test) -> str:
    if t.layout == 'difference':
        return 'paired by pre-training (both targets fine-tune from them)'
    return 'independent targets (Welch)'


def _interval(i: stats.Test) -> str:
    if not i.defined:  # no spread: no CI
        return f'{i.estimate:+.3f} [no spread]'
    return f'{i.estimate:+.3f} [{i.low:+.3f}, {i.high:+.3f}]'


def _mdd(i: stats.Test) -> str:
    return f'{i.mdd:.3f}' if i.defined else '-'


# ----------------------------------------------------------------------------- the gaps


@dataclasses.dataclass(frozen=True)
class _Gaps:
    """One study's gap arrays by k in one cell, order and granularity, with their layout."""

    found: Labelled
    by_k: dict[int, np.ndarray]


def _gaps(study: Study, scores: Scores, target, num_train, order, granularity):
    """The study's per-k gaps (shallow->deep minus deep->shallow), or None without the points."""
    runs = study.runs
    cell = runs[(runs['target'] == target) & (runs['num_train'] == num_train)]
    sides = [contrasts.direction_points(cell, d, order, granularity) for d in (SHALLOW, DEEP)]
    pairs = contrasts.pairs_by_k(*sides)
    if not pairs:
        return None
    names = [n for _, ca, cb in pairs for n in (ca, cb)]
    found = scores.labelled(target, num_train, names)
    if found is None:
        return None
    by_k = {k: found.values[2 * i] - found.values[2 * i + 1] for i, (k, _, _) in enumerate(pairs)}
    return _Gaps(found, by_k)


def k_sets(ks: Sequence[int]) -> list[tuple[str, list[int]]]:
    """(label, k averaged): every k, k >= 2 (when k = 1 is among others), each k alone (when
    there are several); a single k is its own set."""
    ks = sorted(ks)
    if len(ks) == 1:
        return [(f'k = {ks[0]} (the only k)', ks)]
    out = [(ALL_K, ks)]
    if 1 in ks:
        out.append((K_FROM_2, [k for k in ks if k >= 2]))
    return out + [(f'k = {k}', [k]) for k in ks]


def _aligned(found: list[_Gaps]) -> tuple[np.ndarray, np.ndarray, list[int]] | None:
    replicates = found[0].found.replicates
    images = found[0].found.images
    for f in found[1:]:
        replicates = np.intersect1d(replicates, f.found.replicates)
        images = np.intersect1d(images, f.found.images)
    ks = sorted(set.intersection(*(set(f.by_k) for f in found)))
    if not replicates.size or not images.size or not ks:
        return None
    return replicates, images, ks


def _take(g: _Gaps, replicates: np.ndarray, images: np.ndarray, ks: list[int]) -> np.ndarray:
    return sum(g.found.restrict(g.by_k[k], replicates, images) for k in ks) / len(ks)


@dataclasses.dataclass(frozen=True)
class SourcesComparison:
    """Every source's gap and every pair's change, per cell and set of k."""

    sources: list[str]
    gaps: dict[Cell, list[stats.Test]]  # one per source, in order
    changes: list[Change]


def compare_studies(
    studies: Sequence[Study], names: Sequence[str], settings: stats.Settings | None = None
) -> SourcesComparison:
    """The gaps and their changes for every cell, order, granularity and k all studies have."""
    settings = settings or stats.Settings()
    scores = [Scores(s) for s in studies]
    gaps: dict[Cell, list[stats.Test]] = {}
    changes: list[Change] = []
    for target, num_train in studies[0].cells:
        if any((target, num_train) not in s.cells for s in studies[1:]):
            continue
        for order, granularity in studies[0].orders():
            found = [_gaps(s, sc, target, num_train, order, granularity) for s, sc in zip(studies, scores)]  # fmt: skip
            if any(f is None for f in found):
                continue
            aligned = _aligned(found)
            if aligned is None:
                continue
            replicates, images, ks = aligned
            design = found[0].found.subset(replicates, images)
            for label, chosen in k_sets(ks):
                cell = Cell(target, num_train, order, granularity, label)
                matrices = [_take(f, replicates, images, chosen) for f in found]
                gaps[cell] = [design.test(m, settings.margin) for m in matrices]
                for i in range(len(names)):
                    for j in range(i + 1, len(names)):
                        change = design.test(matrices[j] - matrices[i], settings.margin)
                        changes.append(
                            Change(cell, names[i], names[j], gaps[cell][i], gaps[cell][j], change)
                        )
    return SourcesComparison(list(names), gaps, _holm(changes))


def _holm(changes: list[Change]) -> list[Change]:
    """Every change with its Holm-adjusted p (difference) and TOST p (equivalence)."""
    p = stats.holm([c.change.p for c in changes])
    p_tost = stats.holm([c.change.p_tost for c in changes])
    return [
        dataclasses.replace(c, p_adjusted=float(a), p_tost_adjusted=float(b))
        for c, a, b in zip(changes, p, p_tost)
    ]


def target_interactions(study: Study, changes: Sequence[Change]) -> list[TargetInteraction]:
    """Each ultrasound target's change minus each X-ray target's (same sources, size, order,
    granularity, k)."""
    modality = lambda c: compare.target_modality(study, c.cell.target)
    key = lambda c: (c.a, c.b, c.cell.num_train, c.cell.order, c.cell.granularity, c.cell.ks)
    xray = [c for c in changes if modality(c) == modalities.XRAY]
    out = []
    for u in (c for c in changes if modality(c) == modalities.ULTRASOUND):
        for x in xray:
            if key(u) == key(x):
                labels = (u.cell.target, x.cell.target)
                test = stats.difference_of_gaps(u.change, x.change, labels=labels)
                out.append(TargetInteraction(u, x, test))
    adjusted = stats.holm([i.test.p for i in out])
    return [dataclasses.replace(i, p_adjusted=float(p)) for i, p in zip(out, adjusted)]


# ----------------------------------------------------------------------------- what varies


def source_name(workdir: str) -> str:
    """The pre-training set a study used (its pre-training's config), else its folder."""
    path = os.path.join(workdir, layout.PRETRAIN_DIR, 'config.json')
    if os.path.exists(path):
        with open(path) as f:
            return str(json.load(f).get('data', {}).get('name', os.path.basename(workdir)))
    return os.path.basename(os.path.normpath(workdir))


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


def pretraining_rows(studies: Sequence[Study], names: Sequence[str]) -> list[dict]:
    """Each pre-training's own test Dice, per source."""
    rows = []
    for name, study in zip(names, studies):
        for row in study.pretrainings().to_dict('records'):
            rows.append(dict(source=name, **row))
    return rows


# ----------------------------------------------------------------------------- the page

CALIBRATION_SIMULATIONS = 4000
FIGURE_FILE = 'sources_gap.png'
SOURCE_COLORS = ('0.35', 'tab:orange', 'tab:purple', 'tab:green', 'tab:brown')


def gap_figure(found: SourcesComparison, path: str) -> str | None:
    """One panel per target, size, order and granularity: each source's gap with its 95% CI
    at every set of k. None when there is no gap to draw."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels: dict[tuple, list[tuple[str, list[stats.Test]]]] = {}
    for cell, tests in found.gaps.items():
        key = (cell.target, cell.num_train, cell.order, cell.granularity)
        panels.setdefault(key, []).append((cell.ks, tests))
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
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches='tight')
    plt.close(fig)
    return path


def calibration_note(changes: Sequence[Change], between: Sequence[TargetInteraction]) -> str:
    """The error rates of the first source x direction x target interaction (all k, or the
    only k), simulated with its two changes' own sizes and estimated components, their
    pre-training effects shared (unet_jax.report.calibration)."""
    usable = lambda t: t.defined and t.layout == 'nested' and t.num_images >= 3
    first = next(
        (i for i in between if i.ultrasound.cell.headline
         and usable(i.ultrasound.change) and usable(i.xray.change)),
        None,
    )  # fmt: skip
    if first is None:
        return ''
    designs = [calibration.design_of(c.change, c.cell.target) for c in (first.xray, first.ultrasound)]  # fmt: skip
    rates = calibration.interaction_error_rates(
        *designs, simulations=CALIBRATION_SIMULATIONS, effect=0.0
    )
    return (
        f'Error rate of the target interaction at these sizes, simulated {rates.simulations} '
        f'times with the changes\' estimated components ('
        + '; '.join(calibration.describe(d) for d in designs)
        + f'; pre-training effects shared): false-positive rate {rates.false_positive_05:.3f} '
        f'at 0.05 and {rates.false_positive_002:.4f} at 0.002, 95% CI coverage '
        f'{rates.coverage:.3f}. (With 3 pre-trainings the test is conservative where a '
        'component is absent and rejects too often at 0.002 where pre-trainings carry most of '
        'the variance: tests/test_calibration.py.)'
    )


def _verdict_cell(change: Change) -> str:
    return change.verdict.replace('|', '/')


def markdown(
    studies: Sequence[Study],
    names: Sequence[str],
    dirs: Sequence[str],
    found: SourcesComparison,
    figure: str = '',
) -> str:
    lines = [
        '# Pre-training source and the shallow-vs-deep gap',
        '',
        'Sources (the first is the baseline): '
        + ', '.join(f'{n} (`{d}`)' for n, d in zip(names, dirs))
        + '.',
        '',
        'Gap: shallow->deep minus deep->shallow test Dice on lesion images, averaged over the k '
        'named (mean over seeds and images, 95% CI of the design\'s t-test: pre-training, '
        'fold, run, image and residual components). Change (source x direction): gap with B '
        'minus gap with A, paired by seed, fold and image; Holm-adjusted p in brackets. ' + replicates_note(studies) + ' Not adjusted for the number of tests.',
        '',
        '## Pre-trainings',
        '',
        '| source | pre-training | seed | data | test Dice on its own set | test images |',
        '|---|---|---|---|---|---|',
    ]
    for r in pretraining_rows(studies, names):
        dice = '-' if not np.isfinite(r['test_dice']) else f'{r["test_dice"]:.3f}'
        images = '-' if not np.isfinite(r['num_test']) else f'{int(r["num_test"])}'
        lines.append(
            f'| {r["source"]} | {r["index"]} | {r["seed"]} | {r["data"]} | {dice} | {images} |'
        )
    lines += ['', '## The gap per source', '']
    if figure:
        lines += [
            f'![The gap per source, each with its 95% CI]({figure})',
            '',
            'Each point: one source\'s gap (shallow->deep minus deep->shallow test Dice) with '
            'its 95% CI, at every set of k.',
            '',
        ]
    if not found.gaps:
        lines.append('No cell has both directions finished in every study.')
    else:
        lines += [
            '| where | ' + ' | '.join(names) + ' |',
            '|---|' + '---|' * len(names),
        ]
        lines += [
            f'| {cell.name} | ' + ' | '.join(_interval(t) for t in tests) + ' |'
            for cell, tests in found.gaps.items()
        ]
    if found.changes:
        lines += [
            '',
            '## Source x direction: the change of the gap',
            '',
            '| where | B - A | change [95% CI] | p (Holm) | replicates x images | detectable (80%) | verdict |',
            '|---|---|---|---|---|---|---|',
        ]
        for c in found.changes:
            t = c.change
            lines.append(
                f'| {c.cell.name} | {c.b} - {c.a} | {_interval(t)} | {p_text(t.p)} '
                f'({p_text(c.p_adjusted)}) | {t.base} | {_mdd(t)} | {_verdict_cell(c)} |'
            )
    between = target_interactions(studies[0], found.changes)
    if between:
        lines += [
            '',
            '## Source x direction x target: is the change specific to ultrasound?',
            '',
            '| sources | ultrasound - X-ray | where | difference of changes [95% CI] | p (Holm) | '
            'detectable (80%) | verdict |',
            '|---|---|---|---|---|---|---|',
        ]
        for i in between:
            u, x, t = i.ultrasound, i.xray, i.test
            where = f'n = {layout.size_name(u.cell.num_train)}, {u.cell.order}, by {u.cell.granularity}, {u.cell.ks}'  # fmt: skip
            lines.append(
                f'| {u.b} - {u.a} | {u.cell.target} - {x.cell.target} | {where} | '
                f'{_interval(t)} | {p_text(t.p)} ({p_text(i.p_adjusted)}) | {_mdd(t)} | {i.verdict} |'
            )
    note = calibration_note(found.changes, between)
    if note:
        lines += ['', note]
    lines += ['', '## In words', '']
    lines += [f'- {c.sentence()}' for c in found.changes if c.cell.headline]
    lines += [f'- {i.sentence()}' for i in between if i.ultrasound.cell.headline]
    return '\n'.join(lines) + '\n'


def write_sources(
    workdirs: Sequence[str],
    out: str,
    *,
    names: Sequence[str] | None = None,
    settings: stats.Settings | None = None,
) -> str:
    """Writes the comparison of the studies in `workdirs` (one per source, the first the
    baseline) to `out` (Markdown); returns its path."""
    if len(workdirs) < 2:
        raise ValueError(f'report.sources: needs two or more study workdirs, got {list(workdirs)}.')
    studies = [load(w) for w in workdirs]
    names = list(names or [source_name(w) for w in workdirs])
    found = compare_studies(studies, names, settings)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    figure = gap_figure(found, os.path.join(os.path.dirname(os.path.abspath(out)), FIGURE_FILE))
    with open(out, 'w') as f:
        f.write(markdown(studies, names, list(workdirs), found, os.path.basename(figure or '')))
    return out


def read_sources_plan(workdir: str) -> dict | None:
    """sources.json of a study of several sources, or None for any other folder."""
    path = os.path.join(workdir, layout.SOURCES_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_study(workdir: str, out: str = '') -> str:
    """`out` (default WORKDIR/report/sources.md) of a study of several sources (sources.json)."""
    plan = read_sources_plan(workdir)
    if plan is None:
        raise FileNotFoundError(
            f'{workdir} has no {layout.SOURCES_FILE}: it is not a study of several sources '
            '(sources=); compare separate studies with python -m unet_jax.report.sources A B.'
        )
    dirs = [os.path.join(workdir, d) for d in plan['dirs']]
    out = out or os.path.join(workdir, layout.REPORT_DIR, 'sources.md')
    return write_sources(dirs, out, names=plan['sources'])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        'workdirs',
        nargs='+',
        help='a study of several sources (its workdir), or two or more study workdirs, one per '
        'source, the baseline first',
    )
    parser.add_argument(
        '--out', default='', help='markdown file (default LAST/report/sources.md or W/report/...)'
    )
    args = parser.parse_args(argv)
    if len(args.workdirs) == 1:
        path = write_study(args.workdirs[0], args.out)
    else:
        out = args.out or os.path.join(args.workdirs[-1], layout.REPORT_DIR, 'sources.md')
        path = write_sources(args.workdirs, out)
    with open(path) as f:
        print(f.read())


if __name__ == '__main__':
    main()
