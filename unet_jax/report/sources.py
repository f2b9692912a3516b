"""Does the pre-training source change the shallow-vs-deep gap? Several studies compared.

  python -m unet_jax.main --config=configs/layerwise.py:quick,sources=natural+natural_speckle \
      --workdir=W          # one study per source in W/sources/NAME, then W/report/sources.md
  python -m unet_jax.report.sources W                    # re-make W/report/sources.md
  python -m unet_jax.report.sources RUNS_A RUNS_B ...    # studies run apart, one per source

The page is made as the report is: the comparisons are compare.Comparison of the kinds
source_gap, source_change and source_target in kinds.KINDS (sources_compare.py says what each
compares and how it is tested), what the page holds is sources_page.py, and render.py renders
sources.j2 to sources.md and a self-contained sources.html beside it; sources.csv has every
comparison with its CI, df, p, adjusted p and TOST p (the columns of comparisons.csv, with the
source and the set of k), sources_gap.png the gap per source.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import json
import os

import pandas as pd

from unet_jax import layout
from unet_jax.report import render, sources_page, stats, write
from unet_jax.report.load import load
from unet_jax.report.sources_compare import compare_studies

TEMPLATE = 'sources.j2'
TITLE = 'Pre-training sources compared'


def source_name(workdir: str) -> str:
    """The pre-training set a study used (its pre-training's config), else its folder."""
    path = os.path.join(workdir, layout.PRETRAIN_DIR, 'config.json')
    if os.path.exists(path):
        with open(path) as f:
            return str(json.load(f).get('data', {}).get('name', os.path.basename(workdir)))
    return os.path.basename(os.path.normpath(workdir))


def write_sources(
    workdirs: Sequence[str],
    out: str,
    *,
    names: Sequence[str] | None = None,
    settings: stats.Settings | None = None,
) -> str:
    """Writes the comparison of the studies in `workdirs` (one per source, the first the
    baseline) to `out` (Markdown), with the same page as HTML and its comparisons as CSV
    beside it (`out` with .html and .csv), and the figure; returns `out`."""
    if len(workdirs) < 2:
        raise ValueError(f'report.sources: needs two or more study workdirs, got {list(workdirs)}.')
    studies = [load(w) for w in workdirs]
    names = list(names or [source_name(w) for w in workdirs])
    found = compare_studies(studies, names, settings)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    figure = sources_page.gap_figure(found, os.path.join(folder, sources_page.FIGURE_FILE))
    data = sources_page.page(studies, names, list(workdirs), found, figure)
    stem = os.path.splitext(out)[0]
    for path, fmt in ((out, render.Markdown()), (stem + '.html', render.Html(folder, TITLE))):
        with open(path, 'w') as f:
            f.write(render.render(fmt, TEMPLATE, **data))
    rows = [
        dict(source=c.source, k_set=c.k_set, **write.comparison_row(c))
        for c in (*found.gaps, *found.changes, *found.between)
    ]
    pd.DataFrame(rows).to_csv(stem + '.csv', index=False)
    return out


def read_sources_plan(workdir: str) -> dict | None:
    """sources.json of a study of several sources, or None for any other folder."""
    path = os.path.join(workdir, layout.SOURCES_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_study(workdir: str, out: str = '') -> str:
    """`out` (default WORKDIR/report/sources.md) of a study of several sources (sources.json)."""
    plan = read_sources_plan(workdir)
    if plan is None:
        raise FileNotFoundError(
            f'{workdir} has no {layout.SOURCES_FILE}: it is not a study of several sources '
            '(sources=); compare separate studies with python -m unet_jax.report.sources A B.'
        )
    dirs = [os.path.join(workdir, d) for d in plan['dirs']]
    out = out or os.path.join(workdir, layout.REPORT_DIR, 'sources.md')
    return write_sources(dirs, out, names=plan['sources'])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        'workdirs',
        nargs='+',
        help='a study of several sources (its workdir), or two or more study workdirs, one per '
        'source, the baseline first',
    )
    parser.add_argument(
        '--out',
        default='',
        help='markdown file (default LAST/report/sources.md or W/report/...); the .html and '
        '.csv of the same name go beside it',
    )
    args = parser.parse_args(argv)
    if len(args.workdirs) == 1:
        path = write_study(args.workdirs[0], args.out)
    else:
        out = args.out or os.path.join(args.workdirs[-1], layout.REPORT_DIR, 'sources.md')
        path = write_sources(args.workdirs, out)
    with open(path) as f:
        print(f.read())


if __name__ == '__main__':
    main()
