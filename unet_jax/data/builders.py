"""TFDS builders for the synthetic and the real segmentation sets (array_record, no TensorFlow).

Every set has the same features: `image` (PNG, 1 channel for ultrasound and X-ray, 3 for natural
images), `mask` (PNG, 1 channel, values 0/1), `id` (the case name, unique within the set) and,
for breast ultrasound, `label` (benign / malignant / normal). A case with several mask files
is one example whose masks are OR-ed, so a case can never straddle splits.

The builders live outside the TFDS catalog (`skip_registration=True`): `make_builder(name)`
is the way in. Real sets are read from the folder a user already has (manual download); images
are stored at their original size (or capped with `max_size`), preprocessing happens on load.

Each builder is a few lines over the shared readers; what the code knows about its set
besides reading it (modality, near-duplicate distance, target defaults) is its entry in
unet_jax.data.catalogue.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import hashlib
import os
from pathlib import Path
from typing import ClassVar

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from unet_jax import console
from unet_jax.data import catalogue, fields, imageio
from unet_jax.data import folder as folder_set

ULTRASOUND_LABELS = ('benign', 'malignant', 'normal')
_VERSION = tfds.core.Version('1.0.0')


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
    """A synthetic set is defined by its image size, its number of examples and its seed."""

    image_size: int = 128
    num_examples: int = 200
    seed: int = 0


def synthetic_config(*, image_size: int, num_examples: int, seed: int) -> SyntheticConfig:
    return SyntheticConfig(
        name=f'size{image_size}_n{num_examples}_seed{seed}',
        image_size=image_size,
        num_examples=num_examples,
        seed=seed,
    )


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


class _SegmentationBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared features and example encoding of every set."""

    VERSION = _VERSION
    # TFDS looks for a checksums file next to the code (it needs `importlib_resources` to find
    # it in an editable install); these builders download nothing, so there is none.
    code_path = None
    CHANNELS = 1
    LABELS: tuple[str, ...] = ()
    DESCRIPTION = ''
    HOMEPAGE = ''
    CITATION = ''

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            'image': tfds.features.Image(shape=(None, None, self.CHANNELS), encoding_format='png'),
            'mask': tfds.features.Image(shape=(None, None, 1), encoding_format='png'),
            'id': tfds.features.Text(),
        }
        if self.LABELS:
            features['label'] = tfds.features.ClassLabel(names=self.LABELS)
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(features),
            homepage=self.HOMEPAGE or None,
            citation=self.CITATION or None,
        )

    def _example(self, id_: str, image: np.ndarray, mask: np.ndarray, label: str | None) -> dict:
        example = {
            'image': imageio.encode_png(image),
            'mask': imageio.encode_png(mask[..., None]),
            'id': id_,
        }
        if self.LABELS:
            example['label'] = label
        return example


# ------------------------------------------------------------------------------------------
# Synthetic sets (unet_jax.data.simulate), built on first use.


class _SyntheticBuilder(_SegmentationBuilder, skip_registration=True):
    SIMULATE = ''
    BUILDER_CONFIGS: ClassVar[list] = [synthetic_config(image_size=128, num_examples=200, seed=0)]

    def _split_generators(self, dl_manager):
        del dl_manager
        return {'train': self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[str, dict]]:
        from unet_jax.data import simulate  # Imported late: only synthetic builds need it.

        config = self.builder_config
        simulate_fn = getattr(simulate, self.SIMULATE)
        for i in range(config.num_examples):
            # Example i of seed s is the same whatever the set size (unet_jax.data.simulate).
            example = simulate_fn(np.random.default_rng([config.seed, i]), config.image_size)
            image = np.asarray(example['image'], np.uint8)
            if image.ndim == 2:
                image = image[..., None]
            mask = (np.asarray(example['mask']) > 0).astype(np.uint8)
            id_ = f'{self.name}_{i:06d}'
            yield id_, self._example(id_, image, mask, example.get('label'))


class SyntheticUltrasound(_SyntheticBuilder, skip_registration=True):
    """Simulated B-mode breast ultrasound with a lesion mask (benign, malignant or none)."""

    name = 'synthetic_ultrasound'
    SIMULATE = 'simulate_ultrasound'
    LABELS = ULTRASOUND_LABELS
    DESCRIPTION = 'Simulated B-mode breast ultrasound (speckle physics) with lesion masks.'


class SyntheticXray(_SyntheticBuilder, skip_registration=True):
    """Synthetic chest radiographs with both lung fields as the mask."""

    name = 'synthetic_xray'
    SIMULATE = 'simulate_xray'
    DESCRIPTION = 'Synthetic chest radiographs with lung-field masks.'


class SyntheticNatural(_SyntheticBuilder, skip_registration=True):
    """Dead-leaves scenes with one salient object, for pre-training."""

    name = 'synthetic_natural'
    SIMULATE = 'simulate_natural'
    CHANNELS = 3
    DESCRIPTION = 'Dead-leaves natural-like scenes with a salient-object mask.'


class SyntheticNaturalSpeckle(_SyntheticBuilder, skip_registration=True):
    """The natural scenes imaged as B-mode ultrasound (speckle), for pre-training with speckle.

    Example i of seed s has the mask of synthetic_natural's example i of seed s.
    """

    name = 'synthetic_natural_speckle'
    SIMULATE = 'simulate_natural_speckle'
    DESCRIPTION = (
        'Dead-leaves natural-like scenes as grey B-mode ultrasound images (the scene as '
        'echogenicity, Rayleigh speckle, pulse-echo PSF, log compression), salient-object masks.'
    )


class SyntheticNaturalImaging(_SyntheticBuilder, skip_registration=True):
    """The speckled scenes' imaging chain without speckle: the control of the speckle source.

    Example i of seed s has the mask, scene and display settings of synthetic_natural_speckle's
    example i of seed s; only the speckle differs (its expected envelope instead).
    """

    name = 'synthetic_natural_imaging'
    SIMULATE = 'simulate_natural_imaging'
    DESCRIPTION = (
        'Dead-leaves natural-like scenes through the B-mode imaging chain of '
        'synthetic_natural_speckle (echogenicity, pulse-echo PSF, envelope, log compression) '
        'without speckle (the expected envelope), salient-object masks.'
    )


# ------------------------------------------------------------------------------------------
# Real sets, read from a manual download.


def _images(folder: Path) -> list[Path]:
    """Image files directly in folder, sorted by name (hidden files ignored)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in imageio.IMAGE_SUFFIXES and not p.name.startswith('.')
    )


def _by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in _images(folder)}


def _require(path: Path, what: str, instructions: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(
            f'Expected {what} at {path}, which is not a folder.\n{instructions}'
        )
    return path


def _missing_masks_error(name: str, images: list[str], where: Path) -> ValueError:
    shown = ', '.join(images[:10]) + (' ...' if len(images) > 10 else '')
    return ValueError(
        f'{name}: {len(images)} image(s) have no mask in {where}: {shown}. Check that the folder '
        'is complete (masks are named as described in the instructions), or use the folder set '
        "(config.data.name='folder', skip_bad=True) to skip them."
    )


class _RealBuilder(_SegmentationBuilder, skip_registration=True):
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


class Busi(_RealBuilder, skip_registration=True):
    """Breast Ultrasound Images (BUSI): 780 images, benign / malignant / normal."""

    name = 'busi'
    FOLDER = 'Dataset_BUSI_with_GT'
    LABELS = ULTRASOUND_LABELS
    HOMEPAGE = 'https://scholar.cu.edu.eg/?q=afahmy/pages/dataset'
    CITATION = (
        'Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound images. '
        'Data in Brief 28:104863, 2020.'
    )
    DESCRIPTION = 'BUSI breast ultrasound; lesion masks (several per case OR-ed); class label.'
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download BUSI (Dataset_BUSI_with_GT, e.g. from https://scholar.cu.edu.eg/?q=afahmy/pages/dataset
or Kaggle "breast-ultrasound-images-dataset") and unpack it. Point manual_dir at the folder
Dataset_BUSI_with_GT (or the folder holding it), which has benign/, malignant/, normal/ with
'<class> (<n>).png' images and '<class> (<n>)_mask.png', '..._mask_1.png' masks."""

    def cases(self, root: Path) -> list[Case]:
        cases, unmatched = [], []
        for label in self.LABELS:
            folder = _require(
                root / label, f'the {label}/ folder of BUSI', self.MANUAL_DOWNLOAD_INSTRUCTIONS
            )
            files = _images(folder)
            masks = folder_set.masks_by_owner(files, '_mask')
            for image in files:
                if folder_set.mask_owner(image.stem, '_mask') is not None:
                    continue  # A mask file.
                if image.stem not in masks:
                    unmatched.append(image.name)
                    continue
                cases.append(
                    Case(id=image.stem, image=image, masks=tuple(masks[image.stem]), label=label)
                )
        if unmatched:
            raise _missing_masks_error(self.name, unmatched, root)
        return cases


class DatasetB(_RealBuilder, skip_registration=True):
    """UDIAT Dataset B (Yap et al. 2018): 163 breast ultrasound images with lesion masks."""

    name = 'dataset_b'
    FOLDER = 'DatasetB'
    HOMEPAGE = 'http://www2.docm.mmu.ac.uk/STAFF/m.yap/dataset.php'
    CITATION = (
        'Yap MH et al. Automated breast ultrasound lesions detection using convolutional '
        'neural networks. IEEE JBHI 22(4):1218-1226, 2018.'
    )
    DESCRIPTION = 'UDIAT Dataset B breast ultrasound with lesion masks.'
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Request UDIAT Dataset B from its authors (http://www2.docm.mmu.ac.uk/STAFF/m.yap/dataset.php).
Point manual_dir at the folder holding original/ (images, e.g. 000001.png) and GT/ (masks with
the same file names)."""

    def cases(self, root: Path) -> list[Case]:
        images = _by_stem(
            _require(root / 'original', 'original/', self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        )
        masks = _by_stem(_require(root / 'GT', 'GT/', self.MANUAL_DOWNLOAD_INSTRUCTIONS))
        missing = sorted(set(images) - set(masks))
        if missing:
            raise _missing_masks_error(self.name, missing, root / 'GT')
        return [Case(id=s, image=p, masks=(masks[s],)) for s, p in images.items()]


class Jsrt(_RealBuilder, skip_registration=True):
    """JSRT chest radiographs with SCR lung-field masks, keeping the Train/Val/Test split."""

    name = 'jsrt'
    FOLDER = 'JSRT_lung'
    HOMEPAGE = 'http://db.jsrt.or.jp/eng.php'
    CITATION = (
        'Shiraishi J et al. AJR 174(1):71-74, 2000. van Ginneken B, Stegmann MB, Loog M. '
        'Medical Image Analysis 10(1):19-40, 2006.'
    )
    DESCRIPTION = 'JSRT chest X-rays with SCR lung masks (both lungs as one label).'
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
JSRT images (http://db.jsrt.or.jp/eng.php, registration) with SCR lung masks
(https://www.isi.uu.nl/Research/Databases/SCR/), as 1024x1024 PNGs in the layout
{Train,Val,Test}/{Images,Labels}/ with Images/<ID>.png and Labels/<ID>_labels.png (0/1 lung
masks), e.g. the data/ folder of github.com/vfmatzkin/jsrt-segmentation-unet. Point manual_dir
at the folder holding Train/, Val/ and Test/ (the split is kept: Test is the test split)."""

    def cases(self, root: Path) -> list[Case]:
        cases = []
        for split in ('Train', 'Val', 'Test'):
            images = _by_stem(
                _require(
                    root / split / 'Images', f'{split}/Images/', self.MANUAL_DOWNLOAD_INSTRUCTIONS
                )
            )
            labels = folder_set.masks_by_owner(
                _images(
                    _require(
                        root / split / 'Labels',
                        f'{split}/Labels/',
                        self.MANUAL_DOWNLOAD_INSTRUCTIONS,
                    )
                ),
                '_labels',
            )
            missing = sorted(s for s in images if s not in labels)
            if missing:
                raise _missing_masks_error(self.name, missing, root / split / 'Labels')
            cases += [
                Case(id=s, image=p, masks=tuple(labels[s]), split=split.lower())
                for s, p in images.items()
            ]
        return cases


class Montgomery(_RealBuilder, skip_registration=True):
    """Montgomery County chest X-rays (NLM), left and right lung masks OR-ed."""

    name = 'montgomery'
    FOLDER = 'MontgomerySet'
    HOMEPAGE = (
        'https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-image-data-sets'
    )
    CITATION = (
        'Jaeger S et al. Two public chest X-ray datasets for computer-aided screening of '
        'pulmonary diseases. Quant Imaging Med Surg 4(6):475-477, 2014.'
    )
    DESCRIPTION = 'Montgomery County chest X-rays with lung masks (left and right OR-ed).'
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the Montgomery County set (NLM, MontgomerySet.zip) and unpack it. Point manual_dir at
MontgomerySet (or the folder holding it), which has CXR_png/MCUCXR_*.png and
ManualMask/leftMask/, ManualMask/rightMask/ with masks of the same file names."""

    def cases(self, root: Path) -> list[Case]:
        how = self.MANUAL_DOWNLOAD_INSTRUCTIONS
        images = _by_stem(_require(root / 'CXR_png', 'CXR_png/', how))
        left = _by_stem(_require(root / 'ManualMask' / 'leftMask', 'ManualMask/leftMask/', how))
        right = _by_stem(_require(root / 'ManualMask' / 'rightMask', 'ManualMask/rightMask/', how))
        missing = sorted(s for s in images if s not in left or s not in right)
        if missing:
            raise _missing_masks_error(self.name, missing, root / 'ManualMask')
        return [Case(id=s, image=p, masks=(left[s], right[s])) for s, p in images.items()]


class Shenzhen(_RealBuilder, skip_registration=True):
    """Shenzhen chest X-rays (NLM) with the separately released lung masks."""

    name = 'shenzhen'
    FOLDER = 'ChinaSet_AllFiles'
    MASK_FOLDERS = ('mask', 'masks', 'Mask', 'Masks')
    # The third-party masks were not drawn by the image's releaser; some are stored at another
    # size than their image and are resized (nearest neighbour).
    RESIZE_MASKS = True
    HOMEPAGE = (
        'https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-image-data-sets'
    )
    CITATION = Montgomery.CITATION
    DESCRIPTION = 'Shenzhen chest X-rays with third-party lung masks.'
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download the Shenzhen set (NLM, ChinaSet_AllFiles.zip) and its lung masks (a separate release,
e.g. Kaggle "Chest X-ray Masks and Labels" or "shenzhen-lung-masks"). Put the masks in a folder
mask/ (or masks/) next to CXR_png/, named <image stem>_mask.png or <image stem>.png
(CHNCXR_0001_0.png -> mask/CHNCXR_0001_0_mask.png). Point manual_dir at the folder holding
CXR_png/ and mask/. Images without a mask (the mask release covers 566 of the 662) are left
out, and the build log says how many."""

    def cases(self, root: Path) -> list[Case]:
        how = self.MANUAL_DOWNLOAD_INSTRUCTIONS
        images = _by_stem(_require(root / 'CXR_png', 'CXR_png/', how))
        folders = [root / f for f in self.MASK_FOLDERS if (root / f).is_dir()]
        if not folders:
            raise FileNotFoundError(
                f'shenzhen: no mask folder ({", ".join(self.MASK_FOLDERS)}) in {root}.\n{how}'
            )
        files = _images(folders[0])
        # <stem>_mask.png (further masks <stem>_mask_<k>.png are OR-ed), or <stem>.png.
        masks = {p.stem: [p] for p in files} | folder_set.masks_by_owner(files, '_mask')
        cases, unmatched = [], []
        for stem, path in images.items():
            if stem in masks:
                cases.append(Case(id=stem, image=path, masks=tuple(masks[stem])))
            else:
                unmatched.append(stem)
        if unmatched:
            logging.warning(
                'shenzhen: %d of %d images have no mask in %s and are left out (first: %s).',
                len(unmatched),
                len(images),
                folders[0],
                unmatched[:5],
            )
        return cases


class _PairedFoldersBuilder(_RealBuilder, skip_registration=True):
    """A natural-image saliency set: an image folder and a mask folder, paired by stem."""

    CHANNELS = 3
    # Saliency masks are 0/255 with anti-aliased edges; the usual binarisation is > 127.
    MASK_THRESHOLD = 127
    # (split, image folder, mask folder) relative to the root; the first layout found is used.
    LAYOUTS: tuple[tuple[tuple[str, str, str], ...], ...] = ()

    def cases(self, root: Path) -> list[Case]:
        for layout in self.LAYOUTS:
            if all((root / i).is_dir() and (root / m).is_dir() for _, i, m in layout):
                break
        else:
            raise FileNotFoundError(
                f'{self.name}: none of the expected folders found in {root}.\n'
                f'{self.MANUAL_DOWNLOAD_INSTRUCTIONS}'
            )
        cases = []
        for split, image_folder, mask_folder in layout:
            files = _images(root / image_folder)
            # Image and mask may share one folder (MSRA10K: x.jpg next to x.png).
            images = (
                {p.stem: p for p in files if p.suffix.lower() != '.png'}
                if (image_folder == mask_folder)
                else {p.stem: p for p in files}
            )
            masks = {p.stem: p for p in _images(root / mask_folder) if p.suffix.lower() == '.png'}
            missing = sorted(s for s in images if s not in masks)
            if missing:
                raise _missing_masks_error(self.name, missing, root / mask_folder)
            cases += [
                Case(id=s, image=p, masks=(masks[s],), split=split) for s, p in images.items()
            ]
        return cases


class Ecssd(_PairedFoldersBuilder, skip_registration=True):
    """ECSSD: 1,000 natural images with salient-object masks."""

    name = 'ecssd'
    FOLDER = 'ECSSD'
    LAYOUTS = ((('train', 'images', 'ground_truth_mask'),),)
    HOMEPAGE = 'https://www.cse.cuhk.edu.hk/leojia/projects/hsaliency/dataset.html'
    CITATION = (
        'Shi J, Yan Q, Xu L, Jia J. Hierarchical image saliency detection on extended CSSD. '
        'TPAMI 2016.'
    )
    DESCRIPTION = 'ECSSD natural images with salient-object masks.'
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download images.zip and ground_truth_mask.zip of ECSSD
(https://www.cse.cuhk.edu.hk/leojia/projects/hsaliency/dataset.html) and unpack both into one
folder, which then has images/0001.jpg ... and ground_truth_mask/0001.png ... (0/255). Point
manual_dir at it."""


class Duts(_PairedFoldersBuilder, skip_registration=True):
    """DUTS: 10,553 training (DUTS-TR) and 5,019 test (DUTS-TE) images."""

    name = 'duts'
    FOLDER = 'DUTS'
    LAYOUTS = (
        (
            ('train', 'DUTS-TR/DUTS-TR-Image', 'DUTS-TR/DUTS-TR-Mask'),
            ('test', 'DUTS-TE/DUTS-TE-Image', 'DUTS-TE/DUTS-TE-Mask'),
        ),
    )
    HOMEPAGE = 'http://saliencydetection.net/duts/'
    CITATION = (
        'Wang L et al. Learning to detect salient objects with image-level supervision. CVPR 2017.'
    )
    DESCRIPTION = 'DUTS saliency set; DUTS-TE is the test split.'
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download DUTS-TR.zip and DUTS-TE.zip (http://saliencydetection.net/duts/) and unpack both into
one folder, which then has DUTS-TR/DUTS-TR-Image/*.jpg, DUTS-TR/DUTS-TR-Mask/*.png,
DUTS-TE/DUTS-TE-Image/*.jpg and DUTS-TE/DUTS-TE-Mask/*.png. Point manual_dir at it. DUTS-TE is
the test split."""


class Xpie(_PairedFoldersBuilder, skip_registration=True):
    """XPIE: 10,000 natural images with salient-object masks."""

    name = 'xpie'
    FOLDER = 'XPIE'
    LAYOUTS = (
        (('train', 'img', 'gt'),),
        (('train', 'images', 'masks'),),
        (('train', 'Imgs', 'GT'),),
    )
    HOMEPAGE = 'http://cvteam.net/projects/CVPR17-ELE/ELE.html'
    CITATION = 'Xia C et al. What is and what is not a salient object? CVPR 2017.'
    DESCRIPTION = 'XPIE natural images with salient-object masks.'
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download XPIE (http://cvteam.net/projects/CVPR17-ELE/ELE.html) and unpack it. Point manual_dir
at the folder holding the image folder and the mask folder, one of: img/ + gt/, images/ +
masks/, Imgs/ + GT/ (images *.jpg, masks *.png with the same stem, 0/255)."""


class Msra10k(_PairedFoldersBuilder, skip_registration=True):
    """MSRA10K: 10,000 natural images with salient-object masks."""

    name = 'msra10k'
    FOLDER = 'MSRA10K_Imgs_GT'
    LAYOUTS = ((('train', 'Imgs', 'Imgs'),), (('train', 'images', 'masks'),))
    HOMEPAGE = 'https://mmcheng.net/msra10k/'
    CITATION = 'Cheng MM et al. Global contrast based salient region detection. TPAMI 2015.'
    DESCRIPTION = 'MSRA10K natural images with salient-object masks.'
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download MSRA10K_Imgs_GT.zip (https://mmcheng.net/msra10k/) and unpack it. Point manual_dir at
MSRA10K_Imgs_GT (or the folder holding it): Imgs/ holds each image <n>.jpg next to its mask
<n>.png (0/255). A layout with images/ and masks/ folders (same stems) also works."""


# One builder per catalogue entry (unet_jax.data.catalogue), in its order.
BUILDERS: dict[str, type[_SegmentationBuilder]] = {
    entry.name: globals()[entry.builder] for entry in catalogue.CATALOGUE
}


def default_data_dir() -> str:
    return os.environ.get('UNET_JAX_DATA_DIR') or os.path.expanduser('~/tensorflow_datasets')


def make_builder(
    name: str,
    *,
    data_dir: str = '',
    image_size: int = 128,
    num_examples: int = 200,
    seed: int = 0,
    max_size: int = 0,
    manual_dir: str = '',
) -> tfds.core.DatasetBuilder:
    """The builder of a set by name: synthetic sets take size/count/seed; real ones max_size and
    manual_dir, whose files are fingerprinted into the build's name. Without manual_dir, a real
    set that was built once (from one folder) is found in data_dir."""
    if name not in BUILDERS:
        raise ValueError(
            f'Unknown data set {name!r}; known: {", ".join(BUILDERS)} '
            "(or 'folder' for your own image/mask folders)."
        )
    cls = BUILDERS[name]
    data_dir = data_dir or default_data_dir()
    if name in fields.SYNTHETIC:
        config = synthetic_config(image_size=image_size, num_examples=num_examples, seed=seed)
    elif manual_dir:
        folder = Path(manual_dir).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f'config.data.manual_dir={manual_dir!r} is not a folder.\n'
                f'{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}'
            )
        config = real_config(max_size=max_size, source=source_fingerprint(cls.root(folder)))
    else:
        config = _only_build(cls, data_dir, max_size)
    # TFDS wants the class's own config object (by name) where one has the same name.
    return cls(
        data_dir=data_dir,
        config=config.name if config.name in cls.builder_configs else config,
        file_format='array_record',
    )


def _only_build(cls: type[_RealBuilder], data_dir: str, max_size: int) -> RealConfig:
    """The config of the one finished build of a real set in data_dir (no manual_dir given)."""
    size = real_config(max_size=max_size).name
    builds = sorted(
        p.parent.parent.name
        for p in (Path(data_dir) / cls.name).glob(f'{size}_*/*/dataset_info.json')
    )
    if len(builds) == 1:
        return real_config(max_size=max_size, source=builds[0].removeprefix(f'{size}_'))
    if not builds:
        raise ValueError(
            f'Data set {cls.name!r} is not built in {data_dir} and config.data.manual_dir is '
            f'empty.\n{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}'
        )
    raise ValueError(
        f'Data set {cls.name!r} has {len(builds)} builds from different folders in {data_dir} '
        f'({", ".join(builds)}); set config.data.manual_dir to the folder to use.'
    )


def is_built(builder: tfds.core.DatasetBuilder) -> bool:
    return (Path(builder.data_dir) / 'dataset_info.json').exists()


def build(builder: tfds.core.DatasetBuilder, *, manual_dir: str = '') -> None:
    """Builds the set into its data_dir unless it is there already (real sets need the
    manual_dir that make_builder was given)."""
    if is_built(builder):
        return
    logging.info(
        'Building %s (%s) into %s', builder.name, builder.builder_config.name, builder.data_dir
    )
    download_config = tfds.download.DownloadConfig(
        manual_dir=str(Path(manual_dir).expanduser()) if manual_dir else None
    )
    with console.printed_to_log():  # TFDS prints 'Downloading and preparing dataset ...'
        builder.download_and_prepare(download_config=download_config, file_format='array_record')
