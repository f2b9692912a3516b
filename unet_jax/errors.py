"""What every command does on --help and on an error the user caused (no JAX: the report uses it).

Exit status of every command (`unet_jax.main`, `predict`, `analyze`, `report`, launch/sweep.py):

  0  success, and --help / --helpfull
  2  usage or config: an unknown or malformed flag, a missing required flag, an unknown config
     argument or field, a config value out of range, a bad freeze spec, a workdir that holds a
     run of another config (`ConfigError`)
  1  any other error the user caused: missing or unreadable data, checkpoints and files, a
     checkpoint of another model, a leak between splits, a loss that became NaN, a full or
     read-only disk, a workdir in use by another process, runs of a study that failed
     (`USER_ERRORS`)

Such an error prints one message on stderr, `error: ...`, that says what was wrong, where and
how to fix it; its traceback goes to a file named on the next line, and --traceback prints it
too. Anything else is a bug: it ends with its traceback, as usual. A plain ValueError counts as
the user's (our checks raise them with their message), so one from a bug is reported the same
way, its traceback still in the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import contextlib
import datetime
import errno
import os
import re
import sys
import tempfile
import textwrap
import traceback
from typing import NoReturn

USAGE_EXIT = 2
ERROR_EXIT = 1
HELP_FLAGS = ('help', 'helpshort', 'helpfull', 'helpxml', '?')
_CONFIG_FILE_FAILED = 'Error whilst parsing config file:'
_QUOTED_PATH = re.compile(r'["\'](/[^"\']+)["\']')
_EXCEPTION_LINE = re.compile(r'^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception): ')
TRACEBACK_DIR = os.path.join(tempfile.gettempdir(), 'unet_jax-tracebacks')
# Disk errors a user fixes (space, quota, a read-only or forbidden folder), not bugs.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


class UserError(Exception):
    """An error the user caused and can fix; its message says what, where and how (exit 1)."""

    exit_code = ERROR_EXIT


class ConfigError(UserError, ValueError):
    """A wrong config argument or field (exit 2)."""

    exit_code = USAGE_EXIT


# Standard exceptions that our checks raise with a message for the user (bad values, missing
# files, a diverged loss); they exit 1 unless they are also a ConfigError.
USER_ERRORS = (
    UserError,
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    FloatingPointError,
)


def exit_code(error: BaseException) -> int | None:
    """The exit status of an error the user caused, or None for a bug (keep its traceback)."""
    if _is_usage_error(error):
        return USAGE_EXIT
    if isinstance(error, USER_ERRORS) or _is_disk_error(error):
        return getattr(error, 'exit_code', ERROR_EXIT)
    return None


def _is_usage_error(error: BaseException) -> bool:
    if isinstance(error, ConfigError):
        return True
    app = sys.modules.get('absl.app')
    return app is not None and isinstance(error, app.UsageError)


def _is_disk_error(error: BaseException) -> bool:
    return _disk_errno(error) is not None


def _disk_errno(error: BaseException) -> int | None:
    """The disk errno behind `error`: an OSError's own, or one that a library (TensorStore,
    through Orbax) only names in its message."""
    for cause in (error, error.__cause__, error.__context__):
        if isinstance(cause, OSError) and cause.errno in _DISK_ERRNOS:
            return cause.errno
    text = str(error)
    return next((code for code in _DISK_ERRNOS if os.strerror(code) in text), None)


def message(error: BaseException) -> str:
    """The message of a user error, with the fix for disk errors (whose own text has none)."""
    code = _disk_errno(error)
    if code is None:
        return str(error)
    filename = getattr(error, 'filename', None) or next(iter(_QUOTED_PATH.findall(str(error))), '')
    where = f' {filename}' if filename else ''
    if code in (errno.ENOSPC, errno.EDQUOT):
        fix = 'free some space there, or pass a --workdir (or output folder) on another disk'
    else:
        fix = 'make the folder writable, or pass a --workdir (or output folder) you can write to'
    return (
        f'cannot write{where}: {os.strerror(code)}. To fix: {fix}, then run the same command '
        'again (a run resumes from its last complete checkpoint).'
    )


def save_traceback(prog: str) -> str | None:
    """Writes the current exception's traceback to a file in TRACEBACK_DIR; its path or None."""
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    path = os.path.join(TRACEBACK_DIR, f'{prog}-{stamp}-{os.getpid()}.txt')
    try:
        os.makedirs(TRACEBACK_DIR, exist_ok=True)
        with open(path, 'w') as f:
            f.write(f'{" ".join(sys.argv)}\n\n{traceback.format_exc()}')
    except OSError:  # The disk that failed may be this one too; the message still goes out.
        return None
    return path


def fail(text: str, code: int, *, traceback_file: str | None = None) -> NoReturn:
    """Prints `error: text` (and where the traceback is) on stderr and exits with `code`."""
    sys.stdout.flush()
    lines = [f'error: {text}']
    if traceback_file:
        lines.append(f'(traceback in {traceback_file}; --traceback prints it here)')
    print('\n'.join(lines), file=sys.stderr, flush=True)
    sys.exit(code)


@contextlib.contextmanager
def errors_reported(prog: str, *, show_traceback: bool = False) -> Iterator[None]:
    """Turns an error the user caused into `error: ...` and its exit status (module doc)."""
    try:
        yield
    except Exception as e:
        code = exit_code(e)
        if code is None:
            raise
        if show_traceback:
            traceback.print_exc()
        if code == USAGE_EXIT:  # The message is the whole story: no traceback file.
            hint = '' if isinstance(e, ConfigError) else '\nRun with --help to see the flags.'
            fail(message(e) + hint, code)
        fail(message(e), code, traceback_file=save_traceback(prog))


def add_traceback_argument(parser) -> None:
    """--traceback for argparse commands (absl commands get it from `run`)."""
    parser.add_argument(
        '--traceback', action='store_true', help='on an error, print its Python traceback too'
    )


# ----------------------------------------------------------------------------- absl commands


def run(main: Callable[[list[str]], int | None]) -> None:
    """`absl.app.run(main)` with the conventions of the module doc: --help exits 0, flag and
    usage errors exit 2 with one message, user errors as `errors_reported`."""
    from absl import app, flags

    if 'traceback' not in flags.FLAGS:
        flags.DEFINE_bool('traceback', False, 'On an error, print its Python traceback too.')
    prog = _prog_name()
    sys.unraisablehook = _log_ignored

    def guarded_main(argv: list[str]) -> int | None:
        with errors_reported(prog, show_traceback=flags.FLAGS.traceback):
            return main(argv)

    app.run(guarded_main, flags_parser=_parse_flags)  # exits with main's return value


def _log_ignored(unraisable) -> None:
    """An exception Python had to ignore (raised in a library's background callback, e.g.
    Orbax's after a failed save) is one log line, not a traceback in the middle of the log."""
    from absl import logging

    error = unraisable.exc_value
    logging.warning('Ignored in the background: %s: %s', type(error).__name__, error)


def _prog_name() -> str:
    main_module = sys.modules.get('__main__')
    spec = getattr(main_module, '__spec__', None)
    name = spec.name if spec else os.path.splitext(os.path.basename(sys.argv[0]))[0]
    return name.removeprefix('unet_jax.')


def asked_for_help(argv: Sequence[str]) -> bool:
    for arg in argv[1:]:
        if arg == '--':
            return False
        name, _, value = arg.lstrip('-').partition('=')
        if arg.startswith('-') and name in HELP_FLAGS and value.lower() not in ('false', '0'):
            return True
    return False


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with one-message errors (exit 2) and a help that exits 0."""
    from absl import flags

    try:
        remaining = flags.FLAGS(argv)
    except SystemExit as e:
        # absl exits 1 after printing the help it was asked for.
        if e.code == 1 and asked_for_help(argv):
            sys.exit(0)
        raise
    except flags.Error as e:
        if _CONFIG_FILE_FAILED in str(e):
            fail(_config_file_message(str(e)), USAGE_EXIT)
        fail(f'{_flag_message(e)}\nRun with --help to see the flags.', USAGE_EXIT)
    except UserError as e:
        fail(str(e), e.exit_code)
    except (AttributeError, KeyError) as e:  # a --config.FIELD override of no field
        fail(_unknown_field_message(e, argv), USAGE_EXIT)
    try:
        _check_config_files(argv)
    except ConfigError as e:
        fail(str(e), USAGE_EXIT)
    return remaining


def _flag_message(error: Exception) -> str:
    text = str(error)
    if 'must have a value other than None' in text:
        name = text.split('=', 1)[0].removeprefix('flag ')
        return f'{name} is required.'
    if text.startswith('flag --') and _CONFIG_FILE_FAILED not in text:
        return text.removeprefix('flag ') + _field_type(text)
    return text


def _field_type(text: str) -> str:
    """'. config.batch_size takes an int (default 8)' for a malformed --config.FIELD value."""
    from absl import flags

    name = text.removeprefix('flag --').split('=', 1)[0]
    if '.' not in name or name not in flags.FLAGS:
        return ''
    default = flags.FLAGS[name].default
    return f'. {name} takes {type(default).__name__} values (default {default!r}).'


def _config_file_message(text: str) -> str:
    """The message of an error raised by a config file's get_config(), which ml_collections
    embeds with its traceback; prefixed with the --config flag unless it names the file."""
    flag = text.split(': ', 1)[0].removeprefix('flag ')
    message = _last_exception_message(text)
    file = flag.partition('=')[2].split(':', 1)[0]
    return message if file and message.startswith(file) else f'{flag}: {message}'


def _last_exception_message(text: str) -> str:
    """The message of the last exception in a traceback's text (it may span several lines)."""
    lines = textwrap.dedent(text.split(_CONFIG_FILE_FAILED, 1)[1]).strip().splitlines()
    starts = [i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line)]
    if not starts:
        return text
    message = '\n'.join(lines[starts[-1] :])
    return _EXCEPTION_LINE.sub('', message, count=1)


def _unknown_field_message(error: BaseException, argv: Sequence[str]) -> str:
    """'--config.optimizer.learnng_rate: no such config field. Did you mean ...?'"""
    while error.args and isinstance(error.args[0], BaseException):
        error = error.args[0]  # ml_collections raises AttributeError(KeyError(text))
    text = str(error.args[0] if error.args else error)
    key, _, hint = text.partition('\n')
    key = key.strip('\'"')
    flag = next((a.split('=', 1)[0] for a in argv if a.startswith('-') and key in a), key)
    hint = f' {hint.strip()}' if hint else ''
    return (
        f'{flag}: the config has no field {key!r}.{hint} The fields and their defaults are in '
        'unet_jax/config/ (and the config file given with --config).'
    )


def _check_config_files(argv: Sequence[str]) -> None:
    """A --config file that could not be loaded fails here, not when main first reads it."""
    from absl import flags
    from ml_collections.config_flags import config_flags

    for name in list(flags.FLAGS):
        flag = flags.FLAGS[name]
        if name != flag.name or not isinstance(flag.parser, config_flags.ConfigFileFlagParser):
            continue
        try:
            flag.value.keys  # noqa: B018 (ml_collections raises here when the file failed to load)
        except OSError as e:
            path = _flag_argument(argv, name)
            file = path.split(':', 1)[0]
            cause = 'does not exist' if not os.path.isfile(file) else f'cannot be loaded ({e})'
            raise ConfigError(
                f'--{name}={path}: the config file {file!r} {cause}. Pass one of configs/*.py, '
                'e.g. --config=configs/finetune.py:quick.'
            ) from None
        except AttributeError:  # Not loaded (the flag was not given): absl reports that.
            continue


def _flag_argument(argv: Sequence[str], name: str) -> str:
    for i, arg in enumerate(argv):
        flag, eq, value = arg.lstrip('-').partition('=')
        if arg.startswith('-') and flag == name:
            return value if eq else (argv[i + 1] if i + 1 < len(argv) else '')
    return ''
