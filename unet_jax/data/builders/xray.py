"""The builders of the real chest X-ray sets: JSRT (with SCR masks), Montgomery, Shenzhen."""

from __future__ import annotations

from pathlib import Path

from absl import logging

from unet_jax.data import folder as folder_set
from unet_jax.data.builders.real import (
    Case,
    RealBuilder,
    by_stem,
    image_files,
    missing_masks_error,
    require_folder,
)


class Jsrt(RealBuilder, skip_registration=True):
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
            images = by_stem(
                require_folder(
                    root / split / 'Images', f'{split}/Images/', self.MANUAL_DOWNLOAD_INSTRUCTIONS
                )
            )
            labels = folder_set.masks_by_owner(
                image_files(
                    require_folder(
                        root / split / 'Labels',
                        f'{split}/Labels/',
                        self.MANUAL_DOWNLOAD_INSTRUCTIONS,
                    )
                ),
                '_labels',
            )
            missing = sorted(s for s in images if s not in labels)
            if missing:
                raise missing_masks_error(self.name, missing, root / split / 'Labels')
            cases += [
                Case(id=s, image=p, masks=tuple(labels[s]), split=split.lower())
                for s, p in images.items()
            ]
        return cases


class Montgomery(RealBuilder, skip_registration=True):
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
        images = by_stem(require_folder(root / 'CXR_png', 'CXR_png/', how))
        left = by_stem(
            require_folder(root / 'ManualMask' / 'leftMask', 'ManualMask/leftMask/', how)
        )
        right = by_stem(
            require_folder(root / 'ManualMask' / 'rightMask', 'ManualMask/rightMask/', how)
        )
        missing = sorted(s for s in images if s not in left or s not in right)
        if missing:
            raise missing_masks_error(self.name, missing, root / 'ManualMask')
        return [Case(id=s, image=p, masks=(left[s], right[s])) for s, p in images.items()]


class Shenzhen(RealBuilder, skip_registration=True):
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
        images = by_stem(require_folder(root / 'CXR_png', 'CXR_png/', how))
        folders = [root / f for f in self.MASK_FOLDERS if (root / f).is_dir()]
        if not folders:
            raise FileNotFoundError(
                f'shenzhen: no mask folder ({", ".join(self.MASK_FOLDERS)}) in {root}.\n{how}'
            )
        files = image_files(folders[0])
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
