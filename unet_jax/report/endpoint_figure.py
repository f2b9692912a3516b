"""The primary endpoint's figure: a forest plot of each gap and interaction with its 95% CI."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the Agg backend)

from unet_jax.report.analysis import Analysis
from unet_jax.report.figures import Figure, size_label, write_png  # noqa: E402
from unet_jax.report.load import Study, family  # noqa: E402


def primary_endpoint(study: Study, analysis: Analysis, folder: str) -> Figure | None:
    """The primary endpoint as a forest plot: each gap and interaction with its 95% CI."""
    rows = [c for c in analysis.comparisons.primary if c.test is not None and c.test.defined]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(rows) + 1.4))
    names = []
    for y, c in enumerate(reversed(rows)):
        t = c.test
        color = 'tab:blue' if c.decision == 'rejected' else '0.45'
        ax.errorbar(t.estimate, y, xerr=[[t.estimate - t.low], [t.high - t.estimate]], fmt='o',
                    color=color, capsize=4)  # fmt: skip
        names.append(c.definition.figure_label(c))
        ax.annotate(f'{t.estimate:+.3f}  p = {t.p:.2g}  ({c.decision})', (t.high, y),
                    xytext=(6, 0), textcoords='offset points', va='center', fontsize=8)  # fmt: skip
    ax.axvline(0, color='k', lw=0.8)
    ax.set_yticks(range(len(rows)), names)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    low = min(c.test.low for c in rows)
    high = max(c.test.high for c in rows)
    span = max(high - low, 1e-3)
    ax.set_xlim(min(low, 0) - 0.05 * span, max(high, 0) + 0.55 * span)
    plan = analysis.comparisons.primary_plan
    gap = f'{family(plan.a).label} - {family(plan.b).label}'
    ax.set_xlabel(f'{gap}, test Dice (averaged over k), 95% CI')
    ax.set_title(f'Primary endpoint, {size_label(plan.num_train)}', fontsize=10)
    path = os.path.join(folder, 'primary_endpoint.png')
    write_png(fig, path)
    return Figure(
        os.path.basename(path),
        f'The primary endpoint: the {gap} gap per target (paired by pre-training, fold and '
        'image; the design\'s t-test) and its difference between targets (interaction, paired '
        'by pre-training), each with its '
        '95% CI; blue: rejected in the fixed sequence at 0.05, grey: not rejected or not '
        'reached.',
        tuple(names),
    )
