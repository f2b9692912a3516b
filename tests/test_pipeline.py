"""load_splits: preprocessing, official and seeded splits, nested subsets, k-fold, caching."""

import numpy as np
import pytest

from tests.conftest import make_layout, save_image
from unet_jax.data import catalogue, duplicates, fields, pipeline, split_assignment
from unet_jax.study import leakage


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
    a = split_assignment.assign_splits(IDS, _config(num_train=10, subset_seed=1))
    b = split_assignment.assign_splits(IDS, _config(num_train=-1, subset_seed=7))
    assert a['test'] == b['test'] and a['val'] == b['val']
    assert (len(b['train']), len(b['val']), len(b['test'])) == (65, 15, 20)
    assert not set(b['train']) & set(b['val']) and not set(b['train'] + b['val']) & set(b['test'])
    c = split_assignment.assign_splits(IDS, _config(split_seed=1))
    assert c['test'] != a['test']
    shuffled = {'train': IDS['train'][::-1]}
    assert split_assignment.assign_splits(shuffled, _config())['test'] == b['test']


def test_training_subsets_are_nested_per_seed():
    subsets = {
        n: split_assignment.assign_splits(IDS, _config(num_train=n, subset_seed=3))['train']
        for n in (5, 10, 20)
    }
    assert set(subsets[5]) < set(subsets[10]) < set(subsets[20])
    other = split_assignment.assign_splits(IDS, _config(num_train=5, subset_seed=4))['train']
    assert set(other) != set(subsets[5])
    with pytest.raises(ValueError, match=r'num_train=66 but the training split .* has only 65'):
        split_assignment.assign_splits(IDS, _config(num_train=66))


def test_k_fold_validation_partitions_the_non_test_cases():
    folds = [split_assignment.assign_splits(IDS, _config(num_folds=4, fold=k)) for k in range(4)]
    vals = [set(f['val']) for f in folds]
    pool = set(folds[0]['train']) | vals[0]
    assert len(pool) == 80 and set().union(*vals) == pool
    assert all(not vals[i] & vals[j] for i in range(4) for j in range(i + 1, 4))
    assert all(f['test'] == folds[0]['test'] for f in folds)
    with pytest.raises(ValueError, match=r'fold=4 must be in 0..3'):
        split_assignment.assign_splits(IDS, _config(num_folds=4, fold=4))


def test_official_splits_are_kept():
    official = {'train': ['a', 'b', 'c', 'd'], 'val': ['e'], 'test': ['f', 'g']}
    s = split_assignment.assign_splits(official, _config())
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


# ----------------------------------------------------------------------------- outer folds


def _scene(rng, h=48, w=64):
    """A smooth random grey scene (uint8): unlike any other, as different scans are."""
    coarse = rng.integers(0, 256, (4, 4)).astype(np.float32)
    image = np.kron(coarse, np.ones((h // 4, w // 4))) + rng.normal(0, 6, (h, w))
    return np.clip(image, 0, 255).astype(np.uint8)


def _noised(rng, image):
    """Another frame of the same scan: the image with a little noise."""
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)


# BUSI cases with planted near-duplicates: each tuple is one cluster (a scene and noised frames).
BUSI_CLUSTERS = (
    ('benign (2)', 'benign (3)'),
    ('benign (7)', 'benign (8)', 'benign (9)'),
    ('malignant (1)', 'malignant (5)'),
)


def _busi_tree(root, *, benign=14, malignant=6, normal=2, clusters=BUSI_CLUSTERS, seed=0):
    """A BUSI release layout (<class>/<class> (<n>).png and _mask.png) with near-duplicates."""
    rng = np.random.default_rng(seed)
    first = {case: c[0] for c in clusters for case in c}
    scenes = {}
    for label, n in (('benign', benign), ('malignant', malignant), ('normal', normal)):
        for i in range(1, n + 1):
            case = f'{label} ({i})'
            owner = first.get(case, case)
            image = _noised(rng, scenes[owner]) if owner in scenes else _scene(rng)
            scenes.setdefault(owner, image)
            save_image(root / label / f'{case}.png', image)
            mask = (image > 128) & (label != 'normal')
            save_image(root / label / f'{case}_mask.png', mask.astype(np.uint8) * 255)
    return root


def _busi_config(tmp_path, **kwargs):
    root = _busi_tree(tmp_path / 'Dataset_BUSI_with_GT')
    return _config(
        name='busi', manual_dir=str(root), data_dir=str(tmp_path / 'tfds'), image_size=16, **kwargs
    )


def _split_of(splits):
    return {i: name for name, split in splits.items() for i in split.ids}


def test_outer_folds_test_every_image_once_and_keep_near_duplicates_together(tmp_path):
    """5 outer folds of 22 BUSI cases with three planted near-duplicate clusters: each case is
    in exactly one test fold, each cluster in one split of every fold, folds of 4-5 cases."""
    c = _busi_config(tmp_path, outer_folds=5)
    folds = []
    for k in range(5):
        c.outer_fold = k
        splits = pipeline.load_splits(c, in_channels=1)
        split_of = _split_of(splits)
        assert len(split_of) == 22  # disjoint splits, every case in one
        for cluster in BUSI_CLUSTERS:
            assert len({split_of[i] for i in cluster}) == 1, (k, cluster, split_of)
        assert len(splits['val']) >= round(0.15 * 22)
        folds.append(splits['test'].ids)
    tested = [i for f in folds for i in f]
    assert len(tested) == len(set(tested)) == 22
    assert all(4 <= len(f) <= 5 for f in folds), [len(f) for f in folds]
    c.outer_fold = 5
    with pytest.raises(ValueError, match=r'outer_fold=5 must be in 0..4'):
        pipeline.load_splits(c, in_channels=1)
    c.outer_folds, c.outer_fold = 1, 0
    with pytest.raises(ValueError, match=r'outer_folds=1: use 0 .* or at least 2'):
        pipeline.load_splits(c, in_channels=1)


def test_seeded_splits_keep_near_duplicates_together_unless_allowed(tmp_path):
    """Without folds too, a cluster is never split across train/val/test, for any split seed;
    allow_near_duplicates draws by case alone, and then some seed splits a cluster."""
    c = _busi_config(tmp_path, test_fraction=0.3, val_fraction=0.3)
    straddled = 0
    for seed in range(8):
        c.split_seed, c.allow_near_duplicates = seed, False
        split_of = _split_of(pipeline.load_splits(c, in_channels=1))
        assert all(len({split_of[i] for i in cluster}) == 1 for cluster in BUSI_CLUSTERS)
        if seed == 0:  # the leak check's count of what was grouped: the planted clusters only
            splits = pipeline.load_splits(c, in_channels=1)
            report = leakage.check_study_data(None, {'busi': splits})
            assert report.grouping['busi'].clusters == tuple(sorted(BUSI_CLUSTERS))
            assert report.straddling == {'busi': 0}
            assert 'busi 3 clusters of 7 images (of 22), each in one split' in report.summary()
        c.allow_near_duplicates = True
        split_of = _split_of(pipeline.load_splits(c, in_channels=1))
        straddled += any(len({split_of[i] for i in cluster}) > 1 for cluster in BUSI_CLUSTERS)
    assert straddled > 0


def test_units_reduce_to_the_draw_by_case_without_near_duplicates():
    """With no cluster, the grouped draws are the draws by case: splits of sets without
    near-duplicates are what they were before grouping."""
    order = split_assignment._permutation(IDS['train'], 0)
    test, rest = split_assignment._take(split_assignment._units(order, {}), 20)
    assert test == order[:20] and rest == order[20:]
    folds = split_assignment._deal(split_assignment._units(order, {}), 4)
    assert folds == [order[k::4] for k in range(4)]
    grouped = split_assignment._deal(
        split_assignment._units(order, {order[1]: 'g', order[2]: 'g'}), 4
    )
    assert sorted(len(f) for f in grouped) == [25, 25, 25, 25]
    assert any({order[1], order[2]} <= set(f) for f in grouped)


def test_jsrt_official_test_kept_unless_outer_folds(tmp_path):
    """JSRT's official Test split is the test split without outer folds (for any split seed);
    with outer_folds=3 every case of Train, Val and Test is tested exactly once."""
    fixture = make_layout('jsrt', tmp_path / 'src')
    c = _config(
        name='jsrt', manual_dir=str(fixture['root']), data_dir=str(tmp_path / 'tfds'), image_size=16
    )
    official_test = ['JPCLN007', 'JPCLN008', 'JPCLN009']
    for seed in (0, 1):
        c.split_seed = seed
        assert pipeline.load_splits(c, in_channels=1)['test'].ids == official_test
    c.split_seed, c.outer_folds = 0, 3
    tested = []
    for k in range(3):
        c.outer_fold = k
        splits = pipeline.load_splits(c, in_channels=1)
        assert len(_split_of(splits)) == 9
        tested += splits['test'].ids
    assert sorted(tested) == sorted(fixture['masks']) and len(tested) == 9
    assert not set(official_test) <= set(pipeline.load_splits(c, in_channels=1)['test'].ids)


def test_a_near_duplicate_across_official_splits_is_an_error_unless_allowed(tmp_path):
    """A frame of an official Train image copied (noised) into Test: the official split cannot
    keep the cluster together, so loading it names both and the fixes; outer folds regroup it."""
    fixture = make_layout('jsrt', tmp_path / 'src')
    base = fixture['root']
    rng = np.random.default_rng(0)
    scene = _scene(rng, 24, 32)
    save_image(base / 'Train' / 'Images' / 'JPCLN001.png', scene)
    save_image(base / 'Test' / 'Images' / 'JPCLN009.png', _noised(rng, scene))
    c = _config(name='jsrt', manual_dir=str(base), data_dir=str(tmp_path / 'tfds'), image_size=16)
    message = r'(?s)1 near-duplicate clusters of .jsrt. lie in two splits.*'
    message += r'train/JPCLN001 ~ test/JPCLN009.*outer_folds.*allow_near_duplicates=True'
    with pytest.raises(ValueError, match=message):
        pipeline.load_splits(c, in_channels=1)
    c.allow_near_duplicates = True
    official_test = ['JPCLN007', 'JPCLN008', 'JPCLN009']
    assert pipeline.load_splits(c, in_channels=1)['test'].ids == official_test
    c.allow_near_duplicates, c.outer_folds = False, 3
    for k in range(3):
        c.outer_fold = k
        split_of = _split_of(pipeline.load_splits(c, in_channels=1))
        assert split_of['JPCLN001'] == split_of['JPCLN009']


def test_few_shot_subsets_are_nested_and_share_the_test_fold(tmp_path):
    """sizes 3, 6, 12 of one seed: nested subsets of the training folds, the same validation and
    test split (the outer fold), whatever the size and the seed."""
    c = _busi_config(tmp_path, outer_folds=4, outer_fold=2)
    by_seed = {}
    for seed in (0, 1):
        subsets = {}
        for n in (3, 6, 12, -1):
            c.num_train, c.subset_seed = n, seed
            splits = pipeline.load_splits(c, in_channels=1)
            subsets[n] = splits['train'].ids
            by_seed.setdefault('test', set()).add(tuple(splits['test'].ids))
            by_seed.setdefault('val', set()).add(tuple(splits['val'].ids))
        assert [len(subsets[n]) for n in (3, 6, 12)] == [3, 6, 12]
        assert set(subsets[3]) < set(subsets[6]) < set(subsets[12]) < set(subsets[-1])
        by_seed[seed] = subsets
    assert len(by_seed['test']) == 1 and len(by_seed['val']) == 1
    assert by_seed[0][6] != by_seed[1][6]


def test_near_duplicate_distance_is_the_sets_own_unless_set():
    c = _config(name='busi')
    assert pipeline.near_duplicate_bits(c) == catalogue.BY_NAME['busi'].near_duplicate_bits == 64
    assert pipeline.near_duplicate_bits(_config(name='jsrt')) == duplicates.NEAR_DUPLICATE_BITS
    c.near_duplicate_bits = 10
    assert pipeline.near_duplicate_bits(c) == 10
    c.near_duplicate_bits = 255
    with pytest.raises(ValueError, match=r'near_duplicate_bits=255 must be -1 .* or in 0..254'):
        pipeline.near_duplicate_bits(c)


def test_folds_and_subsets_of_one_set_read_and_hash_it_once(tmp_path, monkeypatch):
    """The runs of a study differ in split fields only: the set is read, preprocessed and
    hashed once; a field that changes the cases (the image size) reads it again."""
    pipeline._CASES.clear()
    reads = []
    load_cases = pipeline._load_cases
    monkeypatch.setattr(
        pipeline, '_load_cases', lambda *a, **k: reads.append(1) or load_cases(*a, **k)
    )
    c = _busi_config(tmp_path, outer_folds=5)
    tests = set()
    for fold, subset_seed in ((0, 0), (1, 0), (1, 3)):
        c.outer_fold, c.subset_seed = fold, subset_seed
        tests.add(tuple(pipeline.load_splits(c, in_channels=1)['test'].ids))
    assert len(reads) == 1 and len(tests) == 2
    c.image_size = 24
    assert pipeline.load_splits(c, in_channels=1)['test'].image.shape[1:3] == (24, 24)
    assert len(reads) == 2
