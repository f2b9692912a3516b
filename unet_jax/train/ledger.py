"""A group's ledger: what training has learnt about each run so far, kept in its checkpoint.

Per run: the best validation (lesion) Dice and its step, the validation curve, and why and when it
stopped (`stop`: 'plateau' by the early-stopping rule, 'cap' at config.num_train_steps, 'nan' when
it diverged; '' while it trains); for the group: the measured step times and the time per section
of the processes that worked on it before. It is saved as the metadata of the group's checkpoint
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


# Why a run stopped training (RunRecord.stop; results.json `stop.reason`).
STOP_REASONS = ('plateau', 'cap', 'nan')


class NonFiniteLossError(FloatingPointError):
    """Training diverged: a loss or gradient norm became NaN or Inf."""


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """The plateau rule (config.early_stopping), applied to a run's validation curve.

    The curve is smoothed by the mean of its last `smoothing` evaluations; its last improvement
    is the last evaluation where the smoothed value rose more than `min_delta` above every
    earlier one. A run has reached a plateau once `patience_steps` have passed since its last
    improvement, but never before step `min_steps` (the floor); config.num_train_steps is the
    cap. A curve whose smoothed value has never risen above `min_dice` has not started to
    learn (a collapse to an empty prediction is flat at zero): it is never taken for a
    plateau, and trains on to the cap. `patience_steps=0` turns the rule off (every run trains
    to the cap). The rule reads only the curve, so a resumed run decides exactly as an
    uninterrupted one.
    """

    patience_steps: int = 0
    min_delta: float = 0.0
    min_steps: int = 0
    smoothing: int = 1
    min_dice: float = 0.0

    @classmethod
    def of(cls, config) -> EarlyStopping:
        rule = config.get('early_stopping') or {}
        return cls(
            patience_steps=int(rule.get('patience_steps', 0)),
            min_delta=float(rule.get('min_delta', 0.0)),
            min_steps=int(rule.get('min_steps', 0)),
            smoothing=int(rule.get('smoothing', 1)),
            min_dice=float(rule.get('min_dice', 0.0)),
        )

    @property
    def enabled(self) -> bool:
        return self.patience_steps > 0

    def smoothed(self, dice: Sequence[float]) -> np.ndarray:
        """The trailing mean of the last `smoothing` values (fewer at the curve's start)."""
        dice = np.asarray(dice, np.float64)
        sums = np.cumsum(np.concatenate([[0.0], dice]))
        ends = np.arange(1, dice.size + 1)
        starts = np.maximum(ends - self.smoothing, 0)
        return (sums[ends] - sums[starts]) / (ends - starts)

    def last_improvement(self, steps: Sequence[int], dice: Sequence[float]) -> int:
        """The step of the smoothed curve's last rise of more than min_delta over its best."""
        best, best_step = -math.inf, int(steps[0])
        for step, value in zip(steps, self.smoothed(dice)):
            if value > best + self.min_delta:
                best, best_step = value, int(step)
        return best_step

    def plateaued(self, steps: Sequence[int], dice: Sequence[float]) -> bool:
        """Whether a run with this validation curve stops now."""
        if not self.enabled or not len(steps) or steps[-1] < self.min_steps:
            return False
        if self.min_dice > 0 and not np.max(self.smoothed(dice)) > self.min_dice:
            return False  # not started to learn (e.g. collapsed to empty masks): no plateau
        return steps[-1] - self.last_improvement(steps, dice) >= self.patience_steps


@dataclasses.dataclass
class RunRecord:
    """One run's bookkeeping: best step and Dice, validation curve, failure (None: none)."""

    best_step: int = -1
    best_dice: float = -1.0
    curve_steps: list[int] = dataclasses.field(default_factory=list)
    curve_dice: list[float] = dataclasses.field(default_factory=list)
    failure: str | None = None
    stop: str = ''  # '' while training, else one of STOP_REASONS
    stop_step: int = -1  # the step it stopped at (its steps trained)

    @property
    def stopped(self) -> bool:
        return bool(self.stop)

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

    @property
    def all_stopped(self) -> bool:
        return all(run.stopped for run in self.runs)

    def training(self) -> np.ndarray:
        """Which runs still train (not stopped on a plateau, at the cap or by divergence)."""
        return np.array([not run.stopped for run in self.runs])

    def record_validation(
        self, step: int, dice: Sequence[float], rule: EarlyStopping = EarlyStopping()
    ) -> np.ndarray:
        """Extends the curve of every run still training with its validation Dice, and stops
        those that reached a plateau (`rule`); which runs improved on their best (a diverged
        or stopped run never does)."""
        improved = np.zeros(len(self.runs), bool)
        for r, (run, value) in enumerate(zip(self.runs, dice)):
            if run.stopped:
                continue  # its curve ends where it stopped
            run.curve_steps.append(int(step))
            run.curve_dice.append(float(value))
            if value > run.best_dice:
                run.best_dice, run.best_step = float(value), int(step)
                improved[r] = True
            if rule.plateaued(run.curve_steps, run.curve_dice):
                run.stop, run.stop_step = 'plateau', int(step)
        return improved

    def record_cap(self, step: int) -> None:
        """Runs still training when the loop ended stopped at the cap, at `step`."""
        for run in self.runs:
            if not run.stopped:
                run.stop, run.stop_step = 'cap', int(step)

    def record_losses(self, history: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Marks each run whose loss or gradient norm became NaN/Inf, with the first such step.

        `history`: (step, {'loss': [runs], 'grad_norm': [runs]}) on the host.
        """
        for step, values in history:
            for run, label, loss, grad_norm in zip(
                self.runs, self.members, values['loss'], values['grad_norm']
            ):
                if run.stopped:
                    continue  # a stopped run's lane is not stepped (its values are NaN)
                loss, grad_norm = float(loss), float(grad_norm)
                if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                    run.stop, run.stop_step = 'nan', int(step)
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
