"""What the builders of the real sets share: reading a set from the folder a user already has.

Real sets are read from a manual download; images are stored at their original size (or
capped with `max_size`), preprocessing happens on load. A build's name fingerprints the files
it was built from. A case with several mask files is one example whose masks are OR-ed, so a
case can never straddle splits. Each set's builder (ultrasound, xray, natural) lists its cases
from its official layout with these helpers.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import hashlib
import os
from pathlib import Path
from typing import ClassVar

import tensorflow_datasets as tfds

from unet_jax.data import imageio
from unet_jax.data.builders.segmentation import SegmentationBuilder


@dataclasses.dataclass
class RealConfig(tfds.core.BuilderConfig):
    """A build of one copy of a real set: `source` fingerprints the files it was built from
    (names, sizes, modification times), so pointing manual_dir at other data, or changing
    files in place, makes a new build instead of reusing the old one. max_size > 0 caps the
    longest side of stored images (a faster build and load)."""

    max_size: int = 0
    source: str = ''


def real_config(*, max_size: int = 0, source: str = '') -> RealConfig:
    size = 'original' if max_size <= 0 else f'max{max_size}'
    return RealConfig(name=f'{size}_{source}' if source else size, max_size=max_size, source=source)


def source_fingerprint(root: Path) -> str:
    """A short hash of every image file under root: relative path, size, modification time."""
    digest = hashlib.sha1()
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith('.'))
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith('.') or path.suffix.lower() not in imageio.IMAGE_SUFFIXES:
                continue
            stat = path.stat()
            digest.update(
                f'{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n'.encode()
            )
    return digest.hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class Case:
    """One example of a real set on disk: its image, its mask files (OR-ed), split and label."""

    id: str
    image: Path
    masks: tuple[Path, ...]
    split: str = 'train'
    label: str | None = None


def image_files(folder: Path) -> list[Path]:
    """Image files directly in folder, sorted by name (hidden files ignored)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in imageio.IMAGE_SUFFIXES and not p.name.startswith('.')
    )


def by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in image_files(folder)}


def require_folder(path: Path, what: str, instructions: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(
            f'Expected {what} at {path}, which is not a folder.\n{instructions}'
        )
    return path


def missing_masks_error(name: str, images: list[str], where: Path) -> ValueError:
    shown = ', '.join(images[:10]) + (' ...' if len(images) > 10 else '')
    return ValueError(
        f'{name}: {len(images)} image(s) have no mask in {where}: {shown}. Check that the folder '
        'is complete (masks are named as described in the instructions), or use the folder set '
        "(config.data.name='folder', skip_bad=True) to skip them."
    )


class RealBuilder(SegmentationBuilder, skip_registration=True):
    """A real set in its official layout; subclasses list its cases with `cases(root)`."""

    BUILDER_CONFIGS: ClassVar[list] = [real_config()]
    # The folder name of the official release: manual_dir may be it or the folder holding it.
    FOLDER = ''
    MASK_THRESHOLD = 0
    RESIZE_MASKS = False

    @classmethod
    def root(cls, manual_dir: os.PathLike | str) -> Path:
        manual_dir = Path(manual_dir).expanduser()
        if cls.FOLDER and (manual_dir / cls.FOLDER).is_dir():
            return manual_dir / cls.FOLDER
        return manual_dir

    def cases(self, root: Path) -> list[Case]:
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        cases = self.cases(self.root(dl_manager.manual_dir))
        if not cases:
            raise ValueError(
                f'{self.name}: no images found under {dl_manager.manual_dir}.\n'
                f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}'
            )
        ids = [c.id for c in cases]
        if len(set(ids)) != len(ids):
            duplicates = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f'{self.name}: case names occur twice: {duplicates[:10]}.')
        splits = sorted({c.split for c in cases})
        return {s: self._generate_examples([c for c in cases if c.split == s]) for s in splits}

    def _generate_examples(self, cases: list[Case]) -> Iterator[tuple[str, dict]]:
        max_size = self.builder_config.max_size
        for case in cases:
            image = imageio.read_image(case.image, channels=self.CHANNELS)
            mask = imageio.read_mask(
                case.masks,
                threshold=self.MASK_THRESHOLD,
                size=image.shape[:2],
                resize=self.RESIZE_MASKS,
            )
            image, mask = imageio.cap_size(image, mask, max_size)
            yield case.id, self._example(case.id, image, mask, case.label)
