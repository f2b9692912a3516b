"""The study's report, made from a study workdir at any time (no JAX needed).

`write_report(workdir)` (what the study calls at its end; also `python -m unet_jax.report
WORKDIR`) reads study.json and every finished run's results.json and writes WORKDIR/report/:

  report.html      one self-contained page (figures embedded), opening with the answer
  summary.md       the same page in Markdown (same template, same data)
  conclusions.md   the answer and the conclusions only
  results.csv      the tidy table: one row per named point (target, size, seed, configuration)
  images.csv       one row per named point and test image (per-image scores)
  summary.csv      per target, size and configuration: Dice with CI, costs, times, flags
  comparisons.csv  every comparison (primary and secondary) with its CI, df, p, adjusted p,
                   TOST p and minimum detectable difference
  *.png            the figures

Modules: plan (study.json, checked), load (the tidy tables), variance (the design's random-
effects variance of a mean), stats (the design's t-test, Holm, fixed sequence, TOST,
interpolation, Pareto front, convergence), calibration (its error rates, simulated), power (a
study's power before it runs), registration (the record's lines), scores (the paired score
matrices), contrasts (what each kind of comparison averages), kinds (the kinds of comparison,
registered in one place: what each compares and how it reads), endpoint (the primary
endpoint as declared), compare (the primary endpoint and the secondary comparisons), analysis
(summaries, the answer chosen on validation), conclusions (the words), auto (the automatic
choice against the sweep), tables (the tables per target and size), answer_tables (the tables
the page opens with), figures (what the figures share: colours, panels, saving), dice_figures
(Dice against k, cost and size; the references), training_figures (validation curves, which
layers changed), endpoint_figure (the primary endpoint's forest plot), qualitative (the
outlined-predictions figure), render (a template, report.j2 or sources.j2: Markdown and HTML),
write (all of it); sources (pre-training sources compared: its kinds made by sources_compare,
its page by sources_page and sources.j2).
This file stays light (standard library only) so that the command line answers --help
and reports a bad workdir at once.
"""

from __future__ import annotations

from unet_jax.report.plan import DEFAULT_MARGIN, ReportError

__all__ = ['DEFAULT_MARGIN', 'ReportError', 'write_report']


def write_report(workdir: str, *, margin: float | None = None) -> str:
    """Writes WORKDIR/report/ from whatever has finished so far; returns report.html's path.

    margin: the TOST margin in Dice (default: the study's study.margin, else DEFAULT_MARGIN)."""
    from unet_jax.report import write  # pandas, scipy, matplotlib: only when writing

    return write.write_report(workdir, margin=margin)
