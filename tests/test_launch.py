"""launch/sweep.py: the plans of both executors (dry runs), and a real sweep on SLURM.

The SLURM test needs a running single-node SLURM (`eval "$(launch/slurm_local.sh start)"`);
without `sinfo` it is skipped, saying so.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A study that trains in seconds: depth-2 U-Net, 32x32, 3 steps, one target, size and seed.
TINY = [
    '--config=configs/layerwise.py:quick,seeds=1,targets=us,sizes=8,'
    'families=scratch+pretrained+contracting+expanding',
    *tiny.TINY_STUDY_FLAGS,
    '--config.batch_size=4',
    '--config.study.pretrain.batch_size=4',
    '--config.num_train_steps=3',
    '--config.study.pretrain.num_train_steps=3',
    '--config.warmup_steps=1',
    '--config.study.pretrain.warmup_steps=1',
    '--config.eval_every_steps=3',
    '--config.study.pretrain.eval_every_steps=3',
    '--config.checkpoint_every_steps=3',
    '--config.study.pretrain.checkpoint_every_steps=3',
    '--config.log_every_steps=3',
    '--config.study.pretrain.log_every_steps=3',
]
RUN_NAMES = [
    'us/n8/s0/scratch',
    'us/n8/s0/pretrained',
    'us/n8/s0/contracting',
    'us/n8/s0/expanding',
]


def sweep(workdir, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, 'launch/sweep.py', *TINY, f'--workdir={workdir}', *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def finish(workdir, run_name):
    """Marks a run finished the way train does: its results.json exists."""
    folder = os.path.join(workdir, 'points', *run_name.split('/'))
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'results.json'), 'w') as f:
        json.dump({}, f)


def test_local_dry_run_lists_pretraining_every_unfinished_run_and_the_report(tmp_path):
    workdir = str(tmp_path / 'study')
    out = sweep(workdir, '--executor=local', '--dry-run', '--parallel=3')
    assert out.returncode == 0, out.stderr
    commands = [line for line in out.stdout.splitlines() if not line.startswith('#')]
    indices = [re.search(r'--sweep_index=(\S+)', c).group(1) for c in commands]
    assert indices == ['pretrain', '0', '1', '2', '3', 'report']
    for command in commands:  # every process gets the same config arguments, verbatim
        assert ' '.join(TINY[1:]) in command and '-m unet_jax.main' in command
    assert '3 at once' in out.stdout
    assert not os.path.exists(workdir)  # a dry run writes nothing

    os.makedirs(workdir)
    finish(workdir, RUN_NAMES[1])
    finish(workdir, RUN_NAMES[3])
    out = sweep(workdir, '--executor=local', '--dry-run')
    indices = re.findall(r'--sweep_index=(\S+)', out.stdout)
    assert indices == ['pretrain', '0', '2', 'report']


def test_slurm_dry_run_array_of_unfinished_runs_between_pretraining_and_report(tmp_path):
    workdir = str(tmp_path / 'study')
    os.makedirs(workdir)
    finish(workdir, RUN_NAMES[0])
    out = sweep(
        workdir,
        '--executor=slurm',
        '--dry-run',
        '--partition=gpu',
        '--gres=gpu:2',
        '--time=01:00:00',
        '--cpus_per_task=6',
        '--mem=20G',
        '--parallel=2',
        '--sbatch_args=--account=lab',
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for line in (
        '#SBATCH --partition=gpu',
        '#SBATCH --gres=gpu:2',
        '#SBATCH --time=01:00:00',
        '#SBATCH --cpus-per-task=6',
        '#SBATCH --mem=20G',
        '#SBATCH --account=lab',
    ):
        assert line in text
    submissions = text.split('# ---- submission')[1].strip().splitlines()
    assert len(submissions) == 3
    assert submissions[0].endswith('pretrain.sbatch')
    assert '--array=0-2%2' in submissions[1]  # runs 1, 2, 3: index 0 has finished
    assert "'--dependency=afterok:<pretrain>'" in submissions[1]
    assert "'--dependency=afterany:<array-0>'" in submissions[2]
    assert '# ' + os.path.join(workdir, 'slurm', 'indices-0.txt') + ': group indices 1-3' in text
    assert '--sweep_index="$INDEX"' in text
    assert not os.path.exists(os.path.join(workdir, 'slurm'))


def test_dry_run_lists_groups_of_seeds(tmp_path):
    workdir = str(tmp_path / 'study')
    seeds2 = [TINY[0].replace('seeds=1', 'seeds=2'), *TINY[1:], '--config.study.group_size=2']
    out = subprocess.run(
        [sys.executable, 'launch/sweep.py', *seeds2, f'--workdir={workdir}', '--dry-run'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    # pretrained: one run per pre-training (seed s from pre-training s, the default); the
    # others: both seeds in one group
    assert re.findall(r'# group (\d+): (\S+) \((\d) runs\)', out.stdout) == [
        ('0', 'us/n8/scratch/s0-1', '2'),
        ('1', 'us/n8/pretrained/s0-1', '2'),
        ('2', 'us/n8/contracting/s0-1', '2'),
        ('3', 'us/n8/expanding/s0-1', '2'),
    ]


def test_slurm_refuses_while_jobs_of_the_study_are_queued(tmp_path):
    """A fake squeue that lists one array task of this study: nothing is submitted."""
    workdir = str(tmp_path / 'study')
    plan = sweep(workdir, '--executor=slurm', '--dry-run')
    job_name = re.search(r'#SBATCH --job-name=(\S+-run)', plan.stdout).group(1)
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for tool, text in (
        ('squeue', f'echo "41_3 {job_name}"'),
        ('sbatch', 'echo submitted >> "$0.log"; echo 1'),
    ):
        (bin_dir / tool).write_text(f'#!/bin/sh\n{text}\n')
        (bin_dir / tool).chmod(0o755)
    env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}')
    out = subprocess.run(
        [sys.executable, 'launch/sweep.py', *TINY, f'--workdir={workdir}', '--executor=slurm'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode != 0
    assert 'still queued or running (41_3' in out.stderr and 'scancel' in out.stderr
    assert not (bin_dir / 'sbatch.log').exists()


def _slurm_running() -> str:
    """'' if a SLURM controller answers, else why not."""
    if shutil.which('sinfo') is None:
        return 'sinfo is not installed'
    state = subprocess.run(['sinfo', '-h', '-o', '%T'], capture_output=True, text=True)
    if state.returncode:
        return f'sinfo failed: {state.stderr.strip()}'
    if not re.search(r'idle|mixed|alloc', state.stdout):
        return f'no usable node (states: {state.stdout.split()})'
    return ''


@pytest.mark.slurm
def test_sweep_on_a_real_slurm_cluster(tmp_path):
    why = _slurm_running()
    if why:
        pytest.skip(
            f'!!! SLURM TEST SKIPPED: {why}. Start a single-node SLURM with '
            '`eval "$(launch/slurm_local.sh start)"` to run it. !!!'
        )
    workdir = str(tmp_path / 'study')
    start = time.time()
    out = sweep(
        workdir,
        '--executor=slurm',
        '--wait',
        '--cpus_per_task=1',
        '--mem=1G',
        '--time=00:10:00',
        timeout=600,
    )
    logs = os.path.join(workdir, 'slurm', 'logs')
    listing = (
        '\n'.join(
            f'--- {name}\n' + open(os.path.join(logs, name)).read()[-2000:]
            for name in sorted(os.listdir(logs))
        )
        if os.path.isdir(logs)
        else ''
    )
    assert out.returncode == 0, out.stderr[-3000:] + listing
    print(f'slurm sweep: {time.time() - start:.1f} s')
    assert re.search(r'pretrain=\d+ array-0=\d+ report=\d+', out.stdout)
    for name in RUN_NAMES:
        with open(os.path.join(workdir, 'points', *name.split('/'), 'results.json')) as f:
            assert 0.0 <= json.load(f)['test']['dice'] <= 1.0
    with open(os.path.join(workdir, 'report', 'summary.csv')) as f:
        summary = f.read()
    for name in RUN_NAMES:
        assert f'us,8,{name.rsplit("/", 1)[1]},' in summary
    assert os.path.exists(os.path.join(workdir, 'report', 'report.html'))

    again = sweep(workdir, '--executor=slurm')  # everything finished: nothing is submitted
    assert again.returncode == 0, again.stderr
    assert 'nothing to run' in again.stderr and 'submitted' not in again.stderr


def test_a_study_of_several_sources_is_refused_with_what_to_run_instead(tmp_path):
    out = subprocess.run(
        [sys.executable, 'launch/sweep.py',
         '--config=configs/layerwise.py:quick,targets=us,sources=natural+natural_speckle',
         f'--workdir={tmp_path}', '--executor=local', '--dry-run'],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode != 0
    assert 'launch each source as its own' in out.stderr
    assert os.path.join(str(tmp_path), 'sources', 'NAME') in out.stderr
