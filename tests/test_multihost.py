"""Two processes with one CPU device each train the run that one process with two devices trains."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests import test_train
from unet_jax.train import hosts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 240

# One process of the run: joins the others (as `unet_jax.main --multihost` does) and trains the
# tiny run; with a stop step, it leaves after that step's checkpoint as a pre-empted job would,
# then trains again, resuming from the checkpoint (in the same processes: a second start would
# compile every program of process 1 again, as JAX caches compilations of process 0 only).
SCRIPT = textwrap.dedent("""
    import os, sys
    process_id, num_processes, port, workdir, stop_at = sys.argv[1:]
    from unet_jax.train import hosts, trainer
    from tests import tiny
    if int(num_processes) > 1:
        hosts.initialize(coordinator_address=f'127.0.0.1:{port}',
                         num_processes=int(num_processes), process_id=int(process_id))

    class Preempted(Exception):
        pass

    save = trainer.save_checkpoint
    def save_then_stop(session, step):
        save(session, step)
        if step == int(stop_at):
            raise Preempted
    trainer.save_checkpoint = save_then_stop
    config = tiny.tiny_config(**{'finetune.train': 'enc0..bottleneck,head'})
    try:
        trainer.train_and_evaluate(config, workdir, splits=tiny.disk_splits())
    except Preempted:
        assert not os.path.exists(os.path.join(workdir, 'results.json'))
        print('pre-empted at step', stop_at, '; resuming', flush=True)
        trainer.train_and_evaluate(config, workdir, splits=tiny.disk_splits())
""")


def gloo_available() -> bool:
    try:
        from jax._src.lib import _jax
    except ImportError:
        return False
    return hasattr(_jax, 'make_gloo_tcp_collectives')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def start_run(workdir, *, num_processes: int, devices: int, stop_at: int = -1) -> list:
    """Starts the processes of one run: [(process, log file)]."""
    env = dict(
        os.environ,
        PYTHONPATH=REPO,
        JAX_PLATFORMS='cpu',
        XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
    )
    port = free_port()
    started = []
    for i in range(num_processes):
        log = workdir.parent / f'{workdir.name}.{i}.log'
        args = [str(i), str(num_processes), str(port), str(workdir), str(stop_at)]
        with open(log, 'w') as f:
            command = [sys.executable, '-c', SCRIPT, *args]
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT
            )
        started.append((process, log))
    return started


def wait_for(started: list) -> None:
    """Waits for every process (killing them all after TIMEOUT_S); on failure shows every log."""
    try:
        codes = [process.wait(timeout=TIMEOUT_S) for process, _ in started]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for process, _ in started:
            process.kill()
    if codes != [0] * len(started):
        shown = '\n'.join(f'--- {log.name} ---\n{log.read_text()[-4000:]}' for _, log in started)
        pytest.fail(f'exit codes {codes} (None: over {TIMEOUT_S} s)\n{shown}')


@pytest.mark.skipif(
    not gloo_available(), reason='this jaxlib has no gloo, the CPU collectives of several processes'
)
def test_two_processes_train_and_resume_as_one_process_with_two_devices(tmp_path):
    # Side by side: process 1 compiles every program (it never finds them in the cache).
    started = start_run(tmp_path / 'one', num_processes=1, devices=2)
    started += start_run(tmp_path / 'two', num_processes=2, devices=1, stop_at=4)
    wait_for(started)
    two = tmp_path / 'two'
    assert 'pre-empted at step 4' in (tmp_path / 'two.0.log').read_text()

    one_results, two_results = (
        json.loads((tmp_path / r / 'results.json').read_text()) for r in ('one', 'two')
    )
    assert two_results['best_step'] == one_results['best_step']
    assert two_results['val_curve']['step'] == one_results['val_curve']['step']
    assert two_results['val_curve']['dice'] == pytest.approx(one_results['val_curve']['dice'])
    for split in ('val', 'test'):
        one_scores, two_scores = (
            [r[split][k] for k in ('dice', 'iou', 'loss', 'num_lesion')]
            for r in (one_results, two_results)
        )
        assert two_scores == pytest.approx(one_scores, abs=1e-5), split
    np.testing.assert_allclose(
        two_results['test_per_image']['dice'], one_results['test_per_image']['dice'], atol=1e-5
    )
    one_best, two_best = (test_train.best_variables(str(tmp_path / r)) for r in ('one', 'two'))
    assert one_best.keys() == two_best.keys()
    for path in one_best:
        np.testing.assert_allclose(two_best[path], one_best[path], atol=1e-5, err_msg=path)
    # Only process 0 writes the run's files: one event file per part of the run, and as many
    # metric lines as the run in one part (a restart from step 0 instead of a resume, or a
    # second writer, would add lines).
    assert len(list(two.glob('events.out.tfevents.*'))) == 2
    lines = lambda r: (tmp_path / r / 'metrics.jsonl').read_text().splitlines()  # noqa: E731
    assert len(lines('two')) == len(lines('one'))
    assert (two / 'config.json').exists() and (two / 'predictions.npz').exists()


@pytest.mark.parametrize(
    'given',
    [
        {'coordinator_address': '127.0.0.1:1', 'num_processes': 2, 'process_id': None},
        {'coordinator_address': None, 'num_processes': 2, 'process_id': 0},
        {'coordinator_address': '127.0.0.1:1', 'num_processes': 2, 'process_id': 2},
    ],
)
def test_incomplete_or_wrong_process_flags_are_named(given):
    with pytest.raises(ValueError, match='--process_id|--coordinator_address'):
        hosts.initialize(**given)
