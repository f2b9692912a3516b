"""Plain-language findings that claim no more than the statistics show.

Wording rules: "A beats B" only when the Holm-adjusted bootstrap p < 0.05; "equivalent within
+-margin" only from the TOST (Holm-adjusted p < 0.05); otherwise "no evidence of a
difference". Every finding states its seeds and test images and how many pre-training runs
it rests on, and says so when a configuration involved was still improving when training
stopped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from unet_jax import layout
from unet_jax.report import stats
from unet_jax.report.analysis import Analysis
from unet_jax.report.compare import Comparison
from unet_jax.report.load import Study, family


def cell_name(target: str, num_train: int) -> str:
    return f'{target}, n = {layout.size_name(num_train)}'


def p_text(p: float) -> str:
    if not np.isfinite(p):
        return '-'
    return '< 0.001' if p < 0.001 else f'{p:.2g}'


def p_is(p: float) -> str:
    """'= 0.03' or '< 0.001', to follow 'p '."""
    text = p_text(p)
    return text if text.startswith('<') else f'= {text}'


def ci_text(low: float, high: float) -> str:
    return f'95% CI [{low:+.3f}, {high:+.3f}]'


def label(name: str) -> str:
    return family(name).label


def evidence(c: Comparison) -> str:
    """Seeds, images, pre-training runs and the secondary t-test behind a comparison."""
    interval, t = c.difference.interval, c.difference.t_test
    images = (
        f'{interval.num_images} lesion test images'
        if interval.num_images > 1
        else 'per-seed means (no per-image scores)'
    )
    runs = '1 pre-training run' if c.pretrain_runs <= 1 else f'{c.pretrain_runs} pre-training runs'
    if interval.num_seeds < 2:
        return f'1 seed x {images}, {runs}; the CI covers test-image sampling only, no t-test'
    secondary = (
        f'paired t over seeds t({t.df}) = {t.t:.2f}, p {p_is(t.p)}'
        if np.isfinite(t.t)
        else 'paired t over seeds undefined (equal differences)'
    )
    return f'{interval.num_seeds} seeds x {images}, {runs}; {secondary}'


def flag_note(flagged) -> str:
    """The caution for a finding that involves runs still improving when training stopped."""
    if not flagged:
        return ''
    if len(flagged) <= 3:
        shown = ', '.join(f'{name} ({n} of {known} runs)' for name, n, known in flagged)
    else:
        shown = f'{sum(n for _, n, _ in flagged)} runs of {len(flagged)} configurations involved'
    return f' Caution, still improving when training stopped: {shown}.'


def describe(c: Comparison, a_label: str, b_label: str) -> str:
    """One sentence for a comparison: who wins (or that nothing is shown), with the numbers."""
    if c.difference is None:
        return f'{a_label} vs {b_label}: not tested (no seed has results of both).'
    return f'{verdict_text(c, a_label, b_label)} ({evidence(c)}).{flag_note(c.flagged)}'


def verdict_text(c: Comparison, a_label: str, b_label: str) -> str:
    """The claim and its numbers, without the evidence base."""
    d = c.difference
    low, high = d.interval.low, d.interval.high
    holm = f'Holm-adjusted p {p_is(c.p_holm)}'
    if c.verdict in ('a', 'b'):
        better, worse = (a_label, b_label) if c.verdict == 'a' else (b_label, a_label)
        sign = 1 if c.verdict == 'a' else -1
        return (
            f'{better} beats {worse} by {abs(d.estimate):.3f} Dice '
            f'({ci_text(*sorted((sign * low, sign * high)))}, {holm})'
        )
    if c.verdict == 'equivalent':
        return (
            f'{a_label} and {b_label} are equivalent within +-{d.margin:g} Dice (TOST, '
            f'Holm-adjusted p {p_is(c.p_tost_holm)}; difference {d.estimate:+.3f}, '
            f'{ci_text(low, high)})'
        )
    return (
        f'no evidence of a difference between {a_label} and {b_label} (difference '
        f'{d.estimate:+.3f}, {ci_text(low, high)}, {holm}; not shown equivalent within '
        f'+-{d.margin:g} either)'
    )


def comparison_sentence(c: Comparison) -> str:
    a, b = label(c.a), label(c.b)
    if c.kind == 'paths':
        a, b = f'tuning the {a}', f'tuning the {b}'
    return f'{c.scope}: {describe(c, a, b)}' if c.scope else describe(c, a, b)


def per_k_sentence(group: list[Comparison]) -> str:
    """Which direction wins at which k, from the per-k comparisons of one order/granularity."""
    first = group[0]
    ks: dict[str, list[str]] = {}
    for c in group:
        ks.setdefault(c.verdict, []).append(str(c.ks[0]))
    margin = f'{first.difference.margin:g}' if first.difference else '?'
    parts = [
        f'{label(first.a)} better at k = {", ".join(ks["a"])}' if 'a' in ks else '',
        f'{label(first.b)} better at k = {", ".join(ks["b"])}' if 'b' in ks else '',
        f'equivalent within +-{margin} at k = {", ".join(ks["equivalent"])}'
        if 'equivalent' in ks
        else '',
        f'no evidence of a difference at k = {", ".join(ks["no evidence"])}'
        if 'no evidence' in ks
        else '',
        f'not tested at k = {", ".join(ks["untested"])}' if 'untested' in ks else '',
    ]
    flagged = tuple(dict.fromkeys(f for c in group for f in c.flagged))
    return (
        f'{first.where}, {label(first.a)} vs {label(first.b)} at each k: '
        f'{"; ".join(p for p in parts if p)} (a paired bootstrap per k, Holm-adjusted with '
        f'every other headline comparison; numbers in the comparisons table).{flag_note(flagged)}'
    )


def findings(study: Study, analysis: Analysis) -> list[tuple[str, list[str]]]:
    """The conclusions per cell: comparisons, per-k summaries, normal cases, convergence."""
    out = []
    for target, num_train in study.cells:
        cell = [c for c in analysis.comparisons if (c.target, c.num_train) == (target, num_train)]
        lines, per_k = [], {}
        for c in cell:
            if c.kind == 'direction_k':
                per_k.setdefault((c.a, c.b, c.where), []).append(c)
            else:
                lines.append(_capitalised(comparison_sentence(c)))
        lines.extend(_capitalised(per_k_sentence(group)) for group in per_k.values())
        summary = analysis.summary
        summary = summary[(summary['target'] == target) & (summary['num_train'] == num_train)]
        lines.extend(text for text in (_normal_cases(summary), _convergence(summary)) if text)
        if lines:
            out.append((cell_name(target, num_train), lines))
    return out


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


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
