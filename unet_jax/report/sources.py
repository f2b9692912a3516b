"""Does the pre-training source change the shallow-vs-deep gap? Two study workdirs compared.

Run the same study once per pre-training source (configs/layerwise.py:source=natural and
source=natural_speckle, in two workdirs), then

    python -m unet_jax.report.sources RUNS_A RUNS_B [--out FILE]

For every target, training size, depth order and granularity both studies have, the gap is the
study's headline direction comparison: shallow->deep minus deep->shallow test Dice, averaged
over the k both directions train differently (per seed and lesion test image). The two studies
share seeds (training subsets, data order) and test images, so the change of the gap,
gap(B) - gap(A), is paired by seed and image and gets the same crossed t-test as any comparison
of a study (unet_jax.report.stats). With one pre-training run per source the change is
confounded with run-to-run pre-training variance, which this test cannot see: the output says
so. Whether the change is specific to ultrasound is the interaction: the change on each
ultrasound target minus the change on each X-ray target (independent test sets, unpaired).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import numpy as np

from unet_jax import modalities
from unet_jax.report import compare, stats
from unet_jax.report.compare import DEEP, SHALLOW
from unet_jax.report.conclusions import cell_name
from unet_jax.report.load import Study, load


@dataclasses.dataclass(frozen=True)
class SourceComparison:
    target: str
    num_train: int
    order: str
    granularity: str
    gap_a: stats.Test
    gap_b: stats.Test
    change: stats.Test  # gap_b - gap_a

    def sentence(self, a: str, b: str) -> str:
        """The answer in words that claim no more than the CI allows."""
        c = self.change
        where = (
            f'{cell_name(self.target, self.num_train)} ({self.order} order, by {self.granularity})'
        )
        gaps = (
            f'shallow->deep minus deep->shallow Dice is {_interval(self.gap_a)} with {a} and '
            f'{_interval(self.gap_b)} with {b}; change {c.estimate:+.3f} '
            f'(95% CI {c.low:+.3f} to {c.high:+.3f}, p = {c.p:.3g}, crossed t-test over '
            f'{c.num_replicates} seeds x {c.num_images} images, df {c.df:.1f})'
        )
        if not c.defined:
            verdict = (
                f'untestable: the change has no spread over its {c.num_replicates} seeds x '
                f'{c.num_images} images (identical runs?)'
            )
        elif c.p < stats.ALPHA:
            smaller = abs(self.gap_b.estimate) < abs(self.gap_a.estimate)
            verdict = f'the gap {"shrinks" if smaller else "grows"} with {b}'
        elif c.p_tost < stats.ALPHA:
            verdict = f'the gap is unchanged within +-{c.margin:g} Dice (TOST p = {c.p_tost:.3g})'
        else:
            verdict = (
                f'no evidence of a change (detectable at 80% power: {c.mdd:.3f} Dice)'
            )
        return f'{where}: {gaps}: {verdict}.'


def _interval(i: stats.Test) -> str:
    return f'{i.estimate:+.3f} [{i.low:+.3f}, {i.high:+.3f}]'


def _gap(study: Study, scores: compare.Scores, target: str, num_train: int, order, granularity):
    """(seeds, images, gap[seed, image]) of one study, or None when it lacks the points."""
    runs = study.runs
    cell = runs[(runs['target'] == target) & (runs['num_train'] == num_train)]
    sides = [compare.direction_points(cell, d, order, granularity) for d in (SHALLOW, DEEP)]
    pairs = compare.pairs_by_k(*sides)
    if not pairs:
        return None
    names = [n for _, ca, cb in pairs for n in (ca, cb)]
    seeds, images, matrices = scores.labelled(target, num_train, names)
    if not matrices:
        return None
    gap = sum(matrices[2 * i] - matrices[2 * i + 1] for i in range(len(pairs))) / len(pairs)
    return seeds, images, gap


def compare_sources(
    workdir_a: str, workdir_b: str, settings: stats.Settings | None = None
) -> list[SourceComparison]:
    """gap(B) - gap(A) for every cell, order and granularity both studies ran."""
    return _compare([load(workdir_a), load(workdir_b)], settings or stats.Settings())


def _compare(studies: list[Study], settings: stats.Settings) -> list[SourceComparison]:
    scores = [compare.Scores(s) for s in studies]
    out = []
    for target, num_train in studies[0].cells:
        if (target, num_train) not in studies[1].cells:
            continue
        for order, granularity in studies[0].orders():
            found = [
                _gap(s, sc, target, num_train, order, granularity) for s, sc in zip(studies, scores)
            ]
            if any(f is None for f in found):
                continue
            (seeds_a, images_a, gap_a), (seeds_b, images_b, gap_b) = found
            seeds, images = np.intersect1d(seeds_a, seeds_b), np.intersect1d(images_a, images_b)
            if not seeds.size or not images.size:
                continue
            a = gap_a[np.ix_(np.searchsorted(seeds_a, seeds), np.searchsorted(images_a, images))]
            b = gap_b[np.ix_(np.searchsorted(seeds_b, seeds), np.searchsorted(images_b, images))]
            out.append(
                SourceComparison(
                    target, num_train, order, granularity,
                    stats.crossed_test(a, margin=settings.margin),
                    stats.crossed_test(b, margin=settings.margin),
                    stats.crossed_test(b - a, margin=settings.margin),
                )
            )  # fmt: skip
    return out


def specificity(study: Study, found: list[SourceComparison]) -> list[str]:
    """The change on each ultrasound target minus the change on each X-ray target (same size,
    order and granularity): is the effect of the source specific to ultrasound?"""
    by = lambda m: [c for c in found if compare.target_modality(study, c.target) == m]
    lines = []
    for u in by(modalities.ULTRASOUND):
        for x in by(modalities.XRAY):
            if (u.num_train, u.order, u.granularity) != (x.num_train, x.order, x.granularity):
                continue
            t = stats.unpaired_difference(u.change, x.change)
            verdict = (
                'the change differs between them' if t.p < stats.ALPHA
                else f'no evidence that it differs (detectable at 80% power: {t.mdd:.3f})'
            )  # fmt: skip
            lines.append(
                f'{u.target} vs {x.target} (n = {u.num_train}, {u.order} order, by '
                f'{u.granularity}): change on {u.target} minus change on {x.target} = '
                f'{t.estimate:+.3f} (95% CI {t.low:+.3f} to {t.high:+.3f}, p = {t.p:.3g}, '
                f'unpaired, Welch-Satterthwaite df {t.df:.1f}): {verdict}.'
            )
    return lines


def source_name(workdir: str) -> str:
    """The pre-training set a study used (its study.json's pre-training), else its folder."""
    path = os.path.join(workdir, 'pretrain', 'config.json')
    if os.path.exists(path):
        with open(path) as f:
            return str(json.load(f).get('data', {}).get('name', os.path.basename(workdir)))
    return os.path.basename(os.path.normpath(workdir))


def write(workdir_a: str, workdir_b: str, out: str, settings: stats.Settings | None = None) -> str:
    a, b = source_name(workdir_a), source_name(workdir_b)
    studies = [load(workdir_a), load(workdir_b)]
    found = _compare(studies, settings or stats.Settings())
    runs = max(len(s.plan.get('pretrain_dirs') or [1]) for s in studies)
    lines = [
        f'# Shallow-vs-deep gap: {a} ({workdir_a}) vs {b} ({workdir_b})',
        '',
        'Gap: shallow->deep minus deep->shallow test Dice averaged over k (mean over seeds and '
        'lesion test images, 95% CI of the crossed t-test); change: gap with B minus gap with '
        'A, paired by seed and image. Not adjusted for the number of cells.'
        + (
            ' Each source was pre-trained once: the change includes run-to-run pre-training '
            'variance, which no CI here contains, so a change is not evidence about the source '
            'alone.'
            if runs <= 1
            else ''
        ),
        '',
    ]
    lines += [f'- {c.sentence(a, b)}' for c in found] or [
        '- No cell has both directions finished in both studies.'
    ]
    between = specificity(studies[1], found)
    if between:
        lines += ['', 'Specific to ultrasound? (interaction, not adjusted)', '']
        lines += [f'- {line}' for line in between]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('workdir_a', help='study workdir pre-trained on source A')
    parser.add_argument('workdir_b', help='study workdir pre-trained on source B')
    parser.add_argument(
        '--out', default='', help='markdown file (default WORKDIR_B/report/sources.md)'
    )
    args = parser.parse_args(argv)
    out = args.out or os.path.join(args.workdir_b, 'report', 'sources.md')
    with open(write(args.workdir_a, args.workdir_b, out)) as f:
        print(f.read())


if __name__ == '__main__':
    main()
