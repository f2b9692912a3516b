"""Early stopping: the plateau rule on validation curves, and runs and groups that stop by it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests import tiny
from unet_jax.report import load
from unet_jax.study import checks
from unet_jax.train import groups, ledger, trainer

RULE = ledger.EarlyStopping(patience_steps=30, min_delta=0.005, min_steps=40, smoothing=2)


def test_a_flat_noisy_curve_stops_and_an_improving_one_does_not():
    rng = np.random.default_rng(0)
    steps = list(range(10, 310, 10))
    flat = 0.6 + 0.01 * rng.standard_normal(len(steps))
    rising = 0.3 + 0.004 * np.arange(len(steps)) + 0.001 * rng.standard_normal(len(steps))
    stops = [s for i, s in enumerate(steps) if RULE.plateaued(steps[: i + 1], flat[: i + 1])]
    assert stops and 40 <= stops[0] <= 150
    assert not any(RULE.plateaued(steps[: i + 1], rising[: i + 1]) for i in range(len(steps)))


def test_the_floor_smoothing_and_min_delta_are_obeyed():
    # Patience is reached at step 40, but the floor is 60.
    rule = ledger.EarlyStopping(patience_steps=30, min_steps=60)
    assert not rule.plateaued([10, 20, 30, 40], [0.5, 0.5, 0.5, 0.5])
    assert rule.plateaued([10, 20, 30, 40, 50, 60], [0.5] * 6)
    # A rise by less than min_delta is no improvement.
    small = ledger.EarlyStopping(patience_steps=20, min_delta=0.01)
    assert small.plateaued([10, 20, 30], [0.5, 0.505, 0.509])
    assert not small.plateaued([10, 20, 30], [0.5, 0.505, 0.52])
    # One lucky evaluation is smoothed away: the trailing mean of 3 barely moves.
    assert list(ledger.EarlyStopping(smoothing=3).smoothed([0.3, 0.6, 0.3, 0.3])) == pytest.approx(
        [0.3, 0.45, 0.4, 0.4]
    )
    assert not ledger.EarlyStopping().plateaued([10, 20, 30], [0.5, 0.5, 0.5])  # off


def test_the_ledger_freezes_a_stopped_runs_best_and_curve():
    book = ledger.Ledger.new(['s0', 's1'])
    rule = ledger.EarlyStopping(patience_steps=20)
    for step, dice in ((10, [0.5, 0.5]), (20, [0.5, 0.6]), (30, [0.5, 0.7])):
        book.record_validation(step, dice, rule)
    assert book.runs[0].stop == 'plateau' and book.runs[0].stop_step == 30
    assert not book.runs[1].stopped and list(book.training()) == [False, True]
    # s0 no longer records: not its curve, not a better Dice.
    assert list(book.record_validation(40, [0.9, 0.8], rule)) == [False, True]
    assert book.runs[0].val_curve['step'] == [10, 20, 30] and book.runs[0].best_dice == 0.5
    book.record_cap(50)
    assert (book.runs[1].stop, book.runs[1].stop_step) == ('cap', 50) and book.all_stopped
    saved = ledger.Ledger.from_json(json.loads(json.dumps(book.to_json({}))))
    assert saved.runs == book.runs


def test_a_diverged_run_is_stopped_as_nan():
    book = ledger.Ledger.new(['s0'])
    book.record_losses([(4, {'loss': np.array([np.nan]), 'grad_norm': np.ones(1)})])
    assert (book.runs[0].stop, book.runs[0].stop_step) == ('nan', 4) and book.all_stopped


def plateau_config(**overrides):
    """A run whose learning rate is too small to move: its validation curve is flat."""
    return tiny.tiny_config(
        **{
            'num_train_steps': 60,
            'eval_every_steps': 5,
            'log_every_steps': 5,
            'checkpoint_every_steps': 10,
            'optimizer.schedule': 'constant',
            'optimizer.learning_rate': 1e-12,
            'early_stopping.patience_steps': 25,
            'early_stopping.min_steps': 20,
            'early_stopping.min_delta': 0.01,  # batch statistics still move a little
            **overrides,
        }
    )


def test_a_flat_run_stops_on_a_plateau_and_its_cost_counts_the_steps_it_trained(tmp_path):
    results = trainer.train_and_evaluate(plateau_config(), str(tmp_path), splits=tiny.disk_splits())
    assert results['stop'] == {'reason': 'plateau', 'step': 30}
    assert results['cost']['num_steps'] == 30 and results['cost']['step_cap'] == 60
    assert results['val_curve']['step'] == [5, 10, 15, 20, 25, 30]
    full_cost = trainer.train_and_evaluate(
        plateau_config(**{'early_stopping.patience_steps': 0}),
        str(tmp_path / 'no_stop'),
        splits=tiny.disk_splits(),
    )
    assert full_cost['stop'] == {'reason': 'cap', 'step': 60}
    assert results['cost']['train_flops'] * 2 == full_cost['cost']['train_flops']
    # The report flags only runs that hit the cap while still improving.
    fields = load._run_fields(results)
    assert fields['stop'] == 'plateau' and fields['still_improving'] is False


def test_the_same_rule_keeps_a_run_that_improves_to_the_cap(tmp_path):
    config = plateau_config(**{'optimizer.learning_rate': 1e-3})
    results = trainer.train_and_evaluate(config, str(tmp_path), splits=tiny.disk_splits())
    assert results['stop'] == {'reason': 'cap', 'step': 60}, results['val_curve']
    assert results['cost']['num_steps'] == 60


@pytest.mark.parametrize('vectorize', ['loop', 'vmap'])
def test_a_group_stops_each_run_on_its_own_and_ends_when_all_have(tmp_path, vectorize):
    """Seed 1 trains on blank images with empty masks (it unlearns the disks: its validation
    Dice only falls) and stops on a plateau; seed 0 learns the disks and trains on. The group
    ends when both have stopped, and seed 0's curve ends where it stopped."""

    def splits_fn(config):
        splits = tiny.disk_splits()
        if config.seed == 1:
            splits['train'].image[:] = 0.0
            splits['train'].mask[:] = 0.0
        return splits

    def config(seed):
        return plateau_config(seed=seed, **{'optimizer.learning_rate': 1e-3})

    members = [groups.Member(config(s), str(tmp_path / f's{s}'), name=f's{s}') for s in (0, 1)]
    outcome = trainer.train_group(
        members, str(tmp_path / 'state'), name='g', splits_fn=splits_fn, vectorize=vectorize
    )
    learns, blank = (outcome[m.workdir] for m in members)
    assert blank['stop'] == {'reason': 'plateau', 'step': 30}, blank['val_curve']
    assert blank['val_curve']['step'][-1] == 30 and blank['cost']['num_steps'] == 30
    assert learns['stop'] == {'reason': 'cap', 'step': 60}, learns['val_curve']


def test_patience_shorter_than_an_evaluation_is_refused():
    config = plateau_config(**{'early_stopping.patience_steps': 3})
    problems = checks.run_problems(config, spec=False)
    assert any('patience_steps=3 is shorter than eval_every_steps=5' in p for p in problems)
