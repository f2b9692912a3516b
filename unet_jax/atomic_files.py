"""Atomic writes of binary files (standard library only).

Readers see the old file or the whole new one, never a half-written file under the final name:
a killed run must not leave a cache or a results file that breaks the next one. Text files go
through unet_jax.io_utils.write_text_atomically, which follows the same pattern.
"""

import os
import tempfile


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` via a temporary file in the same folder and a rename."""
    folder = os.path.dirname(os.fspath(path)) or '.'
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp-')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
