"""The builders of the real breast ultrasound sets: BUSI and UDIAT Dataset B."""

from __future__ import annotations

from pathlib import Path

from unet_jax.data import folder as folder_set
from unet_jax.data.builders.real import (
    Case,
    RealBuilder,
    by_stem,
    image_files,
    missing_masks_error,
    require_folder,
)
from unet_jax.data.builders.segmentation import ULTRASOUND_LABELS


class Busi(RealBuilder, skip_registration=True):
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
            folder = require_folder(
                root / label, f'the {label}/ folder of BUSI', self.MANUAL_DOWNLOAD_INSTRUCTIONS
            )
            files = image_files(folder)
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
            raise missing_masks_error(self.name, unmatched, root)
        return cases


class DatasetB(RealBuilder, skip_registration=True):
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
        images = by_stem(
            require_folder(root / 'original', 'original/', self.MANUAL_DOWNLOAD_INSTRUCTIONS)
        )
        masks = by_stem(require_folder(root / 'GT', 'GT/', self.MANUAL_DOWNLOAD_INSTRUCTIONS))
        missing = sorted(set(images) - set(masks))
        if missing:
            raise missing_masks_error(self.name, missing, root / 'GT')
        return [Case(id=s, image=p, masks=(masks[s],)) for s, p in images.items()]
