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

Arguments (big_vision style, comma-separated; ARGUMENTS below lists them):
  quick                      CPU scale (the whole study in well under 30 min on 2 cores)
  source=natural|natural_speckle|ultrasound
                             pre-training set: synthetic natural scenes, the same scenes imaged
                             as B-mode ultrasound (speckle), or simulated breast ultrasound; all
                             generated with their own seed, so they never hold a target's images
  targets=us+xray            target sets, '+'-separated, each one of:
                               a built-in name: us, xray (synthetic) or a real set busi,
                               dataset_b, jsrt, montgomery, shenzhen, ecssd, ... (need data_root)
                               folder:NAME  your own images and masks, a folder set named NAME
                                 whose fields are set on the command line, e.g.
                                 --config.study.targets.NAME.data.folder.images=DIR
                               FILE.py  a file whose get_targets() returns target definitions
                                 {name: {'data': {...}, 'augment': {...}}} (docs/data.md)
  data_root=DIR              folder holding the real sets' release folders (their manual_dir)
  sizes=10+all               training-set sizes ('all' = every training image)
  seeds=3                    number of seeds (0..seeds-1)
  orders=forward+level       depth orders of shallow_to_deep / deep_to_shallow (quick: forward)
  granularities=block+unit   what k counts (quick: block)
  families=scratch+full      a subset of the families (default: all seven)

Each target of `study.targets` is a definition of overrides of the run's `data.*` and
`augment.*` fields (config_lib.apply_target applies it to every point of the target); built-in
ultrasound targets leave out normal cases (`data.drop_normal`), chest X-ray targets train
without left-right flips (`augment.flip`). Any field of a definition can be changed on the
command line, e.g. --config.study.targets.busi.data.drop_normal=False.

Examples:
  python -m unet_jax.main --config=configs/layerwise.py:quick --workdir=runs/study_quick
  python -m unet_jax.main --config=configs/layerwise.py --workdir=runs/study
  python -m unet_jax.main --config=configs/layerwise.py:targets=busi+jsrt,data_root=/data \
      --workdir=runs/study_real
  python -m unet_jax.main --config=configs/layerwise.py:targets=us+folder:mine \
      --config.study.targets.mine.data.folder.images=/data/mine/images \
      --config.study.targets.mine.data.folder.masks=/data/mine/masks --workdir=runs/study_mine
  python launch/sweep.py --config=configs/layerwise.py --workdir=runs/study --executor=slurm \
      --partition=gpu --gres=gpu:1
"""

import ml_collections

from unet_jax import config_lib, families

WHERE = 'configs/layerwise.py'
ARGUMENTS = {
    **config_lib.DEFAULT_ARGUMENTS,
    'source': f'pre-training set, one of {sorted(config_lib.SOURCES)} (default natural)',
    'targets': "'+'-separated targets: built-in names, folder:NAME, FILE.py (default us+xray)",
    'data_root': "DIR holding the real sets' release folders (their manual_dir)",
    'sizes': "'+'-separated training-set sizes, 'all' = every training image",
    'seeds': 'number of seeds (0..seeds-1; default 3)',
    'orders': "'+'-separated depth orders: forward, level",
    'granularities': "'+'-separated: block, unit",
    'families': f"'+'-separated subset of {'+'.join(families.NAMES)}",
}


def get_config(arg: str = '') -> ml_collections.ConfigDict:
    args = config_lib.parse_args(arg, ARGUMENTS, where=WHERE)
    quick = bool(args.get('quick', False))
    source = str(args.get('source', 'natural'))
    targets = _split(args.get('targets', 'us+xray'))
    data_root = str(args.get('data_root', ''))
    sizes = _split(args.get('sizes', '16' if quick else '10+50+all'))
    num_seeds = _integer(args.get('seeds', 3), 'seeds')
    orders = _split(args.get('orders', 'forward' if quick else 'forward+level'))
    granularities = _split(args.get('granularities', 'block' if quick else 'block+unit'))
    family_names = _split(args.get('families', '+'.join(families.NAMES)))

    config = config_lib.default_config('quick' if quick else '')
    _shared_model_and_size(config)
    if quick:
        config.model.base_width = 8
        config.num_train_steps = 120
        config.warmup_steps = 10
        config.eval_every_steps = 40
        config.checkpoint_every_steps = 40
        config.log_every_steps = 40
    else:
        config.data.image_size = 128
        config.num_train_steps = 1000
        config.eval_every_steps = 100
        config.checkpoint_every_steps = 100
    config.optimizer.learning_rate = 1e-3 if quick else 3e-4
    config.finetune.granularity = 'block'

    study = ml_collections.ConfigDict()
    study.pretrain = _pretrain_config(config, source=source, quick=quick)
    # A finished pre-training workdir to reuse instead of pre-training inside this study's
    # workdir (e.g. one pre-training shared by several studies); '' = pre-train here.
    study.pretrained_workdir = ''
    study.targets = _targets(targets, data_root=data_root)
    study.num_train = tuple(-1 if s == 'all' else _integer(s, 'sizes') for s in sizes)
    study.seeds = tuple(range(num_seeds))
    study.families = tuple(family_names)
    study.orders = tuple(orders)
    study.granularities = tuple(granularities)
    # Defaults of launch/sweep.py's SLURM flags (the command line overrides them).
    study.slurm = ml_collections.ConfigDict(
        dict(
            partition='',
            time='02:00:00' if not quick else '00:30:00',
            gres='' if quick else 'gpu:1',
            cpus_per_task=2 if quick else 8,
            mem='4G' if quick else '32G',
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


def _pretrain_config(
    config: ml_collections.ConfigDict, *, source: str, quick: bool
) -> ml_collections.ConfigDict:
    pretrain = config_lib.default_config('quick' if quick else '')
    for key in config.model:
        pretrain.model[key] = config.model.get_ref(key)
    pretrain.data.image_size = config.data.get_ref('image_size')
    config_lib.apply_source(pretrain, source, where=WHERE)
    if quick:
        pretrain.data.num_examples = 300
        pretrain.num_train_steps = 400
        pretrain.eval_every_steps = 100
        pretrain.checkpoint_every_steps = 100
        pretrain.log_every_steps = 50
    else:
        pretrain.data.num_examples = 5000
        pretrain.num_train_steps = 20000
        pretrain.eval_every_steps = 1000
        pretrain.checkpoint_every_steps = 1000
    return pretrain


def _targets(tokens: list[str], *, data_root: str) -> ml_collections.ConfigDict:
    """study.targets: {name: definition} from built-in names, folder:NAME and FILE.py tokens."""
    targets: dict[str, ml_collections.ConfigDict] = {}
    for token in tokens:
        if token.endswith('.py'):
            found = config_lib.load_target_file(token, where=f'{WHERE}:targets')
        elif token.startswith('folder:'):
            found = {token.removeprefix('folder:'): config_lib.folder_target()}
        else:
            found = {token: _builtin_target(token, data_root=data_root)}
        for name, definition in found.items():
            config_lib.check_target_name(name, where=f'{WHERE}:targets')
            if name in targets:
                raise config_lib.ConfigError(
                    f'{WHERE}: target {name!r} is given twice in targets=.'
                )
            targets[name] = definition
    return ml_collections.ConfigDict(targets)


def _builtin_target(name: str, *, data_root: str) -> ml_collections.ConfigDict:
    if name in config_lib.REAL_TARGETS and not data_root:
        raise config_lib.ConfigError(
            f'{WHERE}: target {name!r} is a real set read from disk; pass '
            f'data_root=DIR (the folder holding its release folder) in the config argument, '
            f'e.g. --config={WHERE}:targets={name},data_root=/data.'
        )
    return config_lib.builtin_target(name, data_root=data_root, where=f'{WHERE}:targets')


def _integer(value: object, argument: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise config_lib.ConfigError(
            f'{WHERE}: {argument}={value!r} is not a whole number (e.g. seeds=3, sizes=10+50+all).'
        ) from None


def _split(value: object) -> list[str]:
    return [v for v in str(value).split('+') if v]
