"""What predict says when an input or a flag is wrong: PredictError, and lists of files
shortened to their first few.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_SHOWN = 10


class PredictError(ValueError):
    """Bad input to predict; the message names the file or flag and how to fix it."""


def show(items: Sequence[Any]) -> str:
    items = [str(i) for i in items]
    more = f' ... ({len(items)} in all)' if len(items) > _SHOWN else ''
    return ', '.join(items[:_SHOWN]) + more


def problem_list(problems: Mapping[Path, str]) -> str:
    lines = [f'  {reason}' for reason in list(problems.values())[:_SHOWN]]
    if len(problems) > _SHOWN:
        lines.append(f'  ... ({len(problems)} in all)')
    return '\n'.join(lines)
