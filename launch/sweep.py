r"""Runs a study's groups of runs as separate processes: on this host, or as a SLURM job array.

  python launch/sweep.py --config=configs/layerwise.py:quick --workdir=runs/study \
      --executor=local --parallel=2
  python launch/sweep.py --config=configs/layerwise.py --workdir=runs/study \
      --executor=slurm --partition=gpu --gres=gpu:1 --time=02:00:00
  ... --dry-run   prints the plan (commands, sbatch scripts) and runs nothing

Every process is the same command, `python -m unet_jax.main --config=... --workdir=W
--sweep_index=I` (I = 'pretrain', a group index, or 'report'), with the --config arguments given
here passed on verbatim. A group is the runs of one configuration that differ only in seed,
trained together in one compiled step (`config.study.group_size` of them at most). The
'pretrain' step (pre-training unless finished, then building every target set once, so that
parallel runs never race to build one) runs first (local) or is a dependency of the array
(slurm, afterok); the report comes last (slurm: a job that runs after the array, afterany).
Finished runs (their results.json exists) are skipped, so re-launching after a failure or a
pre-emption only runs what is missing; a group that was killed resumes from its checkpoint.
slurm refuses to submit while jobs of the same study (by job name) are still queued or running,
so that no group runs twice.

local: up to --parallel processes at once; with several accelerators each process sees one
(CUDA_VISIBLE_DEVICES), and --parallel defaults to their number. Logs: W/logs/.
slurm: scripts and logs under W/slurm/; resources from the flags, defaulting to
config.study.slurm; --wait blocks until the report job has finished.
"""

import getpass
import hashlib
import os
import shlex
import shutil
import string
import subprocess
import sys
import time

# Enumerating the sweep builds the model abstractly; it must not grab an accelerator that the
# runs need. The runs get the environment as it was before this line.
CHILD_ENV = dict(os.environ)
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from unet_jax import errors, io_utils, layout, report
from unet_jax.study import checks, loop, run_configs, runner
from unet_jax.study.sweep_points import enumerate_sweep
from unet_jax.train import runfolder

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Study config (configs/layerwise.py[:args]).', lock_config=True
)
flags.DEFINE_string('workdir', None, 'The study workdir (shared by every process).')
flags.DEFINE_enum('executor', 'local', ['local', 'slurm'], 'Where the points run.')
flags.DEFINE_integer(
    'parallel',
    0,
    'local: processes at once (0 = number of accelerators, '
    'or 1 without any); slurm: array tasks at once (0 = '
    'config.study.slurm.max_parallel; 0 there = no limit).',
)
flags.DEFINE_bool('dry-run', False, 'Print the plan (commands or sbatch scripts); run nothing.')
flags.DEFINE_list(
    'devices',
    None,
    'local: accelerator ids to spread the processes over '
    '(default: CUDA_VISIBLE_DEVICES, else every GPU nvidia-smi lists).',
)
flags.DEFINE_string('partition', None, 'slurm: --partition (default config.study.slurm).')
flags.DEFINE_string('time', None, 'slurm: --time per task, e.g. 02:00:00.')
flags.DEFINE_string('gres', None, 'slurm: --gres, e.g. gpu:1 ("" = none).')
flags.DEFINE_integer('cpus_per_task', None, 'slurm: --cpus-per-task.')
flags.DEFINE_string('mem', None, 'slurm: --mem per task, e.g. 16G.')
flags.DEFINE_list('sbatch_args', [], 'slurm: extra sbatch options, e.g. --account=x,--qos=y.')
flags.DEFINE_integer(
    'max_array_size',
    1000,
    "slurm: tasks per array (the cluster's "
    'MaxArraySize - 1 at most); more runs are split into several arrays.',
)
flags.DEFINE_bool('wait', False, 'slurm: wait until the report job has finished.')
flags.mark_flags_as_required(['config', 'workdir'])

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'templates', 'job.sbatch')


def config_args(argv: list[str]) -> list[str]:
    """The --config arguments of this command line, to pass on verbatim to every process."""
    out, i = [], 1
    while i < len(argv):
        arg = argv[i]
        if arg == '--config' or (arg.startswith('--config.') and '=' not in arg):
            out.append(f'{arg}={argv[i + 1]}')
            i += 2
            continue
        if arg.startswith('--config=') or arg.startswith('--config.'):
            out.append(arg)
        i += 1
    return out


def base_command(args: list[str], workdir: str) -> list[str]:
    return [sys.executable, '-m', 'unet_jax.main', *args, f'--workdir={workdir}']


def main_command(args: list[str], workdir: str, sweep_index: str) -> list[str]:
    return base_command(args, workdir) + [f'--sweep_index={sweep_index}']


def shell(command: list[str]) -> str:
    return ' '.join(shlex.quote(c) for c in command)


# ----------------------------------------------------------------------------- local


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


# ----------------------------------------------------------------------------- slurm


def slurm_resources(config) -> dict[str, object]:
    defaults = config.study.slurm
    pick = lambda flag, key: defaults[key] if flag is None else flag  # noqa: E731
    return dict(
        partition=pick(FLAGS.partition, 'partition'),
        time=pick(FLAGS.time, 'time'),
        gres=pick(FLAGS.gres, 'gres'),
        cpus_per_task=pick(FLAGS.cpus_per_task, 'cpus_per_task'),
        mem=pick(FLAGS.mem, 'mem'),
    )


def sbatch_lines(resources: dict[str, object], extra: list[str]) -> list[str]:
    lines = [
        f'#SBATCH --{key.replace("_", "-")}={value}'
        for key, value in resources.items()
        if value not in ('', None, 0)
    ]
    return lines + [f'#SBATCH {arg}' for arg in extra]


def render(*, description, job_name, log, lines, command) -> str:
    with open(TEMPLATE) as f:
        template = string.Template(f.read())
    return template.substitute(
        description=description,
        job_name=job_name,
        log=log,
        chdir=os.getcwd(),
        sbatch_lines='\n'.join(lines),
        command=command,
    )


def index_ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8' (for reading a plan)."""
    parts, start = [], None
    for i, index in enumerate(indices):
        if start is None:
            start = index
        if i + 1 == len(indices) or indices[i + 1] != index + 1:
            parts.append(str(start) if start == index else f'{start}-{index}')
            start = None
    return ','.join(parts)


def array_spec(count: int, max_parallel: int) -> str:
    return f'0-{count - 1}' + (f'%{max_parallel}' if max_parallel else '')


def job_prefix(workdir: str) -> str:
    """The start of every job name of a study: its folder's name and a hash of its path."""
    digest = hashlib.sha1(os.path.abspath(workdir).encode()).hexdigest()[:8]
    return f'{os.path.basename(os.path.normpath(workdir))}-{digest}'


def check_slurm_programs() -> None:
    """sbatch and squeue are on the PATH, or the error says how to get on without them."""
    missing = [p for p in ('sbatch', 'squeue') if not shutil.which(p, path=CHILD_ENV.get('PATH'))]
    if missing:
        raise errors.UserError(
            f'--executor=slurm needs SLURM\'s {" and ".join(missing)}, not found on the PATH. '
            'To fix: install SLURM (or run this command on a node of the cluster, where '
            '`sbatch` works), or run the groups on this machine with --executor=local.'
        )


def queued_jobs(workdir: str) -> list[str]:
    """'id name' of this study's jobs that SLURM still holds (pending or running)."""
    listing = subprocess.run(
        ['squeue', '-h', '-u', getpass.getuser(), '-o', '%i %j'],
        capture_output=True,
        text=True,
        env=CHILD_ENV,
    )
    if listing.returncode:
        raise errors.UserError(
            f'squeue failed: {listing.stderr.strip()}. Is SLURM running here (`sinfo`)? Or run '
            'the groups on this machine with --executor=local.'
        )
    prefix = job_prefix(workdir) + '-'
    jobs = [line.split(maxsplit=1) for line in listing.stdout.splitlines()]
    return [' '.join(job) for job in jobs if len(job) == 2 and job[1].startswith(prefix)]


def slurm_scripts(*, config, args, workdir, groups) -> list[dict[str, object]]:
    """The jobs to submit, in order; 'after' names the jobs each one depends on."""
    folder = os.path.join(workdir, 'slurm')
    logs = os.path.join(folder, 'logs')
    resources = slurm_resources(config)
    lines = sbatch_lines(resources, FLAGS.sbatch_args)
    name = job_prefix(workdir)
    jobs = [
        dict(
            key='pretrain',
            path=os.path.join(folder, 'pretrain.sbatch'),
            after=(),
            dependency='',
            script=render(
                description='pre-training (unless finished) and data preparation',
                job_name=f'{name}-pre',
                log=os.path.join(logs, 'pretrain-%j.out'),
                lines=lines,
                command=shell(main_command(args, workdir, 'pretrain')),
            ),
        )
    ]
    max_parallel = FLAGS.parallel or config.study.slurm.max_parallel
    size = FLAGS.max_array_size
    chunks = [groups[i : i + size] for i in range(0, len(groups), size)]
    for c, chunk in enumerate(chunks):
        indices = os.path.join(folder, f'indices-{c}.txt')
        command = (
            f'INDEX=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(indices)})\n'
            'exec ' + shell(base_command(args, workdir)) + ' --sweep_index="$INDEX"'
        )
        jobs.append(
            dict(
                key=f'array-{c}',
                path=os.path.join(folder, f'array-{c}.sbatch'),
                indices=(indices, [g.index for g in chunk]),
                after=('pretrain',),
                dependency='afterok',
                array=array_spec(len(chunk), max_parallel),
                script=render(
                    description=f'{len(chunk)} groups of runs; task i runs the group index on '
                    f'line i+1 of {indices}',
                    job_name=f'{name}-run',
                    log=os.path.join(logs, 'run-%A_%a.out'),
                    lines=lines,
                    command=command,
                ),
            )
        )
    report_lines = [
        line for line in lines if not line.startswith(('#SBATCH --gres', '#SBATCH --cpus-per-task'))
    ]
    jobs.append(
        dict(
            key='report',
            path=os.path.join(folder, 'report.sbatch'),
            after=tuple(j['key'] for j in jobs if j['key'].startswith('array')),
            dependency='afterany',
            script=render(
                description='the report, after every run (finished or not)',
                job_name=f'{name}-report',
                log=os.path.join(logs, 'report-%j.out'),
                lines=report_lines,
                command=shell([sys.executable, '-m', 'unet_jax.report', workdir]),
            ),
        )
    )
    return jobs


def sbatch_command(job, ids: dict[str, str]) -> list[str]:
    command = ['sbatch', '--parsable']
    if 'array' in job:
        command.append(f'--array={job["array"]}')
    if job['after']:
        deps = ':'.join(ids.get(key, f'<{key}>') for key in job['after'])
        command += [f'--dependency={job["dependency"]}:{deps}']
        if job['dependency'] == 'afterok':
            command.append('--kill-on-invalid-dep=yes')  # pre-training failed: cancel the array
    return command + [job['path']]


def run_slurm(*, config, args, workdir, sweep, groups, dry_run) -> int:
    jobs = slurm_scripts(config=config, args=args, workdir=workdir, groups=groups)
    if dry_run:
        for job in jobs:
            print(f'# ---- {job["path"]}')
            if 'indices' in job:
                print(f'# {job["indices"][0]}: group indices {index_ranges(job["indices"][1])}')
            print(job['script'])
        for group in groups:
            print(f'# group {group.index}: {group.name} ({len(group.runs)} runs)')
        print('# ---- submission')
        ids: dict[str, str] = {}
        for job in jobs:
            print(shell(sbatch_command(job, ids)))
        return 0
    queued = queued_jobs(workdir)
    if queued:
        sys.exit(
            f'sweep: {len(queued)} job(s) of this study are still queued or running '
            f'({"; ".join(queued[:5])}{"; ..." if len(queued) > 5 else ""}). Submitting again '
            'would run their groups twice: wait until they have left the queue (squeue), or '
            'cancel them with scancel, then run this command again.'
        )
    os.makedirs(os.path.join(workdir, 'slurm', 'logs'), exist_ok=True)
    ids = {}
    for job in jobs:
        with open(job['path'], 'w') as f:
            f.write(job['script'])
        if 'indices' in job:
            path, indices = job['indices']
            io_utils.write_text_atomically(path, ''.join(f'{i}\n' for i in indices))
        result = subprocess.run(
            sbatch_command(job, ids), capture_output=True, text=True, env=CHILD_ENV
        )
        if result.returncode:
            sys.exit(
                f'sweep: sbatch {job["path"]} failed: {result.stderr.strip()}\n'
                'Check the resource flags (--partition, --gres, --time, ...) against '
                '`sinfo`; jobs submitted before this one: ' + (', '.join(ids.values()) or 'none')
            )
        ids[job['key']] = result.stdout.strip().split(';')[0]
        logging.info('sweep: submitted %s as job %s', job['key'], ids[job['key']])
    print(' '.join(f'{key}={value}' for key, value in ids.items()))
    if FLAGS.wait:
        return wait_for(ids['report'], workdir)
    return 0


def wait_for(job_id: str, workdir: str) -> int:
    """Polls squeue until the job has left the queue (no accounting database needed)."""
    while True:
        queued = subprocess.run(
            ['squeue', '-h', '-j', job_id], capture_output=True, text=True, env=CHILD_ENV
        )
        if queued.returncode == 0 and not queued.stdout.strip():
            break
        if 'Invalid job id' in queued.stderr:  # finished and already purged by slurmctld
            break
        time.sleep(1)
    page = os.path.join(workdir, layout.REPORT_DIR, 'report.html')
    if not os.path.exists(page):
        logging.error(
            'sweep: the report job %s ended without writing %s; see %s',
            job_id,
            page,
            os.path.join(workdir, 'slurm', 'logs'),
        )
        return 1
    logging.info('sweep: report in %s', page)
    return 0


# ----------------------------------------------------------------------------- main


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    config = FLAGS.config
    if 'study' not in config:
        raise app.UsageError(
            '--config has no `study` field: launch/sweep.py runs studies '
            '(configs/layerwise.py); run single configs with unet_jax.main.'
        )
    checks.check_config(config)  # every bad field, every sweep point, before anything runs
    workdir = os.path.abspath(FLAGS.workdir)
    if config.study.get('sources'):
        names = '+'.join(config.study.sources)
        raise app.UsageError(
            f'sources={names}: launch/sweep.py launches one study; launch each source as its own '
            f'(source=NAME with the same families= and --config.study.pretrain_seeds='
            f'{config.study.pretrain_seeds}, --workdir={layout.source_dir(workdir, "NAME")}), '
            f'then compare them with python -m unet_jax.report.sources '
            f'{layout.source_dir(workdir, "*")}; or run the whole sources study in one process '
            'with python -m unet_jax.main.'
        )
    sweep = enumerate_sweep(config)
    loop.check_run_folders(config, workdir, sweep.runs, pretraining=True)
    finished = {
        p.run_name
        for p in sweep.runs
        if layout.is_finished(layout.run_dir(workdir, p.run_name))
    }
    groups = [g for g in sweep.groups if any(p.run_name not in finished for p in g.runs)]
    logging.info(
        'sweep: %d runs (%d named points) in %d groups; %d runs finished, %d groups to run.',
        len(sweep.runs),
        len(sweep.points),
        len(sweep.groups),
        len(finished),
        len(groups),
    )
    plan = dict(args=config_args(sys.argv), workdir=workdir, sweep=sweep, groups=groups)
    if FLAGS['dry-run'].value:
        return execute(config, **plan, dry_run=True)
    if FLAGS.executor == 'slurm':
        check_slurm_programs()
    # One launcher per study folder (the processes it starts lock their group folders).
    with runfolder.lock(workdir):
        run_configs.write_plan(config, workdir, sweep)
        if not groups:
            logging.info('sweep: nothing to run; writing the report.')
            print(report.write_report(workdir))
            return 0
        return execute(config, **plan, dry_run=False)


def execute(config, **plan) -> int:
    """The plan run (or, with dry_run, printed) by the executor of --executor."""
    if FLAGS.executor == 'local':
        return run_local(**plan)
    return run_slurm(config=config, **plan)


if __name__ == '__main__':
    errors.run(main)
