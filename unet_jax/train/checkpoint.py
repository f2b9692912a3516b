"""Orbax checkpoints: resume a run, keep its best model, start a fine-tuning from pre-training.

A run folder holds two managers: `checkpoints/` (the latest train state, for resuming) and
`best/` (params and batch statistics of the step with the best validation Dice, for testing and
for initialising fine-tuning). Orbax writes each step to a temporary folder and renames it when
complete, so a run killed mid-save resumes from the previous complete step.

Loading pre-trained weights is strict (big_vision's `merge_params`): every parameter of the model
must come from the checkpoint, with the same shape, unless a `dont_load` pattern names it; a
silent partial load is the classic transfer-learning bug.
"""

from __future__ import annotations

from collections.abc import Sequence
import copy
import json
import logging
import os
import re
from typing import Any

from flax import traverse_util
import jax
import numpy as np
import orbax.checkpoint as ocp

LATEST_DIR = 'checkpoints'
BEST_DIR = 'best'


class _QuietOrbax(logging.Filter):
    """Orbax logs several INFO lines per save and restore; keep its warnings and errors, without
    the tracebacks of its background threads (the error that stops the run is reported once,
    by the command, with its traceback in a file)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == 'asyncio':  # Orbax's failed writes, logged when their task is freed.
            if 'orbax' in record.getMessage():
                record.exc_info, record.exc_text = None, None
            return True
        if '/orbax/' not in record.pathname:
            return True
        record.exc_info, record.exc_text = None, None
        return record.levelno >= logging.WARNING


for _logger in ('absl', 'asyncio'):
    logging.getLogger(_logger).addFilter(_QuietOrbax())


class CheckpointMismatchError(ValueError):
    """The checkpoint's parameters do not fit the model."""


class CheckpointReadError(ValueError):
    """A checkpoint that exists but cannot be read: damaged, cut short or not Orbax's."""


def _item_handlers() -> dict[str, ocp.CheckpointHandler]:
    return {'tree': ocp.PyTreeCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()}


def create_manager(directory: str, *, max_to_keep: int = 1) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(
        os.path.abspath(directory), options=options, item_handlers=_item_handlers()
    )


def save(manager: ocp.CheckpointManager, step: int, tree: Any, meta: dict[str, Any]) -> None:
    """Saves `tree` and a JSON `meta` dict at `step`; a step that exists is left as it is."""
    if step in manager.all_steps():
        return
    # A copy: Orbax writes the JSON later, in the background, and the caller's dict moves on
    # (a ledger that already held the next validation made a resumed run record it twice).
    meta = copy.deepcopy(meta)
    manager.save(
        step, args=ocp.args.Composite(tree=ocp.args.PyTreeSave(tree), meta=ocp.args.JsonSave(meta))
    )


def restore(manager: ocp.CheckpointManager, target: Any, step: int | None = None):
    """Restores (tree, meta) of `step` (default latest) onto `target`'s structure and sharding.

    A checkpoint of another model (a workdir reused with another config) fails with the keys
    that differ, a damaged one with the step folder to delete.
    """
    step = manager.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    args = ocp.args.Composite(
        tree=ocp.args.PyTreeRestore(
            item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract)
        ),
        meta=ocp.args.JsonRestore(),
    )
    try:
        restored = manager.restore(step, args=args)
    except Exception as e:
        step_dir = os.path.join(str(manager.directory), str(step))
        stored = _stored_shapes(manager, step)
        differences = _differences(_shapes(abstract), stored) if stored else []
        if differences:
            raise CheckpointMismatchError(
                f'The checkpoint {step_dir} does not fit the model of this config:\n'
                + '\n'.join(differences)
                + f'\n{manager.directory} holds a run made with another config (config.model, '
                'config.data.image_size or the freeze spec differ): pass a new --workdir, or '
                'the config of that run.'
            ) from e
        raise _read_error(
            step_dir,
            e,
            f'Delete {step_dir}: the run then resumes from an earlier checkpoint if one is left, '
            'else starts afresh.',
        ) from e
    return restored.tree, restored.meta


def restore_numpy(manager: ocp.CheckpointManager, step: int | None = None):
    """Restores (tree, meta) as host numpy arrays, with the structure saved in the checkpoint."""
    step = manager.latest_step() if step is None else step
    try:
        metadata = manager.item_metadata(step)['tree']
        metadata = getattr(metadata, 'tree', metadata)
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                tree=ocp.args.PyTreeRestore(restore_args=restore_args),
                meta=ocp.args.JsonRestore(),
            ),
        )
    except Exception as e:
        step_dir = os.path.join(str(manager.directory), str(step))
        raise _read_error(
            step_dir,
            e,
            'Point config.init_from (or --checkpoint) at a run whose checkpoints are complete, '
            'or run it again.',
        ) from e
    return restored.tree, restored.meta


def _read_error(step_dir: str, error: Exception, fix: str) -> CheckpointReadError:
    cause = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return CheckpointReadError(
        f'The checkpoint {step_dir} cannot be read ({cause}): it is damaged or incomplete (a '
        f'copy cut short, a disk that filled up while it was written). {fix}'
    )


def _path_name(path: tuple) -> str:
    return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_name(path): tuple(leaf.shape) for path, leaf in leaves}


def _stored_shapes(manager: ocp.CheckpointManager, step: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the arrays saved at `step` ({} when even its metadata cannot be read)."""
    try:
        metadata = manager.item_metadata(step)['tree']
        return _shapes(getattr(metadata, 'tree', metadata))
    except Exception:  # A damaged checkpoint: _read_error says so.
        return {}


def _manager_dir_for(path: str) -> str:
    """Accepts a run folder, a manager folder (`best/`, `checkpoints/`) or a step folder."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f'Checkpoint path {path!r} does not exist. Point config.init_from (or --checkpoint) '
            'at the workdir of a finished pre-training run, or at its best/ folder.'
        )
    for candidate in (os.path.join(path, BEST_DIR), os.path.join(path, LATEST_DIR), path):
        if os.path.isdir(candidate) and any(d.isdigit() for d in os.listdir(candidate)):
            return candidate
    if os.path.basename(path).isdigit():
        return os.path.dirname(path)
    raise FileNotFoundError(
        f'No checkpoint found in {path!r}: expected numbered step folders in {path}/{BEST_DIR}, '
        f'{path}/{LATEST_DIR} or {path} itself. Has the run there finished at least one '
        'evaluation?'
    )


def load_variables(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model variables ({'params', 'batch_stats'}) and meta of a run's best (else latest) step."""
    directory = _manager_dir_for(path)
    manager = create_manager(directory)
    step = int(os.path.basename(path)) if os.path.basename(path).isdigit() else None
    tree, meta = restore_numpy(manager, step)
    manager.close()
    variables = tree.get('variables', tree)
    return {k: v for k, v in variables.items() if k in ('params', 'batch_stats')}, meta


def _flat(tree: Any) -> dict[str, Any]:
    return {'/'.join(k): v for k, v in traverse_util.flatten_dict(tree).items()} if tree else {}


def merge_pretrained(
    model_variables: dict[str, Any],
    loaded_variables: dict[str, Any],
    *,
    dont_load: Sequence[str] = (),
    source: str = 'checkpoint',
) -> dict[str, Any]:
    """Model variables with every leaf taken from `loaded_variables`, strictly.

    `dont_load` holds regexes on paths like 'params/head/conv0/conv/kernel': those keep their
    fresh initialisation (e.g. a head with another number of classes). Any other missing,
    unexpected or mis-shaped key is an error that lists them all.
    """
    patterns = [re.compile(p) for p in dont_load]
    skip = lambda key: any(p.fullmatch(key) or p.match(key) for p in patterns)  # noqa: E731
    model = _flat(model_variables)
    loaded = _flat(loaded_variables)
    differences = _differences(
        {k: tuple(np.shape(v)) for k, v in model.items() if not skip(k)},
        {k: tuple(np.shape(v)) for k, v in loaded.items() if not skip(k)},
    )
    if differences:
        raise CheckpointMismatchError(
            '\n'.join(
                [
                    f'The parameters in {source} do not fit the model.',
                    *differences,
                    'Check that config.model matches the pre-training run, or list the keys to '
                    'leave at their initial values in config.dont_load (regexes, e.g. '
                    "'params/head/.*').",
                ]
            )
        )
    merged = {k: (v if skip(k) else np.asarray(loaded[k], dtype=v.dtype)) for k, v in model.items()}
    return traverse_util.unflatten_dict({tuple(k.split('/')): v for k, v in merged.items()})


def _differences(model: dict[str, tuple], loaded: dict[str, tuple]) -> list[str]:
    """The keys missing from, unexpected in, or of another shape in a checkpoint, by kind."""
    first = lambda key: (not key.startswith(('params', 'variables')), key)  # noqa: E731
    missing = sorted((k for k in model if k not in loaded), key=first)
    unexpected = sorted((k for k in loaded if k not in model), key=first)
    mismatched = [
        f'{k}: model {model[k]} vs checkpoint {loaded[k]}'
        for k in sorted(model, key=first)
        if k in loaded and model[k] != loaded[k]
    ]
    lines = []
    for title, keys in (
        ('Missing from the checkpoint', missing),
        ('In the checkpoint but not in the model', unexpected),
        ('Shape mismatch', mismatched),
    ):
        if keys:
            shown = keys[:20] + ([f'... ({len(keys)} in all)'] if len(keys) > 20 else [])
            lines.append(f'{title} ({len(keys)}):\n  ' + '\n  '.join(shown))
    return lines


def load_run_config(path: str) -> dict[str, Any]:
    """The `config.json` a run wrote into its workdir (found from the workdir or below it)."""
    path = os.path.abspath(os.path.expanduser(path))
    for folder in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
        candidate = os.path.join(folder, 'config.json')
        if os.path.isfile(candidate):
            with open(candidate) as f:
                return json.load(f)
    raise FileNotFoundError(
        f'No config.json found at or above {path!r}; pass the workdir of a run made by '
        'unet_jax.main.'
    )
