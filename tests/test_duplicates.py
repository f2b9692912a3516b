"""Near-duplicate fingerprints and clusters (unet_jax.data.duplicates)."""

import numpy as np

from tests.test_leakage import _images  # standardised smooth random scenes
from unet_jax.data import duplicates


def test_perceptual_hash_tells_near_duplicates_from_other_images():
    images = _images(30, 3)
    bits = duplicates.hash_images(images)
    assert bits.shape == (30, duplicates.HASH_BITS)
    others = [np.sum(bits[i] != bits[j]) for i in range(30) for j in range(i + 1, 30)]
    assert min(others) > duplicates.NEAR_DUPLICATE_BITS
    brighter = duplicates.perceptual_hash(images[0] * 0.8 + 0.3)  # gain and offset: same hash
    np.testing.assert_array_equal(brighter, bits[0])


def test_clusters_are_connected_groups_of_near_duplicates_and_exact_copies():
    """a ~ b and b ~ c make one cluster {a, b, c}; an exact copy is a near-duplicate at 0 bits;
    every other image is in no cluster."""
    images = _images(12, 5)
    noise = np.random.default_rng(9).standard_normal(images.shape[1:])
    images[4] = images[3] + 0.05 * noise  # 3 ~ 4
    images[5] = images[4] + 0.05 * np.roll(noise, 3)  # 4 ~ 5
    images[9] = images[7]  # an exact copy
    ids = [f'case{i:02d}' for i in range(12)]
    grouping = duplicates.find_clusters(ids, duplicates.hash_images(images))
    assert grouping.clusters == (('case03', 'case04', 'case05'), ('case07', 'case09'))
    assert (grouping.num_clusters, grouping.num_images, grouping.num_cases) == (2, 5, 12)
    assert grouping.group_of() == {
        'case03': 'case03',
        'case04': 'case03',
        'case05': 'case03',
        'case07': 'case07',
        'case09': 'case07',
    }
    assert grouping.summary().startswith(
        '2 near-duplicate clusters of 5 images (of 12): case03 ~ case04 ~ case05; case07 ~ case09'
    )
    assert grouping.to_dict()['clusters'] == [['case03', 'case04', 'case05'], ['case07', 'case09']]
    alone = duplicates.find_clusters(ids[:3], duplicates.hash_images(images[:3]))
    assert alone.clusters == () and alone.summary() == 'no near-duplicate clusters among 3 images'


def test_the_distance_decides_what_is_a_near_duplicate():
    """A frame further from its scan than 26 bits is one only at a larger distance (BUSI's)."""
    images = _images(6, 2)
    noise = np.random.default_rng(4).standard_normal(images.shape[1:])
    images[5] = images[0] + 0.2 * noise  # 32 bits from images[0]
    bits = duplicates.hash_images(images)
    distance = int(np.sum(bits[0] != bits[5]))
    assert duplicates.NEAR_DUPLICATE_BITS < distance <= duplicates.set_near_duplicate_bits('busi')
    ids = [str(i) for i in range(6)]
    assert duplicates.find_clusters(ids, bits).clusters == ()
    busi = duplicates.set_near_duplicate_bits('busi')
    wide = duplicates.find_clusters(ids, bits, max_distance=busi)
    assert wide.clusters == (('0', '5'),) and wide.near_duplicate_bits == 64
