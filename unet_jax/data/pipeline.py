"""Loads a data set into memory as train/val/test splits, preprocessed the same way for every set.

The order of operations is fixed so that every choice is reproducible from the config:
  1. examples: a TFDS build (built on first use into data_dir) or the folder set, preprocessed
     (step 6); with `drop_normal`, cases without a lesion (labelled normal, or an empty mask at
     the model's input size) are left out before any split is drawn;
  2. near-duplicate clusters of the kept cases (`duplicates.find_clusters`, on the preprocessed
     images), each kept in one fold and one split (`allow_near_duplicates` turns that off);
  3.-5. the test split (official, seeded or an outer fold), the validation split and the nested
     training subset, drawn on the clusters: unet_jax.data.split_assignment;
  6. preprocessing: grey/RGB conversion, resize (optionally aspect-preserving with a pad),
     per-image normalisation to zero mean and unit std.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from unet_jax.data import builders, duplicates, fields, folder, split_assignment

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


def _normal_cases(arrays: dict[str, dict]) -> set[str]:
    """Cases without a lesion: labelled 'normal', or with an empty mask at the model's input
    size (what scoring counts as a normal image)."""
    return {
        str(id_)
        for a in arrays.values()
        for id_, label, mask in zip(a['ids'], a['labels'], a['mask'])
        if label == 'normal' or not mask.any()
    }


def near_duplicate_bits(data_config) -> int:
    """The hash distance within which a set's images are near-duplicates: the config's, or with
    -1 (and in configs written before the field existed) the set's own."""
    bits = int(data_config.get('near_duplicate_bits', -1))
    if bits == -1:
        return duplicates.set_near_duplicate_bits(data_config.name)
    if not 0 <= bits < duplicates.HASH_BITS:
        raise ValueError(
            f'config.data.near_duplicate_bits={bits} must be -1 (the set\'s own) or in '
            f'0..{duplicates.HASH_BITS - 1} (bits of the perceptual hash).'
        )
    return bits


def near_duplicates(
    arrays: Mapping[str, dict], kept: set[str], *, max_distance: int
) -> duplicates.Grouping:
    """The near-duplicate clusters among the `kept` cases of a set's preprocessed arrays."""
    ids, images = [], []
    for a in arrays.values():
        for id_, image in zip(a['ids'], a['image']):
            if str(id_) in kept:
                ids.append(str(id_))
                images.append(image)
    bits = duplicates.hash_images(images)
    return duplicates.find_clusters(ids, bits, max_distance=max_distance)


_CASES: dict[str, tuple] = {}  # the process's preprocessed cases, by their fields
_MAX_CACHED_SETS = 4


def load_splits(data_config: ml_collections.ConfigDict, *, in_channels: int) -> dict[str, Split]:
    """train/val/test splits of `config.data` in memory, preprocessed (see the module doc).

    The preprocessed cases and their near-duplicate clusters are kept for the process, so that
    the runs of a study that differ only in split fields (folds, subsets, seeds) read,
    preprocess and hash a set once."""
    arrays, official, group_of = _cases_and_clusters(data_config, in_channels)
    return {
        split: _gather(arrays, kept)
        for split, kept in split_assignment.assign_splits(official, data_config, group_of).items()
    }


def _cases_and_clusters(data_config, in_channels: int):
    """(arrays, official ids, near-duplicate cluster of each case), cached by every field but
    split_assignment.SPLIT_FIELDS."""
    fields = {
        k: v for k, v in data_config.to_dict().items() if k not in split_assignment.SPLIT_FIELDS
    }
    key = json.dumps([fields, in_channels], sort_keys=True, default=str)
    if key not in _CASES:
        arrays, official = _load_cases(data_config, in_channels)
        group_of = {}
        if not data_config.get('allow_near_duplicates', False):
            grouping = near_duplicates(
                arrays,
                {i for ids in official.values() for i in ids},
                max_distance=near_duplicate_bits(data_config),
            )
            logging.info('%s: %s, each kept in one split.', data_config.name, grouping.summary())
            group_of = grouping.group_of()
        while len(_CASES) >= _MAX_CACHED_SETS:
            _CASES.pop(next(iter(_CASES)))
        _CASES[key] = (arrays, official, group_of)
    return _CASES[key]


def load_all(data_config: ml_collections.ConfigDict, *, in_channels: int) -> Split:
    """Every case of `config.data` (official splits pooled, normal cases left out with
    `drop_normal`), preprocessed as load_splits does, in sorted id order: an external test set,
    which no run trains or selects on."""
    arrays, official = _load_cases(data_config, in_channels)
    return _gather(arrays, sorted(i for ids in official.values() for i in ids))


def _load_cases(data_config, in_channels: int) -> tuple[dict[str, dict], dict[str, list[str]]]:
    """(preprocessed arrays per official split, the kept case ids per official split)."""
    if in_channels not in (1, 3):
        raise ValueError(f'config.model.in_channels={in_channels}: use 1 (grey) or 3 (RGB).')
    if data_config.name == 'folder':
        arrays = _load_folder(data_config, in_channels)
    else:
        arrays = _load_tfds(data_config, in_channels)
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
    return arrays, official


def _gather(arrays: dict[str, dict], kept: list[str]) -> Split:
    where = {str(i): (split, k) for split, a in arrays.items() for k, i in enumerate(a['ids'])}
    images = np.stack([arrays[where[i][0]]['image'][where[i][1]] for i in kept])
    masks = np.stack([arrays[where[i][0]]['mask'][where[i][1]] for i in kept])
    return Split(image=images, mask=masks, ids=list(kept))
