"""A run folder belongs to one config and one process at a time (no JAX).

Two rules, checked by every command that trains into a folder (unet_jax.main for a run, the
study's runner for its groups, launch/sweep.py for a study) before it writes anything there:

  * One process per folder: `lock(folder)` holds an exclusive OS lock (`fcntl.flock`) on
    `<folder>/.lock` for as long as the process trains there. The OS drops it when the process
    ends, however it ends (a SIGKILL included), so a lock is never stale; a second process on
    the same folder stops at once (`FolderInUseError`, exit 1) naming the holder, which the
    lock file records (pid, host, start time).
  * A folder keeps its config: `check_same_config(config, folder)` compares a new config with the
    `config.json` of the run the folder holds. A field that changes the result differs: exit 2
    naming each such field with both values. A field of FREE_FIELDS (logging intervals, paths
    of the same data) may change; those are listed in the log.

`finished_line(folder)` is what a command prints for a run that has nothing left to do.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
from typing import Any

from absl import logging

from unet_jax import errors, layout

LOCK_FILE = '.lock'
CONFIG_FILE = 'config.json'
_NOT_RECORDED = '(not recorded)'

# Config fields that do not change a run's result, with the reason: a folder's run may go on
# (or be declared finished) under a config that differs from its config.json in these only.
# Every other field changes the result. The one table of this rule (README: What a run writes).
FREE_FIELDS: dict[str, str] = {
    'log_every_steps': 'how often the training loss is logged',
    'checkpoint_every_steps': 'how often the state is saved (a resumed run equals an '
    'uninterrupted one)',
    'num_saved_predictions': 'how many test images predictions.npz keeps',
    'finetune.allow_random_frozen': 'a permission checked before the run starts',
    'data.cache': 'whether preprocessed arrays are cached next to the TFDS build',
    'data.data_dir': 'where TFDS builds are cached',
    'data.manual_dir': 'a path: it must hold the same data',
    'data.folder.images': 'a path: it must hold the same images',
    'data.folder.masks': 'a path: it must hold the same masks',
    'init_from': 'a path: it must be the same pre-training (moved or copied)',
}
# Path fields among FREE_FIELDS: a change between '' (none) and a path does change the result
# (scratch vs pre-trained weights, a built-in set vs a folder).
PATH_FIELDS = ('data.manual_dir', 'data.folder.images', 'data.folder.masks', 'init_from')


class FolderInUseError(errors.UserError):
    """Another process trains in the folder (exit 1)."""


class NotAFolderError(errors.UserError):
    """The run folder's path is a file, or lies under one (exit 1)."""


# ----------------------------------------------------------------------------- the lock


@contextlib.contextmanager
def lock(folder: str, *, enabled: bool = True) -> Iterator[None]:
    """Holds `folder`'s lock for the `with` block (the folder is created if needed).

    Raises FolderInUseError at once when another process holds it; the lock file is then
    left as it was (opened without truncating, never written). `enabled=False` (the other
    processes of a multi-host run, whose process 0 holds the lock) does nothing.
    """
    if not enabled:
        yield
        return
    _make_folder(folder)
    path = os.path.join(folder, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUseError(_in_use_message(folder, _read_holder(fd))) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            logging.warning(
                '%s: this file system does not support file locks (%s); nothing stops a second '
                'process from training in the same folder.',
                folder,
                os.strerror(e.errno),
            )
        else:
            _write_holder(fd)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race a new holder)


def _make_folder(folder: str) -> None:
    """Creates the run folder, or says which part of its path is a file and what to pass."""
    blocking = next(
        (p for p in _self_and_parents(folder) if os.path.exists(p) and not os.path.isdir(p)), None
    )
    if blocking is not None:
        what = 'is a file' if blocking == folder else f'lies under {blocking}, which is a file'
        raise NotAFolderError(
            f'--workdir={folder} {what}, not a folder: a run keeps its files in a folder. To '
            'fix: pass a --workdir that is a folder or does not exist yet (it is created), or '
            'move the file away.'
        )
    os.makedirs(folder, exist_ok=True)


def _self_and_parents(folder: str) -> list[str]:
    path, paths = os.path.abspath(folder), []
    while True:
        paths.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            return paths
        path = parent


def _write_holder(fd: int) -> None:
    since = datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')
    holder = {'pid': os.getpid(), 'host': socket.gethostname(), 'since': since}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + '\n').encode(), 0)


def _read_holder(fd: int) -> dict[str, Any]:
    """Who holds the lock, as its lock file says ({} while the holder has not written it yet)."""
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or '{}')
    except (ValueError, UnicodeDecodeError):
        return {}


def _in_use_message(folder: str, holder: Mapping[str, Any]) -> str:
    who = (
        f'process {holder["pid"]} on {holder["host"]} since {holder["since"]}'
        if {'pid', 'host', 'since'} <= set(holder)
        else 'another process (it is starting)'
    )
    stop = f' (or stop it: kill {holder["pid"]} on {holder["host"]})' if 'pid' in holder else ''
    return (
        f'{folder} is in use by {who}. Only one process may train in a folder at a time. '
        f'To fix: wait until that process has ended{stop}, then run the same command again '
        '(it resumes from the last checkpoint); to run something else meanwhile, pass a new '
        '--workdir.'
    )


# ----------------------------------------------------------------------------- the config


def stored_config(folder: str) -> dict[str, Any] | None:
    """The config.json of the run in `folder`, or None when the folder holds no (readable) run.

    A config.json cut short (its writer was killed) is no run: the run never trained.
    """
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError:
        logging.warning('%s is not valid JSON (cut short?); it will be written again.', path)
        return None


def differences(config: Any, stored: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{field: (stored value, new value)} of every field in which the two configs differ."""
    new = _flat(json.loads(config.to_json_best_effort()))
    old = _flat(dict(stored))
    return {
        field: (old.get(field, _NOT_RECORDED), new.get(field, _NOT_RECORDED))
        for field in sorted(set(new) | set(old))
        if old.get(field, _NOT_RECORDED) != new.get(field, _NOT_RECORDED)
    }


def changes_result(field: str, old: Any, new: Any) -> bool:
    """Whether changing `field` from `old` to `new` can change the run's result."""
    if field not in FREE_FIELDS:
        return True
    return field in PATH_FIELDS and bool(old) != bool(new)


def check_same_config(config: Any, folder: str, *, log_changes: bool = True) -> None:
    """Fails (cli.ConfigError, exit 2) when `folder` holds a run of another config.

    Fields that change the result are named with both values; free fields (FREE_FIELDS) that
    differ are logged (unless `log_changes` is False: a study checks many folders at once).
    """
    stored = stored_config(folder)
    if stored is None:
        return
    changed = differences(config, stored)
    wrong = {f: v for f, v in changed.items() if changes_result(f, *v)}
    if wrong:
        listed = '\n'.join(
            f'  config.{f}: {old!r} there, {new!r} now' for f, (old, new) in wrong.items()
        )
        raise errors.ConfigError(
            f'{folder} holds a run of another config ({os.path.join(folder, CONFIG_FILE)}); '
            f'{len(wrong)} field(s) that change the result differ:\n{listed}\n'
            'A folder keeps the config of its run, so that its results are what config.json '
            'says. To fix: use a new --workdir for the new config, or drop those overrides to '
            'go on with the run there.'
        )
    if not log_changes:
        return
    for field, (old, new) in changed.items():
        logging.info(
            '%s: config.%s changes from %r to %r (allowed: %s).',
            folder,
            field,
            old,
            new,
            FREE_FIELDS[field],
        )


def finished_line(folder: str) -> str | None:
    """'<folder>: finished at step N (test Dice D); nothing to do', or None if not finished."""
    results = layout.read_results(folder)
    if results is None:
        return None
    stored = stored_config(folder) or {}
    step = stored.get('num_train_steps', results.get('best_step'))
    dice = results.get('test', {}).get('dice')
    dice_text = f'{dice:.4f}' if isinstance(dice, (int, float)) else 'n/a'
    return f'{folder}: finished at step {step} (test Dice {dice_text}); nothing to do'


def _flat(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat
