"""The kinds of comparison the report makes, each one `ComparisonKind` registered in `KINDS`.

A kind is one object: what it compares (its contrast maker, in contrasts.py: which
configurations A and B average in a cell, with their weights) and how it reads: its scope, the
words of its verdicts, its name in the comparisons table, its hypothesis in the primary
sentence, table and forest plot, the base of its evidence line, its plain-words answer, and
whether it is a difference of two gaps (between targets or training sizes: tabled and
concluded apart). The comparisons (compare.Comparison, by its `kind` name), the conclusions,
the tables and the forest plot ask the kind; adding a kind is one entry in KINDS
(docs/extending.md).

Within one cell (one target and training size), A - B (contrasts.py says how each averages):
  paths        tuning the contracting vs the expanding path;
  directions   two directions in one depth order and granularity, averaged over the k both ran;
  direction_k  the same pair at each k (where there is more than one);
  budget       the same pair averaged over a common cost range;
  pretraining  full fine-tuning vs training from scratch, and vs the matched scales;
  pair         any two other families (a primary endpoint that names them; no contrasts).
Differences of two gaps (compare.interaction and compare.size_change make them from the
gaps; no contrasts of their own):
  interaction  a gap on one target minus the same gap on another;
  size         a gap at one training size minus the same gap at a larger one (one target).
Across the studies of several pre-training sources (sources_compare.py makes them, with the
same scores, contrasts and tests; the sources page, sources.j2, tables and words them):
  source_gap     one source's shallow->deep minus deep->shallow gap over a set of k (`k_set`);
  source_change  the gap with source A minus the gap with an earlier source B (`parts`: the
                 two gaps): the source x direction interaction;
  source_target  that change on an ultrasound target minus on an X-ray target (`parts`: the
                 two changes): the source x direction x target interaction.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses

import numpy as np

from unet_jax import layout
from unet_jax.report import contrasts
from unet_jax.report.contrasts import COST_AXES, Cell, Contrast, DirectionPair
from unet_jax.report.load import family


def label(name: str) -> str:
    return family(name).label


def cell_name(target: str, num_train: int) -> str:
    return f'{target}, n = {layout.size_name(num_train)}'


def cost_text(axis: str, value: float) -> str:
    if not np.isfinite(value):
        return '-'
    if axis == 'trained_fraction':
        percent = 100 * value
        return f'{percent:.0f}%' if percent >= 10 else f'{percent:.2g}%'
    return f'{value:.2g} FLOPs'.replace('e+', 'e')


# ----------------------------------------------------------------------------- how it reads


def no_scope(c) -> str:
    return ''


def k_list(ks) -> str:
    """'1..4' for consecutive k, '1, 2, 4, 7' otherwise (a range would claim k it never ran)."""
    ks = [int(k) for k in ks]
    if len(ks) > 2 and ks == list(range(ks[0], ks[-1] + 1)):
        return f'{ks[0]}..{ks[-1]}'
    return ', '.join(str(k) for k in ks)


def over_k(c) -> str:
    """'forward order, by block, averaged over k = 1..4' (or 'k = 1, 2, 4, 7')."""
    return f'{c.where}, averaged over k = {k_list(c.ks)}'


def _at_k(c) -> str:
    return f'{c.where}, k = {c.ks[0]}'


def _over_costs(c) -> str:
    low, high = (cost_text(c.axis, v) for v in c.cost_range)
    return f'{c.where}, averaged over the common range [{low}, {high}] of {COST_AXES[c.axis]}'


def better(c) -> tuple[str, str]:
    """Verdicts 'a' and 'b' of a comparison within a cell: 'shallow->deep better'."""
    return f'{label(c.a)} better', f'{label(c.b)} better'


def larger(c) -> tuple[str, str]:
    """Verdicts 'a' and 'b' of a difference of gaps: 'larger on busi', 'larger with 20 images'."""
    at = c.definition.at
    return f'larger {at} {c.between[0]}', f'larger {at} {c.between[1]}'


def verdict_text(c) -> str:
    """Its verdict in a table: the kind's words for 'a' and 'b', else the verdict's name."""
    words = dict(zip('ab', c.definition.verdict_words(c)))
    return words.get(c.verdict, 'not tested' if c.verdict == 'untested' else c.verdict)


def a_minus_b(c) -> str:
    return f'{label(c.a)} - {label(c.b)}'


def a_minus_b_gap(c) -> str:
    return f'the {label(c.a)} minus {label(c.b)} gap'


def gap_on_target(c) -> str:
    return f'the gap on {c.target}'


def cell_evidence(c) -> str:
    """n, what varies and the test behind a comparison within a cell."""
    t = c.test
    images = (
        f'{t.num_images} lesion test images'
        if t.num_images > 1
        else 'per-seed means (no per-image scores)'
    )
    replicates = f'{t.num_replicates} seed{"s" if t.num_replicates != 1 else ""}'
    if c.pretrain_runs > 1 and t.num_replicates < c.pretrain_runs:
        replicates = f'{t.num_replicates} of {c.pretrain_runs} pre-trainings'
    elif c.pretrain_runs > 1 and t.num_replicates == c.pretrain_runs:
        replicates = (
            f'{t.num_replicates} pre-trainings (seeds averaged within each)'
            if c.seeds_averaged
            else f'{t.num_replicates} seeds (each from its own pre-training)'
        )
    runs = (
        '1 pre-training run (the answer is about that pre-trained model)'
        if c.pretrain_runs <= 1
        else f'{c.pretrain_runs} pre-training runs'
    )
    folds = f' x {t.num_folds} outer folds' if t.num_folds > 1 else ''
    method = (
        f'paired t-test over test images, df = {t.df:.0f}'
        if t.num_replicates == 1 and t.num_folds == 1
        else f"the design's t-test (components, SD: {t.component_sds()}), Satterthwaite "
        f'df = {t.df:.1f}'
    )
    return (
        f'n = {replicates}{folds} x {images}, {runs}; paired by replicate, fold and image; {method}'
    )


def _plain_ci(t, *, reversed_: bool = False) -> str:
    """The 95% CI of the difference a sentence states: of B - A when it names B first."""
    low, high = (-t.high, -t.low) if reversed_ else (t.low, t.high)
    return f'95% CI {low:+.3f} to {high:+.3f}'


def within_plain(c, title: Callable[[str], str] = str) -> str:
    """A tested answer within a cell in plain words: which is better, by how much; `title`
    names a target as a person reads it (`Study.title`)."""
    a, b, t = label(c.a), label(c.b), c.test
    on = title(c.target)
    ci = _plain_ci(t)
    over = f' averaged over k = {", ".join(str(k) for k in c.ks)}' if c.ks else ''
    if c.verdict in ('a', 'b'):
        first, second = (a, b) if c.verdict == 'a' else (b, a)
        return (
            f'On {on} with {c.num_train} training images, {first} beats {second} by '
            f'{abs(t.estimate):.3f} Dice{over} ({_plain_ci(t, reversed_=c.verdict == "b")}).'
        )
    return (
        f'On {on} with {c.num_train} training images, the data cannot tell {a} from '
        f'{b}{over} (difference {t.estimate:+.3f} Dice, {ci}); this is no evidence of a '
        'difference, not evidence that they are equal.'
    )


def between_plain(c, title: Callable[[str], str] = str) -> str:
    """A tested difference of gaps in plain words (two targets by their `title`)."""
    a, b, t, at = label(c.a), label(c.b), c.test, c.definition.at
    ci = _plain_ci(t)
    first, second = map(title, c.between) if c.versus else c.between
    if c.verdict in ('a', 'b'):
        more, less = (first, second) if c.verdict == 'a' else (second, first)
        return (
            f'The advantage of {a} over {b} is {abs(t.estimate):.3f} Dice larger {at} '
            f'{more} than {at} {less} ({_plain_ci(t, reversed_=c.verdict == "b")}).'
        )
    return (
        f'Whether the advantage of {a} over {b} differs between {first} and {second} stays '
        f'open: difference {t.estimate:+.3f} Dice ({ci}).'
    )


def _between_targets(c) -> tuple[str, str]:
    return c.target, c.versus


def _interaction_scope(c) -> str:
    """The scope of the gap it compares ('paths': none; 'directions': over k)."""
    return KINDS[c.of].scope(c)


def _interaction_gap(c) -> str:
    return a_minus_b_gap(c) + (' (paths)' if c.of == 'paths' else '')


def _interaction_evidence(c) -> str:
    t = c.test
    pairing = (
        f'paired by the {t.num_replicates} pre-trainings both fine-tune from'
        if t.layout == 'difference'
        else 'unpaired (no shared pre-trainings), Welch-Satterthwaite'
    )
    return (
        f'two test sets ({c.target} and {c.versus}, {t.num_images} lesion test images in '
        f'all), each gap paired by pre-training, fold and image; the difference of the two '
        f'gaps {pairing}, df = {t.df:.1f}'
    )


def _between_sizes(c) -> tuple[str, str]:
    return f'{c.num_train} images', f'{c.larger} images'


def _size_evidence(c) -> str:
    t = c.test
    return (
        f'{t.num_replicates} pre-trainings x {t.num_folds} outer folds x {t.num_images} '
        f'lesion test images of {c.target}, scored by the runs of both sizes: the two gaps '
        "paired by pre-training, fold and image; the design's t-test (components, SD: "
        f'{t.component_sds()}), Satterthwaite df = {t.df:.1f}'
    )


# ----------------------------------------------------------------------------- across sources


def interval(t) -> str:
    """'+0.070 [+0.061, +0.079]', or '+0.060 [no spread]' without a CI."""
    if not t.defined:
        return f'{t.estimate:+.3f} [no spread]'
    return f'{t.estimate:+.3f} [{t.low:+.3f}, {t.high:+.3f}]'


def over_k_set(c) -> str:
    """'forward order, by block, all k' (or 'k >= 2', 'k = 3')."""
    return f'{c.where}, {c.k_set}'


def source_where(c) -> str:
    """A source comparison's cell as a person reads it: 'us, n = 16 (forward order, by block,
    all k)'."""
    return f'{cell_name(c.target, c.num_train)} ({over_k_set(c)})'


def _change_verdict(c) -> str:
    t = c.test
    if c.verdict == 'untested':
        return (
            f'untestable: the change has no spread over its {t.base} replicates x images '
            '(identical runs?)'
        )
    if c.verdict in ('a', 'b'):
        smaller = abs(c.parts[0].estimate) < abs(c.parts[1].estimate)
        return f'the gap {"shrinks" if smaller else "grows"} with {c.a}'
    if c.verdict == 'equivalent':
        return (
            f'the gap is unchanged within +-{t.margin:g} Dice (TOST, Holm-adjusted p = '
            f'{c.p_tost_adjusted:.3g})'
        )
    return f'no evidence of a change (detectable at 80% power: {t.mdd:.3f} Dice)'


def _change_sentence(c, title: Callable[[str], str] = str) -> str:
    """The change in words that claim no more than its CI allows."""
    t, (with_a, with_b) = c.test, c.parts
    folds = ' x folds' if t.num_folds > 1 else ''
    return (
        f'{source_where(c)}: shallow->deep minus deep->shallow Dice is {interval(with_b)} with '
        f'{c.b} and {interval(with_a)} with {c.a}; change {t.estimate:+.3f} (95% CI '
        f'{t.low:+.3f} to {t.high:+.3f}, p = {t.p:.3g}, Holm-adjusted {c.p_adjusted:.3g}; the '
        f"design's t-test over {t.base} (pre-trainings{folds} x images), df {t.df:.1f}): "
        f'{_change_verdict(c)}.'
    )


def _source_target_scope(c) -> str:
    return f'n = {layout.size_name(c.num_train)}, {c.order}, by {c.granularity}, {c.k_set}'


def _source_target_verdict(c) -> str:
    if c.verdict == 'untested':
        return 'untestable'
    if c.verdict in ('a', 'b'):
        return 'the change differs between the targets'
    return f'no evidence that it differs (detectable at 80% power: {c.test.mdd:.3f} Dice)'


def _source_target_sentence(c, title: Callable[[str], str] = str) -> str:
    t, (on_target, on_versus) = c.test, c.parts
    pairing = (
        'paired by pre-training (both targets fine-tune from them)'
        if t.layout == 'difference'
        else 'independent targets (Welch)'
    )
    return (
        f'{c.a} vs {c.b}, {c.target} vs {c.versus} (n = {layout.size_name(c.num_train)}, '
        f'{c.order} order, by {c.granularity}, {c.k_set}): change on {c.target} minus change '
        f'on {c.versus} = {t.estimate:+.3f} (95% CI {t.low:+.3f} to {t.high:+.3f}, p = '
        f'{t.p:.3g}, Holm-adjusted {c.p_adjusted:.3g}; {pairing} over {on_target.num_images} '
        f'+ {on_versus.num_images} images, df {t.df:.1f}): {_source_target_verdict(c)}.'
    )


# ----------------------------------------------------------------------------- the kinds


@dataclasses.dataclass(frozen=True)
class ComparisonKind:
    """One kind of comparison: what it compares and how the report words it. Every reading
    takes a compare.Comparison (not named in the annotations: compare imports this module);
    the defaults read a comparison within a cell."""

    name: str  # Comparison.kind and the `kind` column of comparisons.csv
    # what it compares: its contrasts of one cell (None: made elsewhere, see the module)
    cell_contrasts: Callable[[Cell], list[Contrast]] | None = None
    # ... or of one direction pair of a cell (every such kind's, pair by pair)
    pair_contrasts: Callable[[Cell, DirectionPair], list[Contrast]] | None = None
    between_targets: bool = False  # its gap is also compared between targets (interaction)
    by_k: bool = False  # concluded as one finding per pair over its k (per_k_finding)
    # how it reads
    scope: Callable[..., str] = no_scope  # beyond A and B: 'forward order, ...'
    named: Callable[[str], str] = label  # A or B in a finding's claim
    verdict_words: Callable[..., tuple[str, str]] = better  # verdicts 'a' and 'b'
    title: Callable[..., str] = a_minus_b  # its 'A - B' cell in the tables
    verdict_text: Callable[..., str] = verdict_text  # its verdict cell in the tables
    hypothesis: Callable[..., str] = gap_on_target  # primary sentence and table
    figure_label: Callable[..., str] = lambda c: f'gap on {c.target}'  # forest plot
    evidence: Callable[..., str] = cell_evidence  # n, design and test, before p
    plain: Callable[..., str] = within_plain  # a tested primary answer in words
    # a difference of two gaps: what the two gaps are of (None: a comparison within a cell),
    # the word before each ('larger on busi'), the gap in words, its conclusions section
    between: Callable[..., tuple[str, str]] | None = None
    at: str = 'on'
    gap: Callable[..., str] = a_minus_b_gap
    section: str = ''


def register(*kinds: ComparisonKind) -> dict[str, ComparisonKind]:
    return {k.name: k for k in kinds}


KINDS: dict[str, ComparisonKind] = register(
    ComparisonKind('paths', cell_contrasts=contrasts.paths, between_targets=True,
                   named=lambda name: f'tuning the {label(name)}'),
    ComparisonKind('directions', pair_contrasts=contrasts.directions, between_targets=True,
                   scope=over_k),
    ComparisonKind('direction_k', pair_contrasts=contrasts.per_k, by_k=True, scope=_at_k),
    ComparisonKind('budget', pair_contrasts=contrasts.budget, scope=_over_costs),
    ComparisonKind('pretraining', cell_contrasts=contrasts.pretraining),
    ComparisonKind(
        'interaction', scope=_interaction_scope, verdict_words=larger,
        title=lambda c: f'({a_minus_b(c)}) on {c.target} - on {c.versus}',
        hypothesis=lambda c: f'the gap on {c.target} minus the gap on {c.versus}',
        figure_label=lambda c: f'{c.target} - {c.versus}', evidence=_interaction_evidence,
        plain=between_plain, between=_between_targets, gap=_interaction_gap,
        section='Between targets (secondary interactions)',
    ),
    ComparisonKind(
        'size', scope=over_k, verdict_words=larger,
        title=lambda c: f'({a_minus_b(c)}) on {c.target}: {c.between[0]} - {c.between[1]}',
        hypothesis=lambda c: (
            f'the gap on {c.target} with {c.between[0]} minus with {c.between[1]}'
        ),
        figure_label=lambda c: f'{c.target}: n = {c.num_train} - n = {c.larger}',
        evidence=_size_evidence, plain=between_plain, between=_between_sizes, at='with',
        gap=lambda c: f'{a_minus_b_gap(c)} on {c.target}',
        section='Between training sizes (secondary)',
    ),
    ComparisonKind('pair'),
    ComparisonKind('source_gap', scope=over_k_set),
    ComparisonKind(
        'source_change', scope=over_k_set, title=lambda c: f'{c.a} - {c.b}',
        verdict_text=_change_verdict, plain=_change_sentence,
        section='Source x direction: the change of the gap',
    ),
    ComparisonKind(
        'source_target', scope=_source_target_scope, title=lambda c: f'{c.a} - {c.b}',
        verdict_text=_source_target_verdict, plain=_source_target_sentence,
        between=_between_targets, gap=lambda c: f'the change of the gap with {c.a}',
        section='Source x direction x target: is the change specific to ultrasound?',
    ),
)  # fmt: skip
