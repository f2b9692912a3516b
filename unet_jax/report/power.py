"""Power of a study's primary comparison before it runs, by simulation of the design's test.

  python -m unet_jax.report.power --study=runs/real --pretrainings=3+5+6 --folds=5+6 \
      --effects=0.03+0.04+0.05
  python -m unet_jax.report.power --pretrainings=5 --folds=5 --images=130 --sd_run=0.04 \
      --sd_image=0.129 --sd_residual=0.164 --sd_fold=0.009

The test images of one data set are split over the outer folds (--total_images; with --study,
the study's own count), so more folds mean fewer images per fold. The variance components
come from a finished study (its first primary comparison's
estimates, as the report prints them) or from the flags. For every arrangement of
pre-trainings x outer folds and every effect, studies are simulated with those components
(unet_jax.report.calibration.Design) and tested with the report's test; the power is the
share rejected at alpha, and the last column the smallest effect of the list with at least
the target power. A component estimated at 0 is simulated as 0: the power is then that of a
study where it is truly absent, and the test still allows for it (the price, measured in
tests/test_calibration.py, is part of the power shown).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import dataclasses
from typing import Any

import numpy as np

from unet_jax.report import calibration, stats

TARGET_POWER = 0.8


@dataclasses.dataclass(frozen=True)
class Row:
    pretrainings: int
    folds: int
    power: tuple[float, ...]  # one per effect

    def smallest(self, effects: Sequence[float], target: float = TARGET_POWER) -> float:
        """The smallest effect with at least `target` power (nan if none)."""
        return next((e for e, p in zip(effects, self.power) if p >= target), float('nan'))


def power(design: calibration.Design, effect: float, *, simulations: int, seed: int = 0,
          alpha: float = stats.ALPHA) -> float:  # fmt: skip
    """The share of simulated studies whose design's test rejects 'no difference' at alpha."""
    rng = np.random.default_rng(seed)
    rejected = 0
    for start in range(0, simulations, calibration.CHUNK):
        count = min(calibration.CHUNK, simulations - start)
        p, _, _ = calibration.design_t(*design.simulate(rng, count, effect))
        rejected += int(np.sum(p < alpha))
    return rejected / simulations


def power_table(
    design: calibration.Design,
    arrangements: Sequence[tuple[int, int]],
    effects: Sequence[float],
    *,
    simulations: int = 2000,
    seed: int = 0,
    total_images: int = 0,
) -> list[Row]:
    """Power per (pre-trainings, folds) arrangement and effect: the images per fold kept, or,
    with total_images (outer folds over one data set), that many split over the folds."""
    rows = []
    for pretrainings, folds in arrangements:
        images = total_images // folds if total_images else design.images
        arranged = dataclasses.replace(design, replicates=pretrainings, folds=folds, images=images)
        found = tuple(power(arranged, e, simulations=simulations, seed=seed) for e in effects)
        rows.append(Row(pretrainings, folds, found))
    return rows


PLAN_SIMULATIONS = 2000
PLAN_GRID = 0.005  # the resolution of the smallest effect with TARGET_POWER
PLAN_LARGEST = 0.2  # the largest effect searched (Dice)


def plan_power(plan: dict, *, pretrainings: int, folds: int,
               simulations: int | None = None) -> dict:  # fmt: skip
    """A study's power plan (config.study.power: effect, components, total_images) for its
    pre-trainings x outer folds: the power at the plan's effect and the smallest effect on a
    PLAN_GRID grid up to PLAN_LARGEST with TARGET_POWER (bisection: power rises with the
    effect; None when even PLAN_LARGEST lacks it: with 2 folds the fold component's single
    degree of freedom caps the power), as recorded with the registration."""
    simulations = simulations or PLAN_SIMULATIONS
    total = int(plan.get('total_images') or 0)
    if total < folds:
        raise ValueError(
            f'config.study.power.total_images={total}: give the test images of the primary\'s '
            'target (every image is tested once over the outer folds), e.g. 647 for BUSI.'
        )
    design = calibration.Design(
        'plan', pretrainings, total // folds, folds=folds,
        **{f: float(plan.get(f) or 0.0) for f in ('sd_run', 'sd_image', 'sd_residual',
                                                  'skewness', 'sd_pretraining', 'sd_fold')},
    )  # fmt: skip
    effect = float(plan['effect'])
    at = lambda e: power(design, e, simulations=simulations)
    low, high = 0, int(round(PLAN_LARGEST / PLAN_GRID))  # in grid steps
    reached = at(high * PLAN_GRID) >= TARGET_POWER  # with few folds power may never reach it
    while reached and high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if at(middle * PLAN_GRID) >= TARGET_POWER else (middle, high)
    return {
        'pretrainings': pretrainings,
        'folds': folds,
        'images_per_fold': total // folds,
        'effect': effect,
        'power': at(effect),
        'effect_with_power': round(high * PLAN_GRID, 6) if reached else None,  # None: > largest
        'largest_effect': PLAN_LARGEST,
        'target_power': TARGET_POWER,
        'simulations': simulations,
        'alpha': stats.ALPHA,
        'components': calibration.describe(design),
    }


def design_of_study(workdir: str) -> tuple[calibration.Design, int]:
    """The first primary comparison's design and estimated components (its report's), and
    its number of test images."""
    from unet_jax.report import analysis
    from unet_jax.report.load import load

    result = analysis.analyse(load(workdir))
    tested = [c.test for c in result.comparisons.primary if c.test is not None and c.test.defined
              and c.test.layout == 'nested']  # fmt: skip
    if not tested:
        raise SystemExit(
            f'{workdir}: no tested primary comparison on its own test folds to take variance '
            'components from; give them with --sd_run, --sd_image, ... instead.'
        )
    name = f'{workdir} (first primary comparison)'
    return calibration.design_of(tested[0], name), tested[0].num_images


def markdown(design: calibration.Design, rows: Sequence[Row], effects: Sequence[float],
             simulations: int) -> str:  # fmt: skip
    lines = [
        f'Components: {calibration.describe(design)}. {simulations} simulated studies per '
        f'cell, the design\'s test at {stats.ALPHA:g}.',
        '',
        '| pre-trainings x folds | ' + ' | '.join(f'power at {e:+g}' for e in effects)
        + f' | smallest effect with power >= {TARGET_POWER:g} |',
        '|---|' + '---|' * (len(effects) + 1),
    ]
    for r in rows:
        smallest = r.smallest(effects)
        lines.append(
            f'| {r.pretrainings} x {r.folds} | ' + ' | '.join(f'{p:.2f}' for p in r.power)
            + f' | {"none listed" if np.isnan(smallest) else f"{smallest:+g}"} |'
        )
    return '\n'.join(lines)


def _numbers(text: str, kind=float) -> list:
    try:
        return [kind(v) for v in text.split('+') if v]
    except ValueError:
        raise SystemExit(f'expected numbers joined by +, e.g. 3+5, got {text!r}') from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog='python -m unet_jax.report.power', description=__doc__.split('\n')[0]
    )
    parser.add_argument('--study', default='', help='a finished study: its components')
    parser.add_argument('--pretrainings', default='3+5', help='e.g. 3+5+6')
    parser.add_argument('--folds', default='5', help='e.g. 5+6')
    parser.add_argument('--effects', default='0.02+0.03+0.04+0.05+0.07')
    parser.add_argument('--images', type=int, default=130, help='test images per fold')
    parser.add_argument(
        '--total_images', type=int, default=0,
        help='the data set\'s test images, split over the folds (default with --study: its own)',
    )
    for name, default in (('sd_pretraining', 0.0), ('sd_fold', 0.0), ('sd_run', 0.04),
                          ('sd_image', 0.1), ('sd_residual', 0.19), ('skewness', 0.0)):  # fmt: skip
        parser.add_argument(f'--{name}', type=float, default=default)
    parser.add_argument('--simulations', type=int, default=2000)
    args = parser.parse_args(argv)
    total = args.total_images
    if args.study:
        design, images = design_of_study(args.study)
        total = total or images
    else:
        design = calibration.Design(
            'given', 3, args.images, folds=5, sd_run=args.sd_run, sd_image=args.sd_image,
            sd_residual=args.sd_residual, skewness=args.skewness,
            sd_pretraining=args.sd_pretraining, sd_fold=args.sd_fold,
        )  # fmt: skip
    effects = _numbers(args.effects)
    folds = _numbers(args.folds, int)
    arrangements = [(p, f) for p in _numbers(args.pretrainings, int) for f in folds]
    if any(p < 2 or f < 1 for p, f in arrangements):
        raise SystemExit('--pretrainings must be at least 2 and --folds at least 1.')
    rows = power_table(
        design, arrangements, effects, simulations=args.simulations, total_images=total
    )
    print(markdown(design, rows, effects, args.simulations))
    if total:
        print(f'\nTest images: {total} in all, split over the folds.')


if __name__ == '__main__':
    main()


def simulated_power(config: Any) -> dict[str, Any] | None:
    """The power plan's result (study.power; None without one): the primary's first test,
    simulated for this study's pre-trainings x outer folds with the plan's variance components,
    its power at the plan's effect and the smallest effect (on a 0.005 grid) with 0.8 power.
    Recorded once, at registration (unet_jax.config.registration.register)."""
    declared = config.study.get('power') or {}
    plan = declared.to_dict() if hasattr(declared, 'to_dict') else dict(declared)
    if not float(plan.get('effect') or 0) > 0:
        return None
    folds = int(config.data.get('outer_folds', 0) or 0)
    return plan_power(
        plan, pretrainings=int(config.study.get('pretrain_seeds', 1)), folds=max(folds, 1)
    )
