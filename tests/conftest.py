"""Shared fixtures: tiny data trees in the layouts of the real releases (generated, never real)."""

from __future__ import annotations

import os
from pathlib import Path
import tempfile

import numpy as np
from PIL import Image
import pytest

# XLA:CPU compiles slowly and many tests compile the same tiny programs: share a persistent
# compilation cache between tests, xdist workers and the subprocesses they start.
os.environ.setdefault(
    'JAX_COMPILATION_CACHE_DIR', os.path.join(tempfile.gettempdir(), 'unet_jax_test_xla_cache')
)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# TFDS builds of the tests go to a folder of their own per xdist worker (two workers building
# the same set into one folder would race), never into the user's ~/tensorflow_datasets.
os.environ.setdefault(
    'UNET_JAX_DATA_DIR',
    os.path.join(
        tempfile.gettempdir(),
        'unet_jax_test_data_' + os.environ.get('PYTEST_XDIST_WORKER', 'main'),
    ),
)

# Layout name -> number of cases its fixture holds, per official split.
LAYOUT_SPLITS = {
    'busi': {'train': 6},
    'dataset_b': {'train': 5},
    'jsrt': {'train': 4, 'val': 2, 'test': 3},
    'montgomery': {'train': 5},
    'shenzhen': {'train': 4},
    'ecssd': {'train': 5},
    'duts': {'train': 4, 'test': 3},
    'xpie': {'train': 5},
    'msra10k': {'train': 5},
}


def blob_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random filled rectangle, uint8 {0, 1}."""
    top, left = rng.integers(0, h // 2), rng.integers(0, w // 2)
    mask = np.zeros((h, w), np.uint8)
    mask[top : top + h // 3, left : left + w // 3] = 1
    return mask


def save_image(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    image.save(path)


def _image(rng, h, w, rgb=False) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3) if rgb else (h, w), dtype=np.uint8)


def make_layout(name: str, root: Path, seed: int = 0) -> dict:
    """Writes a tiny tree in the layout of `name` under root; returns what a reader should find:
    {'root': folder to point manual_dir at, 'masks': {id: union mask}}."""
    rng = np.random.default_rng(seed)
    masks = {}
    h, w = 24, 32

    def pair(image_path: Path, mask_paths: list[Path], case_id: str, rgb=False, scale=1, mode=None):
        save_image(image_path, _image(rng, h, w, rgb))
        union = np.zeros((h, w), np.uint8)
        for mask_path in mask_paths:
            m = blob_mask(rng, h, w)
            union |= m
            save_image(mask_path, m * scale, mode)
        masks[case_id] = union

    if name == 'busi':
        base = root / 'Dataset_BUSI_with_GT'
        for label, n in (('benign', 3), ('malignant', 2), ('normal', 1)):
            for i in range(1, n + 1):
                stem = f'{label} ({i})'
                extra = [base / label / f'{stem}_mask_1.png'] if (label, i) == ('benign', 2) else []
                # BUSI mixes 1-bit and RGB masks.
                pair(
                    base / label / f'{stem}.png',
                    [base / label / f'{stem}_mask.png'] + extra,
                    stem,
                    scale=255,
                    mode='1' if label != 'normal' else 'RGB',
                )
        return {'root': root, 'masks': masks}
    if name == 'dataset_b':
        for i in range(1, 6):
            pair(
                root / 'original' / f'{i:06d}.png',
                [root / 'GT' / f'{i:06d}.png'],
                f'{i:06d}',
                scale=255,
            )
    elif name == 'jsrt':
        base = root / 'JSRT_lung'
        k = 0
        for split, n in (('Train', 4), ('Val', 2), ('Test', 3)):
            for _ in range(n):
                k += 1
                stem = f'JPCLN{k:03d}'
                pair(
                    base / split / 'Images' / f'{stem}.png',
                    [base / split / 'Labels' / f'{stem}_labels.png'],
                    stem,
                )  # 0/1 masks.
        return {'root': base, 'masks': masks}
    elif name == 'montgomery':
        base = root / 'MontgomerySet'
        for i in range(1, 6):
            stem = f'MCUCXR_{i:04d}_0'
            pair(
                base / 'CXR_png' / f'{stem}.png',
                [
                    base / 'ManualMask' / 'leftMask' / f'{stem}.png',
                    base / 'ManualMask' / 'rightMask' / f'{stem}.png',
                ],
                stem,
                scale=255,
            )
    elif name == 'shenzhen':
        for i in range(1, 5):
            stem = f'CHNCXR_{i:04d}_0'
            pair(
                root / 'CXR_png' / f'{stem}.png',
                [root / 'mask' / f'{stem}_mask.png'],
                stem,
                scale=255,
            )
        save_image(root / 'CXR_png' / 'CHNCXR_0099_1.png', _image(rng, h, w))  # No mask released.
    elif name == 'ecssd':
        for i in range(1, 6):
            pair(
                root / 'images' / f'{i:04d}.jpg',
                [root / 'ground_truth_mask' / f'{i:04d}.png'],
                f'{i:04d}',
                rgb=True,
                scale=255,
            )
    elif name == 'duts':
        for split, n in (('TR', 4), ('TE', 3)):
            for i in range(n):
                stem = f'sun_{split.lower()}{i}'
                pair(
                    root / f'DUTS-{split}' / f'DUTS-{split}-Image' / f'{stem}.jpg',
                    [root / f'DUTS-{split}' / f'DUTS-{split}-Mask' / f'{stem}.png'],
                    stem,
                    rgb=True,
                    scale=255,
                )
    elif name == 'xpie':
        for i in range(1, 6):
            pair(root / 'img' / f'{i}.jpg', [root / 'gt' / f'{i}.png'], str(i), rgb=True, scale=255)
    elif name == 'msra10k':
        base = root / 'MSRA10K_Imgs_GT' / 'Imgs'
        for i in range(1, 6):
            pair(base / f'{i}.jpg', [base / f'{i}.png'], str(i), rgb=True, scale=255)
        return {'root': root / 'MSRA10K_Imgs_GT', 'masks': masks}
    else:
        raise ValueError(name)
    return {'root': root, 'masks': masks}


@pytest.fixture
def layout(tmp_path):
    """layout(name) -> {'root', 'masks'}: a fixture tree of that real set under tmp_path."""
    return lambda name, seed=0: make_layout(name, tmp_path / f'{name}_src', seed)
