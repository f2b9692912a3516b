r"""Step time of frozen training vs full training, measured side by side in one process.

For the classic U-Net (depth 4, base 64) at 128x128, batch 8, one train step (Adam, BCE + Dice,
augmentation; the project's step compiled as unet_jax.train compiles it, benchmarks/project_step.py)
for several freeze specs: the median step time, its ratio to the full step, and the ideal
ratio from the layer registry's FLOP model (forward of everything + backward only as
deep as the shallowest trained unit + weight gradients of trained units).

  python benchmarks/step_time.py                      # classic U-Net, about 5 minutes on 2 cores
  python benchmarks/step_time.py --base_width=16 --steps=3   # a quick look
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import project_step

SPECS = {
    'full': '@all',
    'contracting only': '@contracting',
    'expanding only': '@expanding',
    'first block only (enc0)': 'first:1',
    'last block only (head)': 'last:1',
    'last decoder block + head': 'dec0,head',
    'LoRA r=8 everywhere': 'lora:8@@all',
    'biases only': 'bias@@all',
}
# Norm-only training needs norm layers: timed on the same U-Net with BatchNorm, against its own
# full step.
BATCHNORM_SPECS = {
    'full (BatchNorm U-Net)': '@all',
    'norm layers only (BatchNorm U-Net)': 'norm@@all',
}


def step_times(config, specs: dict, num_steps: int) -> dict[str, tuple[list[float], float]]:
    """{name: (times of `num_steps` train steps, FLOP ratio)} of every spec (a freeze spec, or
    (spec, config) to time it on another config), after one untimed step each, timed in turns
    (one step of each spec, then the next round), so that a change of the machine's load during
    the run hits every spec alike."""
    steps = {
        name: project_step.JaxStep(*((spec, config) if isinstance(spec, str) else spec)[::-1])
        for name, spec in specs.items()
    }
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(num_steps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()  # returns Python floats: the step has finished
            times[name].append(time.perf_counter() - start)
    return {name: (times[name], step.flop_ratio()) for name, step in steps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--base_width', type=int, default=64)
    parser.add_argument('--depth', type=int, default=4)
    parser.add_argument('--image_size', type=int, default=128)
    parser.add_argument('--batch_size', type=int, default=8)
    parser.add_argument('--steps', type=int, default=5)
    args = parser.parse_args()

    config = project_step.benchmark_config(
        depth=args.depth,
        base_width=args.base_width,
        image_size=args.image_size,
        batch_size=args.batch_size,
    )
    print(
        f'JAX {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device), '
        f'U-Net depth {args.depth} base {args.base_width}, {args.image_size}x{args.image_size},'
        f' batch {args.batch_size}, median of {args.steps} steps\n'
    )
    batchnorm = config.copy_and_resolve_references()
    batchnorm.model.norm = 'batch'
    specs = {**SPECS, **{name: (spec, batchnorm) for name, spec in BATCHNORM_SPECS.items()}}
    rows, full = [], {}
    for name, (times, ideal) in step_times(config, specs, args.steps).items():
        spec = specs[name] if isinstance(specs[name], str) else specs[name][0]
        norm = name in BATCHNORM_SPECS
        median = statistics.median(times)
        full.setdefault(norm, median)  # each model's first spec is its full step
        rows.append((name, spec, median, median / full[norm], ideal))
    print(f'| {"tuned":<34} | {"spec":<12} | step ms | ratio to full | ideal (FLOPs) |')
    print(f'|{"-" * 36}|{"-" * 14}|---------|---------------|---------------|')
    for name, spec, median, ratio, ideal in rows:
        print(f'| {name:<34} | {spec:<12} | {median * 1e3:7.0f} | {ratio:13.2f} | {ideal:13.2f} |')


if __name__ == '__main__':
    main()
