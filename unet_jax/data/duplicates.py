"""Near-duplicate images: their fingerprints, and the clusters that splits keep together.

Two images are the same when their preprocessed arrays (what the model sees) are equal (SHA-1
of their bytes), and nearly the same when their perceptual hashes are close. The perceptual
hash is a DCT hash: the image (grey) shrunk to 32x32, its 16x16 lowest-frequency DCT
coefficients but the constant one, each compared with their median: 255 bits (a distance is
always even). Equal arrays have equal hashes, so exact duplicates are near-duplicates at
distance 0. (The 8x8 hash usual for photos cannot tell chest radiographs apart: different JSRT
patients differ in as few as 4 of its 63 bits.)

Two images are near-duplicates when their hashes differ in at most `NEAR_DUPLICATE_BITS` bits
(26, about 10 %), or the set's own distance (its catalogue entry, or `data.
near_duplicate_bits`), because the gap between frames of one scan and different scans depends on
the modality. Measured at 128x128 on the complete sets: different JSRT radiographs differ in 44
bits or more (no pair closer), different simulated chest radiographs in 30 or more, different
ECSSD photos in 90 or more, different simulated ultrasound images in 80 or more. In BUSI (647
images with a lesion) frames of one lesion (consecutive case numbers, the same calipers and
labels) lie at every distance up to about 80 bits: the 30 pairs between 28 and 80 bits that were
looked at were all the same lesion, and most pairs lie at 88-130. BUSI therefore groups at 64
bits (116 clusters of 255 images; at 26 bits 96 clusters of 207), every other set at 26.

A cluster is a connected group of near-duplicates: a ~ b and b ~ c put a, b and c in one cluster
even when a and c are further apart. The split assignment (`split_assignment.assign_splits`)
puts every cluster into one fold and one split; the leak check (`leakage`) reports how many were
grouped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
import dataclasses
import hashlib
from typing import Any

import numpy as np
from PIL import Image
import scipy.fft

from unet_jax.data import catalogue

HASH_SIZE = 16  # side of the block of low-frequency DCT coefficients
HASH_BITS = HASH_SIZE * HASH_SIZE - 1
NEAR_DUPLICATE_BITS = catalogue.NEAR_DUPLICATE_BITS  # 26, about 10 % of HASH_BITS
_SHRINK = 32
_CHUNK = 2048
_SHOWN = 10


def set_near_duplicate_bits(name: str) -> int:
    """The hash distance within which images of set `name` are near-duplicates (its catalogue
    entry's; a folder set's: NEAR_DUPLICATE_BITS)."""
    entry = catalogue.get(name)
    return entry.near_duplicate_bits if entry else NEAR_DUPLICATE_BITS


def perceptual_hash(image: np.ndarray) -> np.ndarray:
    """The 255-bit DCT hash (bool) of an image [H, W, C] (see the module docstring)."""
    grey = np.asarray(image, np.float32).mean(axis=-1)
    small = np.asarray(Image.fromarray(grey, 'F').resize((_SHRINK, _SHRINK), Image.BOX))
    coefficients = scipy.fft.dctn(small, norm='ortho')[:HASH_SIZE, :HASH_SIZE].ravel()[1:]
    return coefficients > np.median(coefficients)


def hash_images(images: Iterable[np.ndarray]) -> np.ndarray:
    """bool [N, HASH_BITS]: the perceptual hash of each image."""
    bits = [perceptual_hash(image) for image in images]
    return np.asarray(bits, bool).reshape(len(bits), HASH_BITS)


def digest(image: np.ndarray) -> str:
    """SHA-1 of a preprocessed image's bytes: equal for equal arrays only."""
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def close_pairs(a: np.ndarray, b: np.ndarray, max_distance: int) -> Iterable[tuple[int, int, int]]:
    """(i, j, distance) of rows of a and b whose Hamming distance is <= max_distance."""
    signs_b = np.where(b, 1.0, -1.0).astype(np.float32).T
    for start in range(0, len(a), _CHUNK):
        signs_a = np.where(a[start : start + _CHUNK], 1.0, -1.0).astype(np.float32)
        distance = np.rint((HASH_BITS - signs_a @ signs_b) / 2).astype(int)
        for i, j in zip(*np.nonzero(distance <= max_distance)):
            yield start + int(i), int(j), int(distance[i, j])


def _components(n: int, edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    """The connected components (of more than one node) of a graph on 0..n-1, sorted."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in edges:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(root(i), []).append(i)
    return sorted(m for m in members.values() if len(m) > 1)


@dataclasses.dataclass(frozen=True)
class Grouping:
    """The near-duplicate clusters of one set: each a sorted tuple of case ids (two or more)."""

    num_cases: int  # cases compared
    clusters: tuple[tuple[str, ...], ...]
    near_duplicate_bits: int = NEAR_DUPLICATE_BITS  # the largest hash distance of a pair

    @property
    def num_clusters(self) -> int:
        return len(self.clusters)

    @property
    def num_images(self) -> int:
        """Images in a cluster (each cluster counts all its members)."""
        return sum(len(c) for c in self.clusters)

    def group_of(self) -> dict[str, str]:
        """{case id: the first id of its cluster} for every clustered case (others are alone)."""
        return {id_: cluster[0] for cluster in self.clusters for id_ in cluster}

    def summary(self) -> str:
        """One line: '12 near-duplicate clusters of 27 images (of 647): a ~ b; c ~ d ~ e; ...'."""
        if not self.clusters:
            return f'no near-duplicate clusters among {self.num_cases} images'
        shown = '; '.join(' ~ '.join(c) for c in self.clusters[:_SHOWN])
        more = f'; ... ({self.num_clusters} in all)' if self.num_clusters > _SHOWN else ''
        return (
            f'{self.num_clusters} near-duplicate clusters of {self.num_images} images '
            f'(of {self.num_cases}): {shown}{more}'
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            'num_cases': self.num_cases,
            'near_duplicate_bits': self.near_duplicate_bits,
            'num_clusters': self.num_clusters,
            'num_images': self.num_images,
            'clusters': [list(c) for c in self.clusters],
        }


def find_clusters(
    ids: Sequence[str], bits: np.ndarray, *, max_distance: int = NEAR_DUPLICATE_BITS
) -> Grouping:
    """The near-duplicate clusters among images with perceptual hashes `bits` [N, HASH_BITS]
    (exact duplicates included: their hashes are equal)."""
    ids = [str(i) for i in ids]
    edges = ((i, j) for i, j, _ in close_pairs(bits, bits, max_distance) if i < j)
    clusters = (tuple(sorted(ids[k] for k in c)) for c in _components(len(ids), edges))
    return Grouping(len(ids), tuple(sorted(clusters)), max_distance)
