"""Per-block learning rates from scores: the soft variant of the automatic choice
(`auto:<criterion>:soft`), and how the `probe` and `greedy` criteria train any set of blocks
with one compiled step.

`scale_by_score` multiplies each block's (or unit's) updates by its scale; the scales are the
transform's state, so `set_scales` replaces them without recompiling a step that takes the state
as an argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from unet_jax.config.auto_spec import AutoSpecError


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
