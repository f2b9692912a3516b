"""The catalogue of data sets: one entry per set, everything the code knows about it (no TFDS,
no JAX: configs read it).

An entry names the set (`config.data.name`, its TFDS builder's name), the builder class (in
its family's module of unet_jax.data.builders) that generates or reads it, its kind (which
`config.data` fields it reads), its imaging modality, its near-duplicate distance, and what a
target on it sets by default. Adding a set is one entry here and its builder class;
tests/test_builders.py checks that every entry is complete and that builders and catalogue name
the same sets.

Target defaults, and why. Chest radiographs train without flips: a left-right flip moves the
heart to the other side, an image that never occurs. Ultrasound targets leave out normal
cases (no lesion, empty mask), as segmentation papers on BUSI do: a normal image scores Dice 1
for an empty prediction and 0 for one false pixel, which would mix detection into the Dice.
The report's primary endpoint compares the shallow-vs-deep gap on the ultrasound targets with
the X-ray targets' (unet_jax.data.modalities).
"""

from __future__ import annotations

import dataclasses

ULTRASOUND, XRAY, NATURAL = 'ultrasound', 'xray', 'natural'
MODALITIES = (ULTRASOUND, XRAY, NATURAL)
SYNTHETIC, REAL = 'synthetic', 'real'
# The `config.data` fields a set of each kind reads besides the common ones.
FIELDS_OF_KIND = {
    SYNTHETIC: ('num_examples', 'seed'),  # generated: example i is a function of (seed, i)
    REAL: ('manual_dir', 'max_size'),  # read from the folder a user downloaded
}
# Two images are near-duplicates when their 255-bit perceptual hashes differ in at most this
# many bits (about 10%; unet_jax.data.duplicates); a set whose frames of one scan differ more
# (BUSI) declares its own.
NEAR_DUPLICATE_BITS = 26


@dataclasses.dataclass(frozen=True)
class DataSet:
    name: str  # config.data.name and the TFDS builder's name
    builder: str  # its class in a family module of unet_jax.data.builders
    kind: str  # SYNTHETIC or REAL (FIELDS_OF_KIND)
    modality: str  # MODALITIES
    # What a target on this set sets by default (unet_jax.config.target_sets.builtin_target).
    drop_normal: bool  # leave out normal cases (data.drop_normal)
    flip: bool  # left-right flips in augmentation (augment.flip)
    near_duplicate_bits: int = NEAR_DUPLICATE_BITS
    pretraining: bool = False  # a real set a study may pre-train on (`pretrain_data=`)
    title: str = ''  # what the report calls it, e.g. 'BUSI breast ultrasound'

    @property
    def fields(self) -> tuple[str, ...]:
        """The `config.data` fields this set reads besides the common ones."""
        return FIELDS_OF_KIND[self.kind]


def _ultrasound(name: str, builder: str, kind: str, **more) -> DataSet:
    return DataSet(name, builder, kind, ULTRASOUND, drop_normal=True, flip=True, **more)


def _xray(name: str, builder: str, kind: str, **more) -> DataSet:
    return DataSet(name, builder, kind, XRAY, drop_normal=False, flip=False, **more)


def _natural(name: str, builder: str, kind: str, **more) -> DataSet:
    return DataSet(name, builder, kind, NATURAL, drop_normal=False, flip=True, **more)


CATALOGUE: tuple[DataSet, ...] = (
    _ultrasound(
        'synthetic_ultrasound', 'SyntheticUltrasound', SYNTHETIC,
        title='simulated breast ultrasound',
    ),
    _xray('synthetic_xray', 'SyntheticXray', SYNTHETIC, title='simulated chest X-ray'),
    _natural('synthetic_natural', 'SyntheticNatural', SYNTHETIC, title='simulated natural scenes'),
    # The natural scenes imaged as B-mode ultrasound, and the same chain without speckle.
    _natural(
        'synthetic_natural_speckle', 'SyntheticNaturalSpeckle', SYNTHETIC,
        title='simulated natural scenes as B-mode ultrasound',
    ),
    _natural(
        'synthetic_natural_imaging', 'SyntheticNaturalImaging', SYNTHETIC,
        title='simulated natural scenes through the imaging chain, no speckle',
    ),
    # Frames of one BUSI lesion lie at every distance up to about 80 bits (data/duplicates.py).
    _ultrasound('busi', 'Busi', REAL, near_duplicate_bits=64, title='BUSI breast ultrasound'),
    _ultrasound('dataset_b', 'DatasetB', REAL, title='Dataset B breast ultrasound'),
    _xray('jsrt', 'Jsrt', REAL, title='JSRT chest X-ray'),
    _xray('montgomery', 'Montgomery', REAL, title='Montgomery chest X-ray'),
    _xray('shenzhen', 'Shenzhen', REAL, title='Shenzhen chest X-ray'),
    _natural('ecssd', 'Ecssd', REAL, pretraining=True, title='ECSSD natural images'),
    _natural('duts', 'Duts', REAL, pretraining=True, title='DUTS natural images'),
    _natural('xpie', 'Xpie', REAL, pretraining=True, title='XPIE natural images'),
    _natural('msra10k', 'Msra10k', REAL, pretraining=True, title='MSRA10K natural images'),
)
BY_NAME: dict[str, DataSet] = {entry.name: entry for entry in CATALOGUE}


def get(name: str) -> DataSet | None:
    """The entry of set `name`, or None (a folder set, `data.name='folder'`)."""
    return BY_NAME.get(name)


def names(*, kind: str = '', modality: str = '') -> tuple[str, ...]:
    """The sets of a kind and/or a modality, in catalogue order."""
    return tuple(
        e.name
        for e in CATALOGUE
        if (not kind or e.kind == kind) and (not modality or e.modality == modality)
    )
