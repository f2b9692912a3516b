"""Images per second of each simulation, in this process.

The synthetic sets must build at >= 50 images/s at 128x128 on one core; measure that with
    taskset -c 0 python benchmarks/synthetic_throughput.py
(without taskset, numpy/scipy may use several cores). Prints one line per kind and size.
"""

from collections.abc import Sequence
import time

from absl import app, flags

from unet_jax.data import simulate

_SIZES = flags.DEFINE_multi_integer('size', [128, 256], 'Square image sides to time.')
_SECONDS = flags.DEFINE_float('seconds', 3.0, 'Minimum time spent per kind and size.')


def images_per_second(kind: str, size: int, seconds: float) -> float:
    """Throughput of ``simulate_example`` after one warm-up example (PSF caches etc.)."""
    simulate.simulate_example(kind, 0, 0, size)
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        simulate.simulate_example(kind, 0, count + 1, size)
        count += 1
    return count / elapsed


def main(argv: Sequence[str]) -> None:
    del argv
    for size in _SIZES.value:
        for kind in simulate.KINDS:
            rate = images_per_second(kind, size, _SECONDS.value)
            print(f'{kind:>10s} {size:4d}x{size:<4d} {rate:7.1f} images/s', flush=True)


if __name__ == '__main__':
    app.run(main)
