"""`auto:` freeze specs in training: resolved from the pre-trained weights before the freeze
plan, recorded in results.json, soft variant's scales in the optimiser."""

from __future__ import annotations

import json

from flax import traverse_util
import numpy as np
import pytest

from tests import tiny
from unet_jax.config import auto_spec
from unet_jax.freeze import auto_choice, score_scaling
from unet_jax.train import checkpoint, steps, trainer


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    directory = tmp_path_factory.mktemp('pre')
    trainer.train_and_evaluate(tiny.tiny_config(), str(directory), splits=tiny.disk_splits())
    return str(directory)


def _finetune(pretrained, workdir, spec, **overrides):
    config = tiny.tiny_config(
        **{
            'init_from': pretrained,
            'finetune.train': spec,
            'finetune.granularity': 'block',
            'finetune.auto.num_examples': 4,
            'finetune.auto.batch_size': 2,
            'finetune.auto.probe_steps': 2,
            'num_train_steps': 2,
            **overrides,
        }
    )
    return trainer.train_and_evaluate(config, str(workdir), splits=tiny.disk_splits())


def test_auto_k_trains_the_chosen_blocks_and_records_the_choice(pretrained, tmp_path):
    results = _finetune(pretrained, tmp_path, 'auto:rgn:2')
    on_disk = json.loads((tmp_path / 'results.json').read_text())
    auto = on_disk['auto']
    assert auto['criterion'] == 'rgn' and auto['k'] == 2 and len(auto['chosen']) == 2
    ranked = sorted(auto['scores'], key=lambda n: -auto['scores'][n])
    assert set(auto['chosen']) == set(ranked[:2])
    # The trained units are exactly those of the chosen blocks; the others kept their weights.
    assert {u.split('/')[0] for u in results['trained_units']} == set(auto['chosen'])
    assert on_disk['cost']['probe_flops'] == auto['cost']['flops'] > 0
    assert on_disk['time']['probe_s'] == auto['cost']['seconds'] > 0
    pre, _ = checkpoint.load_variables(pretrained)
    after, _ = checkpoint.load_variables(str(tmp_path))
    before = traverse_util.flatten_dict(pre['params'], sep='/')
    tuned = traverse_util.flatten_dict(after['params'], sep='/')
    frozen = [p for p in before if p.split('/')[0] not in auto['chosen']]
    assert frozen and all(np.array_equal(before[p], tuned[p]) for p in frozen)
    assert json.loads((tmp_path / auto_choice.CHOICE_FILE).read_text())['requested'] == 'auto:rgn:2'


def test_soft_variant_scales_each_block_by_its_score(pretrained, tmp_path):
    _finetune(pretrained, tmp_path, 'auto:rgn:soft')
    auto = json.loads((tmp_path / 'results.json').read_text())['auto']
    assert auto['soft'] and auto['spec'] == '@all'
    # A block that scored 0 would not move; every block with a positive score moves.
    pre, _ = checkpoint.load_variables(pretrained)
    after, _ = checkpoint.load_variables(str(tmp_path))
    before = traverse_util.flatten_dict(pre['params'], sep='/')
    tuned = traverse_util.flatten_dict(after['params'], sep='/')
    top = max(auto['scores'], key=auto['scores'].get)
    assert any(not np.array_equal(v, tuned[p]) for p, v in before.items() if p.startswith(top))


def test_soft_scales_reach_the_optimiser():
    config = tiny.tiny_config()
    tx = steps.create_train_tx(config, scales={'a': 0.5})
    state = tx.init({'a': {'kernel': np.ones(3, np.float32)}})
    leaves = [s for s in state if isinstance(s, score_scaling.ScoreScaleState)]
    assert leaves and float(leaves[0].scales['a']['kernel']) == 0.5


def test_auto_spec_without_pretrained_weights_names_the_field(tmp_path):
    config = tiny.tiny_config(**{'finetune.train': 'auto:rgn:1', 'finetune.granularity': 'block'})
    with pytest.raises(auto_spec.AutoSpecError, match='config.init_from'):
        trainer.train_and_evaluate(config, str(tmp_path), splits=tiny.disk_splits())
