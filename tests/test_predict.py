"""predict: a tiny trained run segments images of other sizes and formats, with scores."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from tests import tiny
from tests.conftest import save_image
from unet_jax import predict
from unet_jax.data import fields, folder, pipeline
from unet_jax.predict import inputs, model, outputs, scores
from unet_jax.train import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (height, width, rgb, suffix): sizes unlike the model's 32x32, grey and colour.
IMAGES = {
    'wide': (40, 72, False, '.png'),
    'tall': (90, 50, True, '.png'),
    'square': (32, 32, False, '.bmp'),
    'photo': (64, 48, True, '.tif'),
}


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A finished tiny run. It evaluates its initial weights instead of training (a train step
    compiles for tens of seconds on a busy CPU): predict only needs a run folder, and the tests
    below compare it with the model applied directly, so learned weights add nothing."""
    workdir = tmp_path_factory.mktemp('run')
    config = tiny.tiny_config(
        **{
            'finetune.train': '@none',
            'num_train_steps': 0,
            'warmup_steps': 0,
            'optimizer.schedule': 'constant',
        }
    )
    trainer.train_and_evaluate(config, str(workdir), splits=tiny.disk_splits())
    return str(workdir)


def disk_image(height: int, width: int, rgb: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A bright disk on noise (the task the tiny run learned), uint8 image and {0,1} mask."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:height, :width]
    radius = 0.25 * min(height, width)
    mask = ((rows - height / 2) ** 2 + (cols - width / 2) ** 2 < radius**2).astype(np.uint8)
    image = np.clip(60 + 120 * mask + 20 * rng.standard_normal((height, width)), 0, 255)
    image = image.astype(np.uint8)
    if rgb:
        image = np.stack([image, image // 2, 255 - image], axis=-1)
    return image, mask


@pytest.fixture
def folders(tmp_path):
    images, masks = tmp_path / 'images', tmp_path / 'masks'
    images.mkdir()
    masks.mkdir()
    truth = {}
    for seed, (name, (h, w, rgb, suffix)) in enumerate(IMAGES.items()):
        image, mask = disk_image(h, w, rgb, seed)
        Image.fromarray(image).save(images / f'{name}{suffix}')
        Image.fromarray(mask * 255).save(masks / f'{name}_mask.png')
        truth[name] = mask
    return images, masks, truth


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * (a & b).sum() / total


def test_outputs_have_original_sizes_and_scores_match(run, folders, tmp_path):
    images, masks, truth = folders
    out = tmp_path / 'out'
    # The median probability as threshold makes every mask part foreground, part background.
    predictor = model.load_predictor(run)
    settings = inputs.pairing_settings()
    names = sorted(IMAGES)
    probs = predictor.probabilities(
        [inputs.read_input(images / f'{n}{IMAGES[n][3]}', None, settings)[0] for n in names]
    )
    threshold = float(np.median(np.concatenate([p.ravel() for p in probs])))
    result = predict.predict_images(
        run,
        str(images),
        str(out),
        masks=str(masks),
        pairing='suffix',
        probabilities=True,
        batch_size=3,
        threshold=threshold,
    )
    for name, prob in zip(names, probs):
        h, w = IMAGES[name][:2]
        mask = np.asarray(Image.open(out / f'{name}_mask.png'))
        assert mask.shape == (h, w) and set(np.unique(mask)) == {0, 255}, name
        np.testing.assert_array_equal(mask, np.where(prob > threshold, 255, 0))
        prob_png = Image.open(out / f'{name}_prob.png')
        assert prob_png.mode == 'L' and prob_png.size == (w, h)
        np.testing.assert_array_equal(np.asarray(prob_png), np.round(prob * 255))
        overlay = Image.open(out / f'{name}_overlay.png')
        assert overlay.mode == 'RGB' and overlay.size == (w, h)
        colours = np.asarray(overlay).reshape(-1, 3)
        for colour in (outputs.TRUTH_COLOUR, outputs.PREDICTION_COLOUR):
            assert (colours == colour).all(axis=1).any(), f'{name}: no contour in {colour}'
        text_box = np.asarray(overlay)[:8, :8].reshape(-1, 3)  # The Dice, white on black.
        grey = (text_box == text_box[:, :1]).all(axis=1)
        assert (text_box[grey, 0] == 0).any() and (text_box[grey, 0] > 150).any(), name

    with open(out / outputs.SCORES_FILE) as f:
        rows = list(csv.DictReader(f))
    assert [os.path.basename(r['image']).split('.')[0] for r in rows[:-1]] == sorted(IMAGES)
    assert rows[-1]['image'] == 'mean' and len(rows) == len(IMAGES) + 1
    for row in rows[:-1]:
        name = os.path.basename(row['image']).split('.')[0]
        written = np.asarray(Image.open(out / f'{name}_mask.png')) > 0
        assert float(row['dice']) == pytest.approx(dice(written, truth[name]), abs=1e-5)
        assert (int(row['height']), int(row['width'])) == truth[name].shape
    for key in ('dice', 'iou', 'hd95'):
        per_image = [float(r[key]) for r in rows[:-1]]
        assert float(rows[-1][key]) == pytest.approx(np.mean(per_image), abs=1e-4)
    assert result['mean']['dice'] == pytest.approx(float(rows[-1]['dice']), abs=1e-5)
    assert rows[-1]['empty'].startswith('Dice and IoU over the 4 images with a non-empty mask')


def test_masks_next_to_their_images_with_several_files_ored(run, tmp_path):
    scans = tmp_path / 'scans'
    scans.mkdir()
    image, mask = disk_image(40, 40, False, 5)
    Image.fromarray(image).save(scans / 'case 1.png')
    top, bottom = mask.copy(), mask.copy()
    top[20:], bottom[:20] = 0, 0
    Image.fromarray(top * 255).save(scans / 'case 1_mask.png')  # BUSI: one file per lesion.
    Image.fromarray(bottom * 255).save(scans / 'case 1_mask_1.png')
    out = tmp_path / 'out'
    result = predict.predict_images(
        run,
        str(scans / '*.png'),
        str(out),
        masks=str(scans / '*.png'),
        pairing='suffix',
        threshold=0.0,
    )  # All foreground: Dice tells the OR.
    (row,) = result['rows']
    assert row['image'].endswith('case 1.png') and len(row['mask']) == 2
    written = np.asarray(Image.open(out / 'case 1_mask.png')) > 0
    assert row['dice'] == pytest.approx(dice(written, mask), abs=1e-5)


def test_model_sees_exactly_the_training_preprocessing(run):
    predictor = model.load_predictor(run)
    image, _ = disk_image(32, 32, False, 7)
    x, _ = pipeline.preprocess(
        image[..., None], np.zeros((32, 32), np.uint8), image_size=32, in_channels=1
    )
    direct = np.asarray(predictor.apply(predictor.variables, x[None]))[0, ..., 0]
    # An RGB copy of a grey image is converted back to the same grey for a 1-channel model.
    via_predict = predictor.probabilities([np.repeat(image[..., None], 3, axis=-1)])[0]
    np.testing.assert_allclose(via_predict, direct, atol=1e-6)


@pytest.mark.parametrize('height,width', [(40, 100), (90, 30), (33, 33)])
def test_content_box_is_where_pipeline_puts_the_padded_image(height, width):
    image = np.full((height, width), 200, np.uint8)
    _, mask = pipeline.preprocess(
        image, np.ones((height, width), np.uint8), image_size=32, in_channels=1, pad=True
    )
    top, left, h, w = model._content_box(height, width, 32, pad=True)
    expected = np.zeros((32, 32), bool)
    expected[top : top + h, left : left + w] = True
    assert np.array_equal(mask[..., 0] > 0, expected)


def test_padded_run_maps_probabilities_back_to_the_content(run):
    predictor = dataclasses.replace(model.load_predictor(run), pad=True)
    wide, _ = disk_image(30, 90, False, 3)  # 32x11 content in a 32x32 input.
    prob = predictor.probabilities([wide])[0]
    assert prob.shape == (30, 90)
    x, _ = pipeline.preprocess(
        wide, np.zeros((30, 90), np.uint8), image_size=32, in_channels=1, pad=True
    )
    model_prob = np.asarray(predictor.apply(predictor.variables, x[None]))[0, ..., 0]
    top, left, h, w = model._content_box(30, 90, 32, pad=True)
    content = Image.fromarray(model_prob[top : top + h, left : left + w]).resize(
        (90, 30), Image.BILINEAR
    )
    np.testing.assert_allclose(prob, np.clip(np.asarray(content), 0, 1), atol=1e-6)


def test_errors_name_what_is_wrong(run, folders, tmp_path):
    images, masks, _ = folders
    out = str(tmp_path / 'out')

    unfinished = tmp_path / 'unfinished'
    unfinished.mkdir()
    (unfinished / 'config.json').write_text(json.dumps({'model': {}, 'data': {}}))
    with pytest.raises(predict.PredictError, match='has not finished.*results.json'):
        predict.predict_images(str(unfinished), str(images), out)
    with pytest.raises(predict.PredictError, match='holds no run'):
        predict.predict_images(str(images), str(images), out)

    missing = tmp_path / 'nowhere'
    with pytest.raises(predict.PredictError, match=f'--input: {str(missing)!r} does not exist'):
        predict.predict_images(run, str(missing), out)
    notes = tmp_path / 'notes'
    notes.mkdir()
    (notes / 'readme.txt').write_text('not an image')
    with pytest.raises(predict.PredictError, match=r'no images in .*notes.*readme\.txt.*\.png'):
        predict.predict_images(run, str(notes), out)

    (images / 'broken.png').write_bytes(b'not a png at all')
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(masks / 'broken_mask.png')
    with pytest.raises(predict.PredictError, match=r'broken\.png: cannot be read as an image'):
        predict.predict_images(run, str(images), out)
    os.remove(images / 'broken.png')

    Image.fromarray(np.zeros((20, 20), np.uint8)).save(images / 'orphan.png')
    kwargs = dict(masks=str(masks), pairing='suffix')
    with pytest.raises(
        predict.PredictError,
        match=r"1 images without a mask \(pairing='suffix'\): .*orphan\.png.*"
        r'--pairing, --mask_suffix, --regex.*--skip_bad',
    ):
        predict.predict_images(run, str(images), out, **kwargs)
    with pytest.raises(
        predict.PredictError, match=r'their masks are named <stem>_mask: pass --pairing=suffix'
    ):  # the default pairing is the folder set's: 'stem'
        predict.predict_images(run, str(images), out, masks=str(masks))
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / 'orphan_mask.png')
    with pytest.raises(
        predict.PredictError,
        match=r'orphan_mask\.png: mask is 10x10 \(WxH\) but its image is 20x20.*--resize_masks',
    ):
        predict.predict_images(run, str(images), out, **kwargs)
    assert not os.path.exists(out)


def test_command_line_prints_the_mean(run, folders, tmp_path):
    images, masks, _ = folders
    out = tmp_path / 'cli'
    done = subprocess.run(
        [
            sys.executable,
            '-m',
            'unet_jax.predict',
            f'--checkpoint={run}',
            f'--input={images / "wide.png"},{images / "photo.tif"}',
            f'--output={out}',
            f'--masks={masks}',
            '--pairing=suffix',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'Mean: Dice' in done.stdout
    assert 'Dice and IoU over the 2 images with a non-empty mask; HD95 over 2' in done.stdout
    assert sorted(os.listdir(out)) == [
        'photo_mask.png',
        'photo_overlay.png',
        'scores.csv',
        'wide_mask.png',
        'wide_overlay.png',
    ]


def test_bad_inputs_are_all_listed_before_anything_is_written_or_skipped(run, folders, tmp_path):
    """A mask of the wrong size, an unreadable image, a file whose header reads but whose
    pixels do not and a mask of many values under threshold 0: one error naming all four and
    no output (every file is decoded before the first is written); with skip_bad the others
    are segmented and scored."""
    images, masks, _ = folders
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / 'wide_mask.png')  # wide is 72x40
    (images / 'broken.png').write_bytes(b'not a png at all')
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(masks / 'broken_mask.png')
    good = io.BytesIO()
    Image.fromarray(disk_image(30, 30, False, 9)[0]).save(good, format='PNG')
    (images / 'cut.png').write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    Image.fromarray(disk_image(30, 30, False, 9)[1] * 255).save(masks / 'cut_mask.png')
    ramp = np.tile(np.arange(48, dtype=np.uint8) * 5, (64, 1))  # photo is 48x64
    Image.fromarray(ramp).save(masks / 'photo_mask.png')
    out = tmp_path / 'out'
    kwargs = dict(masks=str(masks), pairing='suffix')
    with pytest.raises(predict.PredictError) as error:
        predict.predict_images(run, str(images), str(out), **kwargs)
    message = str(error.value)
    assert '4 of 6 inputs cannot be segmented or scored (nothing was written)' in message
    assert re.search(r'wide_mask\.png: mask is 10x10 \(WxH\) but its image is 72x40', message)
    assert re.search(r'broken\.png: cannot be read as an image', message)
    assert re.search(r'cut\.png: cannot be read as an image', message)
    assert re.search(r'photo_mask\.png: the mask has 48 values.*--mask_threshold', message)
    assert '--skip_bad' in message
    assert not out.exists()

    result = predict.predict_images(run, str(images), str(out), skip_bad=True, **kwargs)
    skipped = sorted(os.path.basename(p) for p in result['skipped'])
    assert skipped == ['broken.png', 'cut.png', 'photo.tif', 'wide.png']
    with open(out / outputs.SCORES_FILE) as f:
        rows = list(csv.DictReader(f))
    assert [os.path.basename(r['image']) for r in rows] == ['square.bmp', 'tall.png', 'mean']
    assert sorted(os.listdir(out)) == [
        'scores.csv',
        'square_mask.png',
        'square_overlay.png',
        'tall_mask.png',
        'tall_overlay.png',
    ]


# ----------------------------------------------------------------------------- a user's folders


def checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob('*'))
        if p.is_file()
    }


def busi_layout(root: Path) -> Path:
    """BUSI's release layout: images and their <stem>_mask[_k].png in one folder."""
    root.mkdir(parents=True)
    for i, (h, w) in enumerate([(40, 56), (48, 40)], start=1):
        image, mask = disk_image(h, w, False, i)
        Image.fromarray(image).save(root / f'benign ({i}).png')
        Image.fromarray(mask * 255).save(root / f'benign ({i})_mask.png')
    Image.fromarray(np.zeros((48, 40), np.uint8)).save(root / 'benign (2)_mask_1.png')
    return root


def fake_study(root: Path, run: str) -> Path:
    """A study workdir around copies of the tiny run: point us/n4/s0/contracting, its alias
    us/n4/s0/deep_to_shallow-k3 (no folder of its own) and the pre-training."""
    for rel in ('points/us/n4/s0/contracting', 'pretrain'):
        shutil.copytree(run, root / rel)
    point = dict(target='us', run='us/n4/s0/contracting', dir='points/us/n4/s0/contracting')
    plan = {
        'pretrain_dirs': [str(root / 'pretrain')],
        'points': [
            dict(point, name='us/n4/s0/contracting', family='contracting'),
            dict(point, name='us/n4/s0/deep_to_shallow-k3', family='deep_to_shallow'),
        ],
    }
    (root / 'study.json').write_text(json.dumps(plan))
    return root


def test_busi_layout_command_refuses_to_write_among_the_inputs(run, tmp_path):
    """The issue's case: --output = the input folder. Exit 1 naming --output, every input
    byte-identical; into a folder of its own the masks are not segmented as images."""
    busi = busi_layout(tmp_path / 'busi')
    before = checksums(busi)
    command = [sys.executable, '-m', 'unet_jax.predict', f'--checkpoint={run}', f'--input={busi}']
    done = subprocess.run(
        [*command, f'--output={busi}'], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"error: --output='{busi}' is the folder that --input" in done.stderr
    assert 'Pass an --output outside it' in done.stderr
    assert checksums(busi) == before

    out = tmp_path / 'out'
    result = predict.predict_images(run, str(busi), str(out))
    assert sorted(os.path.basename(r['image']) for r in result['rows']) == [
        'benign (1).png',
        'benign (2).png',
    ]
    assert not any('_mask_mask' in name for name in os.listdir(out))
    assert checksums(busi) == before


def test_existing_outputs_are_replaced_only_with_overwrite(run, tmp_path):
    busi = busi_layout(tmp_path / 'busi')
    out = tmp_path / 'out'
    kwargs = dict(masks=str(busi), pairing='suffix')
    predict.predict_images(run, str(busi), str(out), **kwargs)
    before = checksums(out)
    with pytest.raises(predict.PredictError, match=r'holds 5 of the files.*--overwrite'):
        predict.predict_images(run, str(busi), str(out), threshold=1.0, **kwargs)
    assert checksums(out) == before
    predict.predict_images(run, str(busi), str(out), threshold=1.0, overwrite=True, **kwargs)
    assert checksums(out) != before
    with pytest.raises(predict.PredictError, match=r'is inside the folder that --input'):
        predict.predict_images(run, str(busi), str(busi / 'pred'), overwrite=True)


def test_a_folder_target_with_regex_pairing_and_larger_masks_scores_with_the_same_words(
    run, tmp_path
):
    """Another hospital's release: Test_Image_<k>.png beside mask_<k>.png at twice the size.
    The settings that make it a folder: target make predict score it, under the same names."""
    images, masks = tmp_path / 'release' / 'images', tmp_path / 'release' / 'masks'
    truth = {}
    for k in range(3):
        image, mask = disk_image(30, 40, False, k)
        save_image(images / f'Test_Image_{k}.png', image)
        save_image(masks / f'mask_{k}.png', mask.repeat(2, 0).repeat(2, 1) * 255)
        truth[str(k)] = mask
    settings = dict(pairing='regex', regex=r'(?P<key>\d+)$', resize_masks=True)
    fields_of_a_target = set(fields.default_folder_config())
    assert set(settings) <= set(inputs.PAIRING_FLAGS) <= fields_of_a_target
    target = fields.default_folder_config()
    target.update(dict(images=str(images), masks=str(masks), **settings))
    examples, _ = folder.read_folder(target, channels=1)  # it works as a study target
    assert sorted(e.id for e in examples) == ['0', '1', '2']

    out = tmp_path / 'out'
    with pytest.raises(predict.PredictError, match=r'mask_0\.png: mask is 80x60.*--resize_masks'):
        predict.predict_images(
            run, str(images), str(out), masks=str(masks), pairing='regex', regex=settings['regex']
        )
    result = predict.predict_images(
        run, str(images), str(out), masks=str(masks), threshold=0.0, **settings
    )
    assert len(result['rows']) == 3 and result['mean']['scored'] == 3
    for row, example in zip(result['rows'], sorted(examples, key=lambda e: e.id)):
        np.testing.assert_array_equal(example.mask, truth[example.id])
        all_foreground = np.ones_like(example.mask)
        assert row['dice'] == pytest.approx(dice(all_foreground, example.mask), abs=1e-5)


def test_empty_predictions_and_masks_are_counted_and_hd95_missing(run, tmp_path):
    """threshold 1 predicts nothing: HD95 is missing (not the 50 px diagonal), the empties are
    counted in scores.csv and in the summary, and an empty mask is not in the means."""
    images, masks = tmp_path / 'images', tmp_path / 'masks'
    images.mkdir(), masks.mkdir()
    for k in range(3):
        image, mask = disk_image(30, 40, False, k)
        Image.fromarray(image).save(images / f'c{k}.png')
        Image.fromarray(mask * 255 if k else np.zeros_like(mask)).save(masks / f'c{k}.png')
    out = tmp_path / 'out'
    result = predict.predict_images(run, str(images), str(out), masks=str(masks), threshold=1.0)
    summary = result['mean']
    assert (summary['scored'], summary['empty_prediction'], summary['empty_mask']) == (2, 2, 1)
    assert summary['hd95'] is None and summary['dice'] == pytest.approx(0.0, abs=1e-4)
    with open(out / outputs.SCORES_FILE) as f:
        rows = list(csv.DictReader(f))
    assert [r['empty'] for r in rows[:-1]] == ['both', 'prediction', 'prediction']
    assert [r['hd95'] for r in rows] == ['', '', '', '']
    assert rows[-1]['empty'] == (
        'Dice and IoU over the 2 images with a non-empty mask (2 with an empty prediction: '
        'Dice 0, HD95 missing); HD95 over 0; 1 images with an empty mask are not in the means '
        '(0 of them with a predicted foreground)'
    )
    assert 'HD95 missing. Dice and IoU over the 2' in scores.mean_line(summary, 'scores.csv')


def test_study_points_aliases_and_the_pretraining(run, tmp_path, caplog):
    study = fake_study(tmp_path / 'study', run)
    with pytest.raises(predict.PredictError) as error:
        model.run_folder(str(study))
    message = str(error.value)
    assert 'is the workdir of a study, not a run' in message
    assert f'us contracting: {study}/points/us/n4/s0/contracting (val Dice' in message
    assert 'us deep_to_shallow: ' in message and '1 of 1 runs finished' in message

    caplog.set_level(logging.WARNING)
    alias = study / 'points' / 'us' / 'n4' / 's0' / 'deep_to_shallow-k3'
    assert model.run_folder(str(alias)) == str(study / 'points/us/n4/s0/contracting')
    assert 'is an alias of run us/n4/s0/contracting' in caplog.text
    with pytest.raises(predict.PredictError, match="has no point 'us/n4/s0/full'"):
        model.run_folder(str(study / 'points/us/n4/s0/full'))
    caplog.clear()
    assert model.run_folder(str(study / 'pretrain')) == str(study / 'pretrain')
    assert 'is a pre-training run' in caplog.text and 'not fine-tuned on a target' in caplog.text
    caplog.clear()
    model.run_folder(str(study / 'points/us/n4/s0/contracting'))
    assert 'pre-training' not in caplog.text
