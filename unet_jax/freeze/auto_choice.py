"""Automatic layer choice: score every block (or unit) on the target, then pick what trains.

The study answers "which layers?" with a sweep that trains every first-k and last-k set. This
module answers it from the pre-trained weights and a few batches of the target's training set
(and, for `greedy`, its validation split), before training, for the cost of a fraction of one
run:

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

Scores are normalised by their maximum (the best block scores 1). Two ways to use them:
  * `auto:<criterion>:<k>` (config.finetune.train) trains the k highest-scoring blocks or units
    (config.finetune.granularity; ties go to the shallower one), or for `greedy` the k it picked:
    `choose` resolves it into a concrete spec that compiles to optax labels like any other
    (freeze.compile_spec);
  * `auto:<criterion>:soft` (rgn, probe) trains everything, each block's updates scaled by its
    score (Auto-RGN's per-layer learning rates): `scale_by_score`, an optax transform whose
    scales are state, so `set_scales` changes them without recompiling the step. `greedy` has
    no soft variant (auto_spec.has_soft): its scores are gains of a set, not per-block rates.

Every criterion looks at its images without augmentation, with the model in inference mode
(no dropout, BatchNorm running statistics), so a choice is a deterministic function of the
pre-trained weights, the training set (and the validation split for `greedy`).

The spec grammar (prefix, criteria, `parse_auto`) and the `config.finetune.auto` fields are in
unet_jax.config.auto_spec, which imports no JAX, so that configs and the sweep are made without it.

Over 600 lines because the three criteria, the soft transform and the saved choice belong to one
feature; each is a short function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import hashlib
import json
import math
import os
import time
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from unet_jax import freeze, io_utils
from unet_jax.config.auto_spec import AutoSpecError, default_auto_config, parse_auto
from unet_jax.models import metrics
from unet_jax.models.layer_registry import GRANULARITIES, LayerRegistry

CHOICE_FILE = 'auto_choice.json'


# ----------------------------------------------------------------------------- the choice


@dataclasses.dataclass(frozen=True)
class Choice:
    """What an `auto:` spec resolved to, with the evidence and its cost.

    `scores` (normalised, max 1) and `raw_scores` are keyed by block or unit name in forward
    order; `chosen` lists the trained names, highest score first (every name when soft), or for
    `greedy` in the order picked. `greedy`'s raw score of a picked name is the validation Dice
    gain of its round (the Dice of the set with it minus the Dice of the set before; the first
    round's is over the pre-trained weights), and of a name never picked the gain it would have
    brought in the last round (at most that round's pick's); so the pre-trained Dice plus the
    picks' raw scores is the validation Dice of the chosen set's short run.
    `cost`: seconds (wall, compilation included), compile_s, flops (registry model of the work
    done, padding of the last batch included), num_examples (probe images), val_examples
    (validation images looked at: `greedy` only, else 0), image_passes (passes of one image
    through the network, forward only or forward and backward).
    """

    spec: str  # the concrete freeze spec: the chosen names, or '@all' when soft
    criterion: str
    k: int | None
    granularity: str
    scores: dict[str, float]
    raw_scores: dict[str, float]
    chosen: tuple[str, ...]
    cost: dict[str, float]

    @property
    def soft(self) -> bool:
        return self.k is None

    @property
    def scales(self) -> dict[str, float] | None:
        """Learning-rate factors of the soft variant (scores clipped at 0), else None."""
        return {n: max(s, 0.0) for n, s in self.scores.items()} if self.soft else None

    def to_dict(self) -> dict[str, Any]:
        """The plain dict for the log and results.json (key 'auto')."""
        return {
            'criterion': self.criterion,
            'k': self.k,
            'soft': self.soft,
            'granularity': self.granularity,
            'spec': self.spec,
            'chosen': list(self.chosen),
            'scores': dict(self.scores),
            'raw_scores': dict(self.raw_scores),
            'cost': dict(self.cost),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Choice:
        return cls(
            spec=d['spec'],
            criterion=d['criterion'],
            k=d['k'],
            granularity=d['granularity'],
            scores=dict(d['scores']),
            raw_scores=dict(d['raw_scores']),
            chosen=tuple(d['chosen']),
            cost=dict(d['cost']),
        )


def choose(
    spec: str,
    *,
    model: Any,
    registry: LayerRegistry,
    variables: Mapping[str, Any],
    images: np.ndarray,
    masks: np.ndarray,
    val_images: np.ndarray | None = None,
    val_masks: np.ndarray | None = None,
    granularity: str = 'unit',
    loss_weights: Mapping[str, float] | None = None,
    learning_rate: float = 1e-3,
    auto: ml_collections.ConfigDict | None = None,
) -> Choice:
    """Resolves an `auto:` spec with the pre-trained `variables` and the training split.

    `images`/`masks` are the target's (preprocessed) training split; the probe images are
    `auto.num_examples` of them drawn with `auto.seed`. `val_images`/`val_masks` are its
    validation split, which only `greedy` reads (and needs); never pass the test split.
    `learning_rate` is the probe's Adam rate (the run's peak rate). `loss_weights` are
    config.loss (bce_weight, dice_weight).
    """
    if granularity not in GRANULARITIES:
        raise AutoSpecError(
            f'config.finetune.granularity={granularity!r} is not one of {GRANULARITIES}.'
        )
    names = registry.order('forward', granularity)
    parsed = parse_auto(spec, len(names))
    auto = auto or default_auto_config()
    loss_weights = dict(loss_weights or {'bce_weight': 1.0, 'dice_weight': 1.0})
    probe_images, probe_masks = probe_set(images, masks, auto.num_examples, auto.seed)
    batches = probe_batches(probe_images, probe_masks, auto.batch_size)
    loss_fn = _loss_fn(model, variables, loss_weights)
    full_step = registry.train_step_flops(registry.unit_names)
    start = time.perf_counter()
    picked = None
    if parsed.criterion == 'rgn':
        raw, work = rgn_scores(loss_fn, variables['params'], batches, registry, granularity)
    elif parsed.criterion == 'probe':
        raw, work = probe_scores(
            loss_fn,
            variables['params'],
            batches,
            registry,
            granularity,
            steps=auto.probe_steps,
            learning_rate=learning_rate,
        )
    else:
        val_batches = validation_batches(spec, val_images, val_masks, auto.batch_size)
        settings = dict(
            granularity=granularity, steps=auto.probe_steps, learning_rate=learning_rate,
            loss=sorted(loss_weights.items()),
        )  # fmt: skip
        raw, picked, work = greedy_scores(
            loss_fn,
            _counts_fn(model, variables, loss_weights),
            variables['params'],
            batches,
            val_batches,
            registry,
            granularity,
            k=parsed.k,
            steps=auto.probe_steps,
            learning_rate=learning_rate,
            memo_key=greedy_key(model, variables, batches, val_batches, **settings),
        )
    seconds = time.perf_counter() - start
    scores = normalise(raw)
    ranked = sorted(names, key=lambda n: (-scores[n], names.index(n)))
    chosen = picked or tuple(ranked if parsed.soft else ranked[: parsed.k])
    # A gradient pass costs a full training step (each criterion's step differentiates every
    # parameter).
    gradient_flops = work['gradient'] * full_step
    return Choice(
        spec=freeze.ALL if parsed.soft else ','.join(chosen),
        criterion=parsed.criterion,
        k=parsed.k,
        granularity=granularity,
        scores=scores,
        raw_scores={n: float(raw[n]) for n in names},
        chosen=chosen,
        cost={
            'seconds': seconds,
            'compile_s': work['compile_s'],
            # An evaluation pass (of the probe or the validation images) costs a forward pass.
            'flops': gradient_flops + work['forward'] * registry.forward_flops(),
            'num_examples': len(probe_images),
            'val_examples': work.get('val_examples', 0),
            'image_passes': work['gradient'] + work['forward'],
        },
    )


def load_or_choose(workdir: str, spec: str, **kwargs) -> Choice:
    """`choose`, recorded in `workdir`/auto_choice.json so that a resumed run keeps its choice."""
    path = os.path.join(workdir, CHOICE_FILE)
    if os.path.exists(path):
        with open(path) as f:
            recorded = json.load(f)
        if recorded.get('requested') == spec:
            return Choice.from_dict(recorded)
    choice = choose(spec, **kwargs)
    save_choice(workdir, spec, choice)
    return choice


def save_choice(workdir: str, spec: str, choice: Choice) -> None:
    """Writes `workdir`/auto_choice.json: the requested spec and what it resolved to."""
    os.makedirs(workdir, exist_ok=True)
    record = {'requested': spec, **choice.to_dict()}
    io_utils.write_text_atomically(os.path.join(workdir, CHOICE_FILE), json.dumps(record, indent=2))


def probe_set(
    images: np.ndarray, masks: np.ndarray, num_examples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`num_examples` training images (all of them if fewer), drawn by a seeded permutation."""
    if len(images) == 0:
        raise AutoSpecError('The training split is empty: an auto: spec has nothing to look at.')
    order = np.random.default_rng(seed).permutation(len(images))[: max(num_examples, 1)]
    return np.asarray(images)[order], np.asarray(masks)[order]


def normalise(raw: Mapping[str, float]) -> dict[str, float]:
    """Scores divided by the largest one (Auto-RGN's normalisation); all 0 if none is positive."""
    top = max(raw.values())
    return {n: float(v / top) if top > 0 else 0.0 for n, v in raw.items()}


# ----------------------------------------------------------------------------- criteria


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


def _loss_fn(model: Any, variables: Mapping[str, Any], loss_weights: Mapping[str, float]):
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


def _counts_fn(model: Any, variables: Mapping[str, Any], loss_weights: Mapping[str, float]):
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


# ----------------------------------------------------------------------------- soft variant


class ScoreScaleState(NamedTuple):
    """One float32 scale per leaf of the updates (data, so new scales need no recompile)."""

    scales: Any


def _scale_tree(tree: Any, scales: Mapping[str, float]) -> Any:
    """A scale for every leaf of `tree`, looked up by its unit ('enc0/conv1'), else its block."""

    def scale(path, _):
        keys = [str(getattr(k, 'key', k)) for k in path]
        unit, block = '/'.join(keys[:2]), keys[0]
        for name in (unit, block):
            if name in scales:
                return jnp.asarray(scales[name], jnp.float32)
        raise AutoSpecError(
            f'No score for parameter {"/".join(keys)}: scales name {sorted(scales)}; give one '
            'per block or per unit of the model.'
        )

    return jax.tree_util.tree_map_with_path(scale, tree)


def scale_by_score(scales: Mapping[str, float]) -> optax.GradientTransformation:
    """Multiplies each block's (or unit's) updates by its scale: per-layer learning rates.

    Chain it after the optimiser, `optax.chain(optax.adam(lr), scale_by_score(scales))`:
    Adam normalises gradient magnitudes, so scaling gradients before it would change little;
    scaling its updates is scaling the learning rate. The scales are the transform's state
    (`set_scales` replaces them), so a jitted step that takes the state as an argument keeps its
    compilation when they change. Inside freeze.make_optimizer it sees only the trained leaves.
    """
    scales = dict(scales)

    def init(params):
        return ScoreScaleState(_scale_tree(params, scales))

    def update(updates, state, params=None):
        del params
        scaled = jax.tree.map(lambda u, s: u * s.astype(u.dtype), updates, state.scales)
        return scaled, state

    return optax.GradientTransformation(init, update)


def set_scales(opt_state: Any, scales: Mapping[str, float]) -> Any:
    """`opt_state` with the scales of every scale_by_score in it replaced (same structure)."""

    def replace(node):
        if isinstance(node, ScoreScaleState):
            return ScoreScaleState(_scale_tree(node.scales, scales))
        return node

    return jax.tree.map(replace, opt_state, is_leaf=lambda n: isinstance(n, ScoreScaleState))
