"""load_splits: preprocessing, official and seeded splits, nested subsets, k-fold, caching."""

import numpy as np
import pytest

from tests.conftest import make_layout, save_image
from unet_jax.data import fields, pipeline


def _config(**kwargs):
    c = fields.default_data_config()
    c.update(kwargs)
    return c


IDS = {'train': [f'case{i:03d}' for i in range(100)]}


def test_preprocess_normalises_resizes_and_converts():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    mask = np.zeros((30, 50), np.uint8)
    mask[10:20, 20:40] = 1
    x, y = pipeline.preprocess(image, mask, image_size=16, in_channels=1)
    assert x.shape == (16, 16, 1) and y.shape == (16, 16, 1)
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-4
    assert set(np.unique(y)) == {0.0, 1.0}
    grey = np.asarray(rng.integers(0, 256, (30, 50, 1)), np.uint8)
    x3, _ = pipeline.preprocess(grey, mask, image_size=16, in_channels=3, resize='area')
    assert x3.shape == (16, 16, 3) and np.array_equal(x3[..., 0], x3[..., 2])


def test_pad_keeps_aspect_ratio():
    image = np.full((20, 40, 1), 200, np.uint8)
    image[:, :20] = 10
    mask = np.ones((20, 40), np.uint8)
    x, y = pipeline.preprocess(image, mask, image_size=16, in_channels=1, pad=True)
    # 40x20 -> 16x8 content centred in 16x16: 4 rows of pad above and below.
    assert y[:, :, 0].sum(axis=1).tolist() == [0] * 4 + [16] * 8 + [0] * 4
    assert np.all(x[:4] == 0) and np.all(x[12:] == 0)
    assert abs(x[4:12].mean()) < 1e-5


def test_splits_are_disjoint_and_test_fixed_by_split_seed():
    a = pipeline.assign_splits(IDS, _config(num_train=10, subset_seed=1))
    b = pipeline.assign_splits(IDS, _config(num_train=-1, subset_seed=7))
    assert a['test'] == b['test'] and a['val'] == b['val']
    assert (len(b['train']), len(b['val']), len(b['test'])) == (65, 15, 20)
    assert not set(b['train']) & set(b['val']) and not set(b['train'] + b['val']) & set(b['test'])
    c = pipeline.assign_splits(IDS, _config(split_seed=1))
    assert c['test'] != a['test']
    shuffled = {'train': IDS['train'][::-1]}
    assert pipeline.assign_splits(shuffled, _config())['test'] == b['test']


def test_training_subsets_are_nested_per_seed():
    subsets = {
        n: pipeline.assign_splits(IDS, _config(num_train=n, subset_seed=3))['train']
        for n in (5, 10, 20)
    }
    assert set(subsets[5]) < set(subsets[10]) < set(subsets[20])
    other = pipeline.assign_splits(IDS, _config(num_train=5, subset_seed=4))['train']
    assert set(other) != set(subsets[5])
    with pytest.raises(ValueError, match=r'num_train=66 but the training split .* has only 65'):
        pipeline.assign_splits(IDS, _config(num_train=66))


def test_k_fold_validation_partitions_the_non_test_cases():
    folds = [pipeline.assign_splits(IDS, _config(num_folds=4, fold=k)) for k in range(4)]
    vals = [set(f['val']) for f in folds]
    pool = set(folds[0]['train']) | vals[0]
    assert len(pool) == 80 and set().union(*vals) == pool
    assert all(not vals[i] & vals[j] for i in range(4) for j in range(i + 1, 4))
    assert all(f['test'] == folds[0]['test'] for f in folds)
    with pytest.raises(ValueError, match=r'fold=4 must be in 0..3'):
        pipeline.assign_splits(IDS, _config(num_folds=4, fold=4))


def test_official_splits_are_kept():
    official = {'train': ['a', 'b', 'c', 'd'], 'val': ['e'], 'test': ['f', 'g']}
    s = pipeline.assign_splits(official, _config())
    assert s['test'] == ['f', 'g'] and s['val'] == ['e'] and sorted(s['train']) == list('abcd')


def test_load_splits_jsrt_fixture_and_cache(tmp_path):
    fixture = make_layout('jsrt', tmp_path / 'src')
    c = _config(
        name='jsrt', manual_dir=str(fixture['root']), data_dir=str(tmp_path / 'tfds'), image_size=16
    )
    first = pipeline.load_splits(c, in_channels=1)
    assert {k: len(v) for k, v in first.items()} == {'train': 4, 'val': 2, 'test': 3}
    assert first['test'].ids == ['JPCLN007', 'JPCLN008', 'JPCLN009']
    assert list((tmp_path / 'tfds').rglob('unet_jax_cache/*.npz'))
    again = pipeline.load_splits(c, in_channels=1)
    for k in first:
        np.testing.assert_array_equal(first[k].image, again[k].image)
        assert first[k].ids == again[k].ids
    expected = fixture['masks']['JPCLN007']
    assert first['test'].mask[0].dtype == np.float32 and first['test'].mask[0].max() == 1
    assert abs(first['test'].mask[0].mean() - expected.mean()) < 0.1


def test_load_splits_busi_drop_normal_and_rgb_natural_to_grey(tmp_path):
    busi = make_layout('busi', tmp_path / 'busi')
    common = {
        'data_dir': str(tmp_path / 'tfds'),
        'image_size': 16,
        'test_fraction': 0.2,
        'val_fraction': 0.2,
    }
    all_ids = pipeline.load_splits(
        _config(name='busi', manual_dir=str(busi['root']), **common), in_channels=1
    )
    kept = pipeline.load_splits(
        _config(name='busi', manual_dir=str(busi['root']), drop_normal=True, **common),
        in_channels=1,
    )
    ids = lambda s: {i for v in s.values() for i in v.ids}
    assert ids(all_ids) - ids(kept) == {'normal (1)'}
    ecssd = make_layout('ecssd', tmp_path / 'ecssd')
    grey = pipeline.load_splits(
        _config(name='ecssd', manual_dir=str(ecssd['root']), **common), in_channels=1
    )
    assert grey['train'].image.shape[1:] == (16, 16, 1)


def test_drop_normal_leaves_out_empty_masks_of_an_unlabelled_set(tmp_path):
    """'Normal' is also an empty mask: what scoring counts as a normal image."""
    fixture = make_layout('dataset_b', tmp_path / 'src')
    save_image(fixture['root'] / 'GT' / '000003.png', np.zeros((24, 32), np.uint8))
    c = _config(name='folder', image_size=16, test_fraction=0.25, val_fraction=0.25)
    c.folder.images = str(fixture['root'] / 'original')
    c.folder.masks = str(fixture['root'] / 'GT')
    ids = lambda s: sorted(i for v in s.values() for i in v.ids)
    assert ids(pipeline.load_splits(c, in_channels=1)) == [f'{i:06d}' for i in range(1, 6)]
    c.drop_normal = True
    kept = pipeline.load_splits(c, in_channels=1)
    assert ids(kept) == ['000001', '000002', '000004', '000005']
    assert all(m.any() for v in kept.values() for m in v.mask)


def test_load_splits_folder_set(tmp_path):
    fixture = make_layout('dataset_b', tmp_path / 'src')
    c = _config(name='folder', image_size=16, num_train=2)
    c.folder.images = str(fixture['root'] / 'original')
    c.folder.masks = str(fixture['root'] / 'GT')
    splits = pipeline.load_splits(c, in_channels=3)
    assert {k: len(v) for k, v in splits.items()} == {'train': 2, 'val': 1, 'test': 1}
    assert splits['train'].image.shape == (2, 16, 16, 3)
    assert set(np.unique(splits['train'].mask)) <= {0.0, 1.0}
