"""The optimiser mask: trained and frozen halves of a parameter tree, and
``optax.multi_transform({'train': tx, 'freeze': optax.set_to_zero()}, labels)`` over them
(how training uses it: unet_jax.freeze.plan).
"""

from collections.abc import Sequence
import math
from typing import Any

import flax
import jax
import optax

TRAIN = 'train'  # the label of a trained leaf
FREEZE = 'freeze'  # the label of a frozen leaf


def make_optimizer(
    train_tx: optax.GradientTransformation, labels: Any
) -> optax.GradientTransformation:
    """``train_tx`` on the 'train' leaves; frozen leaves get zero updates and no state.

    Put weight decay inside ``train_tx`` (e.g. optax.adamw): a decay outside the
    multi_transform would move frozen weights.
    """
    return optax.multi_transform({TRAIN: train_tx, FREEZE: optax.set_to_zero()}, labels)


def split_trainable(params: Any, labels: Any) -> tuple[dict, dict]:
    """(trainable, frozen) nested dicts holding the 'train' and 'freeze' leaves.

    Differentiating a loss with respect to ``trainable`` only (and closing over ``frozen``)
    lets XLA skip the gradient work of frozen layers.
    """
    flat_params = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    flat_labels = flax.traverse_util.flatten_dict(flax.core.unfreeze(labels))
    if flat_params.keys() != flat_labels.keys():
        missing = sorted('/'.join(k) for k in flat_params.keys() - flat_labels.keys())
        extra = sorted('/'.join(k) for k in flat_labels.keys() - flat_params.keys())
        raise ValueError(
            f'Labels do not fit the params: unlabelled params {missing}, labels '
            f'without params {extra}. Make the labels with plan.labels(params).'
        )
    parts = {TRAIN: {}, FREEZE: {}}
    for path, value in flat_params.items():
        if flat_labels[path] not in parts:
            raise ValueError(
                f'Label {flat_labels[path]!r} of {"/".join(path)} is neither '
                f"'{TRAIN}' nor '{FREEZE}'."
            )
        parts[flat_labels[path]][path] = value
    return (
        flax.traverse_util.unflatten_dict(parts[TRAIN]),
        flax.traverse_util.unflatten_dict(parts[FREEZE]),
    )


def merge(trainable: dict, frozen: dict) -> dict:
    """The full parameter tree (nested dicts) from the two halves of split_trainable."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(frozen))
    flat.update(flax.traverse_util.flatten_dict(flax.core.unfreeze(trainable)))
    return flax.traverse_util.unflatten_dict(flat)


def labels_of(trainable: dict, frozen: dict) -> dict:
    """The labels of the tree ``merge(trainable, frozen)``: 'train' / 'freeze' by half."""
    return merge(
        jax.tree.map(lambda _: TRAIN, trainable), jax.tree.map(lambda _: FREEZE, frozen)
    )


def select(tree: dict, *, like: dict) -> dict:
    """The leaves of ``tree`` at the paths of ``like`` (e.g. the trained half's updates)."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))
    paths = flax.traverse_util.flatten_dict(flax.core.unfreeze(like)).keys()
    return flax.traverse_util.unflatten_dict({path: flat[path] for path in paths})


def parameter_table(params: Any, labels: Any, *, block_order: Sequence[str] | None = None) -> str:
    """A per-block table of trained and frozen parameter counts, for the start-of-run log.

    Blocks are listed in ``block_order`` (pass ``registry.block_names`` for the data-path
    order; a params tree that went through jax.tree.map has its keys sorted).
    """
    flat_params = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    flat_labels = flax.traverse_util.flatten_dict(flax.core.unfreeze(labels))
    rows = {}
    for path, value in flat_params.items():
        row = rows.setdefault(path[0], {TRAIN: 0, FREEZE: 0, 'units': {}})
        size = math.prod(value.shape)
        row[flat_labels[path]] += size
        row['units'].setdefault(path[1], set()).add(flat_labels[path])
    blocks = [b for b in (block_order or rows) if b in rows]
    blocks += [b for b in rows if b not in blocks]
    header = ('block', 'trained', 'frozen', 'total', 'trained units')
    lines = []
    for block in blocks:
        row = rows[block]
        trained = [u for u, ls in row['units'].items() if TRAIN in ls]
        units = 'all' if len(trained) == len(row['units']) else ', '.join(trained) or '-'
        lines.append((block, row[TRAIN], row[FREEZE], row[TRAIN] + row[FREEZE], units))
    total_trained = sum(r[1] for r in lines)
    total = sum(r[3] for r in lines)
    lines.append(
        (
            'total',
            total_trained,
            total - total_trained,
            total,
            f'{100 * total_trained / max(total, 1):.1f}% of params trained',
        )
    )
    cells = [header] + [(b, f'{t:,}', f'{f:,}', f'{n:,}', u) for b, t, f, n, u in lines]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]

    def fmt(c):
        return '  '.join(
            [c[0].ljust(widths[0])] + [c[i].rjust(widths[i]) for i in (1, 2, 3)] + [c[4]]
        )

    return '\n'.join(
        [fmt(cells[0]), '-' * (sum(widths) + 6 + len(header[4]))] + [fmt(c) for c in cells[1:]]
    )
