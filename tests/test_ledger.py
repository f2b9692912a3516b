"""The group's ledger: validation bookkeeping, divergence, and its JSON round trip."""

import json
import math

import numpy as np

from unet_jax.train import ledger


def test_ledger_keeps_each_runs_best_and_survives_json():
    book = ledger.Ledger.new(['s0', 's1'])
    assert list(book.record_validation(3, [0.5, 0.2])) == [True, True]
    book.record_losses([(4, {'loss': np.array([0.3, math.nan]), 'grad_norm': np.ones(2)})])
    assert list(book.record_validation(6, [0.4, 0.9])) == [False, False]  # s1 diverged
    assert book.runs[0].best_step == 3
    assert book.runs[0].val_curve == {'step': [3, 6], 'dice': [0.5, 0.4]}
    assert 'Training of s1 stopped at step 4: loss=nan' in book.runs[1].failure
    assert not book.all_failed
    book.interval_times.append(0.25)

    saved = json.loads(json.dumps(book.to_json({'wall_s': 2.0})))
    resumed = ledger.Ledger.from_json(saved)
    assert resumed.runs == book.runs and resumed.interval_times == [0.25]
    times = resumed.times({'steps': 1.0}, wall=3.0)
    assert times['wall_s'] == 5.0 and times['steps_s'] == 1.0
    assert set(times) == {f'{k}_s' for k in ledger.TIME_SECTIONS + ('wall',)}
