"""--executor=slurm: the study's groups as a SLURM job array, after a pre-training job and
before a report job. Scripts and logs under W/slurm/; resources from the flags, defaulting to
config.study.slurm. Submitting is refused while jobs of the same study are queued or running.
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

from absl import flags, logging
from commands import CHILD_ENV, base_command, main_command, shell

from unet_jax import errors, io_utils, layout

FLAGS = flags.FLAGS  # the flags of launch/sweep.py
TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'templates', 'job.sbatch')


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
            f"--executor=slurm needs SLURM's {' and '.join(missing)}, not found on the PATH. "
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
