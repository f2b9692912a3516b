"""The report's test against the percentile bootstrap it replaced, at the study's sizes.

    python benchmarks/calibration_table.py [--simulations 20000] [--bootstrap_simulations 2000]

Prints one Markdown table: per simulated design (unet_jax.report.calibration.DESIGNS, and the
hard case beyond a t-test's reach at 12 images), the false-positive rate at 0.05 and at 0.002
(no effect) and the 95% CI coverage and power (effect 0.03 Dice) of the crossed t-test and of
the hierarchical percentile bootstrap (2000 resamples; its p has a floor of 2 / 2001 = 0.001).
Nominal: 0.05, 0.002, 0.95. Binomial standard errors: sqrt(p (1 - p) / simulations).
"""

from __future__ import annotations

import argparse
import time

from unet_jax.report import calibration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--simulations', type=int, default=20_000)
    parser.add_argument('--bootstrap_simulations', type=int, default=2_000)
    parser.add_argument('--effect', type=float, default=0.03)
    args = parser.parse_args()
    print('| design | method | simulations | FPR at 0.05 | FPR at 0.002 | 95% CI coverage | power |')
    print('|---|---|---|---|---|---|---|')
    start = time.time()
    for design in (*calibration.DESIGNS, calibration.HARD):
        methods = (
            ('crossed t (report)', calibration.crossed_t, args.simulations),
            ('percentile bootstrap (before)', calibration.percentile_bootstrap(), args.bootstrap_simulations),
        )  # fmt: skip
        for name, method, simulations in methods:
            r = calibration.error_rates(
                design, method, name=name, simulations=simulations, effect=args.effect, seed=11
            )
            print(
                f'| {design.name} | {name} | {simulations} | {r.false_positive_05:.4f} | '
                f'{r.false_positive_002:.4f} | {r.coverage:.3f} | {r.power:.3f} |',
                flush=True,
            )
    print(f'\n({time.time() - start:.0f} s)')


if __name__ == '__main__':
    main()
