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

import os
import sys

# The runs get the environment as it was before this line (commands.CHILD_ENV, captured on
# import). Enumerating the sweep builds the model abstractly; it must not grab an accelerator
# that the runs need.
import commands

os.environ.setdefault('JAX_PLATFORMS', 'cpu')

from absl import app, flags, logging  # noqa: E402
from local_executor import run_local  # noqa: E402
from ml_collections import config_flags  # noqa: E402
from slurm_executor import check_slurm_programs, run_slurm  # noqa: E402

from unet_jax import errors, layout, report  # noqa: E402
from unet_jax.study import checks, loop, run_configs  # noqa: E402
from unet_jax.study.sweep_points import enumerate_sweep  # noqa: E402
from unet_jax.train import runfolder  # noqa: E402

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
        p.run_name for p in sweep.runs if layout.is_finished(layout.run_dir(workdir, p.run_name))
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
    plan = dict(args=commands.config_args(sys.argv), workdir=workdir, sweep=sweep, groups=groups)
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
