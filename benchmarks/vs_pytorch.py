r"""The project's JAX train step vs the same U-Net in PyTorch (eager and torch.compile).

Same U-Net (widths, 3x3 'same' convs, 2x2 stride-2 up-conv, 2x2 max-pool, concatenated skips),
same batch, same loss (per-image BCE + soft Dice, batch mean), Adam, and the same freeze specs
(PyTorch: `requires_grad=False` on the frozen modules). Before timing, the PyTorch models get
the JAX initial weights and every implementation must compute the same first-step loss and
gradient norm. The implementations then run interleaved (JAX, eager, compile, JAX, ...), so
load from other processes hits all of them alike; the table shows medians and the ratios.

The JAX step is the project's `steps.train_step`, built and compiled as the training loop
builds it (benchmarks/project_step.py), with augmentation switched off (PyTorch gets the same
un-augmented batch). Both libraries get the same CPU cores: XLA sizes its thread pool from the
process's CPU affinity and PyTorch gets `torch.set_num_threads` of the same count.

  pip install -e '.[bench]'                  # PyTorch, only for this script
  python benchmarks/vs_pytorch.py            # classic and quick sizes, 5 specs each
  python benchmarks/vs_pytorch.py --quick    # quick size, full and first-block specs only
  python benchmarks/vs_pytorch.py --sizes=classic --specs=full --repeats=9
  python benchmarks/vs_pytorch.py --xla_defaults   # also JAX without the project's XLA options
  python benchmarks/vs_pytorch.py --quick --no_torch_compile   # PyTorch eager only
  python benchmarks/vs_pytorch.py --quick --half_precision     # bfloat16 compute in both
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import statistics
import sys
import time

import flax
import jax
import numpy as np
import project_step

try:  # the optional extra `bench`; without it only the JAX side of this module works
    import torch
    import torch_unet
except ImportError:
    torch = torch_unet = None

SIZES = {
    'classic': dict(depth=4, base_width=64, image_size=128, batch_size=8),
    'quick': dict(depth=3, base_width=16, image_size=64, batch_size=8),
}
SPECS = {
    'full': '@all',
    'first block only': 'first:1',
    'last block only': 'last:1',
    'contracting': '@contracting',
    'expanding': '@expanding',
}
JAX, DEFAULTS, EAGER, COMPILE = 'JAX', 'JAX, XLA defaults', 'PyTorch eager', 'torch.compile'
QUICK = dict(sizes=['quick'], specs=['full', 'first block only'], repeats=3)
# Same relative tolerance for loss and gradient norm: float32 sums in different orders.
CHECK_RTOL = 1e-3
# In bfloat16 compute both libraries round activations to 8 significant bits, in different places.
HALF_PRECISION_RTOL = 5e-2


# ----------------------------------------------------------------------------- the comparison


def check_same_step(
    first: dict[str, tuple[float, float]], where: str, rtol: float = CHECK_RTOL
) -> None:
    """Fails unless every implementation's first step has the JAX loss and gradient norm."""
    loss, grad_norm = first[JAX]
    for name, (other_loss, other_norm) in first.items():
        if not (
            np.isclose(other_loss, loss, rtol=rtol) and np.isclose(other_norm, grad_norm, rtol=rtol)
        ):
            sys.exit(
                f'{where}: {name} computes loss {other_loss:.6g} and gradient norm '
                f'{other_norm:.6g}, JAX {loss:.6g} and {grad_norm:.6g} on the same weights and '
                'batch: the two U-Nets differ, so their timings are not comparable.'
            )


def implementations(
    size: dict,
    spec: str,
    *,
    xla_defaults: bool = False,
    torch_compile: bool = True,
    half_precision: bool = False,
    device: str = 'cpu',
) -> dict:
    """name -> a function running one step and returning (loss, gradient norm).

    The PyTorch models start from the JAX step's initial weights and train the same units, on
    `device` ('cpu', 'cuda'), in bfloat16 compute with `half_precision` (as the JAX step).
    Without PyTorch installed only the JAX steps are returned.
    """
    config = project_step.benchmark_config(**size, augment=False, half_precision=half_precision)
    project = project_step.JaxStep(config, spec)
    steps = {JAX: project}
    if xla_defaults:
        steps[DEFAULTS] = project_step.JaxStep(config, spec, xla_defaults=True)
    if torch is not None:
        variants = {EAGER: False, COMPILE: True} if torch_compile else {EAGER: False}
        steps |= torch_steps(project, size, variants, half_precision=half_precision, device=device)
    return steps


def torch_steps(
    project: project_step.JaxStep,
    size: dict,
    variants: dict[str, bool],
    *,
    half_precision: bool = False,
    device: str = 'cpu',
) -> dict:
    """{name: step} of PyTorch U-Nets with `project`'s initial weights and trained units, on its
    batch; `variants` maps each name to whether it is torch.compile'd."""
    images, masks = (
        torch.from_numpy(project.batch[key][0].transpose(0, 3, 1, 2).copy()).to(device)
        for key in ('image', 'mask')
    )
    steps = {}
    for name, compiled in variants.items():
        model = torch_unet.TorchUNet(size['depth'], size['base_width'])
        torch_unet.load_jax_params(model, project.initial_params)
        step = torch_unet.TorchStep(
            model,
            project.plan.trained_units,
            compiled=compiled,
            half_precision=half_precision,
            device=device,
        )
        steps[name] = functools.partial(step, images, masks)
    return steps


def compare(steps: dict, repeats: int, where: str, rtol: float = CHECK_RTOL) -> dict[str, float]:
    """Median step times (s) of every implementation, interleaved, after the checked first step."""
    # The first call compiles torch.compile; from identical weights every step must agree.
    first = {name: step() for name, step in steps.items()}
    check_same_step(first, where, rtol)
    return interleaved_medians(steps, repeats)


def interleaved_medians(steps: dict, repeats: int) -> dict[str, float]:
    """Median seconds of `repeats` steps of each implementation, run in turn."""
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()  # returns Python floats: the step has finished
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def pin_threads(threads: int | None) -> int:
    """Restricts the process to `threads` cores (XLA's pool follows) and sets PyTorch's."""
    cores = sorted(os.sched_getaffinity(0))
    if threads:
        if threads > len(cores):
            sys.exit(f'--threads={threads} but this process may only use {len(cores)} cores.')
        cores = cores[:threads]
        os.sched_setaffinity(0, cores)
    torch.set_num_threads(len(cores))
    return len(cores)


def machine() -> str:
    name = platform.processor() or 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as f:
            names = (line.split(':', 1)[1] for line in f if line.startswith('model name'))
            name = next(names).strip()
    except (OSError, StopIteration):
        pass
    return f'{name}, {os.cpu_count()} cores'


def load() -> str:
    return ' '.join(f'{x:.1f}' for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help=f'a fast check: {QUICK}')
    parser.add_argument('--sizes', default=','.join(SIZES), help=f'of {list(SIZES)}')
    parser.add_argument('--specs', default=','.join(SPECS), help=f'of {list(SPECS)}')
    parser.add_argument('--repeats', type=int, default=5, help='timed steps per implementation')
    parser.add_argument('--threads', type=int, default=0, help='cores to use (0: all allowed)')
    parser.add_argument(
        '--xla_defaults',
        action='store_true',
        help=f"add a column '{DEFAULTS}': the JAX step compiled without models.compiler_options()",
    )
    parser.add_argument(
        '--half_precision',
        action='store_true',
        help='bfloat16 compute in both libraries (float32 params and loss); the first-step '
        f'check then allows a relative difference of {HALF_PRECISION_RTOL}',
    )
    parser.add_argument(
        '--no_torch_compile',
        action='store_true',
        help=f"leave out '{COMPILE}' (it needs a C compiler and takes a minute per model)",
    )
    args = parser.parse_args()
    if torch is None:
        sys.exit("vs_pytorch.py needs PyTorch: pip install -e '.[bench]' (or pip install torch).")
    sizes, specs = args.sizes.split(','), args.specs.split(',')
    repeats = args.repeats
    if args.quick:
        sizes, specs, repeats = QUICK['sizes'], QUICK['specs'], QUICK['repeats']
    for value, known, flag in ((sizes, SIZES, '--sizes'), (specs, SPECS, '--specs')):
        unknown = [v for v in value if v not in known]
        if unknown:
            sys.exit(f'{flag}: {unknown} unknown; choose from {list(known)} (comma-separated).')
    threads = pin_threads(args.threads)
    print(
        f'{datetime.date.today()}, {machine()}, {threads} threads each (XLA pool and '
        f'torch.set_num_threads); Python {platform.python_version()}, jax {jax.__version__}, '
        f'flax {flax.__version__}, torch {torch.__version__}; median of {repeats} interleaved '
        f'steps, Adam, BCE + Dice, {"bfloat16" if args.half_precision else "float32"} compute; '
        f'load average at start {load()}',
        flush=True,
    )
    rows = []
    for size_name in sizes:
        for spec_name in specs:
            steps = implementations(
                SIZES[size_name],
                SPECS[spec_name],
                xla_defaults=args.xla_defaults,
                torch_compile=not args.no_torch_compile,
                half_precision=args.half_precision,
            )
            rtol = HALF_PRECISION_RTOL if args.half_precision else CHECK_RTOL
            medians = compare(steps, repeats, f'{size_name} / {spec_name}', rtol)
            rows.append((size_name, spec_name, medians))
            print(f'  {size_name} / {spec_name}: {_ms(medians)} (load {load()})', flush=True)
    print(f'\nload average at end {load()}\n')
    print(table(rows))


def table(rows: list[tuple[str, str, dict[str, float]]]) -> str:
    """Markdown: median ms of every implementation and the JAX step's ratio to PyTorch's."""
    names = list(rows[0][2])
    others = [name for name in (EAGER, COMPILE) if name in names]
    header = [
        'size',
        'spec',
        *(f'{name} ms' for name in names),
        *(f'JAX / {name.split()[-1]}' for name in others),
    ]
    lines = ['| ' + ' | '.join(header) + ' |', '|---' * len(header) + '|']
    for size_name, spec_name, m in rows:
        cells = [
            f'{size_name} ({_size_label(SIZES[size_name])})',
            f'{spec_name} (`{SPECS[spec_name]}`)',
            *(f'{m[name] * 1e3:.0f}' for name in names),
            *(f'{m[JAX] / m[name]:.2f}' for name in others),
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _size_label(size: dict) -> str:
    return (
        f'depth {size["depth"]} base {size["base_width"]}, {size["image_size"]}px, '
        f'batch {size["batch_size"]}'
    )


def _ms(medians: dict[str, float]) -> str:
    return ', '.join(f'{name} {seconds * 1e3:.0f} ms' for name, seconds in medians.items())


if __name__ == '__main__':
    main()
