"""A study's comparisons under the report's test and under the test it replaced, side by side.

    python benchmarks/inference_before_after.py WORKDIR [--all]

The report's test (unet_jax.report.stats.design_test: pre-training, fold, run, image and
residual components; target interactions paired by pre-training) against the one before it
(each outer fold its own crossed seeds x images table, the folds added as independent blocks;
an external set averaged over folds; target interactions as two independent tests, Welch),
both on the same run folders. Prints the primary endpoint and, with --all, every secondary
comparison: estimate, 95% CI, p (Holm-adjusted for the secondary ones; the primary by fixed
sequence), the verdict under each test and whether it changed.
"""

from __future__ import annotations

import argparse
import contextlib

import numpy as np

from unet_jax.report import analysis, calibration, stats
from unet_jax.report.load import load


def replaced_test(x, *, folds=None, margin=stats.DEFAULT_MARGIN, replicates=(), replicate=''):
    """The report's test before the design's variance model (calibration.folds_as_blocks_t)."""
    x = np.asarray(x, np.float64)
    if x.ndim == 3:  # an external set: the folds' runs averaged per image
        x, folds = x.mean(axis=1), None
    labels = np.zeros(x.shape[-1], int) if folds is None else np.asarray(folds)
    estimate, var, df = calibration.blocked_crossed_moments(x[None], labels)
    v = float(var[0])
    se = float(np.sqrt(v)) if np.isfinite(v) and v > 0 else float('nan')
    return stats.Test(float(estimate[0]), se, float(df[0]), x.shape[0], x.shape[-1], margin)


@contextlib.contextmanager
def before():
    saved = stats.design_test, stats.difference_of_gaps
    stats.design_test = replaced_test
    stats.difference_of_gaps = stats.unpaired_difference
    try:
        yield
    finally:
        stats.design_test, stats.difference_of_gaps = saved


def _key(c) -> tuple:
    return (c.target, c.num_train, c.kind, c.a, c.b, c.order, c.granularity, c.versus, c.ks,
            c.axis)  # fmt: skip


def _cell(c) -> str:
    t = c.test
    if t is None or not t.defined:
        return 'not tested'
    p = c.p_adjusted if np.isfinite(c.p_adjusted) else t.p
    return f'{t.estimate:+.3f} [{t.low:+.3f}, {t.high:+.3f}], p {p:.2g}, df {t.df:.1f}: {c.verdict}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('workdir')
    parser.add_argument('--all', action='store_true', help='every secondary comparison too')
    args = parser.parse_args()
    study = load(args.workdir)
    margin = study.plan.get('margin') or stats.Settings().margin
    after = analysis.analyse(study, stats.Settings(margin)).comparisons
    with before():
        old = analysis.analyse(study, stats.Settings(margin)).comparisons
    old_by = {_key(c): c for c in old}
    print('| role | comparison | before (folds as blocks, Welch) | after (design, paired) | '
          'verdict changed |')  # fmt: skip
    print('|---|---|---|---|---|')
    changed = 0
    for c in after:
        if c.role != 'primary' and not args.all:
            continue
        o = old_by.get(_key(c))
        what = f'{c.target} n={c.num_train} {c.kind}: {c.a} - {c.b}' + (
            f' (vs {c.versus})' if c.versus else ''
        ) + (f' {c.scope}' if c.scope else '')
        moved = o is not None and o.verdict != c.verdict
        changed += moved
        before_cell = _cell(o) if o else '-'
        print(f'| {c.role} | {what} | {before_cell} | {_cell(c)} | {"yes" if moved else ""} |')
    print(f'\n{changed} verdicts changed.')


if __name__ == '__main__':
    main()
