r"""The accelerator checks in one run, written as one Markdown table (benchmarks/accelerator.sh).

Three checks, each measured as the benchmark named does it:
  vs PyTorch      the project's train step (full spec) against the same U-Net in PyTorch
                  (vs_pytorch.py), float32 and `half_precision` (bfloat16 compute): images/s and
                  model FLOP utilisation (the layer registry's FLOPs of the step / time / peak)
  frozen step     step time of every freeze spec of step_time.py relative to the full step,
                  against the registry's FLOP-model ratio
  sweep           study runs per hour, one run at a time vs seeds in groups, each study in a fresh
                  process with an empty compilation cache (sweep_throughput.py)

accelerator.sh runs the parts in turn, each in its own process, every row appended to a JSON
lines file as soon as it is measured (so a part stopped at its deadline keeps what it measured),
then renders the table:

  python benchmarks/accelerator.py steps --rows=R.jsonl --deadline=EPOCH_S [--smoke]
  python benchmarks/accelerator.py sweep --rows=R.jsonl --deadline=EPOCH_S [--smoke]
  python benchmarks/accelerator.py table --rows=R.jsonl --out=FILE.md [--started=EPOCH_S]

A part starts a measurement only while its estimate fits before the deadline; what is left out
is listed under the table. `--smoke` is the same code on CPU at toy size (no sweep: a study
process takes minutes on two CPU cores).

Sizing for one H200 in 8 minutes (estimated from the FLOPs, not measured: no GPU was lent while
this was written). The classic U-Net (depth 4, base 64) at 128x128 costs 68.8 GFLOP per image
per full training step (registry model), so batch 32 is 2.2 TFLOP a step: about 5 ms in
bfloat16 and 15 ms in float32 at a third of the H200's dense peaks (989 and 495 TFLOP/s), long
enough for the GPU to be busy rather than waiting on launches; 30 timed steps per setting take
under a second. The time goes to compilation: 7 JAX programs (full in two precisions, five
frozen specs) at an assumed COMPILE_S each, PyTorch eager's first steps, then torch.compile
(TORCH_COMPILE_S each) only if it still fits the steps part's budget; accelerator.sh holds the
budgets (steps 250 s, both parts 460 s). The sweep is the `:quick` study on one target with 3
seeds and 3 families (9 runs per mode, as measured on CPU in docs/performance.md): a
pre-training process and two study processes of about a minute each (start-up, data,
compilation, 9 x 120 steps, report), SWEEP_S in all.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, NamedTuple

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCHMARKS)
COMPILE_S = 30  # assumed: one JAX compilation and the first steps of a setting, on a GPU
TORCH_COMPILE_S = 90  # assumed: one torch.compile of the U-Net step and its first steps
SWEEP_S = 150  # assumed: the pre-training and the two study processes of the sweep

# Dense peak TFLOP/s by device kind (vendor datasheets, SXM parts): float32 rows are measured
# against the TF32 tensor-core peak (XLA and cuDNN may run float32 convolutions in TF32 on
# these GPUs), bfloat16 rows against the bfloat16 one. Elsewhere pass --peak_tflops.
PEAK_TFLOPS = {
    'H200': {'float32': 494.7, 'bfloat16': 989.4},
    'H100': {'float32': 494.7, 'bfloat16': 989.4},
    'A100': {'float32': 156.0, 'bfloat16': 312.0},
}
PRECISIONS = ('float32', 'bfloat16')


@dataclasses.dataclass(frozen=True)
class Setting:
    size: dict  # depth, base_width, image_size, batch_size (project_step.benchmark_config)
    repeats: int  # timed steps per implementation
    specs: tuple[str, ...]  # names of step_time.SPECS for the frozen-step ratios
    torch_compile: bool
    sweep: dict | None  # sweep_throughput.py arguments; None: not run


GPU = Setting(
    size=dict(depth=4, base_width=64, image_size=128, batch_size=32),
    repeats=30,
    specs=(
        'full',
        'contracting only',
        'expanding only',
        'first block only (enc0)',
        'last block only (head)',
        'last decoder block + head',
    ),
    torch_compile=True,
    sweep=dict(scales='quick', seeds=3, families='full+contracting+expanding', targets='us'),
)
SMOKE = Setting(
    size=dict(depth=1, base_width=2, image_size=16, batch_size=2),
    repeats=2,
    specs=('full', 'first block only (enc0)', 'last block only (head)'),
    torch_compile=False,
    sweep=None,
)
SWEEP_SMOKE_LINE = (
    'sweep: not run with --smoke (a study process takes minutes on two CPU cores); on a GPU '
    'it runs python benchmarks/sweep_throughput.py --scales={scales} --seeds={seeds} '
    '--families={families} --targets={targets}'
)


# ----------------------------------------------------------------------------- rows


class Rows:
    """The JSON lines file the parts append to: rows of the table, context lines, notes."""

    def __init__(self, path: str):
        self.path = path

    def _append(self, record: dict) -> None:
        with open(self.path, 'a') as f:
            f.write(json.dumps(record) + '\n')

    def row(self, check: str, setting: str, quantity: str, measured: str, against='', ratio=''):
        self._append(
            dict(
                kind='row',
                check=check,
                setting=setting,
                quantity=quantity,
                measured=measured,
                against=against,
                ratio=ratio,
            )
        )

    def context(self, text: str) -> None:
        self._append(dict(kind='context', text=text))

    def note(self, text: str) -> None:
        print(text, flush=True)
        self._append(dict(kind='note', text=text))


def render(records: list[dict], total_s: float | None = None) -> str:
    """The Markdown: the context lines, the table, then the notes (what was left out, and why)."""
    lines = [f'- {r["text"]}' for r in records if r['kind'] == 'context']
    if total_s is not None:
        lines.append(f'- whole run: {total_s:.0f} s')
    header = ('check', 'setting', 'quantity', 'measured', 'against', 'ratio')
    lines += ['', '| ' + ' | '.join(header) + ' |', '|---' * len(header) + '|']
    for r in records:
        if r['kind'] == 'row':
            lines.append('| ' + ' | '.join(r[k] or '-' for k in header) + ' |')
    notes = [r['text'] for r in records if r['kind'] == 'note']
    if notes:
        lines += ['', *(f'- {n}' for n in notes)]
    return '\n'.join(lines) + '\n'


def peak_flops(device_kind: str, precision: str, override: str = '') -> float | None:
    """FLOP/s of the device's dense peak in `precision`; None where unknown.

    `override` is 'FLOAT32,BFLOAT16' in TFLOP/s (--peak_tflops)."""
    if override:
        float32, bfloat16 = (float(v) for v in override.split(','))
        return 1e12 * {'float32': float32, 'bfloat16': bfloat16}[precision]
    for name, peaks in PEAK_TFLOPS.items():
        if name in device_kind:
            return 1e12 * peaks[precision]
    return None


def throughput(seconds: float, batch_size: int, flops_per_image: float, peak: float | None):
    """'N images/s, U% of peak': the model FLOP utilisation from the registry's step FLOPs."""
    images = batch_size / seconds
    text = f'{images:,.0f} images/s' if images >= 100 else f'{images:.1f} images/s'
    if peak:
        return f'{text}, {100 * images * flops_per_image / peak:.1f}% of peak'
    return f'{text}, peak unknown'


def _size_text(size: dict, precision: str) -> str:
    return (
        f'depth {size["depth"]} base {size["base_width"]}, {size["image_size"]}px, batch '
        f'{size["batch_size"]}, {precision}'
    )


# ----------------------------------------------------------------------------- parts


@dataclasses.dataclass
class Bench:
    """What the steps part measures with: the settings, the devices, the deadline."""

    setting: Setting
    rows: Rows
    deadline: float
    device_kind: str
    torch: Any  # the torch module, or None: PyTorch's columns are left out
    torch_device: str  # 'cuda' or 'cpu'
    peak: str  # --peak_tflops

    def fits(self, seconds: float) -> bool:
        return time.time() + seconds <= self.deadline

    def rtol(self, precision: str) -> float:
        import vs_pytorch

        half = precision == 'bfloat16'
        return vs_pytorch.HALF_PRECISION_RTOL if half else vs_pytorch.CHECK_RTOL


class FullStep(NamedTuple):
    """The JAX full step of one precision: the step, its median seconds, its first step."""

    step: Any
    median: float
    first: tuple[float, float]


def steps_part(setting: Setting, rows: Rows, deadline: float, *, smoke: bool, peak: str) -> int:
    """The vs-PyTorch rows in both precisions, the frozen-step ratios, then torch.compile."""
    sys.path.insert(0, BENCHMARKS)
    try:
        import jax
        import vs_pytorch
    except ModuleNotFoundError as e:
        rows.note(f'steps: not run: {e} (install the project: pip install -e .)')
        return 1
    backend = jax.default_backend()
    if backend == 'cpu' and not smoke:
        rows.note(
            'steps: not run: JAX finds no accelerator (backend cpu); install jax for the GPU '
            "(e.g. pip install 'jax[cuda12]'), or run with --smoke for the CPU check"
        )
        return 1
    torch, torch_device = vs_pytorch.torch, 'cuda' if backend == 'gpu' else 'cpu'
    if torch is None:
        rows.note("PyTorch is not installed: its columns are left out (pip install -e '.[bench]')")
    elif torch_device == 'cuda' and not torch.cuda.is_available():
        rows.note(f'PyTorch {torch.__version__} sees no GPU: its columns are left out')
        torch = None
    elif torch_device == 'cuda':
        torch.backends.cudnn.benchmark = True  # PyTorch's conv autotuning; XLA always tunes
    bench = Bench(setting, rows, deadline, jax.devices()[0].device_kind, torch, torch_device, peak)
    rows.context(
        f'{datetime.date.today()}, {bench.device_kind} ({backend}, {jax.device_count()} '
        f'device); Python {platform.python_version()}, jax {jax.__version__}'
        + (f', torch {torch.__version__}' if torch is not None else '')
    )
    rows.context(
        f'median of {setting.repeats} steps after a checked first step; Adam, BCE + Dice, no '
        "augmentation; model FLOP utilisation = images/s x the layer registry's FLOPs of a "
        'training step per image / the dense peak (float32: TF32 tensor cores)'
    )
    full = {}
    for precision in PRECISIONS:
        if not bench.fits(COMPILE_S):
            rows.note(f'vs PyTorch, {precision}: left out, the steps part reached its deadline')
            continue
        full[precision] = _vs_pytorch(bench, precision)
    if 'float32' in full:
        _frozen_rows(bench, full['float32'])
    if setting.torch_compile and torch is not None:
        for precision, measured in full.items():
            if not bench.fits(TORCH_COMPILE_S):
                rows.note(f'torch.compile, {precision}: left out, not enough time before deadline')
                continue
            _torch_compile(bench, precision, measured)
    return 0


def _vs_pytorch(bench: Bench, precision: str) -> FullStep:
    """The JAX full step and PyTorch eager's, checked on the first step, timed interleaved."""
    import project_step
    import vs_pytorch

    size, half = bench.setting.size, precision == 'bfloat16'
    if bench.torch is None:
        config = project_step.benchmark_config(**size, augment=False, half_precision=half)
        steps = {vs_pytorch.JAX: project_step.JaxStep(config, '@all')}
    else:
        steps = vs_pytorch.implementations(
            size, '@all', torch_compile=False, half_precision=half, device=bench.torch_device
        )
    first = {name: step() for name, step in steps.items()}
    try:
        vs_pytorch.check_same_step(first, f'vs PyTorch, {precision}', bench.rtol(precision))
    except SystemExit as e:  # different first steps: time JAX alone, say why
        bench.rows.note(str(e))
        steps = {vs_pytorch.JAX: steps[vs_pytorch.JAX]}
    medians = vs_pytorch.interleaved_medians(steps, bench.setting.repeats)
    measured = FullStep(steps[vs_pytorch.JAX], medians[vs_pytorch.JAX], first[vs_pytorch.JAX])
    _pytorch_rows(bench, precision, medians, measured.step)
    return measured


def _torch_compile(bench: Bench, precision: str, full: FullStep) -> None:
    """torch.compile's step against the JAX full step timed before (not interleaved with it)."""
    import vs_pytorch

    compiled = vs_pytorch.torch_steps(
        full.step,
        bench.setting.size,
        {vs_pytorch.COMPILE: True},
        half_precision=precision == 'bfloat16',
        device=bench.torch_device,
    )
    first = {name: step() for name, step in compiled.items()}
    try:
        vs_pytorch.check_same_step(
            {vs_pytorch.JAX: full.first, **first},
            f'torch.compile, {precision}',
            bench.rtol(precision),
        )
    except SystemExit as e:
        bench.rows.note(str(e))
        return
    medians = vs_pytorch.interleaved_medians(compiled, bench.setting.repeats)
    _pytorch_rows(bench, precision, {vs_pytorch.JAX: full.median, **medians}, full.step)


def _pytorch_rows(bench: Bench, precision: str, medians: dict, jax_step) -> None:
    """One row per PyTorch implementation (or JAX's alone): images/s and FLOP utilisation."""
    import vs_pytorch

    size = bench.setting.size
    where = _size_text(size, precision) + ', full'
    flops = jax_step.registry.train_step_flops(jax_step.plan.trained_units)
    peak = peak_flops(bench.device_kind, precision, bench.peak)
    rate = lambda name: throughput(medians[name], size['batch_size'], flops, peak)
    jax_text = f'JAX {rate(vs_pytorch.JAX)}'
    others = [name for name in medians if name != vs_pytorch.JAX]
    if not others:
        bench.rows.row('vs PyTorch', where, 'images/s (model FLOP utilisation)', jax_text)
    for name in others:
        bench.rows.row(
            'vs PyTorch',
            where,
            'images/s (model FLOP utilisation)',
            jax_text,
            f'{name} {rate(name)}',
            f'{medians[name] / medians[vs_pytorch.JAX]:.2f}x',
        )


def _frozen_rows(bench: Bench, full: FullStep) -> None:
    """Each frozen spec's median step over the full step's, against the FLOP-model ratio."""
    import project_step
    import step_time

    setting = bench.setting
    config = project_step.benchmark_config(**setting.size, augment=False)
    for name in setting.specs:
        spec = step_time.SPECS[name]
        if spec == '@all':
            median, ideal = full.median, full.step.flop_ratio()
        elif not bench.fits(COMPILE_S):
            bench.rows.note(f'frozen step `{spec}`: left out, the steps part reached its deadline')
            continue
        else:
            [(times, ideal)] = step_time.step_times(config, {name: spec}, setting.repeats).values()
            median = statistics.median(times)
        ratio = median / full.median
        bench.rows.row(
            'frozen step',
            f'{_size_text(setting.size, "float32")}, {name} `{spec}`',
            'step time / full step',
            f'{ratio:.2f} ({1e3 * median:.1f} ms)',
            f'FLOP model {ideal:.2f}',
            f'{ratio / ideal:.2f}x',
        )


def sweep_part(setting: Setting, rows: Rows, deadline: float) -> int:
    """Grouped vs sequential study throughput; a note instead where it cannot run."""
    if setting.sweep is None:
        rows.note(SWEEP_SMOKE_LINE.format(**GPU.sweep))
        return 0
    study_imports = 'import unet_jax.study.runner, unet_jax.train.trainer, unet_jax.train.writers'
    check = subprocess.run(
        [sys.executable, '-c', study_imports],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
    )
    if check.returncode:
        last = (check.stderr.strip().splitlines() or ['?'])[-1]
        rows.note(f'sweep: not run: the study does not start here ({last}); pip install -e .')
        return 1
    if time.time() + SWEEP_S > deadline:
        rows.note('sweep: left out, not enough time before the deadline')
        return 1
    sys.path.insert(0, BENCHMARKS)
    import sweep_throughput

    args = argparse.Namespace(
        **setting.sweep, modes='sequential,grouped', medium_steps=100, repeats=1, compare_root=''
    )
    where = (
        f'{args.scales} study, targets {args.targets}, {args.seeds} seeds, families '
        f'{args.families}; a fresh process and compilation cache per mode'
    )
    try:
        measured = sweep_throughput.measure(args, tempfile.mkdtemp(prefix='accelerator_'), deadline)
    except subprocess.TimeoutExpired:
        rows.note(f'sweep ({where}): stopped at the deadline')
        return 1
    except SystemExit as e:  # a study process failed: its stderr's end
        rows.note(f'sweep ({where}): {e}')
        return 1
    summary = sweep_throughput.summarise(measured, sweep_throughput.modes_of(args))
    base = summary[0]
    for s in summary[1:]:
        rows.row(
            'sweep',
            where,
            'runs/hour (per run: compile, steps s)',
            f'{s["mode"]} {s["runs_per_hour"]:.0f} ({s["compile_s"]:.1f}, {s["steps_s"]:.1f})',
            f'{base["mode"]} {base["runs_per_hour"]:.0f} '
            f'({base["compile_s"]:.1f}, {base["steps_s"]:.1f})',
            f'{s["speed_up"]:.2f}x',
        )
    for d in sweep_throughput.dice_differences(measured):
        rows.row(
            'sweep',
            where,
            'largest test Dice difference',
            f'{d["mode"]} vs {d["base"]}: {d["diff"]:.1e} over {d["runs"]} runs',
            'the same runs (within 1e-5)',
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('part', choices=('steps', 'sweep', 'table'))
    parser.add_argument('--rows', required=True, help='the JSON lines file the parts append to')
    parser.add_argument(
        '--deadline', type=float, default=0.0, help='steps, sweep: time.time() to stop by'
    )
    parser.add_argument('--smoke', action='store_true', help='CPU, toy size, no sweep')
    parser.add_argument('--peak_tflops', default='', help='FLOAT32,BFLOAT16 dense peak TFLOP/s')
    parser.add_argument('--out', default='', help='table: the Markdown file to write')
    parser.add_argument('--started', type=float, default=0.0, help='table: time.time() at start')
    args = parser.parse_args(argv)
    setting = SMOKE if args.smoke else GPU
    if args.part != 'table' and not args.deadline:
        parser.error(f'{args.part} needs --deadline=EPOCH_S (accelerator.sh sets it)')
    rows = Rows(args.rows)
    start = time.time()
    if args.part == 'steps':
        code = steps_part(setting, rows, args.deadline, smoke=args.smoke, peak=args.peak_tflops)
    elif args.part == 'sweep':
        code = sweep_part(setting, rows, args.deadline)
    else:
        with open(args.rows) as f:
            records = [json.loads(line) for line in f if line.strip()]
        total = time.time() - args.started if args.started else None
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(render(records, total))
        return 0
    print(f'{args.part}: {time.time() - start:.0f} s', flush=True)
    return code


if __name__ == '__main__':
    sys.exit(main())
