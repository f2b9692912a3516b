r"""Where the JAX train step spends its time, by kind of operation (a jax.profiler trace).

Traces a few steps of the project's train step (as the training loop builds it, augmentation
on), then attributes every XLA operation the CPU runtime executed to a category by the
operation's HLO and the name stack of the model code it came from:

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
  python benchmarks/profile_step.py --spec=first:1 --top=20
  python benchmarks/profile_step.py --xla_defaults         # without the project's XLA options
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from unet_jax import config_lib, freeze, layers, models, train

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
_LAYOUT_OPS = {'copy', 'transpose', 'bitcast', 'parameter', 'tuple', 'get-tuple-element'}


def build_step(args):
    """The step function, its state and a batch, as benchmarks/step_time.py builds them."""
    config = config_lib.default_config()
    config.model.depth, config.model.base_width = args.depth, args.base_width
    config.data.image_size, config.batch_size = args.image_size, args.batch_size
    model = models.create_model(config.model)
    registry = layers.build_registry(model, image_size=args.image_size, in_channels=1)
    plan = freeze.compile_spec(args.spec, registry, order='forward', granularity='block')
    variables = train.initial_variables(model, config)
    labels = plan.labels(variables['params'])
    tx = freeze.make_optimizer(train.create_train_tx(config), labels)
    state = train.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables['params'],
        batch_stats={},
        opt_state=tx.init(variables['params']),
    )
    step_fn = jax.jit(
        functools.partial(
            train.train_step,
            model=model,
            tx=tx,
            labels=labels,
            frozen_units=plan.frozen_units,
            rng=jax.random.key(0),
            config=config,
        ),
        donate_argnums=0,
        compiler_options=None if args.xla_defaults else models.compiler_options(),
    )
    rng = np.random.default_rng(0)
    shape = (args.batch_size, args.image_size, args.image_size, 1)
    batch = {
        'image': rng.standard_normal(shape).astype(np.float32),
        'mask': (rng.random(shape) > 0.7).astype(np.float32),
    }
    return step_fn, state, batch


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


def trace_steps(step_fn, state, batch, steps: int, directory: str):
    """Runs `steps` traced steps; returns the state, wall times and the trace's events."""
    times = []
    with jax.profiler.trace(directory):
        for _ in range(steps):
            start = time.perf_counter()
            state, _ = step_fn(state, batch)
            jax.block_until_ready(state)
            times.append(time.perf_counter() - start)
    (path,) = glob.glob(os.path.join(directory, 'plugins', 'profile', '*', '*.trace.json.gz'))
    with gzip.open(path) as f:
        events = json.load(f)['traceEvents']
    return state, times, events


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--depth', type=int, default=4)
    parser.add_argument('--base_width', type=int, default=64)
    parser.add_argument('--image_size', type=int, default=128)
    parser.add_argument('--batch_size', type=int, default=8)
    parser.add_argument('--spec', default='@all')
    parser.add_argument('--steps', type=int, default=2, help='traced steps (after one compile)')
    parser.add_argument('--top', type=int, default=10, help='slowest operations to list')
    parser.add_argument(
        '--xla_defaults',
        action='store_true',
        help="compile with XLA's defaults instead of models.compiler_options()",
    )
    args = parser.parse_args()

    step_fn, state, batch = build_step(args)
    compiled = step_fn.lower(state, batch).compile()
    lines, bodies = parse_hlo(compiled.as_text())
    state, _ = step_fn(state, batch)
    jax.block_until_ready(state)
    with tempfile.TemporaryDirectory() as directory:
        state, times, events = trace_steps(step_fn, state, batch, args.steps, directory)
    totals, busy = op_times(op_intervals(events, 'jit_train_step'))
    per_step = {op: us / 1e3 / args.steps for op, us in totals.items()}
    by_category = collections.Counter()
    for op, ms in per_step.items():
        by_category[categorise(op, lines.get(op, ''), bodies)] += ms
    op_total = sum(per_step.values())
    print(
        f'JAX {jax.__version__}, U-Net depth {args.depth} base {args.base_width}, '
        f'{args.image_size}x{args.image_size}, batch {args.batch_size}, spec {args.spec}, '
        f'{"XLA defaults" if args.xla_defaults else "models.compiler_options()"}: '
        f'wall {statistics.median(times) * 1e3:.0f} ms per step (median of {args.steps}), '
        f'operations running {op_total:.0f} ms of it; load average {os.getloadavg()[0]:.1f}\n'
    )
    print('| category | ms per step | share |')
    print('|---|---|---|')
    for category in sorted(CATEGORIES, key=lambda c: -by_category[c]):
        ms = by_category[category]
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
