"""A group's ledger: what training has learnt about each run so far, kept in its checkpoint.

Per run: the best validation (lesion) Dice and its step, the validation curve, and why it
stopped if it diverged; for the group: the measured step times and the time per section of the
processes that worked on it before. It is saved as the metadata of the group's checkpoint
(`to_json`) and read back on resume (`from_json`), so a resumed group continues it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
import dataclasses
import math
from typing import Any

import numpy as np

# The sections of a group's time (io_utils.Stopwatch), each summed into `<section>_s`.
TIME_SECTIONS = ('setup', 'compile', 'steps', 'eval', 'checkpoint', 'write')


class NonFiniteLossError(FloatingPointError):
    """Training diverged: a loss or gradient norm became NaN or Inf."""


@dataclasses.dataclass
class RunRecord:
    """One run's bookkeeping: best step and Dice, validation curve, failure (None: none)."""

    best_step: int = -1
    best_dice: float = -1.0
    curve_steps: list[int] = dataclasses.field(default_factory=list)
    curve_dice: list[float] = dataclasses.field(default_factory=list)
    failure: str | None = None

    @property
    def val_curve(self) -> dict[str, list]:
        """{'step': [...], 'dice': [...]}, as results.json writes it."""
        return {'step': list(self.curve_steps), 'dice': list(self.curve_dice)}


@dataclasses.dataclass
class Ledger:
    """Every member's RunRecord (in member order) and the group's step times.

    `interval_times`: seconds per step of each logged interval (the first only when it is also
    the last: it warms up); `previous_time`: seconds per section ('setup_s', ..., 'wall_s')
    of the processes that trained the group before this one (a resumed group).
    """

    members: list[str]
    runs: list[RunRecord]
    interval_times: list[float] = dataclasses.field(default_factory=list)
    previous_time: dict[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def new(cls, members: Sequence[str]) -> Ledger:
        return cls(members=list(members), runs=[RunRecord() for _ in members])

    @property
    def all_failed(self) -> bool:
        return all(run.failure is not None for run in self.runs)

    def record_validation(self, step: int, dice: Sequence[float]) -> np.ndarray:
        """Extends every run's curve with its validation Dice; which runs improved on their
        best (a diverged run never does)."""
        improved = np.zeros(len(self.runs), bool)
        for r, (run, value) in enumerate(zip(self.runs, dice)):
            run.curve_steps.append(int(step))
            run.curve_dice.append(float(value))
            if run.failure is None and value > run.best_dice:
                run.best_dice, run.best_step = float(value), int(step)
                improved[r] = True
        return improved

    def record_losses(self, history: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Marks each run whose loss or gradient norm became NaN/Inf, with the first such step.

        `history`: (step, {'loss': [runs], 'grad_norm': [runs]}) on the host.
        """
        for step, values in history:
            for run, label, loss, grad_norm in zip(
                self.runs, self.members, values['loss'], values['grad_norm']
            ):
                loss, grad_norm = float(loss), float(grad_norm)
                if run.failure is None and not (math.isfinite(loss) and math.isfinite(grad_norm)):
                    run.failure = (
                        f'Training of {label} stopped at step {step}: loss={loss}, gradient '
                        f'norm={grad_norm}. Lower config.optimizer.learning_rate, add warm-up '
                        '(config.warmup_steps) or gradient clipping '
                        '(config.optimizer.grad_clip_norm), and check the inputs.'
                    )

    def times(self, seconds: dict[str, float], wall: float) -> dict[str, float]:
        """The group's time per section ('setup_s', ..., 'wall_s'), summed over every process
        that worked on it: `seconds` per section and `wall` of this one, plus the earlier."""
        now = dict(seconds, wall=wall)
        return {
            f'{k}_s': self.previous_time.get(f'{k}_s', 0.0) + now.get(k, 0.0)
            for k in (*TIME_SECTIONS, 'wall')
        }

    def to_json(self, time: dict[str, float]) -> dict[str, Any]:
        """The checkpoint's metadata; `time`: the group's seconds per section until now."""
        return {
            'members': list(self.members),
            'runs': [dataclasses.asdict(run) for run in self.runs],
            'interval_times': list(self.interval_times),
            'time': dict(time),
        }

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> Ledger:
        return cls(
            members=list(saved['members']),
            runs=[RunRecord(**run) for run in saved['runs']],
            interval_times=[float(t) for t in saved['interval_times']],
            previous_time={k: float(v) for k, v in saved['time'].items()},
        )
