"""The builders of the natural-image saliency sets (pre-training sources): an image folder and
a mask folder, paired by stem; ECSSD, DUTS, XPIE, MSRA10K.
"""

from __future__ import annotations

from pathlib import Path

from unet_jax.data.builders.real import Case, RealBuilder, image_files, missing_masks_error


class PairedFoldersBuilder(RealBuilder, skip_registration=True):
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
            files = image_files(root / image_folder)
            # Image and mask may share one folder (MSRA10K: x.jpg next to x.png).
            images = (
                {p.stem: p for p in files if p.suffix.lower() != '.png'}
                if (image_folder == mask_folder)
                else {p.stem: p for p in files}
            )
            masks = {
                p.stem: p for p in image_files(root / mask_folder) if p.suffix.lower() == '.png'
            }
            missing = sorted(s for s in images if s not in masks)
            if missing:
                raise missing_masks_error(self.name, missing, root / mask_folder)
            cases += [
                Case(id=s, image=p, masks=(masks[s],), split=split) for s, p in images.items()
            ]
        return cases


class Ecssd(PairedFoldersBuilder, skip_registration=True):
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


class Duts(PairedFoldersBuilder, skip_registration=True):
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


class Xpie(PairedFoldersBuilder, skip_registration=True):
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


class Msra10k(PairedFoldersBuilder, skip_registration=True):
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
