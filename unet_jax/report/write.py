"""write_report: the report folder from a study workdir (see the package doc)."""

from __future__ import annotations

import os

import pandas as pd

from unet_jax import layout
from unet_jax.report import (
    analysis,
    answer_tables,
    auto,
    budget,
    calibration,
    conclusions,
    dice_figures,
    endpoint_figure,
    qualitative,
    registration,
    render,
    stats,
    tables,
    training_figures,
)
from unet_jax.report.load import Study, load


def methods(settings: stats.Settings) -> list[str]:
    """How to read the numbers (the same words on every page)."""
    return [
        'Test Dice is the mean per-image Dice over lesion test images (non-empty ground truth); '
        'normal images are scored apart (share with any predicted foreground).',
        'Every choice (best configuration, next best, cheapest within 1 point of full, an '
        "automatic pick's k) is made on mean validation Dice and then reported on test; no "
        'line of this report picks among test means.',
        'Comparisons pair two configurations by pre-training (or seed), outer fold and test '
        'image. Test: a t-test whose variance follows the study\'s design, a random-effects '
        'model of the paired differences with a pre-training effect shared by every fold, a '
        'fold effect shared by every pre-training (its split chooses every run\'s stopping '
        'step), the run (pre-training x fold), the image (nested in the fold that tests it; '
        'crossed with every run for an external set) and the residual: each component\'s '
        'variance from the balanced ANOVA mean squares (method of moments, truncated at 0), '
        'the variance of the mean their sum over their numbers of levels, Satterthwaite '
        'degrees of freedom. With every component present this is the crossed analysis of the '
        'pre-training x fold table of run means. What varies: test images, folds and '
        'pre-trainings (seeds where the study pre-trained once: then the answer is about that '
        'pre-trained model). The primary comparisons list their estimated components.',
        'The primary endpoint is declared in the config (study.primary) and registered when the '
        'study starts (registration.json: the time, the runs finished by then and every '
        'amendment, stated at the top of this report); it is tested first, by fixed sequence '
        'at 0.05 (each hypothesis while every earlier one was rejected), apart from the rest. '
        'Every other comparison is secondary: their p-values are Holm-adjusted together '
        '(family-wise 0.05), and so are their equivalence tests '
        f'(TOST at +-{settings.margin:g} Dice, study.margin). 95% CIs are not adjusted. '
        '"No evidence of a difference" gives the difference that its n would have detected '
        'with 80% power at 0.05; it is never a claim that the two are alike.',
        'Interactions (does a gap differ between targets?): the gap on one target minus the '
        'gap on another. Both targets fine-tune from the same pre-trainings, so the difference '
        'is paired by pre-training: its pre-training component comes from the pre-trainings\' '
        'differences of the two gaps; folds and images are each target\'s own.',
        f'A run that trained to its step cap counts as still improving when its best '
        f'validation Dice in the last {stats.LATE_FRACTION:.0%} of its steps exceeds its best '
        f'before by more than {stats.CONVERGENCE_TOLERANCE} Dice; a run stopped early on a '
        'validation plateau (config.early_stopping) never does.',
        "Over a common cost range: each direction's Dice is interpolated linearly in log(cost) "
        'between its k points, at 16 costs evenly spaced in log over the range [a, b] both '
        'directions cover, and the difference averaged over those costs is tested like any '
        'comparison; only where that range is at least 2x wide and no curve is interpolated '
        'across more than a decade without a measured point.',
    ]


CALIBRATION_SIMULATIONS = 4000
CURVE_FIGURE = 'dice_vs_units.png'  # Dice against k: shown in the first screen
ANSWER_FILE = 'answer.txt'  # the primary endpoint's sentence: what a study prints at its end


def components_line(result: analysis.Analysis) -> str:
    """The first primary gap's variance components and df, in one line for the first screen."""
    tested = [c for c in result.comparisons.primary if c.test is not None and c.test.defined]
    if not tested or not tested[0].test.components:
        return ''
    c, t = tested[0], tested[0].test
    return (
        f'What the primary test on {c.target} rests on: {t.base} (replicates'
        f'{" x folds" if t.num_folds > 1 else ""} x test images), '
        f'variance components (SD of the per-image gap) {t.component_sds()}; '
        f'{t.df:.1f} degrees of freedom.'
    )


def calibration_note(result: analysis.Analysis) -> str:
    """The test's error rates simulated at this study's own size: the first primary gap's
    pre-trainings, folds and images, variance components and skewness
    (unet_jax.report.calibration)."""
    tested = [
        c.test for c in result.comparisons.primary
        if c.test is not None and c.test.layout == 'nested' and c.test.defined
        and c.test.num_images >= 3
    ]  # fmt: skip
    if not tested:
        return ''
    design = calibration.design_of(tested[0], 'the first primary comparison')
    rates = calibration.error_rates(
        design, calibration.design_t, name='design t',
        simulations=CALIBRATION_SIMULATIONS, effect=0.0,
    )  # fmt: skip
    return (
        f'Error rate of this test at this study\'s size, simulated {rates.simulations} times '
        f'with {calibration.describe(design)} (its estimated components): false-positive rate '
        f'{rates.false_positive_05:.3f} at 0.05 and {rates.false_positive_002:.4f} at 0.002, '
        f'95% CI coverage {rates.coverage:.3f}. (tests/test_calibration.py checks the '
        'outer-fold design with pre-training and fold components of several sizes: the test '
        'holds 0.05 in every one, is conservative where a component is absent, and with 3 '
        'pre-trainings carrying most of the variance rejects at 0.002 about 3x too often.)'
    )


def write_report(workdir: str, *, margin: float | None = None) -> str:
    """Writes WORKDIR/report/ from whatever has finished so far; returns report.html's path.

    margin: the TOST margin (default: the study's `margin`, else 0.02)."""
    study = load(workdir)
    if margin is None:
        margin = study.plan.get('margin') or stats.Settings().margin
    result = analysis.analyse(study, stats.Settings(margin))
    folder = os.path.join(workdir, layout.REPORT_DIR)
    os.makedirs(folder, exist_ok=True)
    _write_csvs(study, result, folder)
    made = _figures(study, result, folder)
    primary_figure = endpoint_figure.primary_endpoint(study, result, folder)
    curve = next((f for f in made if f is not None and f.file == CURVE_FIGURE), None)
    data = dict(
        recommendations=conclusions.recommendations(study, result),
        curve_figure=curve,
        status=conclusions.status_line(study),
        problems=_problems(study),
        primary=conclusions.primary_sentence(result),
        answer=conclusions.plain_answer(result, study.title),
        statistics=[
            conclusions.primary_sentence(result),
            *registration.lines(study.registration),
            *filter(None, [components_line(result)]),
        ],
        primary_figure=primary_figure,
        answer_tables=[
            t
            for t in (
                answer_tables.primary_table(result),
                answer_tables.answer_table(study, result),
                answer_tables.budget_table(result),
            )
            if t is not None
        ],
        findings=conclusions.findings(study, result)
        + auto.findings(study, result, auto.auto_rows(result))
        + budget.findings(result),
        methods=[*methods(result.settings), *filter(None, [calibration_note(result)])],
        figures=[f for f in made if f is not None and f is not curve],
        figure_notes=_figure_notes(study, made),
        tables=[
            *tables.dice_tables(study, result),
            *tables.comparison_tables(study, result),
            *auto.auto_tables(study, result),
            *tables.time_tables(study, result),
            *filter(None, [tables.pretraining_table(study)]),
        ],
    )
    for name, fmt, full in (
        ('summary.md', render.Markdown(), True),
        ('conclusions.md', render.Markdown(), False),
        ('report.html', render.Html(folder), True),
    ):
        with open(os.path.join(folder, name), 'w') as f:
            f.write(render.render(fmt, full=full, **data))
    with open(os.path.join(folder, ANSWER_FILE), 'w') as f:
        f.write(data['answer'] + '\n')
    return os.path.join(folder, 'report.html')


def _figures(study: Study, result: analysis.Analysis, folder: str) -> list:
    made = [
        dice_figures.dice_vs_units(study, result, folder),
        dice_figures.dice_vs_cost(study, result, folder, 'trained_fraction'),
        dice_figures.dice_vs_cost(study, result, folder, 'train_flops'),
        dice_figures.references(study, result, folder),
        dice_figures.dice_vs_size(study, result, folder),
        training_figures.validation_curves(study, result, folder),
        training_figures.representation_change(study, result, folder),
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
    rows = [comparison_row(c) for c in result.comparisons]
    pd.DataFrame(rows).to_csv(os.path.join(folder, 'comparisons.csv'), index=False)


def comparison_row(c) -> dict:
    """A compare.Comparison as a row of comparisons.csv (and of the sources' sources.csv)."""
    row = dict(target=c.target, num_train=c.num_train, kind=c.kind, a=c.a, b=c.b)
    row.update(versus=c.versus, role=c.role, scope=c.scope, verdict=c.verdict)
    row.update(p_adjusted=c.p_adjusted, p_tost_adjusted=c.p_tost_adjusted)
    row['decision'] = c.decision
    if c.test is not None:
        t = c.test
        row.update(estimate=t.estimate, se=t.se, df=t.df, low=t.low, high=t.high)
        row.update(num_replicates=t.num_replicates, num_images=t.num_images)
        row.update(p=t.p, p_tost=t.p_tost, margin=t.margin, mdd_80=t.mdd)
    row['still_improving'] = ' '.join(f'{name}:{n}/{known}' for name, n, known in c.flagged)
    return row
