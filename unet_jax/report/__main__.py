"""python -m unet_jax.report WORKDIR: (re-)make a study's report from its workdir."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import os
import sys

from unet_jax import errors, report
from unet_jax.report import plan


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m unet_jax.report',
        description=(
            'Write WORKDIR/report/ (report.html, summary.md, conclusions.md, CSV tables, '
            'figures) from a study workdir: its study.json and every finished results.json. '
            'Runs that have not finished are shown as pending; run it again at any time.'
        ),
    )
    parser.add_argument('workdir', help='the study workdir (the folder holding study.json)')
    parser.add_argument(
        '--margin',
        type=float,
        default=None,
        help=f'equivalence margin of the TOST, in Dice (default: the study\'s study.margin, '
        f'else {report.DEFAULT_MARGIN})',
    )
    errors.add_traceback_argument(parser)
    args = parser.parse_args(argv)
    if args.margin is not None and not args.margin > 0:
        parser.error(f'--margin={args.margin}: the equivalence margin must be positive.')
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    with errors.errors_reported('report', show_traceback=args.traceback):
        from unet_jax.report import sources

        several = sources.read_sources_plan(args.workdir)
        if several is not None:  # a study of several sources: each one's report, then theirs
            for name in several['dirs']:
                print(report.write_report(os.path.join(args.workdir, name), margin=args.margin))
            print(sources.write_study(args.workdir))
            return 0
        plan.read_checked_plan(args.workdir)  # a bad workdir is reported before the heavy imports
        path = report.write_report(args.workdir, margin=args.margin)
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
