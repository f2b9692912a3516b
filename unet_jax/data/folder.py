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

`unet_jax.predict` pairs a user's images and masks with the same code, settings and defaults
(`fields.default_folder_config`); its messages name the settings as flags (`--pairing`) where
the folder set's name config fields (`config.data.folder.pairing`): see `Naming`.
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


class FolderError(ValueError):
    """The folder set cannot be read as configured; the message says which files and why."""


@dataclasses.dataclass(frozen=True)
class Naming:
    """How the user wrote the pairing settings, so that a message names them in their words:
    `config.data.folder.pairing='suffix'` for the folder set, `--pairing=suffix` for predict."""

    prefix: str

    @property
    def is_flag(self) -> bool:
        return self.prefix.startswith('--')

    def field(self, name: str) -> str:
        return f'{self.prefix}{name}'

    def setting(self, name: str, value) -> str:
        """The setting as the user writes it: `config.data.folder.x='v'`, `--x=v` or `--x`."""
        if not self.is_flag:
            return f'{self.prefix}{name}={value!r}'
        return f'--{name}' if value is True else f'--{name}={value}'

    @property
    def verb(self) -> str:
        return 'pass' if self.is_flag else 'set'

    def skip_fix(self) -> str:
        told = 'they are listed' if self.is_flag else 'a summary is logged'
        return f'{self.verb} {self.setting("skip_bad", True)} to skip such files ({told})'


CONFIG_NAMING = Naming('config.data.folder.')
FLAG_NAMING = Naming('--')


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
    naming: Naming,
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
                f'or {naming.skip_fix()}.'
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


def _pairing_keys(images, masks, config, naming: Naming):
    """(images, masks, image key, mask key) of the pairing rule; files that both settings
    match are masks under 'suffix' when named so, and an error under the other rules."""
    if config.pairing not in PAIRINGS:
        raise FolderError(
            f'{naming.setting("pairing", config.pairing)}: unknown pairing; use one of '
            f'{", ".join(PAIRINGS)}.'
        )
    overlap = set(images) & set(masks)
    if config.pairing == 'suffix':
        if not config.mask_suffix:
            raise FolderError(
                f"{naming.field('mask_suffix')} is empty; set it (e.g. "
                f"{naming.setting('mask_suffix', '_mask')})."
            )
        mask_key = lambda p: mask_owner(p.stem, config.mask_suffix)
        images = [p for p in images if p not in overlap or mask_key(p) is None]
        masks = [p for p in masks if mask_key(p) is not None or p not in overlap]
        return images, masks, (lambda p: p.stem), mask_key
    if overlap:
        raise FolderError(
            f'The images and masks settings both match {_show(sorted(overlap))}. '
            'Use globs that separate them (e.g. "*.jpg" and "*.png"), or '
            f"{naming.setting('pairing', 'suffix')} when masks are named <stem>"
            f'{config.mask_suffix or "_mask"}.'
        )
    if config.pairing == 'stem':
        return images, masks, (lambda p: p.stem), (lambda p: p.stem)
    key = _regex_key(config.regex, naming)
    return images, masks, key, key


def _regex_key(regex: str, naming: Naming):
    """The pairing key of a file under pairing 'regex': group `key` of `regex` in its stem."""
    try:
        pattern = re.compile(regex)
    except re.error as e:
        raise FolderError(f'{naming.setting("regex", regex)} is not a regex: {e}.') from e
    if 'key' not in pattern.groupindex:
        raise FolderError(
            f'{naming.setting("regex", regex)} needs a named group `key`, e.g. '
            f"{naming.setting('regex', '(?P<key>case[0-9]+)')}."
        )
    return lambda p: m.group('key') if (m := pattern.search(p.stem)) else None


def _rule(config) -> str:
    return {
        'stem': 'same stem',
        'suffix': f'<stem>{config.mask_suffix}[_<k>]',
        'regex': f'regex {config.regex!r}',
    }[config.pairing]


def _suffix_hint(lonely_images: list[str], masks: list[Path], config, naming: Naming) -> str:
    """' (their masks are named <stem>_mask: ...)' when another rule would pair them."""
    if config.pairing == 'suffix' or not config.mask_suffix:
        return ''
    owners = masks_by_owner(masks, config.mask_suffix)
    if not any(Path(image).stem in owners for image in lonely_images):
        return ''
    return (
        f'; their masks are named <stem>{config.mask_suffix}: {naming.verb} '
        f"{naming.setting('pairing', 'suffix')}"
    )


def pair_files(
    images: list[Path],
    masks: list[Path],
    config: ml_collections.ConfigDict,
    report: Report,
    naming: Naming = CONFIG_NAMING,
    *,
    lonely_masks: str = 'error',
) -> list[tuple[str, Path, tuple[Path, ...]]]:
    """(id, image, masks) per case by the pairing rule; unpaired files are errors or skipped.

    `naming` says how the messages name the settings (`config.data.folder.` or predict's
    flags); the rule, the defaults and the words are otherwise the same for both.
    `lonely_masks='ignore'` (predict, which segments the images it is given) leaves masks
    without an image out without a word; 'error' treats them as unpaired images are.
    """
    images, masks, image_key, mask_key = _pairing_keys(images, masks, config, naming)
    rule = _rule(config)
    image_groups = _keys(images, image_key, 'images', rule, report, config.skip_bad, False, naming)
    mask_groups = _keys(
        masks, mask_key, 'masks', rule, report, config.skip_bad, config.pairing != 'stem', naming
    )
    lonely_images = sorted(str(image_groups[k][0]) for k in image_groups if k not in mask_groups)
    unpaired_masks = sorted(
        str(f) for k, v in mask_groups.items() if k not in image_groups for f in v
    )
    if lonely_masks == 'ignore':
        unpaired_masks = []
    settings = ', '.join(naming.field(f) for f in ('pairing', 'mask_suffix', 'regex'))
    for files, what, hint in (
        (
            lonely_images,
            'images without a mask',
            'add their masks or fix the pairing rule'
            + _suffix_hint(lonely_images, masks, config, naming),
        ),
        (unpaired_masks, 'masks without an image', 'remove them or fix the pairing rule'),
    ):
        if files and not config.skip_bad:
            raise FolderError(
                f'{len(files)} {what} (pairing={config.pairing!r}): {_show(files)}. '
                f'To fix: {hint} ({settings}), or {naming.skip_fix()}.'
            )
        if files:
            report.skipped[what] += files
    return [
        (k, image_groups[k][0], tuple(sorted(mask_groups[k])))
        for k in sorted(image_groups)
        if k in mask_groups
    ]


def read_pair(
    image_path: Path, mask_paths: tuple[Path, ...], config, *, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """An image (uint8 [H, W, channels]) and the OR of its masks ({0, 1} at the image's size,
    resized when `config.resize_masks`), with the folder set's mask rules (threshold, two
    values under threshold 0); imageio.ImageReadError names the file otherwise."""
    image = imageio.read_image(image_path, channels=channels)
    mask = imageio.read_mask(
        mask_paths,
        threshold=config.mask_threshold,
        size=image.shape[:2],
        resize=config.resize_masks,
        binary=True,
    )
    return image, mask


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
            image, mask = read_pair(image_path, mask_paths, config, channels=channels)
        except imageio.ImageReadError as e:
            if not config.skip_bad:
                raise FolderError(f'{e}\n(or {CONFIG_NAMING.skip_fix()})') from e
            report.skipped['unreadable or mismatched files'].append(str(e).splitlines()[0])
            continue
        examples.append(Example(id=id_, image=image, mask=mask))
    report.num_read = len(examples)
    if not examples:
        raise FolderError(f'The folder set has no usable image/mask pairs.\n{report.summary()}')
    return examples, report
