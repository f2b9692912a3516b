"""The folder set: pairing rules, mask rules, and every bad-input case with its message."""

import numpy as np
from PIL import Image
import pytest

from tests.conftest import blob_mask, save_image
from unet_jax.data import fields, folder, imageio


def _config(**kwargs):
    c = fields.default_folder_config()
    c.update(kwargs)
    return c


def _tree(
    root,
    n=4,
    *,
    image_ext='.png',
    mask_name='{stem}.png',
    mask_dir='masks',
    scale=255,
    size=(20, 30),
    mask_size=None,
):
    rng = np.random.default_rng(0)
    truth = {}
    for i in range(n):
        stem = f'case{i}'
        save_image(
            root / 'images' / f'{stem}{image_ext}',
            rng.integers(0, 256, size + (3,), dtype=np.uint8),
        )
        m = blob_mask(rng, *(mask_size or size))
        save_image(root / mask_dir / mask_name.format(stem=stem), m * scale)
        truth[stem] = m
    return truth


def test_stem_pairing_reads_every_pair(tmp_path):
    truth = _tree(tmp_path, image_ext='.jpg')
    examples, report = folder.read_folder(
        _config(images=str(tmp_path / 'images'), masks=str(tmp_path / 'masks')), channels=1
    )
    assert [e.id for e in examples] == sorted(truth) and report.num_skipped == 0
    for e in examples:
        assert e.image.shape == (20, 30, 1)
        np.testing.assert_array_equal(e.mask, truth[e.id])


def test_suffix_pairing_in_one_folder_ors_several_masks(tmp_path):
    rng = np.random.default_rng(1)
    save_image(tmp_path / 'a.png', rng.integers(0, 256, (20, 30), dtype=np.uint8))
    m0, m1 = np.zeros((20, 30), np.uint8), np.zeros((20, 30), np.uint8)
    m0[:5, :5], m1[10:, 10:] = 1, 1
    save_image(tmp_path / 'a_mask.png', m0)  # 0/1
    save_image(tmp_path / 'a_mask_1.png', m1 * 255, mode='1')  # 1-bit
    examples, _ = folder.read_folder(_config(images=str(tmp_path), pairing='suffix'), channels=3)
    assert [e.id for e in examples] == ['a'] and examples[0].image.shape == (20, 30, 3)
    np.testing.assert_array_equal(examples[0].mask, m0 | m1)


def test_regex_pairing(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(3):
        save_image(
            tmp_path / 'img' / f'scan_p{i}_img.bmp', rng.integers(0, 256, (16, 16), dtype=np.uint8)
        )
        save_image(tmp_path / 'seg' / f'p{i}_label.tif', blob_mask(rng, 16, 16) * 255)
    examples, _ = folder.read_folder(
        _config(
            images=str(tmp_path / 'img'),
            masks=str(tmp_path / 'seg'),
            pairing='regex',
            regex=r'(?P<key>p\d+)',
        ),
        channels=1,
    )
    assert [e.id for e in examples] == ['p0', 'p1', 'p2']


def test_glob_patterns_separate_images_and_masks_in_one_folder(tmp_path):
    truth = _tree(tmp_path, image_ext='.jpg', mask_dir='images')
    examples, _ = folder.read_folder(
        _config(
            images=str(tmp_path / 'images' / '*.jpg'), masks=str(tmp_path / 'images' / '*.png')
        ),
        channels=1,
    )
    assert sorted(e.id for e in examples) == sorted(truth)


def test_image_without_mask_names_it(tmp_path):
    _tree(tmp_path)
    (tmp_path / 'masks' / 'case2.png').unlink()
    with pytest.raises(
        folder.FolderError,
        match=r"1 images without a mask \(pairing='stem'\): .*case2.png.*skip_bad",
    ):
        folder.read_folder(
            _config(images=str(tmp_path / 'images'), masks=str(tmp_path / 'masks')), channels=1
        )


def test_mask_without_image_names_it(tmp_path):
    _tree(tmp_path)
    (tmp_path / 'images' / 'case1.png').unlink()
    with pytest.raises(folder.FolderError, match=r'1 masks without an image .*masks/case1.png'):
        folder.read_folder(
            _config(images=str(tmp_path / 'images'), masks=str(tmp_path / 'masks')), channels=1
        )


def test_unreadable_file_names_it(tmp_path):
    _tree(tmp_path)
    (tmp_path / 'images' / 'case3.png').write_bytes(b'not a png')
    with pytest.raises(folder.FolderError, match=r'case3.png: cannot be read as an image'):
        folder.read_folder(
            _config(images=str(tmp_path / 'images'), masks=str(tmp_path / 'masks')), channels=1
        )


def test_empty_folder_says_so(tmp_path):
    (tmp_path / 'images').mkdir()
    (tmp_path / 'images' / 'notes.txt').write_text('x')
    with pytest.raises(folder.FolderError, match=r'No images found .*it holds: notes.txt'):
        folder.read_folder(
            _config(images=str(tmp_path / 'images'), masks=str(tmp_path)), channels=1
        )
    with pytest.raises(folder.FolderError, match=r'neither a folder nor a glob'):
        folder.read_folder(
            _config(images=str(tmp_path / 'missing'), masks=str(tmp_path)), channels=1
        )
    with pytest.raises(folder.FolderError, match=r'folder.images is empty'):
        folder.read_folder(_config(), channels=1)


def test_skip_bad_skips_and_summarises_every_reason(tmp_path):
    _tree(tmp_path, n=5)
    (tmp_path / 'masks' / 'case0.png').unlink()
    (tmp_path / 'images' / 'case1.png').unlink()
    (tmp_path / 'images' / 'case2.png').write_bytes(b'broken')
    examples, report = folder.read_folder(
        _config(images=str(tmp_path / 'images'), masks=str(tmp_path / 'masks'), skip_bad=True),
        channels=1,
    )
    assert [e.id for e in examples] == ['case3', 'case4']
    assert report.num_skipped == 3
    summary = report.summary()
    assert 'read 2 image/mask pairs, skipped 3' in summary
    assert '1 images without a mask: ' in summary and 'case0.png' in summary
    assert '1 masks without an image: ' in summary and 'masks/case1.png' in summary
    assert '1 unreadable or mismatched files: ' in summary and 'case2.png' in summary


def test_mask_of_another_size_is_an_error_unless_resized(tmp_path):
    _tree(tmp_path, n=2, size=(20, 30), mask_size=(40, 60))
    c = _config(images=str(tmp_path / 'images'), masks=str(tmp_path / 'masks'))
    with pytest.raises(
        folder.FolderError,
        match=r'case0.png: mask is 60x40 .*image is 30x20.*'
        r'resize_masks=True',
    ):
        folder.read_folder(c, channels=1)
    small = blob_mask(np.random.default_rng(5), 20, 30)
    save_image(tmp_path / 'masks' / 'case0.png', small.repeat(2, 0).repeat(2, 1) * 255)
    c.resize_masks = True
    examples, _ = folder.read_folder(c, channels=1)
    np.testing.assert_array_equal(examples[0].mask, small)


def test_threshold_and_mask_values(tmp_path):
    for name, values in (('01', (0, 1)), ('0255', (0, 255)), ('any', (0, 7))):
        a = np.full((4, 4), values[0], np.uint8)
        a[:2] = values[1]
        save_image(tmp_path / f'{name}.png', a)
        assert imageio.read_mask(tmp_path / f'{name}.png').sum() == 8
    noisy = np.array([[0, 40, 200, 255]] * 4, np.uint8)
    save_image(tmp_path / 'noisy.png', noisy)
    assert imageio.read_mask(tmp_path / 'noisy.png', threshold=127).sum() == 8
    with pytest.raises(
        imageio.ImageReadError,
        match=r'01.png: mask values are 0/1 but the '
        r'threshold is 127',
    ):
        imageio.read_mask(tmp_path / '01.png', threshold=127)


def test_rgba_and_16bit_inputs(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[:2, :, 0] = 255
    Image.fromarray(rgba, 'RGBA').save(tmp_path / 'rgba.png')
    assert imageio.read_mask(tmp_path / 'rgba.png').sum() == 8
    alpha_only = np.zeros((4, 4, 4), np.uint8)
    alpha_only[:1, :, 3] = 255
    Image.fromarray(alpha_only, 'RGBA').save(tmp_path / 'alpha.png')
    assert imageio.read_mask(tmp_path / 'alpha.png').sum() == 4
    deep = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000
    Image.fromarray(deep).save(tmp_path / 'deep.png')
    image = imageio.read_image(tmp_path / 'deep.png', channels=1)
    assert image.dtype == np.uint8 and image.min() == 0 and image.max() == 255


@pytest.mark.parametrize(
    'stem,suffix,owner',
    [
        ('a_mask', '_mask', 'a'),
        ('a_mask_1', '_mask', 'a'),
        ('benign (4)_mask_12', '_mask', 'benign (4)'),
        ('a_1_mask', '_mask', 'a_1'),
        ('a', '_mask', None),
        ('a_mask_x', '_mask', None),
        ('_mask', '_mask', None),
        ('a_1', '', 'a_1'),
        ('CHNCXR_0001_0_seg', '_seg', 'CHNCXR_0001_0'),
    ],
)
def test_mask_owner_is_the_one_pairing_rule(stem, suffix, owner):
    assert folder.mask_owner(stem, suffix) == owner


def test_masks_by_owner_groups_and_sorts(tmp_path):
    names = ['b_mask.png', 'a_mask_1.png', 'a_mask.png', 'a.png', 'notes_mask_x.png']
    groups = folder.masks_by_owner([tmp_path / n for n in names], '_mask')
    assert groups == {
        'a': [tmp_path / 'a_mask.png', tmp_path / 'a_mask_1.png'],
        'b': [tmp_path / 'b_mask.png'],
    }
