"""Configuration building blocks shared by the files in configs/ (one source of truth).

`configs/*.py` are what users pass to `--config`; they call these functions, so a field is
defined and documented once, here. See configs/default.py for how a run is configured.
"""

import ml_collections

from unet_jax.data import pipeline


def default_config(arg: str = '') -> ml_collections.ConfigDict:
    """Every field of a run, with its default; `arg` as in `parse_args` (e.g. 'quick')."""
    args = parse_args(arg)
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
    config.data = pipeline.default_data_config()

    config.finetune = ml_collections.ConfigDict(
        dict(
            train='@all',  # freeze spec: what trains; the rest is frozen
            order='forward',  # forward | level: the depth order of first:N / last:N
            granularity='unit',  # unit | block: what first:N / last:N count
        )
    )
    config.init_from = ''  # workdir (or best/ folder) of a pre-training run; '' = scratch
    config.dont_load = ()  # regexes of variable paths left at their initialisation

    config.loss = ml_collections.ConfigDict(dict(bce_weight=1.0, dice_weight=1.0))
    config.optimizer = ml_collections.ConfigDict(
        dict(
            name='adam',  # adam | adamw (decoupled weight decay, trained params only)
            learning_rate=1e-3,
            weight_decay=0.0,
            schedule='cosine',  # cosine | constant, both after a linear warm-up
            grad_clip_norm=0.0,  # 0 = no clipping
        )
    )
    config.augment = ml_collections.ConfigDict(
        dict(
            flip=True,  # left-right
            affine=True,
            max_rotation_deg=10.0,
            max_scale=0.1,
            max_shift=0.05,
            intensity=True,
            max_log_gamma=0.3,
            max_contrast=0.1,
            max_brightness=0.1,
        )
    )

    config.batch_size = 8  # global; split over all devices
    config.half_precision = False  # bfloat16 compute, float32 params and loss (GPU/TPU)
    config.num_train_steps = 2000
    config.warmup_steps = 100
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


def parse_args(arg: str) -> dict[str, object]:
    """'quick,seed=3' -> {'quick': True, 'seed': 3} (big_vision-style config arguments)."""
    parsed: dict[str, object] = {}
    for item in filter(None, (a.strip() for a in arg.split(','))):
        key, eq, value = item.partition('=')
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
