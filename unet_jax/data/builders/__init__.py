"""TFDS builders for the synthetic and the real segmentation sets (array_record, no TensorFlow).

The builders live outside the TFDS catalog (`skip_registration=True`): `make_builder(name)`
is the way in, `build` builds a set once. A set's builder is a class in the module of its
family: `synthetic` (the simulated sets), `ultrasound`, `xray` and `natural` (the real sets,
read by the shared code of `real`); every set has the features of `segmentation`. What the code
knows about a set besides reading it (modality, near-duplicate distance, target defaults) is its
entry in unet_jax.data.catalogue, which names its builder class.
"""

from __future__ import annotations

import os
from pathlib import Path

from absl import logging
import tensorflow_datasets as tfds

from unet_jax import console
from unet_jax.data import catalogue, fields
from unet_jax.data.builders import natural, synthetic, ultrasound, xray
from unet_jax.data.builders.real import RealBuilder, RealConfig, real_config, source_fingerprint
from unet_jax.data.builders.segmentation import SegmentationBuilder
from unet_jax.data.builders.synthetic import synthetic_config

# The modules that hold builder classes, one per family of sets.
FAMILIES = (synthetic, ultrasound, xray, natural)


def builder_class(name: str) -> type[SegmentationBuilder] | None:
    """The builder class called `name` (a catalogue entry's `builder`), defined in the module of
    its family; None if no family defines it."""
    for family in FAMILIES:
        cls = getattr(family, name, None)
        if cls is not None and cls.__module__ == family.__name__:
            return cls
    return None


# One builder per catalogue entry (unet_jax.data.catalogue), in its order.
BUILDERS: dict[str, type[SegmentationBuilder]] = {
    entry.name: builder_class(entry.builder) for entry in catalogue.CATALOGUE
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


def _only_build(cls: type[RealBuilder], data_dir: str, max_size: int) -> RealConfig:
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
