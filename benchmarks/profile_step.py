r"""Where the JAX train step spends its time, by kind of operation (a jax.profiler trace).

Traces a few steps of the project's train step (built and compiled as the training loop
builds it, benchmarks/project_step.py; augmentation on), then attributes every XLA operation
the CPU runtime executed to a category by the operation's HLO and the name stack of the model
code it came from:

  conv forward / conv backward-input / conv backward-filter   3x3 and 1x1 convolutions
  up-conv (forward + backward)      the 2x2 stride-2 up-convolution (einsum) and its gradients
  pooling (forward + backward)      2x2 max-pool and its gradient
  layout copies / transposes        copies that only change the memory layout
  network elementwise               bias, ReLU, concatenation and their gradients
  optimiser                         Adam, gradient norm
  augmentation + RNG                flips, affine warp, intensity, random numbers
  loss, metrics, other              everything else

XLA's CPU runtime runs independent operations concurrently; while several run, their wall
time is shared equally among them, so the categories add up to the time in which any
operation ran (the rest of the step's wall time is dispatch and waiting).

  python benchmarks/profile_step.py                       # classic U-Net, full spec
  python benchmarks/profile_step.py --quick               # depth 3, base 16, 64x64: seconds
  python benchmarks/profile_step.py --spec=first:1 --top=20
  python benchmarks/profile_step.py --xla_defaults         # without the project's XLA options
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
import time

import jax
import project_step

CATEGORIES = (
    'conv forward',
    'conv backward-input',
    'conv backward-filter',
    'up-conv (forward + backward)',
    'pooling (forward + backward)',
    'layout copies / transposes',
    'network elementwise',
    'optimiser',
    'augmentation + RNG',
    'loss, metrics, other',
)
_AUGMENT = re.compile(r'augment|map_coordinates|threefry|_uniform|_bernoulli|random_bits')
QUICK = dict(depth=3, base_width=16, image_size=64, batch_size=8)
_LAYOUT_OPS = {'copy', 'transpose', 'bitcast', 'parameter', 'tuple', 'get-tuple-element'}


def parse_hlo(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Instruction name -> its line, and computation name -> its body, of compiled HLO text."""
    lines, bodies, current = {}, {}, None
    for line in text.splitlines():
        header = re.match(r'^(?:ENTRY )?%(\S+) .*\{$', line)
        if header:
            current = header.group(1)
            bodies[current] = []
            continue
        if current is None:
            continue
        bodies[current].append(line)
        instruction = re.match(r'^\s*(?:ROOT )?%(\S+) = ', line)
        if instruction:
            lines[instruction.group(1)] = line
    return lines, {name: '\n'.join(body) for name, body in bodies.items()}


def _fused(line: str, bodies: dict[str, str]) -> tuple[str, str]:
    """(op_name metadata, instructions) of an instruction, looking into what it fused."""
    called = re.search(r'calls=%([\w.\-]+)', line)
    body = bodies.get(called.group(1), '') if called else ''
    # A fusion's own metadata may be empty; the instructions it fused then name the source.
    names = re.findall(r'op_name="([^"]*)"', line) or re.findall(r'op_name="([^"]*)"', body)
    return ' '.join(dict.fromkeys(names)), body or line


def categorise(name: str, line: str, bodies: dict[str, str]) -> str:
    """The category of one executed HLO instruction (see the module docstring)."""
    op_names, body = _fused(line, bodies)
    opcodes = set(re.findall(r'= \S+ ([a-z][\w\-]*)\(', body))
    if _AUGMENT.search(op_names):
        return 'augmentation + RNG'
    if name.startswith(('transpose', 'copy')) or (
        opcodes <= _LAYOUT_OPS and opcodes & {'copy', 'transpose'}
    ):
        return 'layout copies / transposes'
    if '/up/' in op_names:
        return 'up-conv (forward + backward)'
    if 'max_pool' in op_names:
        return 'pooling (forward + backward)'
    if 'conv_input_grad' in op_names:
        return 'conv backward-input'
    if 'conv_weight_grad' in op_names:
        return 'conv backward-filter'
    if 'convolution' in opcodes:
        if 'transpose(' not in op_names:
            return 'conv forward'
        window = re.search(r'window=\{size=(\d+)x(\d+)', body)
        big_window = window and max(int(window.group(1)), int(window.group(2))) > 3
        return 'conv backward-filter' if big_window else 'conv backward-input'
    if 'UNet' in op_names:
        return 'network elementwise'
    if 'opt_state' in line or 'adam' in op_names:
        return 'optimiser'
    return 'loss, metrics, other'


def trace_steps(step: project_step.JaxStep, steps: int, directory: str):
    """Runs `steps` traced steps; returns their wall times and the trace's events."""
    times = []
    with jax.profiler.trace(directory):
        for _ in range(steps):
            start = time.perf_counter()
            step()  # returns Python floats: the step has finished
            times.append(time.perf_counter() - start)
    (path,) = glob.glob(os.path.join(directory, 'plugins', 'profile', '*', '*.trace.json.gz'))
    with gzip.open(path) as f:
        events = json.load(f)['traceEvents']
    return times, events


def op_intervals(events, module: str) -> list[tuple[float, float, str]]:
    """(start, end, instruction) in microseconds of every executed instruction of `module`.

    Convolutions run asynchronously on XLA's thread pool: their trace event only covers the
    launch, and an 'end: <name>' event marks when they finish.
    """
    events = sorted((e for e in events if e.get('ph') == 'X'), key=lambda e: e['ts'])
    pending, intervals = collections.defaultdict(list), []
    for event in events:
        args = event.get('args') or {}
        if args.get('hlo_module') == module and 'hlo_op' in args:
            interval = [event['ts'], event['ts'] + event['dur'], args['hlo_op']]
            pending[args['hlo_op']].append(interval)
            intervals.append(interval)
        elif event['name'].startswith('end: ') and pending[event['name'][5:]]:
            interval = pending[event['name'][5:]].pop(0)
            interval[1] = max(interval[1], event['ts'] + event['dur'])
    return [tuple(interval) for interval in intervals]


def op_times(intervals: list[tuple[float, float, str]]) -> tuple[dict[str, float], float]:
    """Wall microseconds of each instruction, shared equally while several run at once.

    The shares add up to the time in which anything ran (also returned), so categories are
    parts of the step's wall time, not of a sum over threads.
    """
    edges = sorted({t for start, end, _ in intervals for t in (start, end)})
    starts = collections.defaultdict(list)
    for start, end, name in intervals:
        starts[start].append((end, name))
    totals, active, busy = collections.Counter(), [], 0.0
    for left, right in zip(edges, edges[1:]):
        active = [(end, name) for end, name in active if end > left] + starts.get(left, [])
        if active:
            busy += right - left
            for _, name in active:
                totals[name] += (right - left) / len(active)
    return totals, busy


def profile(step: project_step.JaxStep, num_steps: int) -> tuple[dict[str, float], list[float]]:
    """Milliseconds per step of every executed instruction (after one untraced step), and the
    traced steps' wall times."""
    step()
    with tempfile.TemporaryDirectory() as directory:
        times, events = trace_steps(step, num_steps, directory)
    module = re.match(r'HloModule (\S+?),? ', step.compiled.as_text()).group(1)
    totals, _ = op_times(op_intervals(events, module))
    return {op: us / 1e3 / num_steps for op, us in totals.items()}, times


def by_category(per_step: dict[str, float], text: str) -> collections.Counter:
    """Milliseconds per step of each category, from the compiled HLO `text`."""
    lines, bodies = parse_hlo(text)
    totals = collections.Counter()
    for op, ms in per_step.items():
        totals[categorise(op, lines.get(op, ''), bodies)] += ms
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--depth', type=int, default=4)
    parser.add_argument('--base_width', type=int, default=64)
    parser.add_argument('--image_size', type=int, default=128)
    parser.add_argument('--batch_size', type=int, default=8)
    parser.add_argument('--quick', action='store_true', help=f'the size {QUICK} (seconds)')
    parser.add_argument('--spec', default='@all')
    parser.add_argument('--steps', type=int, default=2, help='traced steps (after one compile)')
    parser.add_argument('--top', type=int, default=10, help='slowest operations to list')
    parser.add_argument(
        '--xla_defaults',
        action='store_true',
        help="compile with XLA's defaults instead of models.compiler_options()",
    )
    parser.add_argument(
        '--half_precision',
        action='store_true',
        help='bfloat16 compute, float32 params and loss (config.half_precision; for GPU/TPU)',
    )
    args = parser.parse_args()
    size = {k: getattr(args, k) for k in ('depth', 'base_width', 'image_size', 'batch_size')}
    size.update(QUICK if args.quick else {})

    config = project_step.benchmark_config(**size, half_precision=args.half_precision)
    step = project_step.JaxStep(config, args.spec, xla_defaults=args.xla_defaults)
    per_step, times = profile(step, args.steps)
    text = step.compiled.as_text()
    categories = by_category(per_step, text)
    lines, bodies = parse_hlo(text)
    op_total = sum(per_step.values())
    print(
        f'JAX {jax.__version__}, U-Net depth {size["depth"]} base {size["base_width"]}, '
        f'{size["image_size"]}x{size["image_size"]}, batch {size["batch_size"]}, spec '
        f'{args.spec}, {"bfloat16" if args.half_precision else "float32"}, '
        f'{"XLA defaults" if args.xla_defaults else "models.compiler_options()"}: '
        f'wall {statistics.median(times) * 1e3:.0f} ms per step (median of {args.steps}), '
        f'operations running {op_total:.0f} ms of it; load average {os.getloadavg()[0]:.1f}\n'
    )
    print('| category | ms per step | share |')
    print('|---|---|---|')
    for category in sorted(CATEGORIES, key=lambda c: -categories[c]):
        ms = categories[category]
        print(f'| {category} | {ms:.0f} | {ms / op_total:.1%} |')
    print(f'\n| top {args.top} operations | category | ms per step | shape | source |')
    print('|---|---|---|---|---|')
    for op, ms in sorted(per_step.items(), key=lambda item: -item[1])[: args.top]:
        line = lines.get(op, '')
        shape = re.search(r'= (\S+) ', line)
        source = _fused(line, bodies)[0].replace('jit(train_step)/', '')[:90] or '?'
        print(
            f'| {op} | {categorise(op, line, bodies)} | {ms:.0f} | '
            f'{shape.group(1) if shape else "?"} | {source} |'
        )


if __name__ == '__main__':
    main()
