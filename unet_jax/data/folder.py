"""The generic folder set: a user's own images and masks, found by folder or glob and paired.

It is read directly (not through a TFDS builder): a user's folder changes while they work on
it, and a cached build keyed by the folder name would silently serve stale data; reading it
afresh is also what checks every file and reports what is wrong with it. Loading
`config.data.folder` gives `(examples, report)`; nothing is dropped without being counted in the
report, and without `skip_bad` every problem is an error naming the files.

Pairing rules (`config.data.folder.pairing`):
  'stem'    an image and its mask have the same file stem (`a.jpg` <-> `a.png`), in two folders.
  'suffix'  the mask stem is the image stem plus `mask_suffix`, optionally followed by `_<k>`
            for further masks of the same case, which are OR-ed (`a.png` <-> `a_mask.png`,
            `a_mask_1.png`). Images and masks may share one folder.
  'regex'   `regex` has a named group `key`, searched in each file stem; files with the same key
            pair up (several masks of one key are OR-ed).
"""

from __future__ import annotations

import collections
import dataclasses
import glob
from pathlib import Path
import re

import ml_collections
import numpy as np

from unet_jax.data import imageio
from unet_jax.data.fields import PAIRINGS

_SHOWN = 10
_FIX = 'set config.data.folder.skip_bad=True to skip such files (a summary is logged)'


class FolderError(ValueError):
    """The folder set cannot be read as configured; the message says which files and why."""


@dataclasses.dataclass(frozen=True)
class Example:
    id: str
    image: np.ndarray  # uint8 [H, W, C]
    mask: np.ndarray  # uint8 [H, W] in {0, 1}


@dataclasses.dataclass
class Report:
    """What was read and what was skipped (with skip_bad), by reason."""

    num_read: int = 0
    skipped: dict[str, list[str]] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(list)
    )

    @property
    def num_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def summary(self) -> str:
        text = f'folder set: read {self.num_read} image/mask pairs, skipped {self.num_skipped}'
        for reason, files in self.skipped.items():
            text += f'\n  {len(files)} {reason}: {_show(files)}'
        return text


def _show(files) -> str:
    files = [str(f) for f in files]
    return ', '.join(files[:_SHOWN]) + (
        f' ... ({len(files)} in all)' if len(files) > _SHOWN else ''
    )


def mask_owner(stem: str, suffix: str) -> str | None:
    """The image stem that a mask file stem `<image stem><suffix>[_<k>]` belongs to, or None.

    `a_mask` and `a_mask_1` belong to `a` (BUSI's further lesions of one case); with suffix ''
    a mask belongs to the image of the same stem. The one rule for the folder set, the BUSI
    builder and predict.
    """
    match = re.fullmatch(rf'(.+){re.escape(suffix)}(_\d+)?', stem)
    return match.group(1) if match else None


def masks_by_owner(masks: list[Path], suffix: str) -> dict[str, list[Path]]:
    """Mask files grouped by the image stem they belong to (sorted); others are left out."""
    groups: dict[str, list[Path]] = collections.defaultdict(list)
    for path in masks:
        owner = mask_owner(path.stem, suffix)
        if owner is not None:
            groups[owner].append(path)
    return {owner: sorted(paths) for owner, paths in groups.items()}


def find_files(spec: str, what: str) -> list[Path]:
    """Image files of a folder (non-recursive) or a glob pattern (`**` recurses), sorted."""
    if not spec:
        raise FolderError(
            f'config.data.folder.{what} is empty: set it to a folder or a glob of '
            f'{what} (e.g. /data/my_set/{what}/ or "/data/my_set/*.png").'
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        candidates = list(path.iterdir())
    elif glob.has_magic(spec):
        candidates = [Path(p) for p in glob.glob(str(path), recursive=True)]
    else:
        raise FolderError(
            f'config.data.folder.{what}={spec!r} is neither a folder nor a glob '
            'pattern that exists. Point it at the folder of your ' + what + '.'
        )
    files = sorted(
        p
        for p in candidates
        if p.is_file() and not p.name.startswith('.') and p.suffix.lower() in imageio.IMAGE_SUFFIXES
    )
    if not files:
        others = sorted(p.name for p in candidates if p.is_file())[:_SHOWN]
        raise FolderError(
            f'No {what} found at config.data.folder.{what}={spec!r} (image types: '
            f'{", ".join(imageio.IMAGE_SUFFIXES)})'
            + (f'; it holds: {", ".join(others)}' if others else '; it is empty')
            + '.'
        )
    return files


def _keys(
    files: list[Path],
    key_fn,
    what: str,
    rule: str,
    report: Report,
    skip_bad: bool,
    allow_several: bool,
) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = collections.defaultdict(list)
    unmatched = []
    for f in files:
        key = key_fn(f)
        if key is None:
            unmatched.append(f)
        else:
            groups[key].append(f)
    if unmatched:
        if not skip_bad:
            raise FolderError(
                f'{len(unmatched)} {what} are not named by the pairing rule ({rule}): '
                f'{_show(unmatched)}. Fix the pairing settings, narrow the glob, '
                f'or {_FIX}.'
            )
        report.skipped[f'{what} not named by the pairing rule'] += [str(f) for f in unmatched]
    clashes = {k: v for k, v in groups.items() if len(v) > 1}
    if clashes and not allow_several:
        shown = '; '.join(f'{k}: {_show(v)}' for k, v in list(clashes.items())[:_SHOWN])
        raise FolderError(
            f'Several {what} pair to the same name ({shown}). Each image needs one '
            'name: use a narrower glob or another pairing rule.'
        )
    return groups


def pair_files(
    images: list[Path], masks: list[Path], config: ml_collections.ConfigDict, report: Report
) -> list[tuple[str, Path, tuple[Path, ...]]]:
    """(id, image, masks) per case by the pairing rule; unpaired files are errors or skipped."""
    if config.pairing not in PAIRINGS:
        raise FolderError(f'config.data.folder.pairing={config.pairing!r}; use one of {PAIRINGS}.')
    overlap = set(images) & set(masks)
    if config.pairing == 'suffix':
        if not config.mask_suffix:
            raise FolderError("config.data.folder.mask_suffix is empty; set it (e.g. '_mask').")
        mask_key = lambda p: mask_owner(p.stem, config.mask_suffix)
        images = [p for p in images if p not in overlap or mask_key(p) is None]
        masks = [p for p in masks if mask_key(p) is not None or p not in overlap]
        image_key = lambda p: p.stem
    elif overlap:
        raise FolderError(
            f'The images and masks settings both match {_show(sorted(overlap))}. '
            'Use globs that separate them (e.g. "*.jpg" and "*.png"), or '
            "pairing='suffix' when masks are named <stem>_mask."
        )
    elif config.pairing == 'stem':
        image_key = mask_key = lambda p: p.stem
    else:
        try:
            pattern = re.compile(config.regex)
        except re.error as e:
            raise FolderError(
                f'config.data.folder.regex={config.regex!r} is not a regex: {e}.'
            ) from e
        if 'key' not in pattern.groupindex:
            raise FolderError(
                f'config.data.folder.regex={config.regex!r} needs a named group '
                "`key`, e.g. r'(?P<key>case\\d+)'."
            )
        image_key = mask_key = lambda p: m.group('key') if (m := pattern.search(p.stem)) else None

    rule = {
        'stem': 'same stem',
        'suffix': f'<stem>{config.mask_suffix}[_<k>]',
        'regex': f'regex {config.regex!r}',
    }[config.pairing]
    image_groups = _keys(images, image_key, 'images', rule, report, config.skip_bad, False)
    mask_groups = _keys(
        masks, mask_key, 'masks', rule, report, config.skip_bad, config.pairing != 'stem'
    )
    lonely_images = sorted(str(image_groups[k][0]) for k in image_groups if k not in mask_groups)
    lonely_masks = sorted(
        str(f) for k, v in mask_groups.items() if k not in image_groups for f in v
    )
    for files, what, hint in (
        (lonely_images, 'images without a mask', 'add their masks or fix the pairing rule'),
        (lonely_masks, 'masks without an image', 'remove them or fix the pairing rule'),
    ):
        if files and not config.skip_bad:
            raise FolderError(
                f'{len(files)} {what} (pairing={config.pairing!r}): {_show(files)}. '
                f'To fix: {hint} (config.data.folder.pairing, mask_suffix, regex), '
                f'or {_FIX}.'
            )
        if files:
            report.skipped[what] += files
    return [
        (k, image_groups[k][0], tuple(sorted(mask_groups[k])))
        for k in sorted(image_groups)
        if k in mask_groups
    ]


def read_folder(
    config: ml_collections.ConfigDict, *, channels: int
) -> tuple[list[Example], Report]:
    """Reads every pair of the folder set (uint8, original size); see the module docstring."""
    report = Report()
    images = find_files(config.images, 'images')
    masks = find_files(config.masks or config.images, 'masks')
    examples = []
    for id_, image_path, mask_paths in pair_files(images, masks, config, report):
        try:
            image = imageio.read_image(image_path, channels=channels)
            mask = imageio.read_mask(
                mask_paths,
                threshold=config.mask_threshold,
                size=image.shape[:2],
                resize=config.resize_masks,
                binary=True,
            )
        except imageio.ImageReadError as e:
            if not config.skip_bad:
                raise FolderError(f'{e}\n(or {_FIX})') from e
            report.skipped['unreadable or mismatched files'].append(str(e).splitlines()[0])
            continue
        examples.append(Example(id=id_, image=image, mask=mask))
    report.num_read = len(examples)
    if not examples:
        raise FolderError(f'The folder set has no usable image/mask pairs.\n{report.summary()}')
    return examples, report
