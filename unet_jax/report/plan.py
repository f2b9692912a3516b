"""A study's plan (study.json), checked, and the error a user can fix (standard library only,
so the command line reports a bad workdir before loading anything heavy)."""

from __future__ import annotations

import json
import os
from typing import Any

from unet_jax import errors, layout

DEFAULT_MARGIN = 0.02  # Dice: the equivalence margin of the TOST (a study sets study.margin)


class ReportError(errors.UserError):
    """Something about the workdir a user can fix; the CLI prints it without a traceback."""


def read_checked_plan(workdir: str) -> dict[str, Any]:
    if not os.path.isdir(workdir):
        raise ReportError(f'{workdir} is not a folder: give the workdir of a study.')
    try:
        plan = layout.read_plan(workdir)
    except FileNotFoundError as e:
        raise ReportError(str(e)) from None
    except (OSError, json.JSONDecodeError) as e:
        raise ReportError(
            f'{os.path.join(workdir, layout.PLAN_FILE)} cannot be read ({e}); run the study '
            'command again (or with --sweep_index=report) to write it anew.'
        ) from None
    missing = [k for k in ('targets', 'num_train', 'seeds', 'families', 'points') if k not in plan]
    if missing:
        raise ReportError(
            f'{os.path.join(workdir, layout.PLAN_FILE)} has no {", ".join(missing)}: it was '
            'written by another program or version; run the study command again to rewrite it.'
        )
    return plan
