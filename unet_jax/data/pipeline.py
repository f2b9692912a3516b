"""Loads a data set into memory as train/val/test splits, preprocessed the same way for every set.

The order of operations is fixed so that every choice is reproducible from the config:
  1. examples: a TFDS build (built on first use into data_dir) or the folder set, preprocessed
     (step 5); with `drop_normal`, cases without a lesion (labelled normal, or an empty mask at
     the model's input size) are left out before any split is drawn;
  2. test split: the official one where the set has it (JSRT Test, DUTS-TE), else a seeded
     fraction of the cases (`split_seed`; one example per case, so a case never straddles);
  3. validation: the official split (JSRT Val), else a seeded fraction, or fold `fold` of
     `num_folds` for cross-validation (then the official val is pooled with train);
  4. training subset: the first `num_train` of one `subset_seed` permutation, so subsets of
     one seed are nested (n=5 is inside n=10) and curves over n are comparable;
  5. preprocessing: grey/RGB conversion, resize (optionally aspect-preserving with a pad),
     per-image normalisation to zero mean and unit std.
Splits are drawn on sorted case ids, never on record order (TFDS returns records hashed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

from absl import logging
import ml_collections
import numpy as np
from PIL import Image

from unet_jax import io_utils
from unet_jax.data import builders, fields, folder

SPLITS = ('train', 'val', 'test')
# The PIL filter of each of fields.RESIZE_METHODS (config.data.resize).
RESAMPLING = {'bilinear': Image.BILINEAR, 'area': Image.BOX}
# Bump when preprocessing changes, so cached arrays are not reused.
_CACHE_VERSION = 1


@dataclasses.dataclass
class Split:
    """One split in memory: images per-image normalised, masks in {0, 1}."""

    image: np.ndarray  # float32 [N, H, W, C]
    mask: np.ndarray  # float32 [N, H, W, 1]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def preprocess(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    image_size: int,
    in_channels: int,
    resize: str = 'bilinear',
    pad: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 image [H,W,C] and mask [H,W(,1)] -> float32 [S,S,in_channels], [S,S,1].

    The image is normalised per image (zero mean, unit std over its content, so a pad is 0 =
    the mean), which removes gain and exposure differences between scanners and sets.
    """
    if resize not in RESAMPLING:
        raise ValueError(f'config.data.resize={resize!r}; use one of {fields.RESIZE_METHODS}.')
    image = np.asarray(image, np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    mask = np.asarray(mask, np.uint8).reshape(image.shape[:2])
    pil = Image.fromarray(image[..., 0]) if image.shape[-1] == 1 else Image.fromarray(image)
    if in_channels == 1 and pil.mode != 'L':
        pil = pil.convert('L')
    h, w = image.shape[:2]
    if pad:
        scale = image_size / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
    else:
        size = (image_size, image_size)
    pixels = np.asarray(pil.resize(size, RESAMPLING[resize]), np.float32)
    pixels = pixels.reshape(size[1], size[0], -1)
    if in_channels == 3 and pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    elif pixels.shape[-1] != in_channels:
        raise ValueError(f'in_channels={in_channels}: only 1 (grey) and 3 (RGB) are supported.')
    pixels = (pixels - pixels.mean()) / max(float(pixels.std()), 1e-6)
    resized_mask = np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST), np.float32)
    out_image = np.zeros((image_size, image_size, in_channels), np.float32)
    out_mask = np.zeros((image_size, image_size, 1), np.float32)
    top, left = (image_size - size[1]) // 2, (image_size - size[0]) // 2
    out_image[top : top + size[1], left : left + size[0]] = pixels
    out_mask[top : top + size[1], left : left + size[0], 0] = resized_mask > 0
    return out_image, out_mask


def _stack(items, data_config, in_channels: int) -> dict:
    """Preprocesses (id, image, mask, label) items one by one into arrays (original sizes are
    never all held in memory at once)."""
    images, masks, ids, labels = [], [], [], []
    for id_, image, mask, label in items:
        x, y = preprocess(
            image,
            mask,
            image_size=data_config.image_size,
            in_channels=in_channels,
            resize=data_config.resize,
            pad=data_config.pad,
        )
        images.append(x)
        masks.append(y)
        ids.append(id_)
        labels.append(label)
    size, c = data_config.image_size, in_channels
    return {
        'image': np.stack(images) if images else np.zeros((0, size, size, c), np.float32),
        'mask': np.stack(masks) if masks else np.zeros((0, size, size, 1), np.float32),
        'ids': np.array(ids, dtype=str),
        'labels': np.array(labels, dtype=str),
    }


def _tfds_items(source, label_names: tuple[str, ...]):
    for i in range(len(source)):
        record = source[i]
        id_ = record['id'].decode() if isinstance(record['id'], bytes) else str(record['id'])
        label = label_names[int(record['label'])] if 'label' in record else ''
        yield id_, record['image'], record['mask'][..., 0], label


def _cache_path(builder, data_config, in_channels: int, split: str) -> Path:
    key = json.dumps(
        [
            _CACHE_VERSION,
            data_config.image_size,
            in_channels,
            data_config.resize,
            bool(data_config.pad),
        ]
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    # Inside the build's folder, so a removed or rebuilt set never meets an old cache.
    return Path(builder.data_dir) / 'unet_jax_cache' / f'{split}-{digest}.npz'


def _load_tfds(data_config, in_channels: int) -> dict[str, dict]:
    builder = builders.make_builder(
        data_config.name,
        data_dir=data_config.data_dir,
        image_size=data_config.image_size,
        num_examples=data_config.num_examples,
        seed=data_config.seed,
        max_size=data_config.max_size,
        manual_dir=data_config.manual_dir,
    )
    builders.build(builder, manual_dir=data_config.manual_dir)
    sources = None
    label_names = tuple(getattr(builder, 'LABELS', ()))
    out = {}
    for split in builder.info.splits:
        path = _cache_path(builder, data_config, in_channels, split)
        if data_config.cache and path.exists():
            with np.load(path) as f:
                out[split] = {k: f[k] for k in f.files}
            continue
        if sources is None:
            sources = builder.as_data_source()
        out[split] = _stack(_tfds_items(sources[split], label_names), data_config, in_channels)
        if data_config.cache:
            buffer = io.BytesIO()
            np.savez(buffer, **out[split])
            io_utils.write_bytes_atomically(path, buffer.getvalue())
    return out


def _load_folder(data_config, in_channels: int) -> dict[str, dict]:
    examples, report = folder.read_folder(data_config.folder, channels=in_channels)
    (logging.warning if report.num_skipped else logging.info)('%s', report.summary())
    items = ((e.id, e.image, e.mask, '') for e in examples)
    return {'train': _stack(items, data_config, in_channels)}


def _permutation(ids: list[str], seed: int) -> list[str]:
    """A seeded permutation of ids that does not depend on their incoming order."""
    ids = sorted(ids)
    return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]


def _count(fraction: float, n: int, field: str) -> int:
    if not 0 < fraction < 1:
        raise ValueError(f'config.data.{field}={fraction} must be in (0, 1).')
    return max(1, round(fraction * n))


def assign_splits(official: dict[str, list[str]], data_config) -> dict[str, list[str]]:
    """Ids of train/val/test (train already cut to the subset) from the official splits."""
    unknown = set(official) - set(SPLITS)
    if unknown:
        raise ValueError(f'Unexpected splits {sorted(unknown)} in the data set.')
    n_all = sum(len(v) for v in official.values())
    pool = list(official.get('train', []))
    if 'test' in official:
        test = sorted(official['test'])
    else:
        order = _permutation(pool, data_config.split_seed)
        n_test = _count(data_config.test_fraction, n_all, 'test_fraction')
        test, pool = sorted(order[:n_test]), order[n_test:]

    folds, fold = data_config.num_folds, data_config.fold
    if folds and folds > 1:
        if not 0 <= fold < folds:
            raise ValueError(
                f'config.data.fold={fold} must be in 0..{folds - 1} '
                f'(config.data.num_folds={folds}).'
            )
        pool = pool + list(official.get('val', []))
        order = _permutation(pool, data_config.split_seed + 1)
        val = sorted(order[fold::folds])
        val_set = set(val)
        pool = [i for i in order if i not in val_set]
    elif 'val' in official:
        val = sorted(official['val'])
    else:
        order = _permutation(pool, data_config.split_seed + 1)
        n_val = _count(data_config.val_fraction, n_all, 'val_fraction')
        val, pool = sorted(order[:n_val]), order[n_val:]

    train = _permutation(pool, data_config.subset_seed)
    if data_config.num_train > 0:
        if data_config.num_train > len(train):
            raise ValueError(
                f'config.data.num_train={data_config.num_train} but the training split '
                f'of {data_config.name!r} has only {len(train)} cases: set it to at most '
                f'{len(train)}, or -1 for all of them.'
            )
        train = train[: data_config.num_train]
    elif data_config.num_train == 0:
        raise ValueError('config.data.num_train=0: use -1 for all training cases or a positive n.')
    for name, ids in (('training', train), ('validation', val), ('test', test)):
        if not ids:
            raise ValueError(
                f'The {name} split of {data_config.name!r} is empty ({n_all} cases); '
                'use a larger set, or lower config.data.test_fraction and val_fraction.'
            )
    return {'train': train, 'val': val, 'test': test}


def _normal_cases(arrays: dict[str, dict]) -> set[str]:
    """Cases without a lesion: labelled 'normal', or with an empty mask at the model's input
    size (what scoring counts as a normal image)."""
    return {
        str(id_)
        for a in arrays.values()
        for id_, label, mask in zip(a['ids'], a['labels'], a['mask'])
        if label == 'normal' or not mask.any()
    }


def load_splits(data_config: ml_collections.ConfigDict, *, in_channels: int) -> dict[str, Split]:
    """train/val/test splits of `config.data` in memory, preprocessed (see the module doc)."""
    if in_channels not in (1, 3):
        raise ValueError(f'config.model.in_channels={in_channels}: use 1 (grey) or 3 (RGB).')
    if data_config.name == 'folder':
        arrays = _load_folder(data_config, in_channels)
    else:
        arrays = _load_tfds(data_config, in_channels)
    where = {str(i): (split, k) for split, a in arrays.items() for k, i in enumerate(a['ids'])}
    dropped = _normal_cases(arrays) if data_config.drop_normal else set()
    if dropped:
        logging.info(
            '%s: drop_normal leaves out %d normal cases (labelled normal, or an empty mask).',
            data_config.name,
            len(dropped),
        )
    official = {
        split: [str(i) for i in a['ids'] if str(i) not in dropped] for split, a in arrays.items()
    }
    splits = {}
    for split, kept in assign_splits(official, data_config).items():
        images = np.stack([arrays[where[i][0]]['image'][where[i][1]] for i in kept])
        masks = np.stack([arrays[where[i][0]]['mask'][where[i][1]] for i in kept])
        splits[split] = Split(image=images, mask=masks, ids=kept)
    return splits
