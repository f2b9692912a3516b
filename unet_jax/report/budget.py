"""Layers or parameter-efficient methods, at what cost: per target and size, the configuration
chosen on validation among those that train at most a given share of the parameters (1% and
10%: PARAMETER_BUDGETS), its test Dice with a 95% CI, and its difference from `full`.

Every configuration that trains counts (layer choices, parameter-efficient families, automatic
picks, scratch); `pretrained` trains nothing and is left out. The trained share is the run's
own (results.json `params.trained_fraction`: adapters count, the folded U-Net is the total),
averaged over seeds.
"""

from __future__ import annotations

import pandas as pd

from unet_jax.report.analysis import Analysis
from unet_jax.report.compare import compare, mean_test
from unet_jax.report.conclusions import Finding, ci_text, p_is
from unet_jax.report.contrasts import FULL
from unet_jax.report.kinds import cell_name, label

PARAMETER_BUDGETS = (0.01, 0.10)


def budget_pick(cell: pd.DataFrame, budget: float) -> pd.Series | None:
    """The row of the configuration with the best mean validation Dice among those of `cell`
    (the analysis summary of one target and size) that train at most `budget` of the
    parameters; None when none does."""
    trains = cell[(cell['family'] != 'pretrained') & cell['val_dice_mean'].notna()]
    within = trains[trains['trained_fraction'] <= budget * (1 + 1e-9)]
    if within.empty:
        return None
    return within.loc[within['val_dice_mean'].idxmax()]


def findings(analysis: Analysis) -> list:
    """One finding per cell and budget (a report subject of Findings)."""
    summary, scores, settings = analysis.summary, analysis.scores, analysis.settings
    out = []
    if summary.empty or 'trained_fraction' not in summary:
        return out
    for (target, num_train), cell in summary.groupby(['target', 'num_train'], sort=False):
        for budget in PARAMETER_BUDGETS:
            pick = budget_pick(cell, budget)
            if pick is None:
                continue
            name = pick['configuration']
            own = mean_test(scores, target, num_train, name, settings)
            versus = None if name == FULL else compare(
                scores, target, num_train, name, FULL, settings
            )
            if own is None or not own.defined:
                continue
            claim = (
                f'{cell_name(target, num_train)}: at most {budget:.0%} of the parameters, '
                f'{name} ({label(pick["family"])}, {pick["trained_fraction"]:.2%} trained, '
                f'val Dice {pick["val_dice_mean"]:.3f}) is chosen on validation: test Dice '
                f'{own.estimate:.3f} {ci_text(own.low, own.high)}'
            )
            details = (
                f'n = {own.base} (replicates x test images); its CI is the design\'s test of '
                'the mean'
            )
            if versus is not None and versus.defined:
                claim += f', {versus.estimate:+.3f} vs full {ci_text(versus.low, versus.high)}'
                details += (
                    f'; vs full: t = {versus.t:.2f}, df = {versus.df:.1f}, p {p_is(versus.p)} '
                    f'(unadjusted), detectable {versus.mdd:.3f}'
                )
            out.append(Finding(claim + '.', details + '.'))
    return [('At a parameter budget (chosen on validation)', out)] if out else []
