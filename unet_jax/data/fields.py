"""The `config.data` fields with their defaults, and the names they take (no TFDS, no JAX).

A config is made, checked and listed by launchers and the report without loading a data set, so
what a config needs to know about data lives here: the set names (unet_jax.data.catalogue, one TFDS
builder each in unet_jax.data.builders), the resize methods (unet_jax.data.pipeline) and the
pairing rules of the folder set (unet_jax.data.folder).
"""

from __future__ import annotations

import ml_collections

from unet_jax.data import catalogue

# Simulated sets, generated on first use (unet_jax.data.simulate), and real sets, read from
# the folder a user downloaded (docs/data.md per set): the catalogue's entries.
SYNTHETIC = catalogue.names(kind=catalogue.SYNTHETIC)
REAL = catalogue.names(kind=catalogue.REAL)
# Every TFDS set, in the order of the catalogue (and of unet_jax.data.builders.BUILDERS).
SETS = (*SYNTHETIC, *REAL)
RESIZE_METHODS = ('bilinear', 'area')
PAIRINGS = ('stem', 'suffix', 'regex')


def default_folder_config() -> ml_collections.ConfigDict:
    """`config.data.folder`: the user's own images and masks (data.name='folder')."""
    c = ml_collections.ConfigDict()
    c.images = ''  # A folder (all image files in it) or a glob ('data/img/**/*.jpg').
    c.masks = ''  # A folder or a glob for the masks; '' = the images' folder (suffix pairing).
    c.pairing = 'stem'  # 'stem' | 'suffix' | 'regex' (see unet_jax/data/folder.py).
    c.mask_suffix = '_mask'  # For pairing='suffix': <stem>_mask.png, <stem>_mask_1.png, ...
    c.regex = ''  # For pairing='regex': a regex with a named group `key`, searched in stems.
    c.mask_threshold = 0  # Mask pixel > threshold is foreground (0: any non-zero; 127 for JPEG).
    c.resize_masks = False  # Resize masks of another size than their image (nearest neighbour).
    c.skip_bad = False  # Skip unpaired/unreadable files with a logged summary instead of failing.
    return c


def default_data_config() -> ml_collections.ConfigDict:
    """All `config.data` fields with their defaults."""
    c = ml_collections.ConfigDict()
    # One of SETS, or 'folder' for your own images and masks (read directly, not by TFDS).
    c.name = 'synthetic_ultrasound'
    c.image_size = 128  # Side of the square model input after preprocessing.
    c.data_dir = (
        ''  # Where TFDS builds are cached; '' = $UNET_JAX_DATA_DIR or ~/tensorflow_datasets.
    )
    c.manual_dir = ''  # The folder of a downloaded real set (see docs/data.md per set).
    c.max_size = 0  # Real sets: cap the longest side of stored images (0 = original size).
    c.num_examples = 200  # Synthetic sets: number of examples generated.
    c.seed = 0  # Synthetic sets: generation seed (example i uses default_rng([seed, i])).
    c.split_seed = 0  # Seed of the test/val split by case (keep fixed across a study).
    c.test_fraction = 0.2  # Held-out test fraction where the set has no official test split.
    c.val_fraction = 0.15  # Validation fraction (of all cases) where there is no official val.
    # Outer cross-validation (0 = off): every case (official splits pooled) falls into one of
    # `outer_folds` seeded folds (split_seed); fold `outer_fold` is the test split, so over the
    # folds every case is tested exactly once; validation is drawn from the other folds
    # (val_fraction of all cases, or fold `fold` of `num_folds`) and training is the rest.
    # 0 keeps the official test split where the set has one, else test_fraction.
    c.outer_folds = 0
    c.outer_fold = 0  # Which outer fold is the test split (0 .. outer_folds-1).
    c.num_folds = 0  # > 1: k-fold cross-validation on the non-test cases; fold `fold` is val.
    c.fold = 0  # Which fold is the validation split (0 .. num_folds-1).
    # Near-duplicate clusters (data/duplicates.py: equal images and close perceptual hashes)
    # fall into one fold and one split; one that an official split puts into two splits is an
    # error. True: splits by case only (near-duplicates may straddle; the leak check lists them).
    c.allow_near_duplicates = False
    # Two images are near-duplicates when their 255-bit DCT hashes differ in at most this many
    # bits; -1 = the set's own distance (its catalogue entry: BUSI 64, else 26).
    c.near_duplicate_bits = -1
    c.num_train = -1  # Training subset size (-1 = all training cases).
    c.subset_seed = 0  # Seed of the training subset; subsets of one seed are nested.
    c.drop_normal = False  # Leave out normal cases: labelled 'normal' or with an empty mask.
    c.resize = 'bilinear'  # RESIZE_METHODS: image resampling; masks are always nearest.
    c.pad = False  # Keep the aspect ratio: resize the longest side, pad to square.
    c.cache = True  # Cache preprocessed arrays of TFDS sets next to the build (fast reloads).
    c.folder = default_folder_config()  # name='folder': your own images and masks.
    return c
