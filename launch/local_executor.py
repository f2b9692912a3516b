"""--executor=local: the study's groups as processes on this host, up to --parallel at once;
with several accelerators each process sees one (CUDA_VISIBLE_DEVICES). Logs: W/logs/.
"""

import os
import subprocess
import time

from absl import flags, logging
from commands import CHILD_ENV, main_command, shell

from unet_jax import errors, io_utils, layout, report
from unet_jax.study import runner

FLAGS = flags.FLAGS  # the flags of launch/sweep.py


def detect_devices() -> list[str]:
    if FLAGS.devices is not None:
        return [d for d in FLAGS.devices if d]
    visible = CHILD_ENV.get('CUDA_VISIBLE_DEVICES')
    if visible is not None:
        return [d for d in visible.split(',') if d]
    try:
        listing = subprocess.run(
            ['nvidia-smi', '--query-gpu=index', '--format=csv,noheader'],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return listing.stdout.split()


def run_local(*, args, workdir, sweep, groups, dry_run) -> int:
    devices = detect_devices()
    parallel = FLAGS.parallel or max(1, len(devices))
    logs = os.path.join(workdir, 'logs')
    jobs = [(str(g.index), g.name) for g in groups]
    if dry_run:
        print(
            f'# local: {len(jobs)} groups ({sum(len(g.runs) for g in groups)} runs), {parallel} '
            f'at once, accelerators: {devices or "none (CPU)"}; logs in {logs}/'
        )
        print(shell(main_command(args, workdir, 'pretrain')))
        for group in groups:
            print(f'# group {group.index}: {group.name} ({len(group.runs)} runs)')
            print(shell(main_command(args, workdir, str(group.index))))
        print(shell(main_command(args, workdir, 'report')))
        return 0
    os.makedirs(logs, exist_ok=True)
    logging.info('sweep: pre-training and data preparation (log: %s/pretrain.log)', logs)
    if _start(args, workdir, 'pretrain', logs, None).wait() != 0:
        raise errors.UserError(
            f'pre-training or data preparation failed: see {logs}/pretrain.log. Nothing else '
            'ran; fix the cause and run the same command again.'
        )
    failed = _run_pool(args, workdir, jobs, logs, parallel, devices)
    path = report.write_report(workdir)
    logging.info('sweep: report in %s', path)
    if failed:
        raise errors.UserError(failed_message(workdir, sweep, groups, failed, logs))
    return 0


def failed_message(workdir: str, sweep, groups, failed: list[str], logs: str) -> str:
    """'N of M runs failed: see ...' from the runs' error.txt; groups that failed without one
    (killed, or refused to start) are named with their log."""
    total = len(sweep.runs)
    runs = [
        p.run_name
        for g in groups
        if g.name in failed
        for p in g.runs
        if layout.has_failed(layout.run_dir(workdir, p.run_name))
    ]
    silent = [
        f'{logs}/{g.index}.log'
        for g in groups
        if g.name in failed and not any(p.run_name in runs for p in g.runs)
    ]
    parts = [runner.failed_message(workdir, runs, total)] if runs else []
    if silent:
        parts.append(
            f'{len(silent)} of {len(groups)} groups failed before a run could fail: see '
            f'{", ".join(silent[:3])}{" ..." if len(silent) > 3 else ""}.'
        )
    return ' '.join(parts)


def _start(args, workdir, sweep_index, logs, device) -> subprocess.Popen:
    env = dict(CHILD_ENV)
    if device is not None:
        env['CUDA_VISIBLE_DEVICES'] = device
    log = open(os.path.join(logs, f'{sweep_index}.log'), 'a')
    try:
        return subprocess.Popen(
            main_command(args, workdir, sweep_index), env=env, stdout=log, stderr=subprocess.STDOUT
        )
    finally:
        log.close()  # the child holds its own descriptor


def _run_pool(args, workdir, jobs, logs, parallel, devices) -> list[str]:
    pending, running, failed, done = list(jobs), {}, [], 0
    free = list(range(parallel))
    progress = io_utils.Progress(len(jobs), unit='groups')
    try:
        while pending or running:
            while pending and free:
                slot = free.pop(0)
                index, name = pending.pop(0)
                device = devices[slot % len(devices)] if devices else None
                running[slot] = (index, name, _start(args, workdir, index, logs, device))
            time.sleep(0.2)
            for slot, (_, name, process) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[slot]
                free.append(slot)
                done += 1
                if process.returncode:
                    failed.append(name)
                logging.info(
                    'sweep: %s %s; %s (%d failed)',
                    name,
                    'failed' if process.returncode else 'finished',
                    progress.line(done),
                    len(failed),
                )
    finally:
        for _, _, process in running.values():
            process.terminate()
    return failed
