r"""Entry point: one training run, or the layer-wise study when the config declares one.

  python -m unet_jax.main --config=configs/finetune.py:quick --workdir=runs/ft \
      --config.init_from=runs/pretrain --config.finetune.train='enc0..enc1'
  python -m unet_jax.main --config=configs/layerwise.py:quick --workdir=runs/study

A whole study prints a line per group and its answer (unet_jax.console); its log goes to
WORKDIR/log.txt, and -v 0 (absl's --verbosity) prints it as well.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from unet_jax import errors

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file (path[:args]).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Folder of the run: checkpoints, summaries, results.')
flags.DEFINE_string(
    'sweep_index',
    None,
    'Study only: one sweep point (an index), "pretrain" or "report"; '
    'default: the whole study in this process.',
)
flags.DEFINE_bool(
    'multihost',
    False,
    'Train one run with several processes (hosts): with the three flags below, or under '
    "SLURM's srun without them. Every process runs the same command (README: Several hosts).",
)
flags.DEFINE_string('coordinator_address', None, '--multihost: host:port of process 0.')
flags.DEFINE_integer('num_processes', None, '--multihost: number of processes.')
flags.DEFINE_integer('process_id', None, '--multihost: this process, 0 .. num_processes - 1.')
flags.DEFINE_string(
    'compilation_cache',
    '~/.cache/unet_jax/xla',
    'Persistent XLA compilation cache ("" = off): re-runs, resumed runs and the '
    'sweep points of a study skip compiling programs seen before.',
)
flags.mark_flags_as_required(['config', 'workdir'])


def join_processes(config) -> None:
    """--multihost: joins the other processes that train this run (unet_jax.train.hosts)."""
    given = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    if not FLAGS.multihost:
        if any(flag is not None for flag in given):
            raise app.UsageError(
                '--coordinator_address, --num_processes and --process_id need --multihost.'
            )
        return
    if 'study' in config:
        raise app.UsageError(
            '--multihost trains one run (a config without a study, e.g. configs/finetune.py); '
            'a study runs its groups as separate processes (launch/sweep.py).'
        )
    from unet_jax.train import hosts

    hosts.initialize(
        coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    from unet_jax.study import checks
    from unet_jax.train import runfolder

    config, workdir = FLAGS.config, os.path.abspath(FLAGS.workdir)
    checks.check_config(config)  # every bad field named before anything is written
    if 'study' not in config:
        if FLAGS.sweep_index is not None:
            raise app.UsageError('--sweep_index needs a study config (configs/layerwise.py).')
        runfolder.check_same_config(config, workdir)  # a folder keeps its run's config
        if finished := runfolder.finished_line(workdir):
            print(finished)
            return
    if 'study' in config and FLAGS.sweep_index is None:
        run_study(config, workdir)
    else:
        run(config, workdir)


def run_study(config, workdir: str) -> None:
    """The whole study in this process: its story on stdout, its log in WORKDIR/log.txt
    (unet_jax.console); -v/--verbosity prints the log on stderr too."""
    from unet_jax import console

    verbose = FLAGS['verbosity'].present
    if not verbose:
        console.quiet_environment()  # before TensorFlow is imported
    with console.study_log(workdir, verbose=verbose) as log_path:
        if not verbose:
            console.import_quietly('tensorflow', log_path)
            console.quiet_tfds()
        run(config, workdir, console=console.Console(sys.stdout))


def run(config, workdir: str, console=None) -> None:
    import jax  # after flag parsing, so --help is instant

    join_processes(config)
    if FLAGS.compilation_cache:
        jax.config.update('jax_compilation_cache_dir', os.path.expanduser(FLAGS.compilation_cache))
        jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
    logging.info(
        'JAX %s, process %d/%d, devices: %s',
        jax.__version__,
        jax.process_index(),
        jax.process_count(),
        jax.devices(),
    )
    if 'study' in config:
        from unet_jax.study import runner

        runner.main(config, workdir, sweep_index=FLAGS.sweep_index, console=console)
    else:
        from unet_jax.train import runfolder, trainer

        with runfolder.lock(workdir, enabled=jax.process_index() == 0):  # one process a folder
            trainer.train_and_evaluate(config, workdir)


if __name__ == '__main__':
    errors.run(main)
