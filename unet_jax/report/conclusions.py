"""Plain-language findings that claim no more than the statistics show.

Wording rules: "A beats B" only when the Holm-adjusted bootstrap p < 0.05; "equivalent within
+-margin" only from the TOST (Holm-adjusted p < 0.05); otherwise "no evidence of a
difference". Every finding states its seeds and test images and how many pre-training runs
it rests on, and says so when a configuration involved was still improving when training
stopped.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from unet_jax import layout
from unet_jax.report import stats
from unet_jax.report.analysis import FULL, Analysis, Answer, Comparison
from unet_jax.report.load import Study, family


@dataclasses.dataclass(frozen=True)
class Finding:
    subject: str  # 'us, n = 16' (emphasised when rendered)
    text: str


def cell_name(target: str, num_train: int) -> str:
    return f'{target}, n = {layout.size_name(num_train)}'


def p_text(p: float) -> str:
    if not np.isfinite(p):
        return '-'
    return '< 0.001' if p < 0.001 else f'{p:.2g}'


def ci_text(low: float, high: float) -> str:
    return f'95% CI [{low:+.3f}, {high:+.3f}]'


def label(name: str) -> str:
    return family(name).label


def evidence(c: Comparison) -> str:
    """Seeds, images, the secondary t-test and the pre-training runs behind a comparison."""
    interval, t = c.difference.interval, c.difference.t_test
    images = (
        f'{interval.num_images} lesion test images'
        if interval.num_images > 1
        else 'per-seed means (no per-image scores)'
    )
    if interval.num_seeds > 1:
        seeds = f'{interval.num_seeds} seeds x {images}'
        secondary = (
            f'paired t over seeds: t = {t.t:.2f}, df = {t.df}, p = {p_text(t.p)}'
            if np.isfinite(t.t)
            else 'paired t over seeds undefined (identical differences)'
        )
    else:
        seeds = f'1 seed x {images}: the CI covers test-image sampling only'
        secondary = 'no t-test with one seed'
    runs = 'one pre-training run' if c.pretrain_runs <= 1 else f'{c.pretrain_runs} pre-training runs'
    return f'{seeds}; {secondary}; {runs}'


def flag_note(names: tuple[str, ...]) -> str:
    if not names:
        return ''
    shown = ', '.join(names) if len(names) <= 3 else f'{len(names)} of the configurations involved'
    return (
        f' Caution: {shown} still improved in the last {stats.LATE_FRACTION:.0%} of training, '
        'so their Dice may be under-estimated.'
    )


def describe(c: Comparison, a_label: str, b_label: str) -> str:
    """One sentence for a comparison: who wins (or that nothing is shown), with the numbers."""
    if c.difference is None:
        return f'{a_label} vs {b_label}: not tested (no seed has results of both).'
    d = c.difference
    low, high = d.interval.low, d.interval.high
    verdict = c.verdict
    holm = f'Holm-adjusted p = {p_text(c.p_holm)}'
    if verdict in ('a', 'b'):
        better, worse = (a_label, b_label) if verdict == 'a' else (b_label, a_label)
        sign = 1 if verdict == 'a' else -1
        text = (
            f'{better} beats {worse} by {abs(d.estimate):.3f} Dice '
            f'({ci_text(*sorted((sign * low, sign * high)))}, {holm})'
        )
    elif verdict == 'equivalent':
        text = (
            f'{a_label} and {b_label} are equivalent within +-{d.margin:g} Dice (TOST, '
            f'Holm-adjusted p = {p_text(c.p_tost_holm)}; difference {d.estimate:+.3f}, '
            f'{ci_text(low, high)})'
        )
    else:
        text = (
            f'no evidence of a difference between {a_label} and {b_label} (difference '
            f'{d.estimate:+.3f}, {ci_text(low, high)}, {holm}; not shown equivalent within '
            f'+-{d.margin:g} either)'
        )
    return f'{text}; {evidence(c)}.{flag_note(c.flagged)}'


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
    flagged = tuple(dict.fromkeys(n for c in group for n in c.flagged))
    return (
        f'{first.where}, {label(first.a)} vs {label(first.b)} at each k: '
        f'{"; ".join(p for p in parts if p)} (a paired bootstrap per k, Holm-adjusted with '
        f'every other headline comparison; numbers in the comparisons table).{flag_note(flagged)}'
    )


def findings(study: Study, analysis: Analysis) -> list[Finding]:
    """The conclusions, cell by cell: comparisons, per-k summaries, normal cases, convergence."""
    out = []
    for target, num_train in study.cells:
        subject = cell_name(target, num_train)
        cell = [c for c in analysis.comparisons if (c.target, c.num_train) == (target, num_train)]
        per_k: dict[tuple[str, str, str], list[Comparison]] = {}
        for c in cell:
            if c.kind == 'direction_k':
                per_k.setdefault((c.a, c.b, c.where), []).append(c)
            elif c.kind != 'budget':
                out.append(Finding(subject, comparison_sentence(c)))
        out.extend(Finding(subject, per_k_sentence(group)) for group in per_k.values())
        summary = analysis.summary
        summary = summary[(summary['target'] == target) & (summary['num_train'] == num_train)]
        out.extend(Finding(subject, text) for text in (_normal_cases(summary), _convergence(summary)) if text)
    return out


def _normal_cases(summary: pd.DataFrame) -> str:
    normal = summary[(summary['num_normal'] > 0) & summary['normal_fp_rate'].notna()]
    if normal.empty:
        return ''
    low, high = normal.loc[normal['normal_fp_rate'].idxmin()], normal.loc[normal['normal_fp_rate'].idxmax()]
    return (
        f'{int(normal["num_normal"].max())} normal test images (empty ground truth) are scored '
        'apart from the Dice: the share of them with any predicted foreground ranges from '
        f'{low["normal_fp_rate"]:.0%} ({low["configuration"]}) to {high["normal_fp_rate"]:.0%} '
        f'({high["configuration"]}); see the "normal FP" column.'
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


# ----------------------------------------------------------------------------- the answer


def answer_lines(answer: Answer) -> list[str]:
    """Which configuration wins in the cell, by how much and how sure; the cheapest
    configuration near full; which direction wins at equal budget."""
    if answer.best is None:
        return ['No finished runs yet.']
    lines = [_winner(answer)]
    lines.append(_cheapest(answer))
    lines.extend(
        f'Matched budget, {c.scope}: {describe(c, label(c.a), label(c.b))}'
        for c in answer.budget
        if c.difference is not None
    )
    return [line for line in lines if line]


def _winner(answer: Answer) -> str:
    text = f'Highest mean test Dice: {answer.best} ({answer.best_dice:.3f}).'
    if answer.runner_up is None or answer.margin is None:
        return text
    d = answer.margin
    ahead = d.interval.low > 0
    text += (
        f' {"Ahead of" if ahead else "Not distinguishable from"} the next best, '
        f'{answer.runner_up}: difference {d.estimate:+.3f} ({ci_text(d.interval.low, d.interval.high)}, '
        f'{d.interval.num_seeds} seeds x {d.interval.num_images} lesion test images; not corrected '
        'for picking the best).'
    )
    if np.isfinite(answer.share_best):
        text += f' It ranks first in {answer.share_best:.0%} of the bootstrap resamples.'
    return text


def _cheapest(answer: Answer) -> str:
    if answer.cheapest is None:
        return f'{FULL} has not finished: no cost comparison with it.'
    if answer.cheapest == FULL:
        return (
            'No configuration cheaper than full fine-tuning is within 1 Dice point of it '
            '(and inside its 95% CI).'
        )
    cost = answer.cheapest_cost
    parts = [f'{cost["trained_fraction"]:.1%} of its trained parameters']
    if np.isfinite(cost['train_flops']):
        parts.append(f'{cost["train_flops"]:.0%} of its training FLOPs')
    text = (
        f'Cheapest within 1 Dice point of full fine-tuning (and inside its 95% CI): '
        f'{answer.cheapest} (Dice {cost["dice"]:.3f}; {" and ".join(parts)})'
    )
    d = answer.cheapest_vs_full
    if d is not None:
        text += f'; difference to full {d.estimate:+.3f} ({ci_text(d.interval.low, d.interval.high)})'
    return text + '.'


def status_line(study: Study) -> str:
    runs = study.runs.drop_duplicates('run')
    counts = runs['status'].value_counts()
    return (
        f'{counts.get("done", 0)} of {len(runs)} runs finished, {counts.get("failed", 0)} failed, '
        f'{counts.get("pending", 0)} pending ({len(study.runs)} named points, aliases included).'
    )
