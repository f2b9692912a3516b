r"""The layer-wise study: which U-Net layers to fine-tune (Amiri, Brooks and Rivaz 2019/2020).

Pre-train once on natural images, then fine-tune on each target set with every sweep point:
  scratch      random init, everything trains
  pretrained   pre-trained weights, no tuning (only evaluated)
  full         pre-trained, everything trains
  contracting  pre-trained, only the contracting path (encoder) trains
  expanding    pre-trained, only the expanding path (decoder) trains
  shallow_to_deep k=1..N   the first k blocks/units train (`first:k`)
  deep_to_shallow k=1..N   the last k blocks/units train (`last:k`)
in each depth order (`forward`, `level`) and granularity (`block`, `unit`) listed in
`study.orders` / `study.granularities`, for every target, training-set size and seed.
`unet_jax.study.enumerate_sweep` turns this config into the list of runs.

The top level of this config is the base fine-tuning run that every point modifies (so
`--config.optimizer.learning_rate=1e-4` changes every point); `study.pretrain` is the full
config of the pre-training run. Model and image size are shared by both (field references):
set them once, e.g. `--config.model.base_width=32`.

Arguments (big_vision style, comma-separated):
  quick                      CPU scale (the whole study in well under 30 min on 2 cores)
  medium                     a real-data scale for 2 CPU cores: depth-4, base-8 U-Net at 96x96,
                             5 seeds, forward order by block, every training image (use with
                             targets=busi+jsrt,pretrain_data=ecssd,data_root=DIR)
  source=natural|ultrasound  pre-training set (synthetic natural scenes, or simulated ultrasound)
  pretrain_data=NAME         pre-train on a real set instead (ecssd, duts, xpie, msra10k; needs
                             data_root)
  targets=us+xray            target sets, '+'-separated: us, xray (synthetic) or real sets
                             busi, dataset_b, jsrt, montgomery, shenzhen (need data_root)
  data_root=DIR              folder holding the real sets' release folders (their manual_dir)
  sizes=10+all               training-set sizes ('all' = every training image)
  seeds=3                    number of seeds (0..seeds-1)
  orders=forward+level       depth orders of shallow_to_deep / deep_to_shallow (quick: forward)
  granularities=block+unit   what k counts (quick: block)
  families=scratch+full      a subset of the families (default: all seven)

Examples:
  python -m unet_jax.main --config=configs/layerwise.py:quick --workdir=runs/study_quick
  python -m unet_jax.main --config=configs/layerwise.py --workdir=runs/study
  python -m unet_jax.main --config=configs/layerwise.py:targets=busi+jsrt,data_root=/data \
      --workdir=runs/study_real
  python -m unet_jax.main \
      --config=configs/layerwise.py:medium,targets=busi+jsrt,pretrain_data=ecssd,data_root=/data \
      --workdir=runs/study_medium
  python launch/sweep.py --config=configs/layerwise.py --workdir=runs/study --executor=slurm \
      --partition=gpu --gres=gpu:1
"""

import ml_collections

from unet_jax import config_lib, families

# Short names used in sweep-point names; the values are `data.name`.
SYNTHETIC_TARGETS = {
    'us': 'synthetic_ultrasound',
    'xray': 'synthetic_xray',
    'natural': 'synthetic_natural',
}
REAL_TARGETS = ('busi', 'dataset_b', 'jsrt', 'montgomery', 'shenzhen')
SOURCES = {'natural': 'synthetic_natural', 'ultrasound': 'synthetic_ultrasound'}
REAL_SOURCES = ('ecssd', 'duts', 'xpie', 'msra10k')
# `medium`: steps of every fine-tuning run (scratch: times study.scratch_steps_factor) and of
# the pre-training.
MEDIUM_STEPS = 200
MEDIUM_PRETRAIN_STEPS = 1000


def get_config(arg: str = '') -> ml_collections.ConfigDict:
    args = config_lib.parse_args(arg)
    quick = bool(args.pop('quick', False))
    medium = bool(args.pop('medium', False))
    cpu_scale = quick or medium
    source = str(args.pop('source', 'natural'))
    pretrain_data = str(args.pop('pretrain_data', ''))
    targets = _split(args.pop('targets', 'us+xray'))
    data_root = str(args.pop('data_root', ''))
    sizes = _split(args.pop('sizes', '16' if quick else 'all' if medium else '10+50+all'))
    num_seeds = int(args.pop('seeds', 5 if medium else 3))
    orders = _split(args.pop('orders', 'forward' if cpu_scale else 'forward+level'))
    granularities = _split(args.pop('granularities', 'block' if cpu_scale else 'block+unit'))
    family_names = _split(args.pop('families', '+'.join(families.NAMES)))
    if args:
        raise ValueError(
            f'configs/layerwise.py: unknown argument(s) {sorted(args)}; valid: quick, medium, '
            'source, pretrain_data, targets, data_root, sizes, seeds, orders, granularities, '
            'families (see the docstring).'
        )
    if source not in SOURCES:
        raise ValueError(
            f'configs/layerwise.py: source={source!r} is not one of {sorted(SOURCES)}.'
        )
    if quick and medium:
        raise ValueError('configs/layerwise.py: choose one scale, quick or medium, not both.')
    if pretrain_data and (pretrain_data not in REAL_SOURCES or not data_root):
        raise ValueError(
            f'configs/layerwise.py: pretrain_data={pretrain_data!r} must be one of '
            f'{list(REAL_SOURCES)}, with data_root=DIR (the folder holding its release folder).'
        )

    config = config_lib.default_config('quick' if quick else '')
    _shared_model_and_size(config)
    if quick:
        config.model.base_width = 8
        config.num_train_steps = 120
        config.warmup_steps = 10
        config.eval_every_steps = 40
        config.checkpoint_every_steps = 40
        config.log_every_steps = 40
    elif medium:
        _apply_medium(config)
    else:
        config.data.image_size = 128
        config.num_train_steps = 1000
        config.eval_every_steps = 100
        config.checkpoint_every_steps = 100
    config.optimizer.learning_rate = 1e-3 if cpu_scale else 3e-4
    config.finetune.granularity = 'block'

    study = ml_collections.ConfigDict()
    study.pretrain = _pretrain_config(config, source=source, quick=quick, medium=medium)
    if pretrain_data:
        study.pretrain.data.name = pretrain_data
        study.pretrain.data.manual_dir = data_root
    # A finished pre-training workdir to reuse instead of pre-training inside this study's
    # workdir (e.g. one pre-training shared by several studies); '' = pre-train here.
    study.pretrained_workdir = ''
    study.targets = ml_collections.ConfigDict(
        {name: _target(name, data_root=data_root) for name in targets}
    )
    study.num_train = tuple(-1 if s == 'all' else int(s) for s in sizes)
    study.seeds = tuple(range(num_seeds))
    study.families = tuple(family_names)
    study.orders = tuple(orders)
    study.granularities = tuple(granularities)
    # Runs that differ only in seed train together in one compiled step, up to group_size at
    # once (1 = one run at a time; 0 = as many as fit group_memory_mb, from the config).
    study.group_size = 0
    study.group_memory_mb = 8192
    # How a group steps its runs: 'vmap' (all in one program), 'loop' (one after another through
    # a single-run program; faster on CPU), 'auto' (loop on CPU, vmap on accelerators).
    study.vectorize = 'auto'
    # Pre-train R times (seeds 0..R-1); fine-tuning seed s starts from pre-training s mod R.
    study.pretrain_seeds = 1
    # Scratch trains this many times the steps of the other families (it starts from nothing).
    study.scratch_steps_factor = 2.0 if medium else 3.0
    # A group's checkpoint is saved at config.checkpoint_every_steps, but at most once per
    # this many seconds (its state is deleted once its runs are written).
    study.checkpoint_every_secs = 60.0
    # Defaults of launch/sweep.py's SLURM flags (the command line overrides them).
    study.slurm = ml_collections.ConfigDict(
        dict(
            partition='',
            time='02:00:00' if not cpu_scale else '00:30:00',
            gres='' if cpu_scale else 'gpu:1',
            cpus_per_task=2 if cpu_scale else 8,
            mem='4G' if cpu_scale else '32G',
            max_parallel=0,
        )
    )
    config.study = study
    return config


def _shared_model_and_size(config: ml_collections.ConfigDict) -> None:
    """Turns model fields and the image size into references the pre-training config shares."""
    for key, value in config.model.items():
        config.model[key] = ml_collections.FieldReference(value)
    config.data.image_size = ml_collections.FieldReference(config.data.image_size)


def _apply_medium(config: ml_collections.ConfigDict) -> None:
    """Depth 4, base 8 at 96x96: a real-data study in about an hour on 2 CPU cores."""
    config.model.depth = 4
    config.model.base_width = 8
    config.data.image_size = 96
    config.data.num_examples = 400  # simulated targets, if chosen
    config.num_train_steps = MEDIUM_STEPS
    config.warmup_steps = 20
    config.eval_every_steps = 25
    config.checkpoint_every_steps = 50
    config.log_every_steps = 25


def _pretrain_config(
    config: ml_collections.ConfigDict, *, source: str, quick: bool, medium: bool = False
) -> ml_collections.ConfigDict:
    pretrain = config_lib.default_config('quick' if quick else '')
    for key in config.model:
        pretrain.model[key] = config.model.get_ref(key)
    pretrain.data.image_size = config.data.get_ref('image_size')
    pretrain.data.name = SOURCES[source]
    pretrain.finetune.train = '@all'
    pretrain.init_from = ''
    if quick:
        pretrain.data.num_examples = 300
        pretrain.num_train_steps = 400
        pretrain.eval_every_steps = 100
        pretrain.checkpoint_every_steps = 100
        pretrain.log_every_steps = 50
    elif medium:
        pretrain.data.num_examples = 1000
        pretrain.num_train_steps = MEDIUM_PRETRAIN_STEPS
        pretrain.warmup_steps = 50
        pretrain.eval_every_steps = 250
        pretrain.checkpoint_every_steps = 250
        pretrain.log_every_steps = 50
        pretrain.optimizer.learning_rate = 1e-3
    else:
        pretrain.data.num_examples = 5000
        pretrain.num_train_steps = 20000
        pretrain.eval_every_steps = 1000
        pretrain.checkpoint_every_steps = 1000
    return pretrain


def _target(name: str, *, data_root: str) -> ml_collections.ConfigDict:
    """`data.*` overrides of one target set (any field of `config.data` may be set here)."""
    if name in SYNTHETIC_TARGETS:
        return ml_collections.ConfigDict(dict(name=SYNTHETIC_TARGETS[name]))
    if name in REAL_TARGETS:
        if not data_root:
            raise ValueError(
                f'configs/layerwise.py: target {name!r} is a real set read from disk; pass '
                f'data_root=DIR (the folder holding its release folder) in the config argument, '
                f'e.g. --config=configs/layerwise.py:targets={name},data_root=/data.'
            )
        return ml_collections.ConfigDict(dict(name=name, manual_dir=data_root))
    raise ValueError(
        f'configs/layerwise.py: unknown target {name!r}; valid: '
        f'{sorted(SYNTHETIC_TARGETS) + list(REAL_TARGETS)}.'
    )


def _split(value: object) -> list[str]:
    return [v for v in str(value).split('+') if v]
