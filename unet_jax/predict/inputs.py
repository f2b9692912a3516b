"""The images to segment and their masks: found (folders, globs, files; files named as masks
are never images), paired by the folder set's code and settings, and every one read and checked
before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import glob
import os
from pathlib import Path
from typing import Any

from absl import logging
import ml_collections
import numpy as np

from unet_jax.data import fields, imageio
from unet_jax.data import folder as folder_set
from unet_jax.predict.problems import PredictError, problem_list, show

_ACCEPTED = ', '.join(imageio.IMAGE_SUFFIXES)
_NAMING = folder_set.FLAG_NAMING
# The folder set's settings (config.data.folder) that predict takes as flags of the same names.
PAIRING_FLAGS = ('pairing', 'mask_suffix', 'regex', 'mask_threshold', 'resize_masks', 'skip_bad')


def pairing_settings(**settings: Any) -> ml_collections.ConfigDict:
    """The folder set's pairing settings (`config.data.folder`, its defaults) with `settings`
    (pairing, mask_suffix, regex, mask_threshold, resize_masks, skip_bad) set."""
    config = fields.default_folder_config().to_dict()
    unknown = sorted(set(settings) - set(PAIRING_FLAGS))
    if unknown:
        raise TypeError(f'pairing_settings: no setting {unknown}; valid: {PAIRING_FLAGS}.')
    return ml_collections.ConfigDict({**config, **settings})


def _image_files(candidates: Sequence[Path]) -> list[Path]:
    return sorted(
        p
        for p in candidates
        if p.is_file() and not p.name.startswith('.') and p.suffix.lower() in imageio.IMAGE_SUFFIXES
    )


def _expand(spec: str, flag: str) -> list[Path]:
    """Image files of a folder (non-recursive), a glob (`**` recurses) or one file."""
    path = Path(spec).expanduser()
    if path.is_dir():
        candidates = list(path.iterdir())
    elif path.is_file():
        if path.suffix.lower() not in imageio.IMAGE_SUFFIXES:
            raise PredictError(f'--{flag}: {spec} is not an image file (accepted: {_ACCEPTED}).')
        return [path]
    elif glob.has_magic(spec):
        candidates = [Path(p) for p in glob.glob(str(path), recursive=True)]
    else:
        raise PredictError(
            f'--{flag}: {spec!r} does not exist (expected a folder, a glob or an image file).'
        )
    files = _image_files(candidates)
    if not files:
        others = sorted(p.name for p in candidates if p.is_file())
        holds = f'it holds: {show(others)}' if others else 'it is empty'
        raise PredictError(f'--{flag}: no images in {spec!r} ({holds}). Accepted: {_ACCEPTED}.')
    return files


def spec_list(inputs: str | Sequence[str]) -> list[str]:
    return [str(inputs)] if isinstance(inputs, (str, os.PathLike)) else [str(s) for s in inputs]


def find_inputs(inputs: str | Sequence[str], mask_suffix: str = '_mask') -> list[Path]:
    """The images to segment from folders, globs and files; each output stem must be unique.

    Files named as masks (`<stem><mask_suffix>[_<k>]`) are never images: they are left out
    and logged (`mask_suffix=''` keeps them)."""
    specs = spec_list(inputs)
    if not specs:
        raise PredictError('--input is empty: pass a folder, a glob or image files.')
    files = sorted({f for spec in specs for f in _expand(spec, 'input')})
    masks = [f for f in files if mask_suffix and folder_set.mask_owner(f.stem, mask_suffix)]
    if masks and len(masks) == len(files):
        raise PredictError(
            f'Every --input file is named as a mask (<stem>{mask_suffix}[_<k>]): '
            f'{show(masks)}. Point --input at the images, or set --mask_suffix to the '
            "masks' suffix if these are images."
        )
    if masks:
        logging.info(
            'Not segmenting %d --input files named as masks (<stem>%s[_<k>]; --mask_suffix): %s',
            len(masks),
            mask_suffix,
            show(masks),
        )
    files = [f for f in files if f not in masks]
    by_stem: dict[str, list[Path]] = {}
    for f in files:
        by_stem.setdefault(f.stem, []).append(f)
    clashes = [' and '.join(map(str, v)) for v in by_stem.values() if len(v) > 1]
    if clashes:
        raise PredictError(
            f'Several inputs share a file stem, so their outputs would collide: '
            f'{show(clashes)}. Predict them into separate --output folders.'
        )
    return files


def pair_masks(
    images: Sequence[Path], masks: str, settings: ml_collections.ConfigDict
) -> tuple[list[Path], dict[Path, tuple[Path, ...]], dict[Path, str]]:
    """(images, their mask files, skipped image -> reason) by the folder set's pairing code
    (`folder_set.pair_files`, messages in predict's flags). Masks of images not in --input
    are ignored; files that --input and --masks both match are masks, never images."""
    mask_files = _expand(masks, 'masks')
    report = folder_set.Report()
    try:
        pairs = folder_set.pair_files(
            list(images), mask_files, settings, report, _NAMING, lonely_masks='ignore'
        )
    except folder_set.FolderError as e:
        raise PredictError(f'--masks={masks!r}: {e}') from None
    skipped = {
        Path(file): f'{file}: {reason} (pairing={settings.pairing!r})'
        for reason, files in report.skipped.items()
        if reason.startswith('images')
        for file in files
    }
    if not pairs:
        raise PredictError(f'No --input image has a mask in --masks={masks!r}.')
    return [image for _, image, _ in pairs], {image: m for _, image, m in pairs}, skipped


def _read_error(error: imageio.ImageReadError) -> str:
    return str(error).replace('Lower the mask threshold', 'Lower --mask_threshold')


def read_input(
    image: Path, masks: Sequence[Path] | None, settings: ml_collections.ConfigDict
) -> tuple[np.ndarray, np.ndarray | None]:
    """An image (uint8 RGB, own size) and the OR of its masks (folder set rules), or
    PredictError naming the file and the fix."""
    try:
        if masks is None:
            return imageio.read_image(image, channels=3), None
        return folder_set.read_pair(image, tuple(masks), settings, channels=3)
    except imageio.ImageReadError as e:
        raise PredictError(_read_error(e)) from None


def check_inputs(
    images: Sequence[Path],
    mask_files: Mapping[Path, Sequence[Path]] | None,
    settings: ml_collections.ConfigDict,
) -> dict[Path, str]:
    """Reads every image and its masks as the segmenting will (decoded, thresholded, sized):
    image -> what is wrong, before anything is written. Nothing is kept in memory."""
    problems = {}
    for image in images:
        try:
            read_input(image, masks_of(image, mask_files), settings)
        except PredictError as e:
            problems[image] = str(e)
    return problems


def masks_of(image: Path, mask_files: Mapping[Path, Sequence[Path]] | None):
    return None if mask_files is None else mask_files[image]


def plan_inputs(
    inputs: str | Sequence[str], masks: str, settings: ml_collections.ConfigDict
) -> tuple[list[Path], dict[Path, tuple[Path, ...]] | None, dict[Path, str]]:
    """(images, their masks or None without --masks, skipped image -> reason): found, paired
    and every file read and checked; without skip_bad any problem is one error listing all."""
    images = find_inputs(inputs, settings.mask_suffix)
    mask_files, skipped = None, {}
    if masks:
        images, mask_files, skipped = pair_masks(images, masks, settings)
    skipped.update(check_inputs(images, mask_files, settings))
    if skipped and not settings.skip_bad:
        raise PredictError(
            f'{len(skipped)} of {len(images)} inputs cannot be segmented or scored (nothing '
            f'was written):\n{problem_list(skipped)}\nFix or remove these files, or pass '
            '--skip_bad to segment the others.'
        )
    images = [p for p in images if p not in skipped]
    if not images:
        raise PredictError(f'No input can be segmented:\n{problem_list(skipped)}')
    return images, mask_files, skipped
