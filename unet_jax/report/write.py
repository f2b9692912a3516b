"""write_report: the report folder from a study workdir (see the package doc)."""

from __future__ import annotations

import dataclasses
import os

import pandas as pd

from unet_jax import layout
from unet_jax.report import (
    analysis,
    auto,
    conclusions,
    figures,
    qualitative,
    render,
    stats,
    tables,
)
from unet_jax.report.load import Study, load


def methods(settings: stats.Settings) -> list[str]:
    """How to read the numbers (the same words on every page)."""
    return [
        'Test Dice is the mean per-image Dice over lesion test images (non-empty ground truth); '
        'normal images are scored apart (share with any predicted foreground).',
        'Comparisons pair two configurations by seed and test image. The 95% CI (per '
        'comparison, not adjusted) is a '
        'hierarchical bootstrap: seeds and test images (shared by all seeds) are resampled '
        f'together, {settings.resamples} times with generator seed {settings.seed}; the '
        'pre-training is not resampled. p inverts the bootstrap interval; all headline '
        'comparisons of this report are Holm-adjusted together (family-wise 0.05). '
        f'Equivalence is claimed only from a TOST at +-{settings.margin:g} Dice (Holm-adjusted). '
        'The paired t-test over per-seed means is shown as a secondary figure with its df. '
        'The best configuration and its margin over the next best are not corrected for '
        'picking the best.',
        f'A run counts as still improving when its best validation Dice in the last '
        f'{stats.LATE_FRACTION:.0%} of its steps exceeds its best before by more than '
        f'{stats.CONVERGENCE_TOLERANCE} Dice.',
        "Matched budget: each direction's Dice is interpolated linearly in log(cost) between "
        'its k points, at 16 costs evenly spaced in log over the range both directions cover; '
        'the difference averaged over those costs is bootstrapped like any comparison.',
    ]


def write_report(workdir: str, *, margin: float, resamples: int, seed: int) -> str:
    """Writes WORKDIR/report/ from whatever has finished so far; returns report.html's path."""
    study = load(workdir)
    result = analysis.analyse(study, stats.Settings(margin, resamples, seed))
    folder = os.path.join(workdir, layout.REPORT_DIR)
    os.makedirs(folder, exist_ok=True)
    _write_csvs(study, result, folder)
    made = _figures(study, result, folder)
    data = dict(
        status=conclusions.status_line(study),
        problems=_problems(study),
        answer_tables=[
            t for t in (tables.answer_table(result), tables.budget_table(result)) if t is not None
        ],
        findings=conclusions.findings(study, result) + auto.findings(auto.auto_rows(result)),
        methods=methods(result.settings),
        figures=[f for f in made if f is not None],
        figure_notes=_figure_notes(study, made),
        tables=[
            *tables.dice_tables(study, result),
            *tables.comparison_tables(study, result),
            *auto.auto_tables(study, result),
            *tables.time_tables(study, result),
        ],
    )
    for name, fmt, full in (
        ('summary.md', render.Markdown(), True),
        ('conclusions.md', render.Markdown(), False),
        ('report.html', render.Html(folder), True),
    ):
        with open(os.path.join(folder, name), 'w') as f:
            f.write(render.render(fmt, full=full, **data))
    return os.path.join(folder, 'report.html')


def _figures(study: Study, result: analysis.Analysis, folder: str) -> list:
    made = [
        figures.dice_vs_units(study, result, folder),
        figures.dice_vs_cost(study, result, folder, 'trained_fraction'),
        figures.dice_vs_cost(study, result, folder, 'train_flops'),
        figures.references(study, result, folder),
        figures.dice_vs_size(study, result, folder),
        figures.validation_curves(study, result, folder),
        figures.representation_change(study, result, folder),
    ]
    made += [qualitative.qualitative(study, result, folder, t) for t in study.targets]
    return made


def _figure_notes(study: Study, made: list) -> list[str]:
    notes = []
    if len(study.sizes) < 2:
        notes.append('One training size: no figure of Dice against the training-set size.')
    if made[-len(study.targets) :].count(None):
        notes.append(
            'No qualitative figure for a target whose runs kept no predictions.npz for every '
            'reference configuration of one seed.'
        )
    return notes


def _problems(study: Study) -> list[str]:
    runs = study.runs
    failed = runs[(runs['status'] == 'failed') & ~runs['alias']]
    out = [
        f'{r["name"]}: failed (see {os.path.join(r["dir"], layout.ERROR_FILE)})'
        for _, r in failed.iterrows()
    ]
    return out + study.problems


def _write_csvs(study: Study, result: analysis.Analysis, folder: str) -> None:
    study.runs.to_csv(os.path.join(folder, 'results.csv'), index=False)
    study.images.to_csv(os.path.join(folder, 'images.csv'), index=False)
    result.summary.to_csv(os.path.join(folder, 'summary.csv'), index=False)
    rows = []
    for c in result.comparisons:
        row = dict(target=c.target, num_train=c.num_train, kind=c.kind, a=c.a, b=c.b)
        row.update(scope=c.scope, verdict=c.verdict, p_holm=c.p_holm, p_tost_holm=c.p_tost_holm)
        if c.difference is not None:
            d = c.difference
            row.update(dataclasses.asdict(d.interval))
            row.update(p=d.p, p_tost=d.p_tost, margin=d.margin, t=d.t_test.t, df=d.t_test.df)
            row['p_t'] = d.t_test.p
        row['still_improving'] = ' '.join(f'{name}:{n}/{known}' for name, n, known in c.flagged)
        rows.append(row)
    pd.DataFrame(rows).to_csv(os.path.join(folder, 'comparisons.csv'), index=False)
