"""The leak check: duplicates between pre-training and targets, and across a target's splits."""

import json
import logging

import numpy as np
import pytest

from configs import layerwise
from tests.conftest import save_image
from unet_jax.data import pipeline
from unet_jax.study import leakage


def _split(images, prefix):
    images = np.asarray(images, np.float32)
    return pipeline.Split(
        image=images,
        mask=np.zeros(images.shape[:3] + (1,), np.float32),
        ids=[f'{prefix}{i}' for i in range(len(images))],
    )


def _images(n, seed, size=32):
    """Standardised smooth random scenes (unlike each other, like preprocessed images)."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((n, 4, 4))
    images = np.kron(coarse, np.ones((size // 4, size // 4)))[..., None]
    images += 0.2 * rng.standard_normal(images.shape)
    return (images - images.mean((1, 2, 3), keepdims=True)) / images.std((1, 2, 3), keepdims=True)


def _target(seed=0):
    images = _images(12, seed)
    return {
        'train': _split(images[:6], 'tr'),
        'val': _split(images[6:9], 'va'),
        'test': _split(images[9:], 'te'),
    }


def test_distinct_sets_pass():
    report = leakage.check_study_data({'train': _split(_images(20, 7), 'p')}, {'a': _target()})
    assert report.findings == [] and report.num_images == {'pretrain': 20, 'a': 12}


def test_a_target_test_image_in_pretraining_stops_naming_both_sides():
    target = _target()
    pretraining = _images(20, 7)
    pretraining[13] = target['test'].image[1]
    with pytest.raises(leakage.LeakError) as error:
        leakage.check_study_data({'train': _split(pretraining, 'p')}, {'mine': target})
    assert 'pre-training images that are target validation/test images' in str(error.value)
    assert 'mine/test/te1 == pretrain/train/p13' in str(error.value)
    assert [(f.kind, str(f.a), str(f.b)) for f in error.value.report.errors] == [
        ('pretrain_in_evaluation', 'mine/test/te1', 'pretrain/train/p13')
    ]


def test_with_outer_folds_a_pretraining_copy_of_a_training_image_is_a_leak():
    """Every image of an outer-fold target is tested in some fold: a copy of this fold's training
    image in pre-training stops the study too."""
    target = _target()
    pretraining = _images(10, 7)
    pretraining[2] = target['train'].image[3]
    pretrain = leakage.hash_splits('pretrain', {'train': _split(pretraining, 'p')})
    one_test_split = leakage.hash_splits('a', target)
    assert [f.kind for f in leakage.check_hashes(pretrain, [one_test_split]).findings] == [
        'pretrain_in_training'
    ]
    folds = leakage.hash_splits('a', target, every_image_tested=True)
    with pytest.raises(leakage.LeakError, match=r'a/train/tr3 == pretrain/train/p2'):
        leakage.check_hashes(pretrain, [folds])


def test_duplicates_within_a_target():
    """Across splits: an error. In one split, or a pre-training copy of a training image: a
    warning. A near-duplicate (noise, another gain): a warning with both names."""
    target = _target()
    target['val'].image[2] = target['train'].image[0]
    with pytest.raises(leakage.LeakError, match=r'(?s)two splits.*a/train/tr0 == a/val/va2'):
        leakage.check_study_data(None, {'a': target})

    target = _target()
    target['train'].image[5] = target['train'].image[4]
    near = target['test'].image[0] * 1.3 + 0.05 * np.random.default_rng(1).standard_normal()
    target['test'].image[2] = near + 0.02 * np.random.default_rng(2).standard_normal(near.shape)
    pretraining = _images(10, 7)
    pretraining[3] = target['train'].image[1]
    report = leakage.check_study_data({'train': _split(pretraining, 'p')}, {'a': target})
    assert report.errors == []
    found = {(f.kind, str(f.a), str(f.b)) for f in report.warnings}
    assert found == {
        ('pretrain_in_training', 'a/train/tr1', 'pretrain/train/p3'),
        ('within_split', 'a/train/tr4', 'a/train/tr5'),
        ('near_duplicate', 'a/test/te0', 'a/test/te2'),
    }
    near_finding = next(f for f in report.warnings if f.kind == 'near_duplicate')
    assert near_finding.distance <= leakage.NEAR_DUPLICATE_BITS
    assert 'a/test/te0 ~ a/test/te2' in report.summary()
    headline = report.headline()  # the console's one line
    assert '\n' not in headline and headline.startswith(report.summary().splitlines()[0])
    assert '1 images twice in one split' in headline and '1 near-duplicates' in headline
    assert json.loads(json.dumps(report.to_dict()))['findings'][0]['error'] is False


def test_a_study_shows_its_leak_warnings_in_one_console_line(tmp_path, caplog):
    """The study's console (package warnings) gets the headline once and where the list is;
    the full list goes to the log (INFO) and leak_check.json."""
    target = _target()
    target['train'].image[5] = target['train'].image[4]
    with caplog.at_level(logging.INFO):
        check = lambda config: leakage.check_study_data(None, {'a': target})  # noqa: E731
        leakage.check_leaks(None, str(tmp_path), check_fn=check)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and '\n' not in warnings[0]
    assert warnings[0].startswith('study: leak check over a ') and 'leak_check.json' in warnings[0]
    assert any('a/train/tr4 == a/train/tr5' in r.getMessage() for r in caplog.records)
    assert json.loads((tmp_path / 'leak_check.json').read_text())['findings']


def _tiny_study(arg):
    config = layerwise.get_config(arg)
    config.data.image_size = 32
    config.data.num_examples = 30
    config.study.pretrain.data.num_examples = 40
    return config


def test_check_study_passes_the_default_and_fails_a_config_made_to_leak(tmp_path, monkeypatch):
    """source=ultrasound pre-trains on the simulation the `us` target is drawn from: with its
    own seed (the default) nothing is shared; with the target's seed the target's images are
    pre-training images, and the check names them."""
    monkeypatch.setenv('UNET_JAX_DATA_DIR', str(tmp_path / 'tfds'))
    config = _tiny_study('quick,source=ultrasound,targets=us')
    report = leakage.check_study(config)
    assert report.errors == [] and report.num_images['pretrain'] == 40

    config.study.pretrain.data.seed = config.data.seed
    with pytest.raises(leakage.LeakError) as error:
        leakage.check_study(config)
    errors = error.value.report.errors
    assert errors and all(f.kind == 'pretrain_in_evaluation' for f in errors)
    assert {f.a.id for f in errors} == {f.b.id for f in errors}  # example i of the same seed
    assert {f.a.split for f in errors} == {'val', 'test'}
    assert f'{errors[0].a} == {errors[0].b}' in str(error.value)
    assert 'config.study.pretrain.data.seed' in str(error.value)
    # Only the pre-trained families need pre-training data.
    config.study.families = ('scratch',)
    assert 'pretrain' not in leakage.check_study(config).num_images


def test_check_study_finds_a_file_copied_into_a_folder_target(tmp_path, monkeypatch):
    monkeypatch.setenv('UNET_JAX_DATA_DIR', str(tmp_path / 'tfds'))
    rng = np.random.default_rng(0)
    for i in range(10):
        image = np.kron(rng.integers(0, 256, (4, 4)), np.ones((8, 8))).astype(np.uint8)
        save_image(tmp_path / 'img' / f'case{i}.png', image)
        save_image(tmp_path / 'gt' / f'case{i}.png', (image > 128).astype(np.uint8))
    for folder in ('img', 'gt'):
        (tmp_path / folder / 'copy.png').write_bytes((tmp_path / folder / 'case3.png').read_bytes())
    config = _tiny_study('quick,targets=folder:mine')
    config.study.families = ('scratch',)
    config.study.targets.mine.data.folder.images = str(tmp_path / 'img')
    config.study.targets.mine.data.folder.masks = str(tmp_path / 'gt')
    splits = pipeline.load_splits(leakage.target_data(config, 'mine'), in_channels=1)
    split_of = {i: s for s, v in splits.items() for i in v.ids}
    kind = 'within_split' if split_of['case3'] == split_of['copy'] else 'across_splits'
    pair = sorted([f'mine/{split_of["case3"]}/case3', f'mine/{split_of["copy"]}/copy'])
    try:
        findings = leakage.check_study(config).findings
    except leakage.LeakError as error:  # when the copy landed in another split than its original
        findings = error.report.findings
    assert [(f.kind, sorted([str(f.a), str(f.b)])) for f in findings] == [(kind, pair)]


def test_a_reused_pre_training_is_described_by_its_config_json(tmp_path):
    config = _tiny_study('quick,targets=us')
    config.study.pretrained_workdir = str(tmp_path / 'elsewhere')
    with pytest.raises(FileNotFoundError, match=r'pretrained_workdir=.*has no config\.json'):
        leakage.pretrain_data(config)
    (tmp_path / 'elsewhere').mkdir()
    run = config.study.pretrain.copy_and_resolve_references()
    run.data.name = 'synthetic_xray'
    (tmp_path / 'elsewhere' / 'config.json').write_text(run.to_json())
    data, in_channels = leakage.pretrain_data(config)
    assert data.name == 'synthetic_xray' and in_channels == 1
