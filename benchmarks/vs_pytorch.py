r"""The project's JAX train step vs the same U-Net in PyTorch (eager and torch.compile).

Same U-Net (widths, 3x3 'same' convs, 2x2 stride-2 up-conv, 2x2 max-pool, concatenated skips),
same batch, same loss (per-image BCE + soft Dice, batch mean), Adam, and the same freeze specs
(PyTorch: `requires_grad=False` on the frozen modules). Before timing, the PyTorch models get
the JAX initial weights and every implementation must compute the same first-step loss and
gradient norm. The implementations then run interleaved (JAX, eager, compile, JAX, ...), so
load from other processes hits all of them alike; the table shows medians and the ratios.

The JAX step is the project's `train.train_step`, built like the training loop builds it, but
with augmentation switched off (PyTorch gets the same un-augmented batch). Both libraries get
the same CPU cores: XLA sizes its thread pool from the process's CPU affinity and PyTorch gets
`torch.set_num_threads` of the same count.

  pip install -e '.[bench]'                  # PyTorch, only for this script
  python benchmarks/vs_pytorch.py            # classic and quick sizes, 5 specs each
  python benchmarks/vs_pytorch.py --quick    # quick size, full and first-block specs only
  python benchmarks/vs_pytorch.py --sizes=classic --specs=full --repeats=9
  python benchmarks/vs_pytorch.py --xla_defaults   # also JAX without the project's XLA options
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
import jax.numpy as jnp
import numpy as np

from unet_jax import config_lib, freeze, layers, metrics, models, train

try:
    import torch
    from torch import nn
    import torch.nn.functional as F
except ImportError:
    sys.exit("This benchmark needs PyTorch: pip install -e '.[bench]'")

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
DEFAULTS = 'JAX, XLA defaults'
QUICK = dict(sizes=['quick'], specs=['full', 'first block only'], repeats=3)
# Same relative tolerance for loss and gradient norm: float32 sums in different orders.
CHECK_RTOL = 1e-3


# ----------------------------------------------------------------------------- PyTorch U-Net


class TorchUNet(nn.Module):
    """The project's U-Net (norm 'none', transpose up-sampling) with the same module names."""

    def __init__(self, depth: int, base_width: int, in_channels: int = 1, out_channels: int = 1):
        super().__init__()
        self.depth = depth
        width = [base_width * 2**level for level in range(depth + 1)]
        blocks = {}
        channels = in_channels
        for level in range(depth):
            blocks[f'enc{level}'] = _conv_pair(channels, width[level])
            channels = width[level]
        blocks['bottleneck'] = _conv_pair(channels, width[depth])
        for level in reversed(range(depth)):
            block = _conv_pair(2 * width[level], width[level])
            block['up'] = nn.ConvTranspose2d(width[level + 1], width[level], 2, stride=2)
            blocks[f'dec{level}'] = block
        blocks['head'] = nn.ModuleDict({'conv0': nn.Conv2d(base_width, out_channels, 1)})
        self.blocks = nn.ModuleDict(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level in range(self.depth):
            x = _two_convs(self.blocks[f'enc{level}'], x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = _two_convs(self.blocks['bottleneck'], x)
        for level in reversed(range(self.depth)):
            block = self.blocks[f'dec{level}']
            x = _two_convs(block, torch.cat([block['up'](x), skips[level]], dim=1))
        return self.blocks['head']['conv0'](x)


def _conv_pair(cin: int, cout: int) -> nn.ModuleDict:
    return nn.ModuleDict(
        {'conv0': nn.Conv2d(cin, cout, 3, padding=1), 'conv1': nn.Conv2d(cout, cout, 3, padding=1)}
    )


def _two_convs(block: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
    return F.relu(block['conv1'](F.relu(block['conv0'](x))))


def torch_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """unet_jax.metrics.segmentation_loss (BCE + soft Dice, weights 1) averaged over the batch."""
    bce = F.binary_cross_entropy_with_logits(logits, masks, reduction='none').mean((1, 2, 3))
    probs = torch.sigmoid(logits)
    intersection = (probs * masks).sum((1, 2, 3))
    total = probs.sum((1, 2, 3)) + masks.sum((1, 2, 3))
    dice = 1.0 - (2.0 * intersection + 1.0) / (total + 1.0)
    return (bce + dice).mean()


def load_jax_params(model: TorchUNet, params) -> None:
    """Copies a unet_jax parameter tree into the PyTorch modules of the same names.

    Conv kernels HWIO -> OIHW. The JAX up-conv applies its kernel spatially flipped (as
    nn.ConvTranspose does), PyTorch's ConvTranspose2d does not: flip it on the way over.
    """
    with torch.no_grad():
        for block, units in params.items():
            for unit, leaves in units.items():
                leaves = leaves.get('conv', leaves)
                kernel = np.asarray(leaves['kernel'])
                if unit == 'up':
                    weight = kernel[::-1, ::-1].transpose(2, 3, 0, 1)  # [Cin, Cout, kh, kw]
                else:
                    weight = kernel.transpose(3, 2, 0, 1)
                module = model.blocks[block][unit]
                module.weight.copy_(torch.from_numpy(np.array(weight)))
                module.bias.copy_(torch.from_numpy(np.array(leaves['bias'])))


class TorchStep:
    """Adam on the trained modules only; `compiled` wraps forward + loss in torch.compile."""

    def __init__(self, model: TorchUNet, trained_units, *, compiled: bool):
        trained = set(trained_units)
        for block, units in model.blocks.items():
            for unit, module in units.items():
                module.requires_grad_(f'{block}/{unit}' in trained)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=1e-3)
        loss_of = lambda images, masks: torch_loss(model(images), masks)
        self.loss_of = torch.compile(loss_of) if compiled else loss_of

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[float, float]:
        """One step; the gradient norm (for the check) is computed before the update."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_of(images, masks)
        loss.backward()
        with torch.no_grad():
            grad_norm = torch.sqrt(sum((p.grad**2).sum() for p in self.params))
        self.optimizer.step()
        return loss.item(), grad_norm.item()


# ----------------------------------------------------------------------------- JAX step


class JaxStep:
    """The project's train step, built as the training loop builds it (no augmentation)."""

    def __init__(self, size: dict, spec: str, *, xla_defaults: bool = False):
        config = config_lib.default_config()
        config.model.depth, config.model.base_width = size['depth'], size['base_width']
        config.data.image_size, config.batch_size = size['image_size'], size['batch_size']
        config.augment.flip = config.augment.affine = config.augment.intensity = False
        model = models.create_model(config.model)
        registry = layers.build_registry(
            model, image_size=config.data.image_size, in_channels=config.model.in_channels
        )
        self.plan = freeze.compile_spec(spec, registry, order='forward', granularity='block')
        variables = train.initial_variables(model, config)
        self.initial_params = flax.core.unfreeze(variables['params'])
        labels = self.plan.labels(variables['params'])
        tx = freeze.make_optimizer(train.create_train_tx(config), labels)
        self.state = train.TrainState(
            step=jnp.zeros((), jnp.int32),
            params=variables['params'],
            batch_stats={},
            opt_state=tx.init(variables['params']),
        )
        self.step_fn = jax.jit(
            functools.partial(
                train.train_step,
                model=model,
                tx=tx,
                labels=labels,
                frozen_units=self.plan.frozen_units,
                rng=jax.random.key(0),
                config=config,
            ),
            donate_argnums=0,
            compiler_options=None if xla_defaults else models.compiler_options(),
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> tuple[float, float]:
        self.state, step_metrics = self.step_fn(self.state, batch)
        values = metrics.compute_metrics(step_metrics)
        return values['loss'], values['grad_norm']


# ----------------------------------------------------------------------------- the comparison


def make_batch(size: dict, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (size['batch_size'], size['image_size'], size['image_size'], 1)
    return {
        'image': rng.standard_normal(shape).astype(np.float32),
        'mask': (rng.random(shape) > 0.7).astype(np.float32),
    }


def check_same_step(first: dict[str, tuple[float, float]], where: str) -> None:
    """Fails unless every implementation's first step has the JAX loss and gradient norm."""
    loss, grad_norm = first['JAX']
    for name, (other_loss, other_norm) in first.items():
        if not (
            np.isclose(other_loss, loss, rtol=CHECK_RTOL)
            and np.isclose(other_norm, grad_norm, rtol=CHECK_RTOL)
        ):
            sys.exit(
                f'{where}: {name} computes loss {other_loss:.6g} and gradient norm '
                f'{other_norm:.6g}, JAX {loss:.6g} and {grad_norm:.6g} on the same weights and '
                'batch: the two U-Nets differ, so their timings are not comparable.'
            )


def compare(size_name: str, spec_name: str, repeats: int, xla_defaults: bool) -> dict[str, float]:
    """Median step times (s) of JAX, PyTorch eager and torch.compile, interleaved."""
    size, spec = SIZES[size_name], SPECS[spec_name]
    batch = make_batch(size)
    images = torch.from_numpy(batch['image'].transpose(0, 3, 1, 2).copy())
    masks = torch.from_numpy(batch['mask'].transpose(0, 3, 1, 2).copy())
    jax_step = JaxStep(size, spec)
    steps = {'JAX': lambda: jax_step(batch)}
    if xla_defaults:
        default_step = JaxStep(size, spec, xla_defaults=True)
        steps[DEFAULTS] = lambda: default_step(batch)
    for name, compiled in (('PyTorch eager', False), ('torch.compile', True)):
        model = TorchUNet(size['depth'], size['base_width'])
        load_jax_params(model, jax_step.initial_params)
        steps[name] = functools.partial(
            TorchStep(model, jax_step.plan.trained_units, compiled=compiled), images, masks
        )
    # The first call compiles (JAX and torch.compile); from identical weights it must agree.
    first = {name: step() for name, step in steps.items()}
    check_same_step(first, f'{size_name} / {spec_name}')
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()  # returns Python floats: JAX's step has finished
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
    args = parser.parse_args()
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
        f'steps, batch 8, Adam, BCE + Dice; load average at start {load()}',
        flush=True,
    )
    rows = []
    for size_name in sizes:
        for spec_name in specs:
            medians = compare(size_name, spec_name, repeats, args.xla_defaults)
            rows.append((size_name, spec_name, medians))
            print(f'  {size_name} / {spec_name}: {_ms(medians)} (load {load()})', flush=True)
    print(f'\nload average at end {load()}\n')
    names = list(rows[0][2])
    print(f'| size | spec | {" | ".join(f"{n} ms" for n in names)} | JAX / eager | JAX / compile |')
    print('|---' * (len(names) + 4) + '|')
    for size_name, spec_name, m in rows:
        times = ' | '.join(f'{m[n] * 1e3:.0f}' for n in names)
        print(
            f'| {size_name} | {spec_name} (`{SPECS[spec_name]}`) | {times} | '
            f'{m["JAX"] / m["PyTorch eager"]:.2f} | {m["JAX"] / m["torch.compile"]:.2f} |'
        )


def _ms(medians: dict[str, float]) -> str:
    return ', '.join(f'{name} {seconds * 1e3:.0f} ms' for name, seconds in medians.items())


if __name__ == '__main__':
    main()
