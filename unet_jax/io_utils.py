"""Small helpers shared by the trainer, the study runner and the launchers (no heavy imports)."""

from __future__ import annotations

import collections
import contextlib
import os
import tempfile
import time


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Writes via a temporary file and a rename: readers see the old file or the whole new one.

    The study treats a run as finished iff its results.json exists, and a killed run must not
    leave a cache that breaks the next one, so a half-written file never appears under the final
    name.
    """
    folder = os.path.dirname(os.fspath(path)) or '.'
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """`write_bytes_atomically` of UTF-8 text."""
    write_bytes_atomically(path, text.encode('utf-8'))


def format_duration(seconds: float) -> str:
    """'5m29s', or '1h02m03s' past an hour: progress lines and ETAs."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f'{hours}h{minutes:02d}m{secs:02d}s' if hours else f'{minutes}m{secs:02d}s'


class Progress:
    """Rate and ETA of a loop over `total` items (train steps, runs, groups of runs).

    The rate counts only items done since this object was made, so a resumed loop (which
    starts at `done`) does not claim the earlier process's items as its own speed. Items of
    unequal cost (runs of different step counts) give `work_total` (their summed expected
    cost, any unit) and pass the work done to `line`: the ETA is then the work left at the
    rate of work done so far, not the items left at the rate of items.
    """

    def __init__(
        self,
        total: int,
        *,
        done: int = 0,
        unit: str = 'steps',
        work_total: float | None = None,
        work_done: float = 0.0,
    ):
        self.total, self.unit, self.work_total = total, unit, work_total
        self._start_done, self._start_work, self._start = done, work_done, time.time()

    def line(self, done: int, work_done: float | None = None) -> str:
        """'40/120 steps, 12.5 steps/s, ETA 0m06s'."""
        elapsed = max(time.time() - self._start, 1e-9)
        count = done - self._start_done
        rate = count / elapsed
        left, did = self.total - done, count
        if self.work_total is not None and work_done is not None:
            left, did = self.work_total - work_done, work_done - self._start_work
        eta_text = format_duration(max(left, 0) / did * elapsed) if did > 0 else '?'
        return f'{done}/{self.total} {self.unit}, {rate:.3g} {self.unit}/s, ETA {eta_text}'


class Stopwatch:
    """Wall time per named section (compile, steps, eval, ...): `with watch('eval'): ...`.

    Sections nest without counting twice: a section's time excludes the sections inside it
    (a compilation during an evaluation counts as compilation).
    """

    def __init__(self):
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self._nested: list[float] = []  # per open section: the time of sections inside it

    @contextlib.contextmanager
    def __call__(self, section: str):
        start = time.perf_counter()
        self._nested.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.seconds[section] += elapsed - self._nested.pop()
            if self._nested:
                self._nested[-1] += elapsed
