"""Does the pre-training source change the shallow-vs-deep gap? The comparisons across several
studies, one per source, as compare.Comparison of the kinds source_gap, source_change and
source_target (kinds.KINDS says how each reads).

The gap. In every cell (target, training size), depth order and granularity all studies have,
a source's gap is shallow->deep minus deep->shallow test Dice per seed and lesion test image
(contrasts.gap_contrast, on the report's score matrices, scores.Scores), averaged over a set of
k (contrasts.k_sets): every k where both directions train different layers ('all k'), k >= 2
(at k = 1 deep->shallow trains only the head, so the gap there mostly measures how well the
untouched pre-trained model fits the target), and each k alone.

The source x direction interaction is the change of the gap, gap(B) - gap(A), for every pair
of sources (A listed before B; the comparison's `a` is B, its `b` is A). The studies share
seeds (training subsets, data order), folds and test images, so the change is paired by seed,
fold and image and gets the report's design-based t-test (pre-training, fold, run, image and
residual components; unet_jax.report.stats). Run-to-run pre-training variance is inside its CI
only when every seed fine-tunes from its own pre-training of each source
(study.pretrain_seeds >= the number of seeds, as sources= sets up); otherwise the page says
that the change is confounded with it. The source x direction x target interaction (is the
change specific to ultrasound?) is the change on an ultrasound target minus the change on an
X-ray target, paired by pre-training (both targets fine-tune from the same pre-trainings;
compare.interaction, as the report's target interactions). The changes are Holm-adjusted
together (difference and TOST apart), and so are the target interactions: "the gap is
unchanged" needs the Holm-adjusted TOST; "no evidence of a change" is not "the same". Every
test states its minimum detectable change at 80% power; its error rates at these sizes are
simulated in tests/test_calibration.py.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses

import numpy as np

from unet_jax.data import modalities
from unet_jax.report import compare, contrasts, stats
from unet_jax.report.compare import Comparison
from unet_jax.report.contrasts import ALL_K, DEEP, K_FROM_2, SHALLOW
from unet_jax.report.endpoint import target_modality
from unet_jax.report.load import Study
from unet_jax.report.scores import Labelled, Scores


def headline(c: Comparison) -> bool:
    """Averaged over every k or over k >= 2, or the study's only k: the sets the words and the
    calibration note use (single k are in the tables)."""
    return c.k_set in (ALL_K, K_FROM_2) or c.k_set.endswith(' (the only k)')


@dataclasses.dataclass(frozen=True)
class SourcesComparison:
    """Every source's gap, every pair's change and every change's target interaction."""

    sources: list[str]
    gaps: list[Comparison]  # 'source_gap': per cell, order, granularity and k set, per source
    changes: list[Comparison]  # 'source_change', Holm-adjusted together
    between: list[Comparison]  # 'source_target', Holm-adjusted together

    def gap_rows(self) -> dict[tuple, list[Comparison]]:
        """The gaps by (target, size, order, granularity, k set): one per source, in order."""
        rows: dict[tuple, list[Comparison]] = {}
        for c in self.gaps:
            key = (c.target, c.num_train, c.order, c.granularity, c.k_set)
            rows.setdefault(key, []).append(c)
        return rows


@dataclasses.dataclass(frozen=True)
class _Gaps:
    """One study's gap arrays by k in one cell, order and granularity, with their layout."""

    found: Labelled
    by_k: dict[int, np.ndarray]


def _gaps(study: Study, scores: Scores, target, num_train, order, granularity) -> _Gaps | None:
    """The study's per-k gaps (shallow->deep minus deep->shallow), or None without the points."""
    runs = study.runs
    cell = runs[(runs['target'] == target) & (runs['num_train'] == num_train)]
    contrast = contrasts.gap_contrast(cell, order, granularity)
    if contrast is None:
        return None
    found = scores.labelled(target, num_train, list(contrast.involved))
    if found is None:
        return None
    values = found.values  # each k's shallow->deep, then its deep->shallow
    by_k = {k: values[2 * i] - values[2 * i + 1] for i, k in enumerate(contrast.fields['ks'])}
    return _Gaps(found, by_k)


def _aligned(found: list[_Gaps]) -> tuple[np.ndarray, np.ndarray, list[int]] | None:
    """The replicates, images and k every study has, or None."""
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


def compare_studies(
    studies: Sequence[Study], names: Sequence[str], settings: stats.Settings | None = None
) -> SourcesComparison:
    """The gaps, their changes and the changes' target interactions for every cell, order,
    granularity and set of k all studies have (the first study is the baseline)."""
    settings = settings or stats.Settings()
    scores = [Scores(s) for s in studies]
    runs = dict(pretrain_runs=scores[0].pretrain_runs, seeds_averaged=scores[0].seeds_averaged)
    gaps: list[Comparison] = []
    changes: list[Comparison] = []
    for target, num_train in studies[0].cells:
        if any((target, num_train) not in s.cells for s in studies[1:]):
            continue
        for order, granularity in studies[0].orders():
            found = [
                _gaps(s, sc, target, num_train, order, granularity)
                for s, sc in zip(studies, scores)
            ]
            if any(f is None for f in found):
                continue
            aligned = _aligned(found)
            if aligned is None:
                continue
            replicates, images, ks = aligned
            design = found[0].found.subset(replicates, images)
            for label, chosen in contrasts.k_sets(ks):
                where = dict(order=order, granularity=granularity, ks=tuple(chosen), k_set=label)
                matrices = [_take(f, replicates, images, chosen) for f in found]
                tests = [design.test(m, settings.margin) for m in matrices]
                gaps += [
                    Comparison(target, num_train, 'source_gap', SHALLOW, DEEP, t, source=name,
                               role=compare.ESTIMATE, **runs, **where)
                    for name, t in zip(names, tests)
                ]  # fmt: skip
                for i in range(len(names)):
                    for j in range(i + 1, len(names)):
                        change = design.test(matrices[j] - matrices[i], settings.margin)
                        changes.append(
                            Comparison(target, num_train, 'source_change', names[j], names[i],
                                       change, parts=(tests[j], tests[i]), **runs, **where)
                        )  # fmt: skip
    compare.holm_adjust(changes)
    between = target_interactions(studies[0], changes, settings)
    return SourcesComparison(list(names), gaps, changes, between)


def target_interactions(
    study: Study, changes: Sequence[Comparison], settings: stats.Settings | None = None
) -> list[Comparison]:
    """Each ultrasound target's change minus each X-ray target's (same sources, size, order,
    granularity and k set), Holm-adjusted together."""
    settings = settings or stats.Settings()
    modality = lambda c: target_modality(study, c.target)
    key = lambda c: (c.a, c.b, c.num_train, c.order, c.granularity, c.k_set)
    xray = [c for c in changes if modality(c) == modalities.XRAY]
    out = [
        compare.interaction(u, x, settings, kind='source_target')
        for u in changes
        if modality(u) == modalities.ULTRASOUND
        for x in xray
        if key(u) == key(x)
    ]
    adjusted = stats.holm([i.test.p for i in out])
    for i, p in zip(out, adjusted):
        i.p_adjusted = float(p)
    return out
