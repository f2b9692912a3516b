"""The criteria of the automatic layer choice: each scores every block (or unit) on the target.

  rgn    relative gradient norm (Auto-RGN of "Surgical fine-tuning", Lee et al., ICLR 2023).
         For a set of parameter tensors S (a unit or a block), with g the gradient of the mean
         training loss over the probe images at the pre-trained weights theta:

             RGN(S) = ||g_S|| / ||theta_S||,   norms over all entries of the tensors in S,

         i.e. the tensors' squared norms are summed before the ratio (a per-tensor mean would be
         dominated by small bias vectors). Cost: one forward and backward pass per probe image.
  probe  a short training probe: each block (or unit) alone trains `probe_steps` Adam steps from
         the pre-trained weights, and scores the relative drop of the probe images' loss,
         (L_before - L_after) / L_before. It measures what the choice is for (which layer lowers
         the loss fastest) rather than a proxy; it costs N short runs of `probe_steps` steps.
  greedy greedy forward selection by validation Dice (SubTuning, Kaplun et al. 2023). From the
         empty set, k rounds: every name not chosen yet trains together with the chosen ones
         for `probe_steps` Adam steps from the pre-trained weights on the probe images, and the
         one whose short run reaches the highest validation Dice (the number that picks a run's
         best checkpoint: mean per-image Dice over the lesion images) joins the set. It scores
         the set the run will train, interactions included, on held-out images; it costs
         N + (N-1) + ... + (N-k+1) short runs, each followed by one pass over the validation
         split. The test split is never looked at.

Every criterion looks at its images without augmentation, with the model in inference mode
(no dropout, BatchNorm running statistics), so a choice is a deterministic function of the
pre-trained weights, the training set (and the validation split for `greedy`). Each returns its
raw scores and the work it did; unet_jax.freeze.auto_choice turns them into a Choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import hashlib
import math
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from unet_jax.config.auto_spec import AutoSpecError
from unet_jax.freeze.score_scaling import scale_by_score, set_scales
from unet_jax.models import metrics
from unet_jax.models.layer_registry import LayerRegistry


@dataclasses.dataclass(frozen=True)
class Batch:
    """Probe images padded to one batch shape (one compilation); `valid` marks the real ones."""

    images: np.ndarray
    masks: np.ndarray
    valid: np.ndarray  # float32 [batch]: 1 for an image, 0 for padding

    def weighted(self, total: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(images, masks, weights) with weight 1/total per real image: a sum of losses with
        these weights over batches whose real images number `total` is their mean loss."""
        return self.images, self.masks, self.valid / np.float32(total)


def probe_batches(images: np.ndarray, masks: np.ndarray, batch_size: int) -> list[Batch]:
    """The probe images in batches of `batch_size` (or fewer images), the last one padded."""
    batch_size = max(min(batch_size, len(images)), 1)
    batches = []
    for start in range(0, len(images), batch_size):
        count = len(images[start : start + batch_size])
        pad = ((0, batch_size - count),) + ((0, 0),) * (images.ndim - 1)
        batches.append(
            Batch(
                images=np.pad(images[start : start + batch_size], pad),
                masks=np.pad(masks[start : start + batch_size], pad),
                valid=(np.arange(batch_size) < count).astype(np.float32),
            )
        )
    return batches


def _inference(model: Any, variables: Mapping[str, Any]):
    """(params, images) -> logits in inference mode (no dropout, BatchNorm running statistics),
    with the BatchNorm statistics of `variables`."""
    batch_stats = variables.get('batch_stats')

    def apply(params, images):
        model_variables = {'params': params}
        if batch_stats:
            model_variables['batch_stats'] = batch_stats
        return model.apply(model_variables, images, train=False)

    return apply


def loss_function(model: Any, variables: Mapping[str, Any], loss_weights: Mapping[str, float]):
    """Weighted sum of per-image training losses as a function of the params (inference mode)."""
    apply = _inference(model, variables)

    def loss(params, images, masks, weights):
        logits = apply(params, images)
        return jnp.sum(metrics.segmentation_loss(logits, masks, **loss_weights) * weights)

    return loss


def _compile(fn, *args):
    """`fn` jitted and compiled for `args`, and the seconds the compilation took."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def _names_of_leaves(registry: LayerRegistry, granularity: str) -> dict[tuple[str, ...], str]:
    """Parameter path -> the block or unit it belongs to."""
    owners = registry.units if granularity == 'unit' else registry.blocks
    return {path: owner.name for owner in owners for path in owner.param_paths}


def _flat(tree: Any) -> dict[tuple[str, ...], Any]:
    return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))


def rgn_scores(
    loss_fn, params, batches: list[Batch], registry: LayerRegistry, granularity: str
) -> tuple[dict[str, float], dict[str, float]]:
    """||g_S|| / ||theta_S|| per block or unit S, g the gradient of the mean probe loss.

    Returns the raw scores (forward order) and the work done: image passes of a gradient
    ('gradient') and of a forward pass only ('forward'), and the compilation seconds.
    """
    total = float(sum(b.valid.sum() for b in batches))
    grad_fn, compile_s = _compile(jax.grad(loss_fn), params, *batches[0].weighted(total))
    grads = jax.tree.map(jnp.zeros_like, params)
    for batch in batches:
        grads = jax.tree.map(jnp.add, grads, grad_fn(params, *batch.weighted(total)))
    owner = _names_of_leaves(registry, granularity)
    grad_sq, param_sq = {}, {}
    flat_params = _flat(params)
    for path, g in _flat(grads).items():
        name = owner[path]
        grad_sq[name] = grad_sq.get(name, 0.0) + float(jnp.sum(jnp.square(g)))
        param_sq[name] = param_sq.get(name, 0.0) + float(np.sum(np.square(flat_params[path])))
    names = registry.order('forward', granularity)
    scores = {n: math.sqrt(grad_sq[n]) / max(math.sqrt(param_sq[n]), 1e-12) for n in names}
    work = {'gradient': sum(len(b.valid) for b in batches), 'forward': 0, 'compile_s': compile_s}
    return scores, work


@dataclasses.dataclass
class ShortRuns:
    """Short Adam runs from the pre-trained `params` that train any set of names.

    One compiled step serves every set: the set's scales (1 for its names, 0 for the others)
    live in the state of `scale_by_score`, so only they change between runs. The step
    differentiates every parameter. Steps cycle through the probe batches; each step's loss is
    the mean over its batch's real images.
    """

    step: Any  # the compiled (params, opt_state, images, masks, weights) -> (params, opt_state)
    tx: optax.GradientTransformation
    params: Any
    batches: list[Batch]
    names: tuple[str, ...]
    steps: int
    compile_s: float

    @classmethod
    def compile(
        cls, loss_fn, params, batches: list[Batch], names, *, steps: int, learning_rate: float
    ) -> ShortRuns:
        if steps < 1:
            raise AutoSpecError(f'config.finetune.auto.probe_steps={steps} must be >= 1.')
        tx = optax.chain(optax.adam(learning_rate), scale_by_score({n: 0.0 for n in names}))

        def train_step(params, opt_state, images, masks, weights):
            grads = jax.grad(loss_fn)(params, images, masks, weights)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        step, compile_s = _compile(train_step, params, tx.init(params), *batches[0].weighted(1.0))
        return cls(step, tx, params, batches, tuple(names), steps, compile_s)

    @property
    def image_passes(self) -> int:
        """Gradient passes of one run (padding included)."""
        return sum(len(self.batches[s % len(self.batches)].valid) for s in range(self.steps))

    def train(self, trained: Sequence[str]) -> Any:
        """The params after `steps` steps that train `trained` (block or unit names) only."""
        scales = {n: float(n in trained) for n in self.names}
        opt_state = set_scales(self.tx.init(self.params), scales)
        tuned = self.params
        for s in range(self.steps):
            batch = self.batches[s % len(self.batches)]
            tuned, opt_state = self.step(tuned, opt_state, *batch.weighted(batch.valid.sum()))
        return tuned


def probe_scores(
    loss_fn,
    params,
    batches: list[Batch],
    registry: LayerRegistry,
    granularity: str,
    *,
    steps: int,
    learning_rate: float,
) -> tuple[dict[str, float], dict[str, float]]:
    """Relative drop of the probe loss after `steps` Adam steps that train one name alone.

    The short runs share one compiled step (`ShortRuns`), which differentiates every parameter:
    the work counts full gradient passes.
    """
    names = registry.order('forward', granularity)
    runs = ShortRuns.compile(
        loss_fn, params, batches, names, steps=steps, learning_rate=learning_rate
    )
    total = float(sum(b.valid.sum() for b in batches))
    mean_loss, eval_compile_s = _compile(loss_fn, params, *batches[0].weighted(total))

    def probe_loss(p):
        return sum(float(mean_loss(p, *b.weighted(total))) for b in batches)

    before = probe_loss(params)
    scores = {}
    for name in names:
        scores[name] = (before - probe_loss(runs.train([name]))) / max(before, 1e-12)
    work = {
        'gradient': len(names) * runs.image_passes,
        'forward': (len(names) + 1) * sum(len(b.valid) for b in batches),
        'compile_s': runs.compile_s + eval_compile_s,
    }
    return scores, work


def validation_batches(
    spec: str, images: np.ndarray | None, masks: np.ndarray | None, batch_size: int
) -> list[Batch]:
    """The validation split in batches, checked to be there and to hold a lesion image."""
    where = f'Freeze spec {spec!r} (config.finetune.train) picks blocks by validation Dice'
    if images is None or masks is None or len(images) == 0:
        raise AutoSpecError(
            f'{where}, but no validation images were given: pass the validation split to '
            'auto_choice.choose (val_images=, val_masks=), as groups.resolve_auto does.'
        )
    if not (np.asarray(masks).reshape(len(masks), -1).max(axis=1) > 0).any():
        raise AutoSpecError(
            f'{where}, but no validation image has a lesion (every mask is empty), so its Dice '
            'is undefined. Use a larger config.data.val_fraction, or a criterion that needs '
            "no validation split ('rgn', 'probe')."
        )
    return probe_batches(np.asarray(images), np.asarray(masks), batch_size)


def counts_function(model: Any, variables: Mapping[str, Any], loss_weights: Mapping[str, float]):
    """Per-image loss and pixel counts of thresholded predictions (steps.eval_step's numbers)
    as a function of the params; inference mode."""
    apply = _inference(model, variables)

    def counts(params, images, masks):
        logits = apply(params, images)
        loss = metrics.segmentation_loss(logits, masks, **loss_weights)
        return {'loss': loss, **metrics.overlap_counts((logits > 0).astype(jnp.float32), masks)}

    return counts


def validation_dice(evaluate, params, batches: list[Batch]) -> float:
    """The validation Dice of `params`: what picks a run's best checkpoint (train.validate),
    metrics.split_metrics' 'dice', the mean per-image Dice over the lesion images."""
    stats = {'loss': [], 'tp': [], 'pred': [], 'true': []}
    for batch in batches:
        out = evaluate(params, batch.images, batch.masks)
        real = batch.valid > 0
        for key, values in stats.items():
            values.append(np.asarray(out[key], np.float64)[real])
    return float(metrics.split_metrics(**{k: np.concatenate(v) for k, v in stats.items()})['dice'])


def greedy_scores(
    loss_fn,
    counts_fn,
    params,
    batches: list[Batch],
    val_batches: list[Batch],
    registry: LayerRegistry,
    granularity: str,
    *,
    k: int,
    steps: int,
    learning_rate: float,
    memo_key: str | None = None,
) -> tuple[dict[str, float], tuple[str, ...], dict[str, float]]:
    """Greedy forward selection of k names by the validation Dice of short runs.

    Each round, every name not chosen trains with the chosen ones (`ShortRuns`, from the
    pre-trained params) and the validation Dice of the result is its candidate's; the best one
    is picked (ties: the shallower, in forward order). Returns the raw scores (Choice: the Dice
    gain of each pick's round; a name never picked, its gain in the last round), the picks in
    order, and the work. A gradient pass counts as a full training step, as `probe`'s do: the
    one compiled step differentiates every parameter (so that sets change without
    recompiling), and the cost counted is the work done; a validation image counts as a
    forward pass, the pre-trained params' evaluation included. With `memo_key` (greedy_key),
    rounds an earlier call of this process computed are reused; the work returned is still
    what the k rounds cost alone (compile_s: what this call compiled).
    """
    names = registry.order('forward', granularity)
    rounds = _GREEDY_ROUNDS.setdefault(memo_key or object(), GreedyRounds())
    compile_s = 0.0
    if len(rounds.picks) < k:  # rounds not known yet: train and evaluate them
        runs = ShortRuns.compile(
            loss_fn, params, batches, names, steps=steps, learning_rate=learning_rate
        )
        first = val_batches[0]
        evaluate, eval_compile_s = _compile(counts_fn, params, first.images, first.masks)
        compile_s = runs.compile_s + eval_compile_s
        if rounds.base is None:
            rounds.base = validation_dice(evaluate, params, val_batches)  # pre-trained params'
        while len(rounds.picks) < k:
            chosen = list(rounds.picks)
            dice = {
                name: validation_dice(evaluate, runs.train([*chosen, name]), val_batches)
                for name in names
                if name not in chosen
            }
            rounds.picks.append(max(dice, key=dice.get))  # the first of equals: the shallowest
            rounds.dice.append(dice)
    gains, current = {}, rounds.base
    for pick, dice in zip(rounds.picks[:k], rounds.dice[:k]):
        gains.update({n: d - current for n, d in dice.items()})  # unpicked: the last round's
        current = dice[pick]
    num_runs = sum(len(dice) for dice in rounds.dice[:k])  # what the k rounds need, alone
    image_passes = sum(len(batches[s % len(batches)].valid) for s in range(steps))
    work = {
        'gradient': num_runs * image_passes,
        'forward': (num_runs + 1) * sum(len(b.valid) for b in val_batches),
        'val_examples': sum(int(b.valid.sum()) for b in val_batches),
        'compile_s': compile_s,
    }
    return {n: gains[n] for n in names}, tuple(rounds.picks[:k]), work


@dataclasses.dataclass
class GreedyRounds:
    """The greedy rounds known for one probe setting: the pre-trained validation Dice, then
    each round's pick and every candidate's validation Dice. `auto:greedy:k` picks the first k
    of `auto:greedy:k+1`'s, so a process computes each round once for every k."""

    base: float | None = None
    picks: list[str] = dataclasses.field(default_factory=list)
    dice: list[dict[str, float]] = dataclasses.field(default_factory=list)


# The greedy rounds of this process, by what determines them (greedy_key).
_GREEDY_ROUNDS: dict[Any, GreedyRounds] = {}


def greedy_key(model, variables, batches, val_batches, **settings) -> str:
    """A digest of everything greedy's rounds depend on: the model, the pre-trained variables,
    the probe and validation batches and the settings (granularity, steps, rate, loss)."""
    digest = hashlib.sha1(repr((model, sorted(settings.items()))).encode())
    arrays = [*jax.tree.leaves(variables)]
    arrays += [a for b in (*batches, *val_batches) for a in (b.images, b.masks, b.valid)]
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
