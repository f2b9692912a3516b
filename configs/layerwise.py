r"""The layer-wise study: which U-Net layers to fine-tune (Amiri, Brooks and Rivaz 2019/2020).

Pre-train once on natural images, then fine-tune on each target set with every sweep point:
  scratch      random init, everything trains
  pretrained   pre-trained weights, no tuning (only evaluated)
  full         pre-trained, everything trains
  contracting  pre-trained, only the contracting path (encoder) trains
  expanding    pre-trained, only the expanding path (decoder) trains
  shallow_to_deep k=1..N   the first k blocks/units train (`first:k`)
  deep_to_shallow k=1..N   the last k blocks/units train (`last:k`)
  auto k=1..N, soft        (only when listed) the k blocks/units that a criterion scores
                           highest on the target (`auto:rgn:k`), or all with per-block learning
                           rates scaled by the scores (`auto:rgn:soft`); unet_jax.surgical
in each depth order (`forward`, `level`) and granularity (`block`, `unit`) listed in
`study.orders` / `study.granularities`, for every target, training-set size and seed.
`unet_jax.sweep.enumerate_sweep` turns this config into the list of runs.

The top level of this config is the base fine-tuning run that every point modifies (so
`--config.optimizer.learning_rate=1e-4` changes every point); `study.pretrain` is the full
config of the pre-training run. Model and image size are shared by both (field references):
set them once, e.g. `--config.model.base_width=32`.

Arguments (big_vision style, comma-separated; ARGUMENTS below lists them):
  quick                      CPU scale (the whole study in about 20 min on 2 cores)
  medium                     a real-data scale for 2 CPU cores: depth-4, base-8 U-Net at 64x64,
                             3 seeds, forward order by block, every training image (use with
                             targets=busi+jsrt,pretrain_data=ecssd,data_root=DIR)
  source=natural|natural_speckle|ultrasound
                             pre-training set: synthetic natural scenes, the same scenes imaged
                             as B-mode ultrasound (speckle), or simulated breast ultrasound; all
                             generated with their own seed, so they never hold a target's images
                             (the speckle test: one study per source, then
                             `python -m unet_jax.report.sources WORKDIR_A WORKDIR_B`)
  pretrain_data=NAME         pre-train on a real set instead (ecssd, duts, xpie, msra10k; needs
                             data_root)
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
  families=scratch+full      a subset of the families (default: all but auto)
  criteria=rgn+probe         criteria of the `auto` family (families=...+auto): it trains what
                             `auto:<criterion>:k` (k = 1..N) and `auto:<criterion>:soft` choose
                             from the pre-trained weights and a few training batches

The report's inference is declared here too, before the study runs: `study.primary` (the
primary endpoint, tested first and alone at 0.05; default: the shallow-vs-deep gap on each
ultrasound target and its difference from the X-ray target's gap, at the first size) and
`study.margin` (the TOST equivalence margin, 0.02 Dice).

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
  python -m unet_jax.main \
      --config=configs/layerwise.py:medium,targets=busi+jsrt,pretrain_data=ecssd,data_root=/data \
      --workdir=runs/study_medium
  python launch/sweep.py --config=configs/layerwise.py --workdir=runs/study --executor=slurm \
      --partition=gpu --gres=gpu:1
"""

import ml_collections

from unet_jax import auto_spec, config_lib, families

WHERE = 'configs/layerwise.py'
ARGUMENTS = {
    **config_lib.DEFAULT_ARGUMENTS,
    'medium': 'real-data scale for 2 CPU cores (depth 4, base 8, 64x64, 3 seeds)',
    'pretrain_data': f'pre-train on a real set, one of {list(config_lib.REAL_SOURCES)}',
    'source': f'pre-training set, one of {sorted(config_lib.SOURCES)} (default natural)',
    'targets': "'+'-separated targets: built-in names, folder:NAME, FILE.py (default us+xray)",
    'data_root': "DIR holding the real sets' release folders (their manual_dir)",
    'sizes': "'+'-separated training-set sizes, 'all' = every training image",
    'seeds': 'number of seeds (0..seeds-1; default 3)',
    'orders': "'+'-separated depth orders: forward, level",
    'granularities': "'+'-separated: block, unit",
    'families': f"'+'-separated subset of {'+'.join(families.NAMES)} (default: all but auto)",
    'criteria': (
        "'+'-separated criteria of the auto family: "
        f'{", ".join(auto_spec.CRITERIA)} (default {"+".join(auto_spec.CRITERIA)})'
    ),
}
# `medium`: steps of every fine-tuning run (scratch: times study.scratch_steps_factor) and of
# the pre-training.
MEDIUM_STEPS = 150
MEDIUM_PRETRAIN_STEPS = 1000


def get_config(arg: str = '') -> ml_collections.ConfigDict:
    args = config_lib.parse_args(arg, ARGUMENTS, where=WHERE)
    quick = bool(args.get('quick', False))
    medium = bool(args.get('medium', False))
    cpu_scale = quick or medium
    source = str(args.get('source', 'natural'))
    pretrain_data = str(args.get('pretrain_data', ''))
    targets = _split(args.get('targets', 'us+xray'))
    data_root = str(args.get('data_root', ''))
    sizes = _split(args.get('sizes', '16' if quick else 'all' if medium else '10+50+all'))
    num_seeds = _integer(args.get('seeds', 3), 'seeds')
    orders = _split(args.get('orders', 'forward' if cpu_scale else 'forward+level'))
    granularities = _split(args.get('granularities', 'block' if cpu_scale else 'block+unit'))
    family_names = _split(args.get('families', '+'.join(families.DEFAULTS)))
    criteria = _split(args.get('criteria', '+'.join(auto_spec.CRITERIA)))
    if quick and medium:
        raise ValueError(f'{WHERE}: choose one scale, quick or medium, not both.')
    if pretrain_data and (pretrain_data not in config_lib.REAL_SOURCES or not data_root):
        raise ValueError(
            f'{WHERE}: pretrain_data={pretrain_data!r} must be one of '
            f'{list(config_lib.REAL_SOURCES)}, with data_root=DIR (the folder holding its '
            'release folder).'
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
    study.targets = _targets(targets, data_root=data_root)
    study.num_train = tuple(-1 if s == 'all' else _integer(s, 'sizes') for s in sizes)
    study.seeds = tuple(range(num_seeds))
    study.families = tuple(family_names)
    # Criteria of the `auto` family (unet_jax.auto_spec.CRITERIA; scored by unet_jax.surgical):
    # rgn (relative gradient norm), probe (a short training probe per block).
    study.auto_criteria = tuple(criteria)
    study.orders = tuple(orders)
    study.granularities = tuple(granularities)
    # The primary endpoint, declared before the study runs: the report tests it first, at 0.05
    # and apart from every other comparison (fixed sequence), and opens with its answer. It is
    # the gap a - b (test Dice averaged over k, in the first order and granularity) at
    # training size num_train on each target of `targets`, then each of those gaps minus the
    # gap on `versus` (the target x direction interaction). Defaults ('' / 0): a, b =
    # shallow_to_deep, deep_to_shallow (the report then states no primary endpoint if the
    # study lacks them), every ultrasound target, the first X-ray target ('none': no
    # interaction), the first size.
    study.primary = ml_collections.ConfigDict(
        dict(a='', b='', targets='', versus='', num_train=0)
    )
    # Equivalence margin of the report's TOST, in Dice ("equivalent within +-margin").
    study.margin = 0.02
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
    """Depth 4, base 8 at 64x64, 150 steps: 128 runs of a real-data study on 2 CPU cores (at
    96x96 with 5 seeds and 200 steps, 212 runs would take about 4 hours there)."""
    config.model.depth = 4
    config.model.base_width = 8
    config.data.image_size = 64
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
    config_lib.apply_source(pretrain, source, where=WHERE)
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
