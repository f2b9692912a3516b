"""The study's report, made from a study workdir at any time (no JAX needed).

`write_report(workdir)` (what the study calls at its end; also `python -m unet_jax.report
WORKDIR`) reads study.json and every finished run's results.json and writes WORKDIR/report/:

  report.html      one self-contained page (figures embedded), opening with the answer
  summary.md       the same page in Markdown (same template, same data)
  conclusions.md   the answer and the conclusions only
  results.csv      the tidy table: one row per named point (target, size, seed, configuration)
  images.csv       one row per named point and test image (per-image scores)
  summary.csv      per target, size and configuration: Dice with CI, costs, times, flags
  comparisons.csv  every headline comparison with its CI, p, Holm p, TOST p, t-test
  *.png            the figures

Modules: plan (study.json, checked), load (the tidy tables), stats (bootstrap, tests,
interpolation, Pareto front, convergence), compare (the headline comparisons), analysis
(summaries, the answer), conclusions (the words), tables, figures, qualitative (the
outlined-predictions figure), render (one template: Markdown and HTML), write (all of it).
This file stays light (standard library only) so that the command line answers --help
and reports a bad workdir at once.
"""

from __future__ import annotations

from unet_jax.report.plan import ReportError

__all__ = ['DEFAULT_MARGIN', 'DEFAULT_RESAMPLES', 'DEFAULT_SEED', 'ReportError', 'write_report']

DEFAULT_MARGIN = 0.02  # Dice: the equivalence margin of the TOST
DEFAULT_RESAMPLES = 10_000  # hierarchical-bootstrap resamples
DEFAULT_SEED = 0  # of the bootstrap's generator: the same report from the same results


def write_report(
    workdir: str,
    *,
    margin: float = DEFAULT_MARGIN,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> str:
    """Writes WORKDIR/report/ from whatever has finished so far; returns report.html's path."""
    from unet_jax.report import write  # pandas, scipy, matplotlib: only when writing

    return write.write_report(workdir, margin=margin, resamples=resamples, seed=seed)
