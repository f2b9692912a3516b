"""The statistics-matched initialisation (family `matched`, config.init_matched)."""

from __future__ import annotations

from flax import traverse_util
import numpy as np

from configs import layerwise
from tests import tiny
from unet_jax import models
from unet_jax.study import sweep_points
from unet_jax.train import checkpoint, initial_state, trainer


def test_matched_params_keep_each_tensors_mean_and_std_but_not_its_values():
    rng = np.random.default_rng(0)
    params = {
        'a': {'kernel': rng.normal(0.3, 2.0, (3, 3, 16, 32)).astype(np.float32)},
        'b': {'scale': np.full((8,), 1.5, np.float32), 'bias': np.array([0.2], np.float32)},
    }
    matched = initial_state.matched_params(params, np.random.default_rng(1))
    kernel, new = params['a']['kernel'], matched['a']['kernel']
    assert new.shape == kernel.shape and new.dtype == kernel.dtype
    assert abs(new.mean() - kernel.mean()) < 0.05 and abs(new.std() - kernel.std()) < 0.05
    assert abs(np.corrcoef(new.ravel(), kernel.ravel())[0, 1]) < 0.05
    np.testing.assert_array_equal(matched['b']['scale'], params['b']['scale'])  # std 0
    np.testing.assert_array_equal(matched['b']['bias'], params['b']['bias'])  # one element


def test_a_matched_run_starts_from_the_pretrained_statistics_with_fresh_batch_stats(tmp_path):
    pre = str(tmp_path / 'pre')
    batch_norm = {'model.norm': 'batch'}
    trainer.train_and_evaluate(tiny.tiny_config(**batch_norm), pre, splits=tiny.disk_splits())
    config = tiny.tiny_config(init_from=pre, init_matched=True, num_train_steps=0, **batch_norm)
    config.finetune.train = '@all'
    trainer.train_and_evaluate(config, str(tmp_path / 'matched'), splits=tiny.disk_splits())
    pretrained, _ = checkpoint.load_variables(pre)
    started, _ = checkpoint.load_variables(str(tmp_path / 'matched'))
    flat = lambda v, c: traverse_util.flatten_dict(v[c], sep='/')
    old, new = flat(pretrained, 'params'), flat(started, 'params')
    for path, value in old.items():
        if value.size >= 256:
            assert abs(new[path].std() / value.std() - 1) < 0.2, path
            assert not np.allclose(new[path], value), path
    initial = initial_state.initial_variables(models.create_model(config.model), config)
    fresh, trained = flat(initial, 'batch_stats'), flat(pretrained, 'batch_stats')
    assert fresh.keys() == flat(started, 'batch_stats').keys()
    for path, value in flat(started, 'batch_stats').items():
        np.testing.assert_array_equal(value, fresh[path])
    assert any(not np.allclose(trained[p], fresh[p]) for p in fresh)  # they were not fresh


def test_the_matched_family_starts_from_a_pretraining_and_is_not_a_default():
    config = layerwise.get_config('quick,families=full+matched,seeds=2')
    points = {p.name: p for p in sweep_points.enumerate_sweep(config).runs}
    matched = points['us/n16/s1/matched']
    assert matched.pretrain_index == 1 and matched.spec == '@all'  # seed s from pre-training s
    assert matched.run_name != points['us/n16/s1/full'].run_name  # not a duplicate of full
    assert 'matched' not in layerwise.get_config('quick').study.families
