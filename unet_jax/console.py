"""What a whole study prints: its story, with the detailed log in a file (no JAX, no TensorFlow).

`python -m unet_jax.main --config=configs/layerwise.py:quick --workdir=W` prints, on stdout:

  a first line     the runs and groups to train, where the log and TensorBoard's files are
  one line a group its name, its runs, their test Dice, its time, runs done and the ETA
  progress         within a group, a line every two minutes (`PROGRESS_EVERY_SECS`)
  failures         each failed run named with its error.txt as soon as its group ends
  the end          the report's answer in a sentence and the report's path

Everything else goes to W/log.txt (`LOG_FILE`): the absl log at INFO, i.e. each run's
hyper-parameters and per-scalar lines (also in its event files and metrics.jsonl), freeze
tables (also in each run's freeze.txt), data preparation, and third-party messages. On stderr
go only this package's warnings and everyone's errors; absl's -v/--verbosity (e.g. `-v 0`)
prints the whole log there as well. TensorFlow's C++ banners (oneDNN) go to the log file
(`import_quietly`), TFDS's progress bars are off (`quiet_tfds`) and its 'Downloading and
preparing dataset' lines go to the log (`printed_to_log`).

A study run as one group (--sweep_index, launch/sweep.py) or a single run keeps the plain log.
Training reports progress through `current()`, which is a no-op outside a study.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import contextlib
import io
import logging as std_logging
import math
import os
import time
from typing import TextIO

from unet_jax import io_utils
from unet_jax.layout import LOG_FILE  # the study's whole log, in its workdir

PROGRESS_EVERY_SECS = 120.0  # a progress line within a group at most this often
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class Console:
    """The story of a study on `stream` (None: prints nothing). `clock` is for tests."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        progress_every_secs: float = PROGRESS_EVERY_SECS,
        clock: Callable[[], float] = time.time,
    ):
        self.stream = stream
        self.progress_every_secs = progress_every_secs
        self.clock = clock
        self._group_start: dict[str, float] = {}
        self._last_progress: dict[str, float] = {}

    def line(self, text: str) -> None:
        if self.stream is not None:
            print(text, file=self.stream, flush=True)

    def group_started(self, name: str) -> None:
        self._group_start[name] = self._last_progress[name] = self.clock()

    def progress(self, name: str, done: int, total: int) -> None:
        """'  <group>: step 200/400, 3.1 steps/s, ETA 1m05s', at most every
        `progress_every_secs` (none in a group shorter than that)."""
        now = self.clock()
        if name not in self._group_start:
            self.group_started(name)
            return
        if now - self._last_progress[name] < self.progress_every_secs or done >= total:
            return
        self._last_progress[name] = now
        elapsed = now - self._group_start[name]
        rate = done / elapsed if elapsed > 0 else math.nan
        eta = (total - done) / rate if rate > 0 else math.nan
        eta_text = io_utils.format_duration(eta) if math.isfinite(eta) else '?'
        self.line(f'  {name}: step {done}/{total}, {rate:.3g} steps/s, ETA {eta_text}')

    def group_done(
        self,
        position: str,
        name: str,
        dice: Sequence[float | None],
        *,
        seconds: float,
        progress: str,
        runs: int | None = None,
        failed: int = 0,
    ) -> None:
        """'[ 3/36] us/n16/full: 3 runs, test Dice 0.712 0.698 0.705 (mean 0.705) | 0m41s |
        9/104 runs, ETA 14m20s': `dice` of its finished runs, of `runs` (default: as many)."""
        self._group_start.pop(name, None)
        self._last_progress.pop(name, None)
        count = len(dice) + failed if runs is None else runs
        runs_text = f'{count} run{"s" if count != 1 else ""}'
        known = [d for d in dice if d is not None]
        scores = ' '.join('-' if d is None else f'{d:.3f}' for d in dice)
        if len(known) > 1:
            scores += f' (mean {sum(known) / len(known):.3f})'
        text = f'{runs_text}, test Dice {scores}' if dice else runs_text
        if failed:
            text += f', {failed} FAILED'
        self.line(
            f'[{position}] {name}: {text} | {io_utils.format_duration(seconds)} | {progress}'
        )

    def failure(self, name: str, error: BaseException | str, where: str) -> None:
        """'FAILED us/n16/s0/full: <first line of the error> (see <error.txt>)'."""
        text = str(error).strip().splitlines()
        first = text[0] if text else type(error).__name__
        if isinstance(error, BaseException):
            first = f'{type(error).__name__}: {first}'
        self.line(f'FAILED {name}: {first[:200]} (see {where})')


_CURRENT = Console()


def current() -> Console:
    """The console of the study this process runs (a silent one outside a study)."""
    return _CURRENT


@contextlib.contextmanager
def activate(console: Console | None) -> Iterator[Console]:
    """Makes `console` (None: the current one) what `current()` returns while the block runs."""
    global _CURRENT
    previous, _CURRENT = _CURRENT, console or _CURRENT
    try:
        yield _CURRENT
    finally:
        _CURRENT = previous


# ----------------------------------------------------------------------------- the log


def quiet_environment() -> None:
    """Before TensorFlow is imported: no C++ INFO lines from it, unless the user set it."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')


def import_quietly(module: str, log_path: str | None) -> None:
    """Imports `module` with the process's stderr (file descriptor 2) sent to the log file:
    TensorFlow prints its oneDNN banner and 'All log messages before absl::InitializeLog()'
    there from C++ while it loads, whatever TF_CPP_MIN_LOG_LEVEL says."""
    import importlib
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(log_path or os.devnull, 'ab') as sink:
            os.dup2(sink.fileno(), 2)
            importlib.import_module(module)
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _ShownOnConsole(std_logging.Filter):
    """This package's warnings and everyone's errors; the rest only goes to the log file."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.levelno >= std_logging.ERROR:
            return True
        own = os.path.abspath(record.pathname or '').startswith(_PACKAGE_DIR)
        return record.levelno >= std_logging.WARNING and own


@contextlib.contextmanager
def study_log(workdir: str, *, verbose: bool) -> Iterator[str | None]:
    """The absl log at INFO (and Python's warnings) into WORKDIR/log.txt (appended) while the
    block runs; on stderr only `_ShownOnConsole`'s records unless `verbose`. Yields the log
    file's path (None when the workdir cannot be made: the study then says why, with its own
    message)."""
    from absl import logging

    try:
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, LOG_FILE)
        handler: std_logging.Handler | None = std_logging.FileHandler(path)
    except OSError:
        path, handler = None, None
    root = std_logging.getLogger()
    absl_handler = logging.get_absl_handler()
    console_filter = _ShownOnConsole()
    previous_level, previous_handler_level = root.level, absl_handler.level
    absl_handler.setLevel(root.getEffectiveLevel())  # stderr keeps -v's level
    if handler is not None:
        handler.setFormatter(logging.PythonFormatter())
        root.addHandler(handler)
        if root.getEffectiveLevel() > std_logging.INFO:
            root.setLevel(std_logging.INFO)  # the file gets INFO whatever stderr shows
    if not verbose:
        absl_handler.addFilter(console_filter)
    std_logging.captureWarnings(True)  # Python warnings of libraries: into the log as well
    try:
        yield path
    finally:
        std_logging.captureWarnings(False)
        absl_handler.removeFilter(console_filter)
        absl_handler.setLevel(previous_handler_level)
        root.setLevel(previous_level)
        if handler is not None:
            root.removeHandler(handler)
            handler.close()


def quiet_tfds() -> None:
    """No TFDS progress bars (the log says what is built)."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()


@contextlib.contextmanager
def printed_to_log() -> Iterator[None]:
    """What the block prints on stdout (TFDS's 'Downloading and preparing dataset ...' of a set
    it builds) goes to the log at INFO instead."""
    from absl import logging

    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for text in buffer.getvalue().splitlines():
            if text.strip():
                logging.info('%s', text.strip())
