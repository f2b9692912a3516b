"""The study's scale presets (configs/layerwise.py: quick, medium, real, real_v2, and the
sizes of a sources= study): the fields each sets on the base fine-tuning run and on the
pre-training, with the measurements their numbers come from.

`real` is sized to finish in about 2 hours on 2 CPU cores. What was cut to fit: batch 4 (not
8), base width 8, one training size (20 images), one k (4 blocks) of the forward order by
block (not every k, not the level order or units; measured at ks=1+4 with scratch: about 22
min per BUSI fold, 3.5 hours in all), no `scratch` family, a 300-step cap, 600 pre-training
steps, validation 8% of each set. What was kept: 128x128, all 5 outer folds (every BUSI lesion
image and every JSRT image tested once), 3 seeds each with its own ECSSD pre-training, the
near-duplicate grouping of BUSI, the same stopping rule for every family.
"""

import ml_collections

from unet_jax import errors
from unet_jax.config import defaults
from unet_jax.data import modalities

# `medium`: steps of every fine-tuning run (scratch: times study.scratch_steps_factor) and of
# the pre-training.
MEDIUM_STEPS = 150
MEDIUM_PRETRAIN_STEPS = 1000
# `real`: the step cap of every fine-tuning run (early stopping ends most runs before it) and
# the steps of each pre-training.
REAL_STEP_CAP = 300
REAL_PRETRAIN_STEPS = 600
# `real` with a generated pre-training source (source= or sources=): scenes generated (ECSSD,
# the default, has 1000 images).
REAL_GENERATED_PRETRAIN_EXAMPLES = 600
# `sources=`: pre-trainings per source (R >= 3, so that the gap's change has pre-training
# variance in its CI) and the families of each source's sweep.
SOURCES_PRETRAIN_SEEDS = 3
SOURCES_FAMILIES = 'shallow_to_deep+deep_to_shallow'
# `quick`, sized so that the whole study runs in under 4 minutes on 2 quiet cores (measured in
# docs/performance.md; 493 s at 64x64, 120 steps, every k and scratch at 3x the steps): the k of
# both directions (k = 1 and three k >= 2 of the 7 below full; every k takes about 1.7x as
# long), the image size (a full step at 48x48 takes 0.56x the time of one at 64x64) and the
# steps of every run; no scratch family (as in `real`: it is not a choice of layers to tune).
QUICK_KS = '1+2+4+6'
QUICK_IMAGE_SIZE = 48
QUICK_STEPS = 100
# `real,sources=`: outer folds (every image tested once with fewer runs than real's 5).
REAL_SOURCES_OUTER_FOLDS = 2
# `real_v2`, the confirmatory study (docs/results/real_v2.md): five pre-trainings with seeds
# no earlier study used (10..14; fine-tuning seed s from pre-training s), each to a plateau
# (a pilot pre-training, seed 9, plateaued at 3000 steps: cap 4000); 3 outer folds (the
# power plan of 5 x 2 reached 0.8 at no effect up to +0.2 Dice: with 2 folds the fold
# component has one degree of freedom; 5 x 3 reaches it at +0.07); k of both directions; a
# larger training size for the size contrast (BUSI only, at k = 4 and full); the fine-tuning
# cap (a pilot fold, seed 9, stopped every run on a plateau by step 580: cap 800).
# REAL_V2_POWER: the registered power plan (the variance components of the exploratory `real`
# study's BUSI gap at k = 4, measured on its re-run; report.power).
REAL_V2_PRETRAININGS = 5
REAL_V2_FIRST_SEED = 10
REAL_V2_OUTER_FOLDS = 3
REAL_V2_KS = '1+2+4+7'
REAL_V2_SIZES = '20+100'
REAL_V2_SIZE_K = 4
REAL_V2_FAMILIES = 'pretrained+full+shallow_to_deep+deep_to_shallow'
REAL_V2_STEP_CAP = 800
REAL_V2_MIN_DICE = 0.05
REAL_V2_PRETRAIN_CAP = 4000
REAL_V2_POWER = dict(
    effect=0.04, sd_pretraining=0.0, sd_fold=0.0087, sd_run=0.0403, sd_image=0.129,
    sd_residual=0.164, skewness=0.27, total_images=647,
    components_from='the exploratory real study re-run on 2026-12-06 (BUSI gap at k = 4)',
)  # fmt: skip


def apply_scale(
    config: ml_collections.ConfigDict,
    *,
    quick: bool,
    medium: bool,
    real: bool,
    real_v2: bool,
    sources: bool,
) -> None:
    """The base fine-tuning run at the chosen scale (none chosen: the full scale, for one
    accelerator); `sources`: a sources= study (real: fewer outer folds)."""
    if quick:
        _apply_quick(config)
    elif medium:
        _apply_medium(config)
    elif real:
        _apply_real(config)
        if sources:
            config.data.outer_folds = REAL_SOURCES_OUTER_FOLDS
        if real_v2:
            _apply_real_v2(config)
    else:
        _apply_full(config)


def _apply_quick(config: ml_collections.ConfigDict) -> None:
    """CPU scale: the whole study in under 4 minutes on 2 quiet cores."""
    config.model.base_width = 8
    config.data.image_size = QUICK_IMAGE_SIZE
    config.num_train_steps = QUICK_STEPS
    config.warmup_steps = 10
    config.eval_every_steps = 50
    config.checkpoint_every_steps = 50
    config.log_every_steps = 50


def _apply_full(config: ml_collections.ConfigDict) -> None:
    """The full scale, for one accelerator: 128x128, 1000 steps."""
    config.data.image_size = 128
    config.num_train_steps = 1000
    config.eval_every_steps = 100
    config.checkpoint_every_steps = 100


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


def _apply_real(config: ml_collections.ConfigDict) -> None:
    """The real-data study on 2 CPU cores: depth 4, base 8 at 128x128 (speckle survives at
    that size, not at 64x64), 5 outer folds, validation 8% of each set, batch 4, early stopping.

    Every run trains with a constant learning rate after a warm-up (cosine decay would flatten
    the curve by itself) until its validation lesion Dice, smoothed over 2 evaluations, has not
    risen by 0.005 for 60 steps, at least 120 steps (the floor) and at most REAL_STEP_CAP: the
    same rule for every family, scratch included. Measured on 2 cores (2026-12-01): a full step
    takes 0.27 s at batch 8, scoring an image 0.013 s; the cuts that fit 2 hours (batch 4, two k
    points, one training size, a 300-step cap) are listed in the module doc.
    """
    config.model.depth = 4
    config.model.base_width = 8
    config.data.image_size = 128
    config.data.outer_folds = 5
    config.data.val_fraction = 0.08
    config.batch_size = 4
    config.num_train_steps = REAL_STEP_CAP
    config.warmup_steps = 20
    config.optimizer.schedule = 'constant'
    config.early_stopping.patience_steps = 60
    config.early_stopping.min_delta = 0.005
    config.early_stopping.min_steps = 120
    config.early_stopping.smoothing = 2
    config.eval_every_steps = 20
    config.checkpoint_every_steps = 100
    config.log_every_steps = 20


def _apply_real_v2(config: ml_collections.ConfigDict) -> None:
    """`real` with outer folds REAL_V2_OUTER_FOLDS, the cap REAL_V2_STEP_CAP (measured on a
    pilot fold so that at most 10% of each target's runs reach it) and the collapse guard: a
    validation curve that never rose above REAL_V2_MIN_DICE is not a plateau."""
    config.data.outer_folds = REAL_V2_OUTER_FOLDS
    config.num_train_steps = REAL_V2_STEP_CAP
    config.early_stopping.min_dice = REAL_V2_MIN_DICE


def pretrain_config(
    config: ml_collections.ConfigDict,
    *,
    source: str,
    quick: bool,
    medium: bool = False,
    real: bool = False,
    where: str,
) -> ml_collections.ConfigDict:
    """The pre-training run on `source` at the chosen scale; it shares the model fields and the
    image size of `config` (field references)."""
    pretrain = defaults.default_config('quick' if quick else '')
    for key in config.model:
        pretrain.model[key] = config.model.get_ref(key)
    pretrain.data.image_size = config.data.get_ref('image_size')
    defaults.apply_source(pretrain, source, where=where)
    if quick:
        pretrain.data.num_examples = 300
        pretrain.num_train_steps = 400
        pretrain.eval_every_steps = 100
        pretrain.checkpoint_every_steps = 100
        pretrain.log_every_steps = 50
    elif real:
        pretrain.data.num_examples = REAL_GENERATED_PRETRAIN_EXAMPLES  # if generated
        pretrain.num_train_steps = REAL_PRETRAIN_STEPS
        pretrain.warmup_steps = 50
        pretrain.eval_every_steps = 200
        pretrain.checkpoint_every_steps = 200
        pretrain.log_every_steps = 50
        pretrain.optimizer.learning_rate = 1e-3
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


def pretrain_to_plateau(pretrain: ml_collections.ConfigDict) -> None:
    """real_v2: each pre-training trains until its validation Dice has not risen by 0.005 for
    600 steps (smoothed over 2 evaluations, at least 600 steps, at most REAL_V2_PRETRAIN_CAP),
    with a constant learning rate after the warm-up."""
    pretrain.num_train_steps = REAL_V2_PRETRAIN_CAP
    pretrain.optimizer.schedule = 'constant'
    pretrain.eval_every_steps = 200
    pretrain.checkpoint_every_steps = 200
    pretrain.early_stopping.patience_steps = 600
    pretrain.early_stopping.min_delta = 0.005
    pretrain.early_stopping.min_steps = 600
    pretrain.early_stopping.smoothing = 2
    pretrain.early_stopping.min_dice = REAL_V2_MIN_DICE


def real_v2_size_subsets(
    study: ml_collections.ConfigDict,
    targets: list[str],
    sizes: list[str],
    ks: list[int],
    *,
    where: str,
) -> dict:
    """real_v2's study.size_subsets: each size after the first runs on the first ultrasound
    target only, at k = REAL_V2_SIZE_K of both directions (forward order, by block), full and
    pretrained."""
    if REAL_V2_SIZE_K not in ks:
        raise errors.ConfigError(
            f'{where}: real_v2 runs its larger sizes at k = {REAL_V2_SIZE_K}; keep it in ks= '
            f'(e.g. ks={REAL_V2_KS}).'
        )
    ultrasound = [
        t for t in targets
        if modalities.modality(study.targets[t].data.get('name', '')) == modalities.ULTRASOUND
    ]  # fmt: skip
    k = f'forward-block-k{REAL_V2_SIZE_K}'
    chosen = ('pretrained', 'full', f'shallow_to_deep-{k}', f'deep_to_shallow-{k}')
    return {
        f'n{size}': dict(targets=tuple(ultrasound[:1]), configurations=chosen) for size in sizes[1:]
    }
