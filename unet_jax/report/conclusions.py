"""Plain-language findings that claim no more than the statistics show.

Wording rules. The primary endpoint comes first and is decided by its fixed-sequence test at
0.05. A secondary finding says "A beats B" only when its Holm-adjusted p < 0.05, "equivalent
within +-margin" only from the Holm-adjusted TOST, and otherwise "no evidence of a difference",
always with the minimum difference its n could have detected at 80% power (and, where the
unadjusted 95% CI excludes 0, that it does so only before adjustment). A finding is one line
(the claim and its numbers); its evidence (n, what varies, the test, df, p values, cautions)
is folded beneath it. Seeds only change the data order on a fixed test set: their spread
enters the test's variance but is never cited as evidence on its own.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses

import numpy as np
import pandas as pd

from unet_jax import layout
from unet_jax.report import stats
from unet_jax.report.analysis import Analysis
from unet_jax.report.compare import PRIMARY, Comparison
from unet_jax.report.contrasts import FULL
from unet_jax.report.kinds import cell_name, label
from unet_jax.report.load import Study, family


@dataclasses.dataclass(frozen=True)
class Finding:
    """One claim (a line) and its evidence (folded beneath it)."""

    claim: str
    details: str = ''


def cell_title(study: Study, target: str, num_train: int) -> str:
    """A cell as a person reads it: 'simulated breast ultrasound (us), n = 16'."""
    return cell_name(study.title(target), num_train)


def p_text(p: float) -> str:
    if not np.isfinite(p):
        return '-'
    if p < 0.001:
        return f'{p:.1e}'
    return f'{p:.2g}'


def p_is(p: float) -> str:
    """'= 0.03' or '= 1.2e-05', to follow 'p '."""
    return f'= {p_text(p)}'


def ci_text(low: float, high: float) -> str:
    return f'[{low:+.3f}, {high:+.3f}]'


def evidence(c: Comparison) -> str:
    """n, what varies, the test and its numbers behind a comparison."""
    t = c.test
    base = c.definition.evidence(c)
    p = f't = {t.t:.2f}, p {p_is(t.p)}'
    if c.role == PRIMARY:
        p += f' (primary endpoint, fixed sequence at {stats.ALPHA:g}: {c.decision})'
    else:
        p += (
            f', Holm-adjusted p {p_is(c.p_adjusted)}, TOST (+-{t.margin:g}) Holm-adjusted '
            f'p {p_is(c.p_tost_adjusted)} (secondary)'
        )
    return f'{base}; {p}; detectable at 80% power: {t.mdd:.3f} Dice.{flag_note(c.flagged)}'


def flag_note(flagged) -> str:
    """The caution for a finding that involves runs still improving when training stopped."""
    if not flagged:
        return ''
    if len(flagged) <= 3:
        shown = ', '.join(f'{name} ({n} of {known} runs)' for name, n, known in flagged)
    else:
        shown = f'{sum(n for _, n, _ in flagged)} runs of {len(flagged)} configurations involved'
    return f' Caution, still improving when training stopped: {shown}.'


def verdict_text(c: Comparison, a_label: str, b_label: str) -> str:
    """The claim and its numbers, without the evidence base."""
    t = c.test
    ci = f'95% CI {ci_text(t.low, t.high)}'
    if c.verdict in ('a', 'b'):
        better, worse = (a_label, b_label) if c.verdict == 'a' else (b_label, a_label)
        sign = 1 if c.verdict == 'a' else -1
        low, high = sorted((sign * t.low, sign * t.high))
        return f'{better} beats {worse} by {abs(t.estimate):.3f} Dice (95% CI {ci_text(low, high)})'
    if c.verdict == 'equivalent':
        return (
            f'{a_label} and {b_label} are equivalent within +-{t.margin:g} Dice (TOST; '
            f'difference {t.estimate:+.3f}, {ci})'
        )
    unadjusted = ''
    if c.role != PRIMARY and (t.low > 0 or t.high < 0):
        unadjusted = ', excluding 0 only before adjustment for the secondary comparisons'
    reached = ' (not reached: an earlier primary hypothesis was not rejected)'
    return (
        f'no evidence of a difference between {a_label} and {b_label} (difference '
        f'{t.estimate:+.3f}, {ci}{unadjusted}; detectable: {t.mdd:.3f})'
        + (reached if c.verdict == 'not reached' else '')
    )


def interaction_text(c: Comparison) -> str:
    """A difference of two gaps (c.between: two targets, or two training sizes) in words."""
    gap, at = c.definition.gap(c), c.definition.at
    first, second = c.between
    t = c.test
    ci = f'95% CI {ci_text(t.low, t.high)}'
    if c.verdict in ('a', 'b'):
        larger, other = (first, second) if c.verdict == 'a' else (second, first)
        return (
            f'{gap} is larger {at} {larger} than {at} {other} by {abs(t.estimate):.3f} Dice '
            f'(difference {first} - {second} {t.estimate:+.3f}, {ci})'
        )
    return (
        f'no evidence that {gap} differs between {first} and {second} (difference '
        f'{t.estimate:+.3f}, {ci}; detectable: {t.mdd:.3f})'
        + (' (not reached)' if c.verdict == 'not reached' else '')
    )


def finding(c: Comparison) -> Finding:
    """One line for a comparison, its evidence beneath."""
    a, b = c.definition.named(c.a), c.definition.named(c.b)
    if c.test is None or not c.test.defined:
        return Finding(f'{c.scope + ": " if c.scope else ""}{a} vs {b}: not tested (no seed has '
                       'results of both, or no spread to test).')  # fmt: skip
    text = interaction_text(c) if c.between else verdict_text(c, a, b)
    where = f'{c.scope}: ' if c.scope else ''
    return Finding(_capitalised(f'{where}{text}.'), evidence(c))


def primary_sentence(analysis: Analysis) -> str:
    """The answer to the primary endpoint in one sentence (the report's first line)."""
    comparisons = analysis.comparisons
    plan = comparisons.primary_plan
    if plan is None or not comparisons.primary:
        return (
            'No primary endpoint could be tested: it needs the shallow->deep and deep->shallow '
            'families on at least one ultrasound target (study.primary names others).'
        )
    parts = []
    for c in comparisons.primary:
        what = c.definition.hypothesis(c)
        if c.test is None or not c.test.defined:
            parts.append(f'{what}: not tested')
            continue
        t = c.test
        numbers = f'{t.estimate:+.3f} Dice, 95% CI {ci_text(t.low, t.high)}'
        better = dict(zip('ab', c.definition.verdict_words(c)))
        verdict = {
            'a': f'is positive ({better["a"]})', 'b': f'is negative ({better["b"]})',
            'no evidence': 'shows no evidence of a difference',
            'not reached': 'is not tested (fixed sequence stopped)', 'untested': 'is not tested',
        }[c.verdict]  # fmt: skip
        parts.append(f'{what} {verdict} ({numbers}, p {p_is(t.p)})')
    return (
        f'Primary endpoint ({plan.describe()}; fixed sequence at {stats.ALPHA:g}): '
        + '; '.join(parts)
        + '.'
    )


def plain_answer(analysis: Analysis, title: Callable[[str], str] = str) -> str:
    """The primary endpoint's answer in plain words, for the report's first line and the end
    of a study's console (its statistics are in `primary_sentence`, folded beneath); `title`
    names a target as a person reads it (`Study.title`)."""
    comparisons = analysis.comparisons
    if comparisons.primary_plan is None or not comparisons.primary:
        return primary_sentence(analysis)
    return ' '.join(_plain(c, title) for c in comparisons.primary)


def _plain(c: Comparison, title: Callable[[str], str]) -> str:
    """One primary hypothesis's answer in words: which is better, by how much, how sure."""
    what = _capitalised(c.definition.hypothesis(c))
    if c.test is None or not c.test.defined:
        return f'{what} could not be tested.'
    if c.verdict == 'not reached':
        return (
            f'{what} was not tested, as registered (an earlier primary hypothesis was not '
            'confirmed).'
        )
    return c.definition.plain(c, title)


def findings(study: Study, analysis: Analysis) -> list[tuple[str, list[Finding]]]:
    """The conclusions: the primary endpoint, then per cell (secondary), then the differences
    of gaps (interactions), a section per kind."""
    out = []
    primary = [
        dataclasses.replace(f, claim=f'{cell_title(study, c.target, c.num_train)}: {f.claim}')
        for c, f in ((c, finding(c)) for c in analysis.comparisons.primary)
    ]
    if primary:
        out.append((f'Primary endpoint ({study.registration_note})', primary))
    secondary = analysis.comparisons.secondary
    for target, num_train in study.cells:
        cell = [
            c for c in secondary if (c.target, c.num_train) == (target, num_train) and not c.between
        ]
        lines, per_k = [], {}
        for c in cell:
            if c.definition.by_k:
                per_k.setdefault((c.a, c.b, c.where), []).append(c)
            else:
                lines.append(finding(c))
        lines.extend(per_k_finding(group) for group in per_k.values())
        summary = analysis.summary
        summary = summary[(summary['target'] == target) & (summary['num_train'] == num_train)]
        lines.extend(Finding(t) for t in (_normal_cases(summary), _convergence(summary)) if t)
        lines.extend(
            Finding(f'Not compared: {s.what}: {s.why}.')
            for s in analysis.comparisons.skipped
            if (s.target, s.num_train) == (target, num_train)
        )
        if lines:
            out.append((f'{cell_title(study, target, num_train)} (secondary)', lines))
    between: dict[str, list[Finding]] = {}
    for c in secondary:
        if c.between:
            between.setdefault(c.definition.section, []).append(finding(c))
    return out + list(between.items())


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def per_k_finding(group: list[Comparison]) -> Finding:
    """Which direction wins at which k, from the per-k comparisons of one order/granularity."""
    first = group[0]
    ks: dict[str, list[str]] = {}
    for c in group:
        ks.setdefault(c.verdict, []).append(str(c.ks[0]))
    margin = f'{first.test.margin:g}' if first.test else '?'
    parts = [
        f'{label(first.a)} better at k = {", ".join(ks["a"])}' if 'a' in ks else '',
        f'{label(first.b)} better at k = {", ".join(ks["b"])}' if 'b' in ks else '',
        f'equivalent within +-{margin} at k = {", ".join(ks["equivalent"])}'
        if 'equivalent' in ks
        else '',
        f'no evidence of a difference at k = {", ".join(ks["no evidence"])} '
        f'({_detectable([c for c in group if c.verdict == "no evidence"])})'
        if 'no evidence' in ks
        else '',
        f'not tested at k = {", ".join(ks["untested"])}' if 'untested' in ks else '',
    ]
    flagged = tuple(dict.fromkeys(f for c in group for f in c.flagged))
    numbers = '; '.join(
        f'k = {c.ks[0]}: {c.test.estimate:+.3f} {ci_text(c.test.low, c.test.high)}, '
        f'Holm p {p_is(c.p_adjusted)}, detectable {c.test.mdd:.3f}'
        for c in group
        if c.test is not None and c.test.defined
    )
    return Finding(
        f'{_capitalised(first.where)}, {label(first.a)} vs {label(first.b)} at each k: '
        f'{"; ".join(p for p in parts if p)}.',
        f'Crossed t-test per k, Holm-adjusted with every other secondary comparison: {numbers}.'
        f'{flag_note(flagged)}',
    )


def _detectable(group: list[Comparison]) -> str:
    """'detectable: 0.031' or 'detectable: 0.028-0.054' (80% power) over comparisons."""
    mdd = [c.test.mdd for c in group if c.test is not None and c.test.defined]
    if not mdd:
        return 'detectable: -'
    low, high = min(mdd), max(mdd)
    return f'detectable: {low:.3f}' if high - low < 5e-4 else f'detectable: {low:.3f}-{high:.3f}'


def _normal_cases(summary: pd.DataFrame) -> str:
    normal = summary[(summary['num_normal'] > 0) & summary['normal_fp_rate'].notna()]
    normal = normal[normal['same_run_as'] == '']
    if normal.empty:
        return ''
    rates = normal.set_index('configuration')['normal_fp_rate']
    spread = (
        f'is {rates.iloc[0]:.0%} for every configuration'
        if rates.max() - rates.min() < 1e-9
        else f'ranges from {rates.min():.0%} ({rates.idxmin()}) to {rates.max():.0%} '
        f'({rates.idxmax()})'
    )
    return (
        f'{int(normal["num_normal"].max())} normal test images (empty ground truth) are scored '
        f'apart from the Dice: the share of them with any predicted foreground {spread} (mean '
        'over seeds; the "normal FP" column has every configuration).'
    )


def _convergence(summary: pd.DataFrame) -> str:
    flagged = summary[(summary['still_improving'] > 0) & (summary['same_run_as'] == '')]
    if flagged.empty:
        return ''
    names = ', '.join(
        f'{r.configuration} ({r.still_improving} of {r.convergence_known})'
        for r in flagged.itertuples()
    )
    return (
        f'Still improving in the last {stats.LATE_FRACTION:.0%} of training (best validation '
        f'Dice there above the best before by more than {stats.CONVERGENCE_TOLERANCE}): '
        f'{names}. Conclusions involving them may change with longer training.'
    )


def status_line(study: Study) -> str:
    runs = study.runs.drop_duplicates('run')
    counts = runs['status'].value_counts()
    return (
        f'{counts.get("done", 0)} of {len(runs)} runs finished, {counts.get("failed", 0)} failed, '
        f'{counts.get("pending", 0)} pending ({len(study.runs)} named points, aliases included).'
    )


# ----------------------------------------------------------------------------- in plain words


def readable(frame: pd.DataFrame, name: str) -> str:
    """A configuration as a person reads it: 'the first 6 blocks (shallow->deep)', 'the last 3
    units (deep->shallow, level order)', or the family's label; `frame` is any table with a row
    per configuration and its family, order, granularity and k (the study's runs, the
    analysis's summary). Tables drop the article: `readable(...).removeprefix('the ')`."""
    rows = frame[frame['configuration'] == name]
    if not len(rows):
        return name
    row = rows.iloc[0]
    k, order, granularity = row.get('k'), row.get('order'), row.get('granularity')
    of = family(row['family'])
    if of.is_direction and isinstance(k, (int, float, np.integer)) and k == k and k > 0:
        unit = granularity if granularity in ('block', 'unit') else 'block'
        where = '' if order in ('', 'forward') or not isinstance(order, str) else f', {order} order'
        count = f'{int(k)} {unit}' + ('s' if int(k) != 1 else '')
        which = f'the {of.selector} ' if of.selector in ('first', 'last') else ''
        return f'{which}{count} ({of.label}{where})'
    return of.label if name == row['family'] else name


def named(frame: pd.DataFrame, name: str) -> str:
    """`readable` for a table's cell: 'first 6 blocks (shallow->deep)'."""
    return readable(frame, name).removeprefix('the ')


def recommendations(study: Study, analysis: Analysis) -> list[str]:
    """Per cell, what to tune, chosen on validation: the cheapest configuration within 1 Dice
    point of full fine-tuning (else the best on validation), with its test Dice, its test
    difference from full and its share of full's trained parameters and training FLOPs."""
    out = []
    for answer in analysis.answers:
        where = f'{study.title(answer.target)}, {layout.size_name(answer.num_train)} images'
        if answer.cheapest is not None and answer.cheapest != FULL:
            c, d = answer.cheapest_cost, answer.cheapest_vs_full
            versus = (
                f'{d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}] against full fine-tuning'
                if d is not None and d.defined
                else 'not tested against full fine-tuning'
            )
            out.append(
                f'{where}: tune {readable(study.runs, answer.cheapest)}, the cheapest '
                f'configuration within 1 Dice point of full fine-tuning on validation: test Dice '
                f'{c["dice"]:.3f}, {versus} on test, with {c["trained_fraction"]:.0%} of the '
                f'trained parameters and {c["train_flops"]:.0%} of the training FLOPs.'
            )
        elif answer.best is not None:
            test = answer.best_test
            score = (
                f'test Dice {test.estimate:.3f} [{test.low:.3f}, {test.high:.3f}]'
                if test is not None and test.defined
                else 'test Dice not tested'
            )
            cheaper = '; no cheaper configuration came within 1 Dice point of it on validation'
            out.append(
                f'{where}: use {readable(study.runs, answer.best)}, the best on validation '
                f'({score})'
                + (cheaper if answer.best == FULL else '')
                + '.'
            )
    return out
