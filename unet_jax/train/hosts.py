"""Several processes (hosts) training one run: start-up, and the check that they hold the same data.

Every process loads all the data, deterministically, and places only the shards of its own
devices (`unet_jax.train.lanes.to_devices`): the mesh spans every process's devices, a step's batch
is sharded over all of them, and evaluation outputs are gathered from all of them
(`unet_jax.train.lanes.to_host`) before scoring. Every process takes part in each Orbax save and
restore (each writes the shards it holds); only process 0 writes the run's other files
(config.json, metrics, TensorBoard events, predictions, results.json). The run folder must be
on a file system that every process sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
import hashlib
from typing import TypeVar

from absl import logging
import jax
import numpy as np

T = TypeVar('T')


def initialize(
    *, coordinator_address: str | None, num_processes: int | None, process_id: int | None
) -> None:
    """Joins this process to the others of the run (`jax.distributed.initialize`).

    With none of the three given, JAX reads them from the cluster's environment (SLURM's
    `srun`, among others); else all three must be given. On CPU the processes exchange
    arrays through gloo (JAX's default there).
    """
    given = {
        '--coordinator_address': coordinator_address,
        '--num_processes': num_processes,
        '--process_id': process_id,
    }
    missing = [name for name, value in given.items() if value is None]
    if missing and len(missing) < len(given):
        raise ValueError(
            f'{", ".join(missing)} missing: a multi-process run needs all of --coordinator_address '
            '(host:port of process 0), --num_processes and --process_id, or none of them (under '
            "SLURM's srun, which sets them)."
        )
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(
            f'--process_id={process_id} must be in [0, --num_processes={num_processes}); '
            'number the processes 0, 1, ..., with 0 on the host of --coordinator_address.'
        )
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    logging.info(
        'Process %d of %d; devices: %d here, %d in all.',
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def first_then_others(load: Callable[[], T]) -> T:
    """`load()` in process 0, then in the others: a data set that must be built first (TFDS)
    is built once, by process 0, and read by the others."""
    if jax.process_count() == 1:
        return load()
    from jax.experimental import multihost_utils

    result = load() if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices('unet_jax: data loaded by process 0')
    return load() if result is None else result


def check_same_data(arrays: Iterable[np.ndarray], *, where: str) -> None:
    """Fails when another process loaded other data (another data folder or version): each
    process places its shards from its own copy, so the copies must be equal."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    digest = hashlib.blake2b(digest_size=16)
    for array in arrays:
        digest.update(np.ascontiguousarray(array).view(np.uint8))
    multihost_utils.assert_equal(
        np.frombuffer(digest.digest(), np.uint8),
        fail_message=(
            f'{where}: the processes of this run loaded different data. Point every process at '
            'the same config.data (manual_dir, data dir) on a file system they all see.'
        ),
    )
