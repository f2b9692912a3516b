"""Kill and resume at scale: a quick fine-tune SIGKILLed at 20 random moments ends, every time,
bit for bit as the uninterrupted run (test probabilities and results.json's test metrics).

The moments are drawn from a fixed seed, uniformly over the wall time of an uninterrupted process
(the latest whole run's, so that a machine whose load drops mid-test does not draw most moments
after the end), so they fall in every phase it goes through: start-up and data loading,
compilation, steps, validation, checkpoint writes and the final scoring. A folder is killed up to
KILLS_PER_FOLDER times in a row (each time in the process that resumed it), then finished and
compared; the next folder starts afresh. Every process is `python -m unet_jax.main`, forked
from a server that has imported the libraries (as in test_bad_inputs), so a kill costs the
run's own time, not an interpreter start. Each resumed process also takes the folder's lock
just after the previous holder was SIGKILLed: a lock left stale would fail it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import random
import subprocess
import sys
import time

import numpy as np

from tests.test_bad_inputs import REPO, TINY_ARGS, write_folder

NUM_KILLS = 20
KILLS_PER_FOLDER = 4
SEED = 0

# Forks `python -m unet_jax.main ARGS` children on request; reports each child's pid at once
# and its exit status (negative: the signal that ended it) when it ends.
FORK_SERVER = r"""
import json, os, runpy, sys, traceback
import absl.app, jax, ml_collections.config_flags, unet_jax.errors, unet_jax.config.defaults
import unet_jax.study.checks
import unet_jax.freeze, unet_jax.models.layer_registry, unet_jax.models, unet_jax.train.runfolder
# TF, TFDS, Orbax, CLU:
import unet_jax.train.trainer, unet_jax.data.pipeline, unet_jax.data.builders
print('ready', flush=True)
for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        for fd, path in ((1, request['log']), (2, request['log'])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), fd)
        sys.argv = [os.path.join(request['cwd'], 'unet_jax', 'main.py'), *request['args']]
        try:
            runpy.run_module('unet_jax.main', run_name='__main__', alter_sys=True)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (e.code is not None)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    print(json.dumps({'pid': pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({'code': os.waitstatus_to_exitcode(status)}), flush=True)
"""


class Commands:
    """Starts `python -m unet_jax.main ARGS` processes (one at a time) and kills them."""

    def __init__(self, log: Path):
        self.log = log
        self.server = subprocess.Popen(
            [sys.executable, '-c', FORK_SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert self.server.stdout.readline().strip() == 'ready'

    def run(self, args, *, kill_after: float | None = None) -> tuple[int, float]:
        """(exit status, seconds it ran); SIGKILLed after `kill_after` s unless it ended."""
        request = dict(args=list(args), cwd=REPO, log=str(self.log))
        self.server.stdin.write(json.dumps(request) + '\n')
        self.server.stdin.flush()
        start = time.monotonic()
        pid = json.loads(self.server.stdout.readline())['pid']
        if kill_after is not None:
            time.sleep(kill_after)
            try:
                os.kill(pid, 9)
            except ProcessLookupError:  # ended already: the server has reaped it
                pass
        code = json.loads(self.server.stdout.readline())['code']
        return code, time.monotonic() - start

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=60)


def run_args(data: Path, workdir: Path, *extra: str) -> list[str]:
    """The tiny run of TINY_ARGS on a folder set, 12 steps: 4 validations, 6 checkpoints."""
    cache = os.environ.get('JAX_COMPILATION_CACHE_DIR', '')
    return [
        *TINY_ARGS,
        f'--workdir={workdir}',
        '--config.data.name=folder',
        f'--config.data.folder.images={data / "images"}',
        f'--config.data.folder.masks={data / "masks"}',
        '--config.num_train_steps=12',
        '--config.warmup_steps=1',
        '--config.log_every_steps=2',
        '--config.eval_every_steps=3',
        '--config.checkpoint_every_steps=2',
        '--config.num_saved_predictions=100',  # every test image
        f'--compilation_cache={cache}',
        *extra,
    ]


def fine_tune_args(data: Path, pretrained: Path, workdir: Path) -> list[str]:
    """The expanding path trains from the pre-trained run; the rest stays frozen."""
    spec = ('--config.finetune.train=@expanding', f'--config.init_from={pretrained}')
    return run_args(data, workdir, *spec)


def outcome(workdir: Path) -> tuple[dict, np.ndarray]:
    """What must not depend on the kills: results.json's scores and the test probabilities."""
    results = json.loads((workdir / 'results.json').read_text())
    scores = {k: results[k] for k in ('best_step', 'val', 'test', 'test_per_image', 'val_curve')}
    with np.load(workdir / 'predictions.npz') as predictions:
        return scores, predictions['prob']


def test_a_fine_tune_killed_at_20_random_moments_resumes_bit_for_bit(tmp_path):
    data = write_folder(tmp_path / 'data')
    commands = Commands(tmp_path / 'log.txt')
    try:
        pretrained = tmp_path / 'pretrain'
        assert commands.run(run_args(data, pretrained))[0] == 0, log(tmp_path)
        reference = tmp_path / 'reference'
        code, seconds = commands.run(fine_tune_args(data, pretrained, reference))
        assert code == 0, log(tmp_path)
        print(f'uninterrupted fine-tune: {seconds:.1f} s')
        expected_scores, expected_probs = outcome(reference)

        rng, kills, folders = random.Random(SEED), [], 0
        while len(kills) < NUM_KILLS:
            workdir = tmp_path / f'killed{folders}'
            folders += 1
            args = fine_tune_args(data, pretrained, workdir)
            for attempt in range(KILLS_PER_FOLDER):
                if len(kills) == NUM_KILLS:
                    break
                moment = rng.uniform(0, seconds)
                code, ran = commands.run(args, kill_after=moment)
                if code == 0:  # it ended before the moment: the folder is finished
                    if attempt == 0:  # a whole run, faster than measured: the cores are
                        seconds = ran  # freer now, so draw the next moments from its time
                    break
                assert code == -9, log(tmp_path)
                kills.append((workdir.name, round(moment, 2), checkpoint_steps(workdir)))
            code, _ = commands.run(args)  # resumed to the end (or finished already)
            assert code == 0, log(tmp_path)
            scores, probs = outcome(workdir)
            assert scores == expected_scores, (workdir.name, kills)
            assert probs.tobytes() == expected_probs.tobytes(), (workdir.name, kills)
    finally:
        commands.close()
    print(f'{len(kills)} kills in {folders} folders (folder, second, saved steps): {kills}')
    assert len(kills) == NUM_KILLS


def checkpoint_steps(workdir: Path) -> list[int]:
    """The steps of the latest-state checkpoints a killed process left (for the failure text)."""
    folder = workdir / 'checkpoints'
    if not folder.exists():
        return []
    return sorted(int(d.name) for d in folder.iterdir() if d.name.isdigit())


def log(tmp_path: Path) -> str:
    return (tmp_path / 'log.txt').read_text()[-3000:]
