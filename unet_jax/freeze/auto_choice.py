"""Automatic layer choice: score every block (or unit) on the target, then pick what trains.

The study answers "which layers?" with a sweep that trains every first-k and last-k set. This
module answers it from the pre-trained weights and a few batches of the target's training set
(and, for `greedy`, its validation split), before training, for the cost of a fraction of one
run. The criteria (unet_jax.freeze.criteria):

  rgn    relative gradient norm (Auto-RGN of "Surgical fine-tuning", Lee et al., ICLR 2023)
  probe  a short training probe: the relative drop of the probe loss when one block trains
  greedy greedy forward selection by validation Dice (SubTuning, Kaplun et al. 2023)

Scores are normalised by their maximum (the best block scores 1). Two ways to use them:
  * `auto:<criterion>:<k>` (config.finetune.train) trains the k highest-scoring blocks or units
    (config.finetune.granularity; ties go to the shallower one), or for `greedy` the k it picked:
    `choose` resolves it into a concrete spec that compiles to optax labels like any other
    (freeze.compile_spec);
  * `auto:<criterion>:soft` (rgn, probe) trains everything, each block's updates scaled by its
    score (Auto-RGN's per-layer learning rates): `score_scaling.scale_by_score`, an optax
    transform whose scales are state, so `set_scales` changes them without recompiling the step.
    `greedy` has no soft variant (auto_spec.has_soft): its scores are gains of a set, not
    per-block rates.

A run keeps its choice in auto_choice.json (`load_or_choose`), so a resumed run trains what it
chose before. The spec grammar (prefix, criteria, `parse_auto`) and the `config.finetune.auto`
fields are in unet_jax.config.auto_spec, which imports no JAX, so that configs and the sweep are
made without it.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import json
import os
import time
from typing import Any

import ml_collections
import numpy as np

from unet_jax import freeze, io_utils
from unet_jax.config.auto_spec import AutoSpecError, default_auto_config, parse_auto
from unet_jax.freeze.criteria import (
    counts_function,
    greedy_key,
    greedy_scores,
    loss_function,
    probe_batches,
    probe_scores,
    rgn_scores,
    validation_batches,
)
from unet_jax.models.layer_registry import GRANULARITIES, LayerRegistry

CHOICE_FILE = 'auto_choice.json'


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
    loss_fn = loss_function(model, variables, loss_weights)
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
            counts_function(model, variables, loss_weights),
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
