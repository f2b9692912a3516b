"""Small helpers shared by the trainer, the study runner and the launchers (no heavy imports)."""

import os
import tempfile


def write_text_atomically(path: str, text: str) -> None:
    """Writes via a temporary file and a rename: readers see the old file or the whole new one.

    The study treats a run as finished iff its results.json exists, so a half-written file must
    never appear under the final name.
    """
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or '.', prefix='.tmp-')
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def format_duration(seconds: float) -> str:
    """'5m29s', or '1h02m03s' past an hour: progress lines and ETAs."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f'{hours}h{minutes:02d}m{secs:02d}s' if hours else f'{minutes}m{secs:02d}s'
