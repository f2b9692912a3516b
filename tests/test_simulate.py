"""Tests of the simulations: speckle physics, anatomy, masks, determinism."""

import math

import numpy as np
import pytest
import scipy.ndimage

from unet_jax.data import simulate
from unet_jax.data.simulate import b_mode, natural, ultrasound


@pytest.mark.parametrize('kind', simulate.KINDS)
def test_same_seed_same_example_and_indices_differ(kind):
    a = simulate.simulate_example(kind, 3, 5, 48)
    b = simulate.simulate_example(kind, 3, 5, 48)
    c = simulate.simulate_example(kind, 3, 6, 48)
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['mask'], b['mask'])
    assert not np.array_equal(a['image'], c['image'])
    channels = (48, 48, 3) if kind == 'natural' else (48, 48)
    assert a['image'].shape == channels and a['image'].dtype == np.uint8
    assert a['mask'].shape == (48, 48) and a['mask'].dtype == np.uint8
    assert set(np.unique(a['mask'])) <= {0, 1}


def test_unknown_kind_and_label_are_rejected_with_the_choices():
    with pytest.raises(ValueError, match='ultrasound'):
        simulate.simulate_example('mri', 0, 0, 32)
    with pytest.raises(ValueError, match='benign'):
        ultrasound.simulate_ultrasound(np.random.default_rng(0), 32, label='cyst')


def test_homogeneous_speckle_envelope_is_rayleigh():
    # Fully developed speckle: envelope mean/std = sqrt(pi / (4 - pi)) = 1.913 (Wagner 1983).
    psf, upsample = b_mode.transducer(128)
    echogenicity = np.ones((128 * upsample, 256), np.float32)
    env = b_mode.envelope(np.random.default_rng(0), echogenicity, psf)
    ratio = env.mean() / env.std()
    assert abs(ratio - math.sqrt(math.pi / (4 - math.pi))) < 0.1, ratio
    # Unit echogenicity and a unit-energy PSF give unit mean intensity.
    assert abs(np.mean(env**2) - 1) < 0.1


def test_attenuation_darkens_with_depth_without_gain_compensation():
    psf, upsample = b_mode.transducer(64)
    echogenicity = np.ones((64 * upsample, 64), np.float32)
    env = b_mode.envelope(
        np.random.default_rng(1), echogenicity, psf, attenuation_db=np.full_like(echogenicity, 20.0)
    )
    rows = len(env)
    top, bottom = env[: rows // 5].mean(), env[-rows // 5 :].mean()
    # 20 dB one way over 0.8 of the depth between the band centres: 32 dB round trip.
    assert 20 * np.log10(top / bottom) == pytest.approx(32, abs=3)


def _ultrasound(label, index, size=64):
    return ultrasound.simulate_ultrasound(np.random.default_rng([11, index]), size, label=label)


def test_normal_images_have_no_lesion_and_labels_follow_busi_frequencies():
    assert not _ultrasound('normal', 0)['mask'].any()
    labels = [simulate.simulate_example('ultrasound', 0, i, 16)['label'] for i in range(60)]
    assert 3 <= labels.count('normal') <= 18  # ~15% of 60
    assert labels.count('benign') > labels.count('malignant') > 0


@pytest.mark.parametrize('index', range(5))
def test_benign_lesion_is_hypoechoic_and_wider_than_tall(index):
    example = _ultrasound('benign', index)
    mask = example['mask'].astype(bool)
    rows, cols = np.nonzero(mask)
    assert np.ptp(cols) > np.ptp(rows)
    ring = scipy.ndimage.binary_dilation(mask, iterations=4) & ~mask
    image = example['image'].astype(float)
    assert image[mask].mean() < 0.8 * image[ring].mean()


@pytest.mark.parametrize('index', range(5))
def test_malignant_lesion_casts_a_posterior_shadow(index):
    example = _ultrasound('malignant', index)
    mask, image = example['mask'].astype(bool), example['image'].astype(float)
    rows, cols = np.nonzero(mask)
    height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
    below = slice(rows.max() + 2, min(rows.max() + 2 + height, 64))
    centre = slice(cols.min() + width // 4, cols.max() + 1 - width // 4)
    beside = np.ones(64, bool)
    beside[max(cols.min() - 6, 0) : cols.max() + 7] = False
    assert image[below, centre].mean() < 0.8 * image[below][:, beside].mean()


@pytest.mark.parametrize('index', range(4))
def test_xray_has_two_lungs_right_larger_and_darker_than_mediastinum(index):
    example = simulate.simulate_example('xray', 2, index, 64)
    mask, image = example['mask'].astype(bool), example['image'].astype(float)
    assert 0.2 <= mask.mean() <= 0.4
    components, count = scipy.ndimage.label(mask)
    assert count == 2
    sizes = np.bincount(components.ravel())[1:]
    left_first = np.argsort([np.nonzero(components == i + 1)[1].mean() for i in range(2)])
    # The patient's right lung (image left) is the larger: the heart covers part of the left.
    assert sizes[left_first[0]] > sizes[left_first[1]]
    mediastinum = image[20:45, 30:34]
    assert image[mask].mean() < 0.75 * mediastinum.mean()


@pytest.mark.parametrize('index', range(4))
def test_natural_object_is_the_mask_and_on_top(index):
    size = 64
    example = simulate.simulate_example('natural', 4, index, size)
    mask = example['mask'].astype(bool)
    assert 0.1 <= mask.mean() <= 0.4
    # Replaying the generator: inside the mask is the object, outside the leaves.
    rng = np.random.default_rng([4, index])
    background = natural.dead_leaves(rng, size)
    rgb, object_mask = natural.salient_object(rng, size, background)
    np.testing.assert_array_equal(mask, object_mask)
    np.testing.assert_array_equal(example['image'][mask], np.round(255 * rgb[mask]))
    np.testing.assert_array_equal(example['image'][~mask], np.round(255 * background[~mask]))
    assert not np.array_equal(np.round(255 * background[mask]), example['image'][mask])


def test_natural_speckle_envelope_is_fully_developed_speckle_following_echogenicity():
    # A uniform scene: Rayleigh envelope, mean/std = sqrt(pi / (4 - pi)) = 1.913.
    env, upsample = b_mode.b_mode_envelope(
        np.random.default_rng(0), np.ones((128, 128), np.float32)
    )
    assert env.shape == (128 * upsample, 128)
    assert abs(env.mean() / env.std() - math.sqrt(math.pi / (4 - math.pi))) < 0.1
    assert abs(np.mean(env**2) - 1) < 0.1
    # Mean intensity is echogenicity squared: amplitudes 1 and 0.1 are 20 dB apart.
    echogenicity = np.ones((128, 128), np.float32)
    echogenicity[:, 64:] = 0.1
    env, _ = b_mode.b_mode_envelope(np.random.default_rng(1), echogenicity)
    contrast_db = 10 * np.log10(np.mean(env[:, :56] ** 2) / np.mean(env[:, 72:] ** 2))
    assert contrast_db == pytest.approx(20, abs=1.5)


@pytest.mark.parametrize('index', range(3))
def test_natural_speckle_images_the_natural_scene_with_its_mask(index):
    speckle = simulate.simulate_example('natural_speckle', 4, index, 64)
    plain = simulate.simulate_example('natural', 4, index, 64)
    np.testing.assert_array_equal(speckle['mask'], plain['mask'])
    # The B-mode image shows the scene: grey levels follow the scene's luminance under speckle.
    luminance = plain['image'].astype(np.float32) @ np.array([0.299, 0.587, 0.114])
    smooth = scipy.ndimage.gaussian_filter(speckle['image'].astype(np.float32), 2)
    scene = scipy.ndimage.gaussian_filter(luminance, 2)
    assert np.corrcoef(smooth.ravel(), scene.ravel())[0, 1] > 0.9
    # ... under speckle: where the scene is flat, neighbouring pixels still differ.
    flat = np.abs(np.diff(luminance, axis=1)) < 1
    speckle_steps = np.abs(np.diff(speckle['image'].astype(float), axis=1))
    assert flat.mean() > 0.2 and speckle_steps[flat].mean() > 8


def test_the_imaging_control_has_no_speckle_and_the_speckled_sources_statistics_are_rayleigh():
    """A uniform scene through the chain: speckle gives mean/std 1.91 (Rayleigh), the
    imaging-chain control's expected envelope is nearly constant (mean/std far above it);
    both keep the echogenicity's 20 dB step as mean intensity."""
    uniform = np.ones((128, 128), np.float32)
    speckled, upsample = b_mode.b_mode_envelope(np.random.default_rng(0), uniform)
    control, control_upsample = b_mode.expected_b_mode_envelope(uniform)
    assert control.shape == speckled.shape and control_upsample == upsample
    rayleigh = math.sqrt(math.pi / (4 - math.pi))
    assert abs(speckled.mean() / speckled.std() - rayleigh) < 0.1
    inner = control[32:-32, 32:-32]
    assert inner.mean() / inner.std() > 20 * rayleigh
    assert np.mean(inner**2) == pytest.approx(np.mean(speckled**2), rel=0.1)
    step = np.ones((128, 128), np.float32)
    step[:, 64:] = 0.1
    control, _ = b_mode.expected_b_mode_envelope(step)
    contrast_db = 10 * np.log10(np.mean(control[:, :56] ** 2) / np.mean(control[:, 72:] ** 2))
    assert contrast_db == pytest.approx(20, abs=1.0)


@pytest.mark.parametrize('index', range(2))
def test_the_imaging_control_shares_the_speckled_sets_scene_mask_and_display(index):
    speckle = simulate.simulate_example('natural_speckle', 4, index, 64)
    control = simulate.simulate_example('natural_imaging', 4, index, 64)
    np.testing.assert_array_equal(speckle['mask'], control['mask'])
    # The same scene and display settings: the speckle-averaged images agree ...
    smooth = lambda x: scipy.ndimage.gaussian_filter(x['image'].astype(np.float32), 3)
    assert np.corrcoef(smooth(speckle).ravel(), smooth(control).ravel())[0, 1] > 0.9
    # ... but only the speckled one has texture where the scene is flat.
    plain = simulate.simulate_example('natural', 4, index, 64)
    luminance = plain['image'].astype(np.float32) @ np.array([0.299, 0.587, 0.114])
    flat = np.abs(np.diff(luminance, axis=1)) < 1
    steps = lambda x: np.abs(np.diff(x['image'].astype(float), axis=1))[flat].mean()
    assert steps(speckle) > 8 > 3 * steps(control)
