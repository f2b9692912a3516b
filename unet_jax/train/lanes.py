"""A group's training state on device, in lanes: the runs that one compiled program steps.

Every array of the state carries the run axis first. A lane is a slice of that axis that one
program trains at once with `jax.vmap`. On accelerators a group is one lane (all its runs in
one step: small models use a fraction of the device otherwise). On CPU every run is its own
lane: XLA:CPU lowers a vmapped convolution with per-run kernels to a grouped convolution that
is 2-3x slower than the runs one after another (measured on the `:quick` U-Net: 226 vs 76 ms a
run for a full step), so there the group shares compilation, evaluation and checkpoints, and
its runs step one by one through the same single-run program.

Evaluation and the best params work on whole parameter trees (trained and frozen leaves merged,
low-rank adapters folded into their kernels, every leaf with the run axis), so their programs
depend on the model and the image size, not on the freeze spec: one compilation serves every group
of a study. The frozen params are broadcast to the runs of a lane once, when the lanes are made.

A lane whose runs have all stopped (early stopping, divergence) is no longer stepped; its
state keeps the step it stopped at, and the group's step is that of the lanes still training.

Checkpoints hold the whole run axis (lanes joined), so a group resumes with any lane width.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from unet_jax import freeze
from unet_jax.freeze import adapters


def lane_width(num_runs: int, vectorize: str = 'auto') -> int:
    """Runs per lane: all of them ('vmap'), one ('loop'), or by backend ('auto')."""
    if vectorize not in ('auto', 'vmap', 'loop'):
        raise ValueError(
            f"config.study.vectorize={vectorize!r} is unknown; use 'auto', 'vmap' or 'loop'."
        )
    if vectorize == 'auto':
        vectorize = 'loop' if jax.default_backend() == 'cpu' else 'vmap'
    return num_runs if vectorize == 'vmap' else 1


def to_host(tree: Any) -> Any:
    """Numpy copies of device arrays; with several processes, gathered from all of them (an
    array sharded over other processes' devices cannot be read locally)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def to_devices(tree: Any, sharding) -> Any:
    """`tree` placed as `sharding` says. Host values must be equal in every process (each loads
    all the data, deterministically): a process places only the shards of its own devices, with
    no exchange between processes (`jax.device_put` would compare the values across processes
    at every call); arrays already on the mesh are resharded."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def place(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(place, tree)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A split's per-image stats {loss, tp, pred, true} and probabilities (None unless asked
    for), of every run of a group (run axis first) or of one run (`run(r)`)."""

    stats: dict[str, np.ndarray]
    probs: np.ndarray | None = None

    def run(self, r: int) -> Evaluation:
        return Evaluation(
            {k: v[r] for k, v in self.stats.items()}, None if self.probs is None else self.probs[r]
        )


def _take(tree: Any, lane: slice) -> Any:
    return jax.tree.map(lambda x: x[lane], tree)


def _join(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *trees)


@jax.jit
def _keep_best(best: Any, candidate: Any, improved: jax.Array) -> Any:
    """`candidate` where a run improved, else `best` (per run, on device)."""

    def pick(b, c):
        return jnp.where(improved.reshape((-1,) + (1,) * (b.ndim - 1)), c, b)

    return jax.tree.map(pick, best, candidate)


# Low-rank adapters merged into their kernels (every leaf with the run axis): the whole trees
# of evaluation and the best params are plain U-Net params whatever the spec.
_fold = jax.jit(adapters.fold)


class Lanes:
    """The trained state and best-validation variables of a group's runs, lane by lane.

    `state` is a TrainState whose `step` is shared and whose other fields carry the run axis;
    `frozen` is shared (frozen_axis None) or carries it (0). The best variables are whole
    trees {'params', 'batch_stats'} with the run axis.
    """

    def __init__(self, state, frozen, frozen_axis: int | None, width: int, sharding):
        num_runs = len(jax.tree.leaves(state.opt_state)[0])
        self.slices = [slice(i, i + width) for i in range(0, num_runs, width)]
        self.frozen_axis = frozen_axis
        self._sharding = sharding
        self.frozen = [
            to_devices(frozen if frozen_axis is None else _take(frozen, s), sharding)
            for s in self.slices
        ]
        # The frozen params of every run of a lane, for the whole trees of evaluation.
        self._frozen_runs = [
            lane_frozen if frozen_axis == 0 else to_devices(_broadcast(frozen, width), sharding)
            for lane_frozen in self.frozen
        ]
        self.load(state)

    @property
    def width(self) -> int:
        return self.slices[0].stop - self.slices[0].start

    def load(self, state, best: Any = None) -> None:
        """Puts a whole-group state (and best variables; default: the state's) into the lanes."""
        self.states = [self._lane_state(state, s) for s in self.slices]
        if best is None:
            best = [self.variables(i, best=False) for i in range(len(self.slices))]
        else:
            best = [_take(best, s) for s in self.slices]
        # Copies: the state's buffers are donated to the step, the best ones must survive it.
        self.best = [to_devices(jax.tree.map(jnp.array, b), self._sharding) for b in best]

    def _lane_state(self, state, lane: slice):
        # Every lane owns its buffers (`step` too): a lane's step donates them.
        return to_devices(
            state.replace(
                step=jnp.array(state.step),
                trainable=_take(state.trainable, lane),
                batch_stats=_take(state.batch_stats, lane),
                opt_state=_take(state.opt_state, lane),
            ),
            self._sharding,
        )

    def joined(self) -> dict[str, Any]:
        """{'state', 'best'} of the whole group (what a checkpoint holds)."""
        ahead = max(self.states, key=lambda s: int(s.step))  # a stopped lane stays behind
        state = self.states[0].replace(
            step=ahead.step,  # on the mesh, as every lane's (a new host array is not, with hosts)
            trainable=_join([s.trainable for s in self.states]),
            batch_stats=_join([s.batch_stats for s in self.states]),
            opt_state=_join([s.opt_state for s in self.states]),
        )
        return {'state': state, 'best': _join(self.best)}

    @property
    def step(self) -> int:
        """The group's step: that of its most advanced lane (a stopped lane stays behind)."""
        return max(int(s.step) for s in self.states)

    def training(self, runs: np.ndarray) -> list[bool]:
        """Which lanes step on: those with a run still training (`runs`: one flag per run)."""
        return [bool(np.any(runs[lane])) for lane in self.slices]

    def train_step(
        self, program, batch: dict[str, np.ndarray], rngs, put, training: Sequence[bool]
    ) -> list[Any]:
        """One step of every lane still `training` (dispatched without waiting); the lanes'
        summaries, NaN for the runs of a lane that no longer steps."""
        summaries: list[Any] = [None] * len(self.slices)
        for i, lane in enumerate(self.slices):
            if not training[i]:
                continue
            lane_batch = put({k: v[lane] for k, v in batch.items()})
            self.states[i], summaries[i] = program(
                self.states[i], self.frozen[i], lane_batch, rngs[i]
            )
        shown = next(s for s in summaries if s is not None)
        for i, lane in enumerate(self.slices):
            if summaries[i] is None:
                width = lane.stop - lane.start
                summaries[i] = {k: jnp.full((width,), jnp.nan, v.dtype) for k, v in shown.items()}
        return summaries

    def variables(self, i: int, *, best: bool) -> dict[str, Any]:
        """Lane i's whole {'params', 'batch_stats'} (run axis first): current or best."""
        if best:
            return self.best[i]
        state = self.states[i]
        params = _fold(freeze.merge(state.trainable, self._frozen_runs[i]))
        return {'params': params, 'batch_stats': state.batch_stats}

    def evaluate(
        self, program, batches, num: int, *, best: bool, with_probs: bool = False
    ) -> Evaluation:
        """Every run's per-image stats [runs, num] (and probabilities) of a split."""
        outs = to_host(
            [
                [program(self.variables(i, best=best), batch) for batch in batches]
                for i in range(len(self.slices))
            ]
        )
        stats = {
            key: np.concatenate(
                [np.concatenate([o[0][key] for o in lane], axis=1) for lane in outs]
            )[:, :num]
            for key in outs[0][0][0]
        }
        if not with_probs:
            return Evaluation(stats)
        probs = np.concatenate([np.concatenate([o[1] for o in lane], axis=1) for lane in outs])
        return Evaluation(stats, probs[:, :num])

    def keep_best(self, improved: np.ndarray) -> None:
        """Copies the current variables of the runs that improved into their best ones."""
        for i, lane in enumerate(self.slices):
            if improved[lane].any():
                flags = to_devices(improved[lane], self._sharding)
                self.best[i] = _keep_best(self.best[i], self.variables(i, best=False), flags)

    def block(self) -> None:
        jax.block_until_ready([s.step for s in self.states])


def _broadcast(tree: Any, width: int) -> Any:
    """Host copies of `tree` with a leading run axis of `width`."""
    return jax.tree.map(lambda x: np.broadcast_to(np.asarray(x), (width, *np.shape(x))), tree)
