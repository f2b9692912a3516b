"""Training and evaluation of one run: `train_and_evaluate(config, workdir)`.

Read top to bottom: data -> model and layer registry -> freeze plan -> optimiser -> train state
(resumed, pre-trained or fresh) -> loop of jitted steps with periodic validation, checkpoints and
summaries -> the test split scored once with the best params -> `results.json`.

Data parallelism: the global batch is sharded over every device on a 1-D mesh axis `data` and
the step is jitted over it (pmap semantics: each device holds batch/num_devices examples, the
loss is the global mean, so gradients are averaged over `data`). BatchNorm statistics are
global-batch statistics, so 1 and N devices compute the same step.
"""

from __future__ import annotations

from collections.abc import Mapping
import functools
import json
import math
import os
import time
from typing import Any

from absl import logging
import flax
from flax import traverse_util
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import ml_collections
import numpy as np
import optax

from unet_jax import checkpoint, freeze, io_utils, layers, metrics, models, writers
from unet_jax.data import augment, pipeline

DATA_AXIS = 'data'


class NonFiniteLossError(FloatingPointError):
    """Training diverged: a loss or gradient norm became NaN or Inf."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any

    def variables(self) -> dict[str, Any]:
        if self.batch_stats:
            return {'params': self.params, 'batch_stats': self.batch_stats}
        return {'params': self.params}


# ----------------------------------------------------------------------------- set-up


def create_mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    if batch_size % mesh.size:
        raise ValueError(
            f'config.batch_size={batch_size} is not divisible by the {mesh.size} devices; set '
            f'--config.batch_size to a multiple of {mesh.size}.'
        )


def create_learning_rate_fn(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up, then cosine decay to zero or a constant rate."""
    opt = config.optimizer
    total = max(config.num_train_steps, 1)
    warmup = min(config.warmup_steps, total - 1)
    if opt.schedule == 'cosine':
        return optax.warmup_cosine_decay_schedule(
            0.0, opt.learning_rate, warmup_steps=warmup, decay_steps=total, end_value=0.0
        )
    if opt.schedule == 'constant':
        return optax.join_schedules(
            [
                optax.linear_schedule(0.0, opt.learning_rate, max(warmup, 1)),
                optax.constant_schedule(opt.learning_rate),
            ],
            [warmup],
        )
    raise ValueError(
        f"config.optimizer.schedule={opt.schedule!r} is unknown; use 'cosine' or 'constant'."
    )


def create_train_tx(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The optimiser of the trained parameters; weight decay lives here, never on frozen ones."""
    opt = config.optimizer
    lr = create_learning_rate_fn(config)
    if opt.name == 'adam':
        tx = optax.adam(lr)
    elif opt.name == 'adamw':
        tx = optax.adamw(lr, weight_decay=opt.weight_decay)
    else:
        raise ValueError(f"config.optimizer.name={opt.name!r} is unknown; use 'adam' or 'adamw'.")
    if opt.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
    return tx


@functools.lru_cache(maxsize=8)
def _jitted_init(model):
    # Jitted once per model: un-jitted, every initialiser op compiles on its own (seconds on
    # CPU), and a study initialises the same model for every sweep point.
    return jax.jit(functools.partial(model.init, train=False))


def initial_variables(model, config: ml_collections.ConfigDict) -> dict[str, Any]:
    size = config.data.image_size
    dummy = jnp.zeros((1, size, size, config.model.in_channels), jnp.float32)
    variables = _jitted_init(model)(jax.random.key(config.seed), dummy)
    return jax.tree.map(np.asarray, flax.core.unfreeze(variables))


def load_init_from(variables: dict[str, Any], config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Params (and BN statistics) of a pre-training run, strictly matched to the model."""
    loaded, _ = checkpoint.load_variables(config.init_from)
    return checkpoint.merge_pretrained(
        variables, loaded, dont_load=tuple(config.dont_load), source=config.init_from
    )


# ----------------------------------------------------------------------------- steps


def batch_indices(step: int, batch_size: int, num_examples: int, seed: int) -> np.ndarray:
    """Example indices of a step: epochs are seeded permutations, so data order is keyed by step."""
    positions = np.arange(step * batch_size, (step + 1) * batch_size)
    epochs = positions // num_examples
    indices = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):
        permutation = np.random.default_rng([seed, int(epoch)]).permutation(num_examples)
        selected = epochs == epoch
        indices[selected] = permutation[positions[selected] % num_examples]
    return indices


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    model,
    tx,
    labels,
    frozen_units: tuple[str, ...],
    rng: jax.Array,
    config,
):
    """One step that differentiates only the trained parameters.

    The frozen subtree is a constant of the loss, so XLA computes no weight gradients for it
    and, past the shallowest trained layer, no activation gradients either.
    """
    step_rng = jax.random.fold_in(rng, state.step)
    augment_rng, dropout_rng = jax.random.split(step_rng)
    # The barrier keeps XLA from fusing the warp's gathers into the first convolution and its
    # gradient: without it a base-32 step on CPU took 2.1x as long (3.1 s vs 1.5 s).
    images, masks = jax.lax.optimization_barrier(
        augment.augment_batch(augment_rng, batch['image'], batch['mask'], config.augment)
    )
    trainable, frozen = freeze.split_trainable(state.params, labels)
    has_batch_stats = bool(state.batch_stats)

    def loss_fn(trainable_params):
        variables = {'params': freeze.merge(trainable_params, frozen)}
        if has_batch_stats:
            variables['batch_stats'] = state.batch_stats
        output = model.apply(
            variables,
            images,
            train=True,
            frozen_units=frozen_units,
            rngs={'dropout': dropout_rng},
            mutable=['batch_stats'] if has_batch_stats else False,
        )
        logits, updates = output if has_batch_stats else (output, {})
        per_image = metrics.segmentation_loss(
            logits, masks, bce_weight=config.loss.bce_weight, dice_weight=config.loss.dice_weight
        )
        return per_image.mean(), (logits, updates)

    (loss, (logits, updates)), trainable_grads = jax.value_and_grad(loss_fn, has_aux=True)(
        trainable
    )
    grads = freeze.merge(trainable_grads, jax.tree.map(jnp.zeros_like, frozen))
    param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_trainable, _ = freeze.split_trainable(
        optax.apply_updates(state.params, param_updates), labels
    )
    # Frozen leaves are put back untouched, so they stay bit-identical whatever the optimiser.
    new_state = state.replace(
        step=state.step + 1,
        params=freeze.merge(new_trainable, frozen),
        batch_stats=updates.get('batch_stats', state.batch_stats),
        opt_state=opt_state,
    )
    counts = metrics.overlap_counts((logits > 0).astype(jnp.float32), masks)
    train_metrics = metrics.TrainMetrics.single_from_model_output(
        loss=loss,
        dice=metrics.dice_from_counts(**counts),
        grad_norm=optax.global_norm(trainable_grads),
    )
    return new_state, train_metrics


def eval_step(variables, batch: dict[str, jax.Array], *, model, config):
    """Probabilities and CLU metrics of one (padded) evaluation batch."""
    logits = model.apply(variables, batch['image'], train=False)
    masks = batch['mask']
    valid = batch['valid']
    loss = metrics.segmentation_loss(
        logits, masks, bce_weight=config.loss.bce_weight, dice_weight=config.loss.dice_weight
    )
    counts = metrics.overlap_counts((logits > 0).astype(jnp.float32), masks)
    eval_metrics = metrics.EvalMetrics.single_from_model_output(
        loss=loss,
        dice=metrics.dice_from_counts(**counts),
        iou=metrics.iou_from_counts(**counts),
        valid=valid,
        mask=valid,
        **counts,
    )
    return jax.nn.sigmoid(logits), eval_metrics


# ----------------------------------------------------------------------------- evaluation


def evaluate(
    eval_fn,
    variables,
    split: pipeline.Split,
    *,
    batch_size: int,
    mesh: Mesh,
    data_sharding: NamedSharding,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics of a whole split (CLU, merged over batches) and per-image Dice/IoU/HD95."""
    num = len(split.image)
    batch_size = max(mesh.size, batch_size - batch_size % mesh.size)
    collection, probs = None, []
    for start in range(0, num, batch_size):
        image = split.image[start : start + batch_size]
        mask = split.mask[start : start + batch_size]
        pad = batch_size - len(image)
        batch = {
            'image': np.pad(image, ((0, pad), (0, 0), (0, 0), (0, 0))),
            'mask': np.pad(mask, ((0, pad), (0, 0), (0, 0), (0, 0))),
            'valid': np.arange(batch_size) < len(image),
        }
        batch = jax.device_put(batch, data_sharding)
        batch_probs, batch_metrics = eval_fn(variables, batch)
        collection = batch_metrics if collection is None else collection.merge(batch_metrics)
        probs.append(np.asarray(batch_probs)[: len(image)])
    probs = np.concatenate(probs)
    per_image = metrics.per_image_scores(probs > 0.5, split.mask)
    summary = metrics.compute_metrics(collection)
    summary['hd95'] = float(np.mean(per_image['hd95']))
    return summary, {'probs': probs, **per_image}


# ----------------------------------------------------------------------------- bookkeeping


def _json_default(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


def _flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
    flat = traverse_util.flatten_dict(config.to_dict(), sep='.')
    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()}


def check_finite(history: list[tuple[int, Any]]) -> None:
    """Raises with the first step whose loss or gradient norm is NaN/Inf."""
    for step, values in jax.device_get(history):
        loss, grad_norm = float(values['loss']), float(values['grad_norm'])
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            raise NonFiniteLossError(
                f'Training stopped at step {step}: loss={loss}, gradient norm={grad_norm}. '
                'Lower config.optimizer.learning_rate, add warm-up (config.warmup_steps) or '
                'gradient clipping (config.optimizer.grad_clip_norm), and check the inputs.'
            )


# ----------------------------------------------------------------------------- the run


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    splits: Mapping[str, pipeline.Split] | None = None,
) -> dict[str, Any]:
    """Trains one freeze configuration and writes its run folder (see the README).

    `splits` lets a caller that runs many configurations on one data set (the study) load the
    data once; by default it comes from `config.data`.
    """
    start_time = time.time()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
        f.write(config.to_json_best_effort(indent=2))

    mesh = create_mesh()
    check_batch_size(config.batch_size, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    data_sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))

    if splits is None:
        splits = pipeline.load_splits(config.data, in_channels=config.model.in_channels)
    train_split = splits['train']
    logging.info(
        'Data %s: %s', config.data.name, ', '.join(f'{k} {len(v.image)}' for k, v in splits.items())
    )

    model = models.create_model(config.model)
    registry = layers.build_registry(
        model, image_size=config.data.image_size, in_channels=config.model.in_channels
    )
    plan = freeze.compile_spec(
        config.finetune.train,
        registry,
        order=config.finetune.order,
        granularity=config.finetune.granularity,
    )
    variables = initial_variables(model, config)
    labels = plan.labels(variables['params'])
    tx = freeze.make_optimizer(create_train_tx(config), labels)
    logging.info(
        'Freeze spec %r -> %s\n%s',
        config.finetune.train,
        plan.canonical,
        plan.parameter_table(variables['params']),
    )

    latest = checkpoint.create_manager(os.path.join(workdir, checkpoint.LATEST_DIR))
    best = checkpoint.create_manager(os.path.join(workdir, checkpoint.BEST_DIR))
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables['params'],
        batch_stats=variables.get('batch_stats', {}),
        opt_state=tx.init(variables['params']),
    )
    state = jax.device_put(state, replicated)
    meta = {'best_dice': -1.0, 'best_step': -1, 'interval_times': []}
    if latest.latest_step() is not None:
        state, meta = checkpoint.restore(latest, state)
        logging.info('Resumed from %s at step %d.', latest.directory, int(state.step))
    elif config.init_from:
        init = load_init_from(variables, config)
        state = jax.device_put(
            state.replace(params=init['params'], batch_stats=init.get('batch_stats', {})),
            replicated,
        )
        logging.info('Initialised from %s.', config.init_from)

    writer = writers.create_writer(workdir)
    if int(state.step) == 0:
        writer.write_hparams(_flat_hparams(config))

    step_fn = jax.jit(
        functools.partial(
            train_step,
            model=model,
            tx=tx,
            labels=labels,
            frozen_units=plan.frozen_units,
            rng=jax.random.key(config.seed),
            config=config,
        ),
        in_shardings=(replicated, data_sharding),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    eval_fn = jax.jit(functools.partial(eval_step, model=model, config=config))
    run_eval = functools.partial(
        evaluate, eval_fn, batch_size=config.batch_size, mesh=mesh, data_sharding=data_sharding
    )

    def validate_and_keep_best(step: int) -> None:
        val_metrics, _ = run_eval(state.variables(), splits['val'])
        writer.write_scalars(step, {f'val/{k}': v for k, v in val_metrics.items()})
        if val_metrics['dice'] > meta['best_dice']:
            meta.update(best_dice=val_metrics['dice'], best_step=step)
            checkpoint.save(best, step, {'variables': state.variables()}, {'val': val_metrics})

    num_steps = config.num_train_steps
    first_step = int(state.step)
    history, train_metrics = [], None
    interval_start, interval_first = time.time(), first_step
    if first_step == 0 and num_steps == 0:
        validate_and_keep_best(0)
    for step in range(first_step, num_steps):
        indices = batch_indices(step, config.batch_size, len(train_split.image), config.seed)
        batch = jax.device_put(
            {'image': train_split.image[indices], 'mask': train_split.mask[indices]},
            data_sharding,
        )
        state, step_metrics = step_fn(state, batch)
        history.append(
            (step, {'loss': step_metrics.loss.total, 'grad_norm': step_metrics.grad_norm.total})
        )
        train_metrics = step_metrics if train_metrics is None else train_metrics.merge(step_metrics)
        done = step + 1
        is_last = done == num_steps
        if done % config.log_every_steps == 0 or is_last:
            check_finite(history)
            history = []
            jax.block_until_ready(state)
            elapsed = time.time() - interval_start
            steps = done - interval_first
            # The first interval after (re)start includes compilation: not a step time.
            if interval_first != first_step or first_step == num_steps:
                meta['interval_times'].append(elapsed / steps)
            summary = metrics.compute_metrics(train_metrics)
            summary['steps_per_sec'] = steps / elapsed
            summary['learning_rate'] = float(create_learning_rate_fn(config)(step))
            writer.write_scalars(done, {f'train/{k}': v for k, v in summary.items()})
            eta = (num_steps - done) * elapsed / steps
            logging.info(
                'step %d/%d | loss %.4f dice %.3f | %.2f steps/s | ETA %s',
                done,
                num_steps,
                summary['loss'],
                summary['dice'],
                summary['steps_per_sec'],
                io_utils.format_duration(eta),
            )
            train_metrics = None
            interval_start, interval_first = time.time(), done
        if done % config.eval_every_steps == 0 or is_last:
            check_finite(history)
            validate_and_keep_best(done)
        if done % config.checkpoint_every_steps == 0 or is_last:
            check_finite(history)
            checkpoint.save(latest, done, state, meta)
    latest.wait_until_finished()
    best.wait_until_finished()

    results = score_best_on_test(
        config,
        workdir,
        plan=plan,
        state=state,
        best=best,
        meta=meta,
        splits=splits,
        run_eval=run_eval,
        registry_params=variables['params'],
        labels=labels,
        start_time=start_time,
        writer=writer,
    )
    writer.flush()
    latest.close()
    best.close()
    return results


def score_best_on_test(
    config,
    workdir,
    *,
    plan,
    state,
    best,
    meta,
    splits,
    run_eval,
    registry_params,
    labels,
    start_time,
    writer,
) -> dict[str, Any]:
    """Restores the best-validation params, scores the test split once, writes results.json."""
    best_variables, best_meta = checkpoint.restore(
        best, {'variables': state.variables()}, step=meta['best_step']
    )
    best_variables = best_variables['variables']
    test_metrics, test_outputs = run_eval(best_variables, splits['test'])
    writer.write_scalars(meta['best_step'], {f'test/{k}': v for k, v in test_metrics.items()})
    _save_predictions(workdir, splits['test'], test_outputs['probs'], config.num_saved_predictions)

    flat_labels = traverse_util.flatten_dict(labels)
    flat_params = traverse_util.flatten_dict(registry_params)
    trained = sum(int(np.size(flat_params[k])) for k, v in flat_labels.items() if v == 'train')
    total = sum(int(np.size(v)) for v in flat_params.values())
    test = splits['test']
    results = {
        'name': os.path.basename(workdir),
        'config': config.to_dict(),
        'spec': plan.canonical,
        'trained_units': list(plan.trained_units),
        'best_step': int(meta['best_step']),
        'num_train_examples': len(splits['train'].image),
        'val': best_meta['val'],
        'test': test_metrics,
        'test_per_image': {
            'ids': list(test.ids),
            **{k: test_outputs[k].tolist() for k in ('dice', 'iou', 'hd95')},
        },
        'params': {
            'trained': trained,
            'frozen': total - trained,
            'total': total,
            'trained_fraction': trained / total,
        },
        'step_time_s': float(np.median(meta['interval_times'])) if meta['interval_times'] else None,
        'wall_time_s': time.time() - start_time,
    }
    io_utils.write_text_atomically(
        os.path.join(workdir, 'results.json'), json.dumps(results, indent=2, default=_json_default)
    )
    logging.info(
        'Test (best step %d): dice %.4f iou %.4f hd95 %.2f',
        meta['best_step'],
        test_metrics['dice'],
        test_metrics['iou'],
        test_metrics['hd95'],
    )
    return results


def _save_predictions(workdir: str, split: pipeline.Split, probs: np.ndarray, count: int) -> None:
    count = min(count, len(split.image))
    path = os.path.join(workdir, 'predictions.npz')
    tmp = path + '.tmp.npz'
    np.savez_compressed(
        tmp,
        image=split.image[:count],
        mask=split.mask[:count],
        prob=probs[:count],
        ids=np.asarray(list(split.ids)[:count]),
    )
    os.replace(tmp, path)
