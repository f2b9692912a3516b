r"""The layer-wise study: which U-Net layers to fine-tune (Amiri, Brooks and Rivaz 2019/2020).

Pre-train on natural images (once per seed), then fine-tune on each target set with every sweep
point:
  scratch      random init, everything trains
  pretrained   pre-trained weights, no tuning (only evaluated)
  full         pre-trained, everything trains
  contracting  pre-trained, only the contracting path (encoder) trains
  expanding    pre-trained, only the expanding path (decoder) trains
  shallow_to_deep k=1..N   the first k blocks/units train (`first:k`)
  deep_to_shallow k=1..N   the last k blocks/units train (`last:k`)
  auto k=1..N, soft        (only when listed) the k blocks/units that a criterion scores
                           highest on the target (`auto:rgn:k`), or all with per-block learning
                           rates scaled by the scores (`auto:rgn:soft`); unet_jax.freeze.auto_choice
in each depth order (`forward`, `level`) and granularity (`block`, `unit`) listed in
`study.orders` / `study.granularities`, for every target, training-set size and seed.
`unet_jax.study.sweep_points.enumerate_sweep` turns this config into the list of runs.

The top level of this config is the base fine-tuning run that every point modifies (so
`--config.optimizer.learning_rate=1e-4` changes every point); `study.pretrain` is the full
config of the pre-training run. Model and image size are shared by both (field references):
set them once, e.g. `--config.model.base_width=32`.

Arguments (big_vision style, comma-separated; ARGUMENTS below lists them):
  quick                      CPU scale: a depth-3, base-8 U-Net at 48x48, 100 steps, k = 1, 2,
                             4, 6, no scratch (the whole study in about 3.5 min on 2 quiet
                             cores)
  real                       the real-data study for 2 CPU cores (about 2 hours): BUSI and JSRT
                             (targets=busi+jsrt) with ECSSD pre-training (pretrain_data=ecssd),
                             both by default, from data_root=DIR (required); depth-4, base-8
                             U-Net at 128x128, 5 outer folds (every image tested once), 3 seeds
                             each from its own pre-training (study.pretrain_seeds=3), 20
                             training images (sizes=20), k = 4 blocks (ks=4; shallow_to_deep
                             k = 4 is the contracting path), every family but scratch (and
                             auto, matched), batch 4, early stopping on validation Dice with a
                             constant learning rate (floor 120, cap 300 steps)
  real_v2                    the confirmatory real-data study (docs/results/real_v2.md): real's
                             model, data and stopping rule with 5 pre-trainings whose seeds no
                             earlier study used (first_seed=10: seeds 10..14, seed s from
                             pre-training s), each trained to a plateau of its ECSSD validation
                             Dice (cap 4000 steps); 3 outer folds; k = 1, 2, 4, 7 blocks of
                             both directions plus full and pretrained at 20 training images;
                             100 images on BUSI only, at k = 4 of both directions and full
                             (study.size_subsets); an 800-step cap (real's rule); a
                             primary endpoint with the size change (study.primary.larger) and a
                             power plan (study.power) recorded with the registration
  medium                     the earlier real-data scale (superseded by real): depth-4, base-8
                             U-Net at 64x64, 3 seeds, every training image, fixed 150 steps
  source=natural|natural_speckle|natural_imaging|ultrasound
                             pre-training set: synthetic natural scenes, the same scenes imaged
                             as B-mode ultrasound (speckle), the same imaging chain without
                             speckle (its control), or simulated breast ultrasound; all
                             generated with their own seed, so they never hold a target's images
                             (with real: instead of ECSSD, 600 generated scenes)
  sources=natural+natural_speckle+natural_imaging
                             the speckle test: one study per source (WORKDIR/sources/NAME), each
                             pre-trained 3 times (study.pretrain_seeds; seed s starts from
                             pre-training s), the same fine-tuning sweep for each (default
                             families shallow_to_deep+deep_to_shallow), then
                             WORKDIR/report/sources.md: the shallow-vs-deep gap per source and
                             its changes (source x direction, and x target) with CIs; with
                             real: 2 outer folds (every image still tested once)
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
  external=SET@TARGET        external test sets, '+'-separated: every case of SET (a built-in
                             name, or folder:NAME set as a target is) is scored with the best
                             params of every run trained on TARGET (TARGET_on_SET in the
                             report), never trained or selected on; e.g. external=folder:b@busi
                             --config.study.external.b.data.folder.images=DIR ...
  sizes=10+all               training-set sizes ('all' = every training image)
  seeds=3                    number of seeds (first_seed..first_seed+seeds-1)
  first_seed=10              the first seed; pre-training i has seed first_seed + i
  folds=5                    outer folds (every image tested once; 0: one test split; real: 5,
                             real_v2: 3)
  orders=forward+level       depth orders of shallow_to_deep / deep_to_shallow (quick: forward)
  granularities=block+unit   what k counts (quick: block)
  ks=1+3+5                   the k of shallow_to_deep / deep_to_shallow (default: every k;
                             quick: 1+2+4+6, real: 4, real_v2: 1+2+4+7)
  auto_ks=4                  the k of the auto family, fixed in advance (default: every k, and
                             the soft variant; the report chooses k on validation)
  families=scratch+full      a subset of the families (default: all but auto, matched and the
                             parameter-efficient ones; quick and real: also not scratch);
                             `lora` stands for lora-r2+lora-r8,
                             `peft` for lora-r2+lora-r8+norm+bias (each over the whole
                             network; NAME-shallow_to_deep / NAME-deep_to_shallow: over
                             the first / last k blocks, e.g. lora-r8-shallow_to_deep, formerly
                             lora-r8-shallow); with a norm family the U-Net and
                             its pre-training have BatchNorm (model.norm=batch)
  criteria=rgn+probe+greedy  criteria of the `auto` family (families=...+auto): it trains what
                             `auto:<criterion>:k` (k = 1..N) and `auto:<criterion>:soft` (not
                             greedy) choose from the pre-trained weights and a few training
                             batches (greedy: and the validation split)

`real` is sized to finish in about 2 hours on 2 CPU cores; what was cut to fit and what was
kept: unet_jax.config.study_scales, which holds every scale's fields.

The report's inference is declared here too, before the study runs: `study.primary` (the
primary endpoint, tested first and alone at 0.05; default: the shallow-vs-deep gap on each
ultrasound target and its difference from the X-ray target's gap, at the first size; with
`study.primary.larger`, then each gap's change from that size to the larger one),
`study.margin` (the TOST equivalence margin, 0.02 Dice) and `study.power` (a power plan: the
first primary test simulated for the study's pre-trainings x folds with given variance
components; `python -m unet_jax.report.power` tabulates other arrangements). The first start
registers them, with the sweep, in WORKDIR/registration.json; a later start that changes them
is refused unless --config.study.amend_registration=True, which appends the amendment (its
time, the runs finished by then) and the report says so in its first screen.

Each target of `study.targets` is a definition of overrides of the run's `data.*` and
`augment.*` fields (target_sets.apply_target applies it to every point of the target); built-in
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

from unet_jax import errors
from unet_jax.config import auto_spec, defaults, families, study_scales, target_sets

WHERE = 'configs/layerwise.py'
ARGUMENTS = {
    **defaults.DEFAULT_ARGUMENTS,
    'real': 'the real-data study for 2 CPU cores (BUSI + JSRT, 128x128, 5 folds, 3 pre-trainings)',
    'real_v2': 'the confirmatory real-data study (k = 1, 2, 4, 7 both ways, 2 sizes, 5 new '
    'pre-trainings to a plateau, registered power)',
    'medium': 'the earlier real-data scale (depth 4, base 8, 64x64, 3 seeds; superseded by real)',
    'pretrain_data': f'pre-train on a real set, one of {list(defaults.REAL_SOURCES)}',
    'source': f'pre-training set, one of {sorted(defaults.SOURCES)} (default natural)',
    'sources': "'+'-separated pre-training sources: one study each, gaps compared (speckle test)",
    'targets': "'+'-separated targets: built-in names, folder:NAME, FILE.py (default us+xray)",
    'data_root': "DIR holding the real sets' release folders (their manual_dir)",
    'external': "'+'-separated SET@TARGET: external test sets scored by TARGET's runs",
    'sizes': "'+'-separated training-set sizes, 'all' = every training image",
    'seeds': 'number of seeds (first_seed.., default 3), each from its own pre-training',
    'first_seed': 'the first seed (default 0; real_v2: 10, seeds no earlier study used)',
    'folds': 'outer folds (every image tested once; real: 5, real_v2: 3; 0: one test split)',
    'orders': "'+'-separated depth orders: forward, level",
    'granularities': "'+'-separated: block, unit",
    'ks': "'+'-separated k of shallow_to_deep / deep_to_shallow (default: every k)",
    'auto_ks': "'+'-separated k of the auto family, fixed in advance (default: every k and soft)",
    'families': (
        f"'+'-separated subset of {'+'.join(families.NAMES)}, or the aliases "
        f"{', '.join(families.ALIASES)} (default: {'+'.join(families.DEFAULTS)})"
    ),
    'criteria': (
        "'+'-separated criteria of the auto family: "
        f'{", ".join(auto_spec.CRITERIA)} (default {"+".join(auto_spec.CRITERIA)})'
    ),
}
# The norm layers of a study with a `norm` family (norm@: only their scale and shift train):
# the default U-Net has none (model.norm='none').
NORM_FOR_NORM_FAMILIES = 'batch'


def get_config(arg: str = '') -> ml_collections.ConfigDict:
    args = defaults.parse_args(arg, ARGUMENTS, where=WHERE)
    quick = bool(args.get('quick', False))
    medium = bool(args.get('medium', False))
    real_v2 = bool(args.get('real_v2', False))
    if real_v2 and args.get('real'):
        raise errors.ConfigError(f'{WHERE}: real and real_v2 are two studies: choose one.')
    real = bool(args.get('real', False)) or real_v2  # real_v2 is real's scale, redesigned
    cpu_scale = quick or medium or real
    source_names = _sources(args)
    source = source_names[0] if source_names else str(args.get('source', 'natural'))
    generated = bool(source_names) or 'source' in args  # a generated pre-training set asked for
    pretrain_data = str(args.get('pretrain_data', 'ecssd' if real and not generated else ''))
    targets = _split(args.get('targets', 'busi+jsrt' if real else 'us+xray'))
    data_root = str(args.get('data_root', ''))
    default_sizes = '16' if quick else 'all' if medium else '20' if real else '10+50+all'
    sizes = _split(args.get('sizes', study_scales.REAL_V2_SIZES if real_v2 else default_sizes))
    num_seeds = _integer(
        args.get('seeds', study_scales.REAL_V2_PRETRAININGS if real_v2 else 3), 'seeds'
    )
    first_seed = _integer(
        args.get('first_seed', study_scales.REAL_V2_FIRST_SEED if real_v2 else 0), 'first_seed'
    )
    orders = _split(args.get('orders', 'forward' if cpu_scale else 'forward+level'))
    granularities = _split(args.get('granularities', 'block' if cpu_scale else 'block+unit'))
    default_families = '+'.join(
        f for f in families.DEFAULTS if not ((real or quick) and f == 'scratch')
    )
    if source_names:
        default_families = study_scales.SOURCES_FAMILIES
    if real_v2:
        default_families = study_scales.REAL_V2_FAMILIES
    family_names = list(families.expand(_split(args.get('families', default_families))))
    criteria = _split(args.get('criteria', '+'.join(auto_spec.CRITERIA)))
    default_ks = '4' if real else study_scales.QUICK_KS if quick else ''
    default_ks = study_scales.REAL_V2_KS if real_v2 else default_ks
    ks = [_integer(k, 'ks') for k in _split(args.get('ks', default_ks))]
    auto_ks = [_integer(k, 'auto_ks') for k in _split(args.get('auto_ks', ''))]
    if quick + medium + real > 1:
        raise ValueError(f'{WHERE}: choose one scale (quick, medium or real), not several.')
    if real and not data_root:
        raise errors.ConfigError(
            f'{WHERE}: real reads BUSI, JSRT and ECSSD from disk; pass data_root=DIR (the folder '
            f'holding their release folders), e.g. --config={WHERE}:real,data_root=/data.'
        )
    if pretrain_data and generated:
        raise errors.ConfigError(
            f'{WHERE}: pretrain_data={pretrain_data!r} and a generated source (source= or '
            'sources=) both name the pre-training set: keep one.'
        )
    if pretrain_data and (pretrain_data not in defaults.REAL_SOURCES or not data_root):
        raise ValueError(
            f'{WHERE}: pretrain_data={pretrain_data!r} must be one of '
            f'{list(defaults.REAL_SOURCES)}, with data_root=DIR (the folder holding its '
            'release folder).'
        )

    config = defaults.default_config('quick' if quick else '')
    if _known(family_names) and families.needs_norm_layers(family_names):
        # `norm` trains norm layers only: the U-Net (and its pre-training) gets BatchNorm.
        config.model.norm = NORM_FOR_NORM_FAMILIES
    _shared_model_and_size(config)
    study_scales.apply_scale(
        config, quick=quick, medium=medium, real=real, real_v2=real_v2, sources=bool(source_names)
    )
    if 'folds' in args:
        config.data.outer_folds = _integer(args['folds'], 'folds')
    config.optimizer.learning_rate = 1e-3 if cpu_scale else 3e-4
    config.finetune.granularity = 'block'

    study = ml_collections.ConfigDict()
    scale = dict(quick=quick, medium=medium, real=real, where=WHERE)
    study.pretrain = study_scales.pretrain_config(config, source=source, **scale)
    study.pretrain.seed = first_seed  # pre-training i has seed first_seed + i
    if real_v2:
        study_scales.pretrain_to_plateau(study.pretrain)
    if pretrain_data:
        study.pretrain.data.name = pretrain_data
        study.pretrain.data.manual_dir = data_root
    # Several pre-training sources (sources=; the first is the baseline of the comparisons):
    # one study per source in <workdir>/sources/<name> with study.pretrain =
    # study.source_pretrain[name] (unet_jax.study.runner.run_sources), gaps compared by
    # unet_jax.report.sources; () = one study pre-trained as study.pretrain says.
    study.sources = tuple(source_names)
    study.source_pretrain = ml_collections.ConfigDict(
        {name: study_scales.pretrain_config(config, source=name, **scale) for name in source_names}
    )
    # A finished pre-training workdir to reuse instead of pre-training inside this study's
    # workdir (e.g. one pre-training shared by several studies); '' = pre-train here.
    study.pretrained_workdir = ''
    study.targets = _targets(targets, data_root=data_root)
    # External test sets {name: {'data': {...}, 'of': (targets,)}}: scored, never trained on.
    study.external = _external(_split(args.get('external', '')), data_root=data_root)
    study.num_train = tuple(-1 if s == 'all' else _integer(s, 'sizes') for s in sizes)
    study.seeds = tuple(range(first_seed, first_seed + num_seeds))
    # Training sizes run only where a hypothesis needs them: {nSIZE: {'targets': (...),
    # 'configurations': (...)}} (configuration names as in the run names); a size not listed
    # runs every target and configuration. real_v2: the larger size on the ultrasound target
    # at k = REAL_V2_SIZE_K (unet_jax.config.study_scales) of both directions and full.
    study.size_subsets = ml_collections.ConfigDict(
        study_scales.real_v2_size_subsets(study, targets, sizes, ks, where=WHERE) if real_v2 else {}
    )
    study.families = tuple(family_names)
    # Criteria of the `auto` family (unet_jax.config.auto_spec.CRITERIA; scored by
    # unet_jax.freeze.auto_choice):
    # rgn (relative gradient norm), probe (a short training probe per block), greedy (blocks
    # added one at a time by the validation Dice of short runs).
    study.auto_criteria = tuple(criteria)
    study.orders = tuple(orders)
    study.granularities = tuple(granularities)
    # The k of shallow_to_deep:k / deep_to_shallow:k (blocks or units); () = every k.
    study.k_values = tuple(ks)
    # The k of the auto family's `auto:<criterion>:k`, fixed before the study runs (no soft
    # variant then); () = every k and soft (the report then picks k on validation).
    study.auto_k_values = tuple(auto_ks)
    # The primary endpoint, declared before the study runs: the report tests it first, at 0.05
    # and apart from every other comparison (fixed sequence), and opens with its answer. It is
    # the gap a - b (test Dice averaged over k, in the first order and granularity) at
    # training size num_train on each target of `targets`, then each of those gaps minus the
    # gap on `versus` (the target x direction interaction). Defaults ('' / 0): a, b =
    # shallow_to_deep, deep_to_shallow (the report then states no primary endpoint if the
    # study lacks them), every ultrasound target, the first X-ray target ('none': no
    # interaction), the first size.
    # `larger` (a training size; 0 = none): then the change of each gap from num_train to
    # larger (gap at num_train minus gap at larger, averaged over the k both sizes ran),
    # tested last (the "few images" claim).
    study.primary = ml_collections.ConfigDict(
        dict(a='', b='', targets='', versus='', num_train=0, larger=0)
    )
    if real_v2:
        study.primary.larger = study.num_train[1] if len(study.num_train) > 1 else 0
    # The power plan, recorded with the registration (unet_jax.report.power): the primary's
    # first test simulated for this study's pre-trainings x outer folds with these variance
    # components (SDs, in Dice) at `effect`, and the smallest effect with 0.8 power;
    # effect = 0: no power plan.
    study.power = ml_collections.ConfigDict(
        study_scales.REAL_V2_POWER if real_v2 else dict(
            effect=0.0, sd_pretraining=0.0, sd_fold=0.0, sd_run=0.0, sd_image=0.0,
            sd_residual=0.0, skewness=0.0, total_images=0, components_from='',
        )
    )  # fmt: skip
    # Equivalence margin of the report's TOST, in Dice ("equivalent within +-margin").
    study.margin = 0.02
    # The first start records the declaration (primary, margin, families, ks, sizes, targets,
    # folds, seeds) in WORKDIR/registration.json (unet_jax.config.registration); a later start that
    # declares otherwise is refused unless this is True: it appends an amendment (its time,
    # the runs finished by then) that the report states in its first screen.
    study.amend_registration = False
    # Runs that differ only in seed train together in one compiled step, up to group_size at
    # once (1 = one run at a time; 0 = as many as fit group_memory_mb, from the config).
    study.group_size = 0
    study.group_memory_mb = 8192
    # How a group steps its runs: 'vmap' (all in one program), 'loop' (one after another through
    # a single-run program; faster on CPU), 'auto' (loop on CPU, vmap on accelerators).
    study.vectorize = 'auto'
    # Pre-train R times (seeds 0..R-1); fine-tuning seed s starts from pre-training s mod R.
    # Default: one pre-training per seed, so that no default answer is about one pre-trained
    # model (its noise can flip a conclusion from one CPU to another); 1 = the older design.
    study.pretrain_seeds = study_scales.SOURCES_PRETRAIN_SEEDS if source_names else num_seeds
    # Scratch trains this many times the steps of the other families (it starts from nothing;
    # with early stopping the factor scales its cap: `real` gives every family the same rule).
    study.scratch_steps_factor = 1.0 if real else 2.0 if medium else 3.0
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


def _known(names) -> bool:
    """Whether every name is a family (unknown names fail later, in the study's check)."""
    return all(n in families.BY_NAME for n in names)


def _shared_model_and_size(config: ml_collections.ConfigDict) -> None:
    """Turns model fields and the image size into references the pre-training config shares."""
    for key, value in config.model.items():
        config.model[key] = ml_collections.FieldReference(value)
    config.data.image_size = ml_collections.FieldReference(config.data.image_size)


def _targets(tokens: list[str], *, data_root: str) -> ml_collections.ConfigDict:
    """study.targets: {name: definition} from built-in names, folder:NAME and FILE.py tokens."""
    targets: dict[str, ml_collections.ConfigDict] = {}
    for token in tokens:
        if token.endswith('.py'):
            found = target_sets.load_target_file(token, where=f'{WHERE}:targets')
        elif token.startswith('folder:'):
            found = {token.removeprefix('folder:'): target_sets.folder_target()}
        else:
            found = {token: _builtin_target(token, data_root=data_root)}
        for name, definition in found.items():
            target_sets.check_target_name(name, where=f'{WHERE}:targets')
            if name in targets:
                raise errors.ConfigError(
                    f'{WHERE}: target {name!r} is given twice in targets=.'
                )
            targets[name] = definition
    return ml_collections.ConfigDict(targets)


def _external(tokens: list[str], *, data_root: str) -> ml_collections.ConfigDict:
    """study.external from SET@TARGET tokens (SET: a built-in name or folder:NAME)."""
    external: dict[str, ml_collections.ConfigDict] = {}
    for token in tokens:
        set_name, at, target = token.partition('@')
        if not at or not target:
            raise errors.ConfigError(
                f'{WHERE}: external={token!r} must be SET@TARGET, e.g. external=folder:b@busi '
                '(the runs trained on busi also score every image of folder set b).'
            )
        if set_name.startswith('folder:'):
            name, definition = set_name.removeprefix('folder:'), target_sets.folder_target()
        else:
            name = set_name
            definition = _builtin_target(set_name, data_root=data_root, argument='external')
        target_sets.check_target_name(name, where=f'{WHERE}:external')
        if name in external:
            external[name].of = (*external[name].of, target)
            continue
        external[name] = ml_collections.ConfigDict(dict(data=definition.data, of=(target,)))
    return ml_collections.ConfigDict(external)


def _builtin_target(
    name: str, *, data_root: str, argument: str = 'targets'
) -> ml_collections.ConfigDict:
    """A built-in set named in `argument=` (targets or external); errors name that argument."""
    if name in target_sets.REAL_TARGETS and not data_root:
        raise errors.ConfigError(
            f'{WHERE}: {argument}= names {name!r}, a real set read from disk; pass '
            f'data_root=DIR (the folder holding its release folder) in the config argument, '
            f'e.g. --config={WHERE}:{argument}={name},data_root=/data.'
        )
    return target_sets.builtin_target(name, data_root=data_root, where=f'{WHERE}:{argument}')


def _sources(args: dict[str, object]) -> list[str]:
    """The generated pre-training sources of sources=A+B+... (none: one source)."""
    names = _split(args.get('sources', ''))
    if not names:
        return []
    if 'source' in args:
        raise errors.ConfigError(
            f'{WHERE}: source= and sources= both given; sources=A+B compares several, '
            'source=A pre-trains on one: keep one.'
        )
    for name in names:
        if name not in defaults.SOURCES:
            raise errors.ConfigError(
                f'{WHERE}: sources: {name!r} is not one of {sorted(defaults.SOURCES)} '
                '(e.g. sources=natural+natural_speckle+natural_imaging).'
            )
    if len(set(names)) != len(names) or len(names) < 2:
        raise errors.ConfigError(
            f'{WHERE}: sources={"+".join(names)} must name at least two different sources.'
        )
    return names


def _integer(value: object, argument: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise errors.ConfigError(
            f'{WHERE}: {argument}={value!r} is not a whole number (e.g. seeds=3, sizes=10+50+all).'
        ) from None


def _split(value: object) -> list[str]:
    return [v for v in str(value).split('+') if v]
