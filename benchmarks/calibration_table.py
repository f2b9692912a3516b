"""The report's test against the tests it replaced, with every source of variation.

    python benchmarks/calibration_table.py [--simulations 20000] [--bootstrap_simulations 2000]

Prints one Markdown table: per simulated design (unet_jax.report.calibration: DESIGNS without
outer folds, FOLD_DESIGNS with 5 outer folds and pre-training and fold components, and the
hard case beyond a t-test's reach at 12 images), the false-positive rate at 0.05 and at 0.002
(no effect) and the 95% CI coverage and power (effect 0.03 Dice) of the design's t-test (the
report's), of the test it replaced (each outer fold its own crossed table, folds added as
independent blocks) and, without folds, of the hierarchical percentile bootstrap before that
(2000 resamples; its p has a floor of 2 / 2001 = 0.001). Nominal: 0.05, 0.002, 0.95. Binomial
standard errors: sqrt(p (1 - p) / simulations). Then the target interaction paired by
pre-training against the Welch difference that took the targets as independent.
"""

from __future__ import annotations

import argparse
import time

from unet_jax.report import calibration


def _row(design: str, method: str, r: calibration.ErrorRates) -> str:
    return (
        f'| {design} | {method} | {r.simulations} | {r.false_positive_05:.4f} | '
        f'{r.false_positive_002:.4f} | {r.coverage:.3f} | {r.power:.3f} |'
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--simulations', type=int, default=20_000)
    parser.add_argument('--bootstrap_simulations', type=int, default=2_000)
    parser.add_argument('--effect', type=float, default=0.03)
    args = parser.parse_args()
    print('| design | method | simulations | FPR at 0.05 | FPR at 0.002 | 95% CI coverage | power |'
          )  # fmt: skip
    print('|---|---|---|---|---|---|---|')
    start = time.time()
    for design in (*calibration.DESIGNS, *calibration.FOLD_DESIGNS, calibration.HARD):
        before = (
            ('folds as blocks (before)', calibration.folds_as_blocks_t, args.simulations)
            if design.folds > 1
            else ('percentile bootstrap (older)', calibration.percentile_bootstrap(),
                  args.bootstrap_simulations)
        )  # fmt: skip
        methods = [('design t (report)', calibration.design_t, args.simulations), before]
        for name, method, simulations in methods:
            r = calibration.error_rates(
                design, method, name=name, simulations=simulations, effect=args.effect, seed=11
            )
            print(_row(design.name, name, r), flush=True)
    for a, b in calibration.INTERACTION_DESIGNS:
        for paired, name in (
            (True, 'paired by pre-training (report)'), (False, 'Welch, independent (before)')
        ):  # fmt: skip
            r = calibration.interaction_error_rates(
                a, b, simulations=args.simulations, effect=args.effect, seed=5, paired=paired
            )
            print(_row(f'{b.name} minus {a.name}', name, r), flush=True)
    print(f'\n({time.time() - start:.0f} s)')


if __name__ == '__main__':
    main()
