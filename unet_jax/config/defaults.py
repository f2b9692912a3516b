"""Every field of a run with its default, and the arguments a config file takes.

`configs/*.py` are what users pass to `--config`; they call these functions, so a field and a
config argument are defined and documented once, here (target sets: unet_jax.config.target_sets;
the checks of every field: unet_jax.config.checks). See configs/default.py for how a run is
configured.
"""

from __future__ import annotations

from collections.abc import Mapping

import ml_collections

from unet_jax import errors
from unet_jax.config import auto_spec
from unet_jax.data import catalogue, fields

ConfigError = errors.ConfigError

# The arguments of configs/default.py (every config accepts them).
DEFAULT_ARGUMENTS = {'quick': 'CPU scale: a small U-Net at 64x64 that trains in about a minute'}

# Pre-training sources (`source=`): the set each names.
SOURCES = {
    'natural': 'synthetic_natural',
    'natural_speckle': 'synthetic_natural_speckle',  # the natural scenes imaged as B-mode
    'natural_imaging': 'synthetic_natural_imaging',  # the same imaging chain, without speckle
    'ultrasound': 'synthetic_ultrasound',
}
# Generation seed of simulated pre-training sets. Example i of a synthetic set is a function
# of (seed, i) only, so a pre-training set with a target's seed would contain the target's
# images, test images included; every target keeps the default seed 0.
PRETRAIN_DATA_SEED = 1000
OPTIMIZERS = ('adam', 'adamw')
SCHEDULES = ('cosine', 'constant')
# Real natural-image saliency sets a study may pre-train on (`pretrain_data=`).
REAL_SOURCES = tuple(e.name for e in catalogue.CATALOGUE if e.pretraining)



def default_config(arg: str = '') -> ml_collections.ConfigDict:
    """Every field of a run, with its default; `arg` is '' or 'quick' (see DEFAULT_ARGUMENTS)."""
    args = parse_args(arg, DEFAULT_ARGUMENTS, where='configs/default.py')
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict(
        dict(
            depth=4,  # poolings; blocks enc0..enc{depth-1}, bottleneck, dec{depth-1}..dec0, head
            base_width=64,  # channels of enc0; doubles at each level (classic U-Net: 64 -> 1024)
            in_channels=1,  # grey images; RGB natural images are converted on load
            out_channels=1,  # one foreground logit per pixel
            norm='none',  # none | batch | group
            dropout=0.0,
            upsample='transpose',  # transpose (2x2 stride-2 up-conv) | bilinear (resize + conv)
        )
    )
    config.data = fields.default_data_config()

    config.finetune = ml_collections.ConfigDict(
        dict(
            train='@all',  # freeze spec: what trains; the rest is frozen
            order='forward',  # forward | level: the depth order of first:N / last:N
            granularity='unit',  # unit | block: what first:N / last:N count
            auto=auto_spec.default_auto_config(),  # what an `auto:` spec looks at
            # A spec that freezes layers needs init_from (frozen random weights are almost never
            # meant); True allows it, e.g. for a control that freezes a random part on purpose.
            allow_random_frozen=False,
        )
    )
    # External test sets, {name: data config}: every case of each is scored with the run's best
    # params (chosen on val) once training ends, never trained or selected on (a study sets
    # them from config.study.external).
    config.external = ml_collections.ConfigDict()
    config.init_from = ''  # workdir (or best/ folder) of a pre-training run; '' = scratch
    # With init_from: random params with each tensor's mean and std taken from init_from's
    # (a statistics-matched initialisation, Raghu et al. 2019); BatchNorm statistics start fresh.
    config.init_matched = False
    config.dont_load = ()  # regexes of variable paths left at their initialisation

    config.loss = ml_collections.ConfigDict(dict(bce_weight=1.0, dice_weight=1.0))
    config.optimizer = ml_collections.ConfigDict(
        dict(
            name='adam',  # OPTIMIZERS: adam | adamw (decoupled weight decay, trained params only)
            learning_rate=1e-3,
            weight_decay=0.0,
            schedule='cosine',  # SCHEDULES: cosine | constant, both after a linear warm-up
            grad_clip_norm=0.0,  # 0 = no clipping
        )
    )
    config.augment = ml_collections.ConfigDict(
        dict(
            flip=True,  # left-right (targets of chest X-ray sets turn it off)
            affine=True,
            max_rotation_deg=10.0,
            max_scale=0.1,
            max_shift=0.05,
            intensity=True,
            max_log_gamma=0.3,
            max_contrast=0.1,  # the image std becomes 1 +- this
            max_brightness=0.1,  # the image mean becomes 0 +- this (in units of its std)
        )
    )

    config.batch_size = 8  # global; split over all devices
    config.half_precision = False  # bfloat16 compute, float32 params and loss (GPU/TPU)
    config.num_train_steps = 2000  # the cap, with early stopping
    config.warmup_steps = 100
    # Early stopping on validation lesion Dice (train.ledger.EarlyStopping), checked at every
    # evaluation: a run stops once the mean of its last `smoothing` validation Dice values has not
    # risen by more than `min_delta` for `patience_steps`, never before `min_steps`, and never
    # while that mean has not yet exceeded `min_dice` (a run collapsed to empty masks is flat at
    # zero: not a plateau). patience_steps=0: off (every run trains num_train_steps). Use it with
    # optimizer.schedule='constant': cosine decay flattens a curve by itself.
    config.early_stopping = ml_collections.ConfigDict(
        dict(patience_steps=0, min_delta=0.0, min_steps=0, smoothing=1, min_dice=0.0)
    )
    config.log_every_steps = 50
    config.eval_every_steps = 200
    config.checkpoint_every_steps = 200
    config.num_saved_predictions = 8  # test images kept in predictions.npz for figures

    if args.get('quick'):
        apply_quick(config)
    return config


def apply_quick(config: ml_collections.ConfigDict) -> None:
    """CPU scale: a small U-Net at 64x64 that trains in about a minute on 2 cores."""
    config.model.depth = 3
    config.model.base_width = 16
    config.data.image_size = 64
    config.data.num_examples = 120
    config.num_train_steps = 150
    config.warmup_steps = 10
    config.log_every_steps = 25
    config.eval_every_steps = 50
    config.checkpoint_every_steps = 50


def parse_args(arg: str, valid: Mapping[str, str], *, where: str) -> dict[str, object]:
    """'quick,seed=3' -> {'quick': True, 'seed': 3} (big_vision-style config arguments).

    `valid` maps each argument a config file accepts to a one-line help; any other argument
    (a typo) is an error naming it and listing the valid ones with their help.
    """
    parsed: dict[str, object] = {}
    for item in filter(None, (a.strip() for a in arg.split(','))):
        key, eq, value = item.partition('=')
        key = key.strip()
        if key not in valid:
            listed = '\n'.join(f'  {name}: {help_}' for name, help_ in valid.items())
            raise ConfigError(
                f'{where}: unknown argument {key!r} in {arg!r}. Valid arguments '
                f'(comma-separated after {where}:):\n{listed}'
            )
        if not eq:
            parsed[key] = True
            continue
        for cast in (int, float):
            try:
                parsed[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            parsed[key] = value
    return parsed


def apply_source(config: ml_collections.ConfigDict, source: str, *, where: str) -> None:
    """Makes `config` a pre-training run on the simulated set `source` (all layers train),
    generated with its own seed so that it never contains a target's images."""
    if source not in SOURCES:
        raise ConfigError(f'{where}: source={source!r} is not one of {sorted(SOURCES)}.')
    config.data.name = SOURCES[source]
    config.data.seed = PRETRAIN_DATA_SEED
    config.finetune.train = '@all'
    config.init_from = ''
