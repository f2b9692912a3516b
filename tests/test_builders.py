"""TFDS builders: every real layout from generated fixtures, synthetic determinism, no TF."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import LAYOUT_SPLITS, make_layout
from unet_jax.data import builders, catalogue, duplicates, fields, modalities, pipeline
from unet_jax.data.builders import real, synthetic, ultrasound


def _records(builder) -> dict[str, dict[str, dict]]:
    out = {}
    for split, source in builder.as_data_source().items():
        out[split] = {}
        for i in range(len(source)):
            r = source[i]
            out[split][r['id'].decode()] = r
    return out


def _build(name, root, data_dir, **kwargs):
    builder = builders.make_builder(name, data_dir=str(data_dir), manual_dir=str(root), **kwargs)
    builders.build(builder, manual_dir=str(root))
    return builder


@pytest.mark.parametrize('name', sorted(LAYOUT_SPLITS))
def test_real_layout_builds_with_masks_ored_and_official_splits(name, tmp_path):
    fixture = make_layout(name, tmp_path / 'src')
    records = _records(_build(name, fixture['root'], tmp_path / 'tfds'))
    assert {s: len(r) for s, r in records.items()} == LAYOUT_SPLITS[name]
    channels = builders.BUILDERS[name].CHANNELS
    for split_records in records.values():
        for id_, r in split_records.items():
            assert r['image'].shape == (24, 32, channels) and r['image'].dtype == np.uint8
            np.testing.assert_array_equal(r['mask'][..., 0], fixture['masks'][id_], err_msg=id_)


def test_busi_class_label_and_two_lesion_case(tmp_path):
    fixture = make_layout('busi', tmp_path / 'src')
    records = _records(_build('busi', fixture['root'], tmp_path / 'tfds'))['train']
    names = ultrasound.Busi.LABELS
    assert {i: names[r['label']] for i, r in records.items()} == {
        'benign (1)': 'benign',
        'benign (2)': 'benign',
        'benign (3)': 'benign',
        'malignant (1)': 'malignant',
        'malignant (2)': 'malignant',
        'normal (1)': 'normal',
    }


def test_jsrt_keeps_official_split(tmp_path):
    fixture = make_layout('jsrt', tmp_path / 'src')
    records = _records(_build('jsrt', fixture['root'], tmp_path / 'tfds'))
    assert sorted(records['test']) == ['JPCLN007', 'JPCLN008', 'JPCLN009']
    assert sorted(records['val']) == ['JPCLN005', 'JPCLN006']


def test_max_size_caps_the_longest_side(tmp_path):
    fixture = make_layout('ecssd', tmp_path / 'src')
    builder = _build('ecssd', fixture['root'], tmp_path / 'tfds', max_size=16)
    assert builder.builder_config.name.startswith('max16_')
    r = builder.as_data_source()['train'][0]
    assert r['image'].shape == (12, 16, 3) and set(np.unique(r['mask'])) <= {0, 1}


def test_image_without_mask_is_an_error_naming_it(tmp_path):
    fixture = make_layout('busi', tmp_path / 'src')
    (fixture['root'] / 'Dataset_BUSI_with_GT' / 'malignant' / 'malignant (2)_mask.png').unlink()
    with pytest.raises(ValueError, match=r'busi: 1 image\(s\) have no mask .*malignant \(2\)'):
        _build('busi', fixture['root'], tmp_path / 'tfds')


def test_missing_manual_dir_explains_where_to_get_the_data(tmp_path):
    with pytest.raises(ValueError, match=r'(?s)manual_dir is empty.*MontgomerySet.*leftMask'):
        builders.make_builder('montgomery', data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match='not a folder'):
        builders.make_builder(
            'montgomery', data_dir=str(tmp_path), manual_dir=str(tmp_path / 'nowhere')
        )


def _train_ids(builder) -> list[str]:
    return sorted(_records(builder)['train'])


def test_a_build_is_reused_only_for_the_same_source_files(tmp_path):
    """The build's name holds a fingerprint of manual_dir's files: other data, or a file
    changed in place, is a new build; the same folder (or no manual_dir, one build) reuses it."""
    data_dir = tmp_path / 'tfds'
    first = make_layout('ecssd', tmp_path / 'a', seed=0)
    other = make_layout('ecssd', tmp_path / 'b', seed=1)
    (other['root'] / 'images' / '0005.jpg').unlink()
    (other['root'] / 'ground_truth_mask' / '0005.png').unlink()
    a = _build('ecssd', first['root'], data_dir)
    assert _train_ids(a) == ['0001', '0002', '0003', '0004', '0005']
    again = builders.make_builder('ecssd', data_dir=str(data_dir), manual_dir=str(first['root']))
    assert again.builder_config.name == a.builder_config.name and builders.is_built(again)
    found = builders.make_builder('ecssd', data_dir=str(data_dir))  # The one build there.
    assert found.builder_config.name == a.builder_config.name

    b = _build('ecssd', other['root'], data_dir)
    assert b.builder_config.name != a.builder_config.name
    assert _train_ids(b) == ['0001', '0002', '0003', '0004']
    mask = _records(b)['train']['0001']['mask'][..., 0]
    np.testing.assert_array_equal(mask, other['masks']['0001'])
    with pytest.raises(ValueError, match=r"'ecssd' has 2 builds .*set config.data.manual_dir"):
        builders.make_builder('ecssd', data_dir=str(data_dir))

    changed = first['root'] / 'ground_truth_mask' / '0001.png'
    stat = changed.stat()
    changed.write_bytes((other['root'] / 'ground_truth_mask' / '0001.png').read_bytes())
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    c = builders.make_builder('ecssd', data_dir=str(data_dir), manual_dir=str(first['root']))
    assert c.builder_config.name not in (a.builder_config.name, b.builder_config.name)


def test_wrong_layout_names_the_expected_folder(tmp_path):
    (tmp_path / 'src' / 'something').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r'CXR_png'):
        _build('montgomery', tmp_path / 'src', tmp_path / 'tfds')


def test_the_config_fields_name_every_builder_and_resize_method():
    """The config checks `data.name` and `data.resize` against unet_jax.data.fields, which loads
    no TFDS: its names are those of the builders and the resampling filters."""
    assert tuple(builders.BUILDERS) == fields.SETS
    simulated = {
        n for n, cls in builders.BUILDERS.items() if issubclass(cls, synthetic.SyntheticBuilder)
    }
    assert simulated == set(fields.SYNTHETIC)
    assert tuple(pipeline.RESAMPLING) == fields.RESIZE_METHODS


def test_every_catalogue_entry_is_complete():
    """A data set is one catalogue entry and its builder: each entry names a builder class of
    that name, of its kind, with a valid modality, near-duplicate distance and target defaults,
    and docs/data.md lists it; every builder has an entry."""
    docs = open(os.path.join(os.path.dirname(__file__), '..', 'docs', 'data.md')).read()
    kinds = {catalogue.SYNTHETIC: synthetic.SyntheticBuilder, catalogue.REAL: real.RealBuilder}
    problems = []
    for entry in catalogue.CATALOGUE:
        cls = builders.builder_class(entry.builder)
        if cls is None or getattr(cls, 'name', None) != entry.name:
            problems.append(f'{entry.name}: no builder class {entry.builder} named {entry.name!r}')
        elif not issubclass(cls, kinds[entry.kind]):
            problems.append(f'{entry.name}: {entry.builder} is not a {entry.kind} builder')
        if entry.modality not in catalogue.MODALITIES:
            problems.append(f'{entry.name}: modality {entry.modality!r}')
        if not 0 <= entry.near_duplicate_bits < duplicates.HASH_BITS:
            problems.append(f'{entry.name}: near_duplicate_bits {entry.near_duplicate_bits}')
        if not all(isinstance(v, bool) for v in (entry.drop_normal, entry.flip, entry.pretraining)):
            problems.append(f'{entry.name}: target defaults and pretraining must be True/False')
        if entry.pretraining and entry.kind != catalogue.REAL:
            problems.append(f'{entry.name}: only a real set is a pre-training set (pretrain_data=)')
        if any(field not in fields.default_data_config() for field in entry.fields):
            problems.append(f'{entry.name}: reads fields {entry.fields} that config.data lacks')
        if f'`{entry.name}`' not in docs:
            problems.append(f'{entry.name}: not in docs/data.md')
        if not entry.title:
            problems.append(f'{entry.name}: no title (what the report calls it)')
    assert problems == []
    assert tuple(builders.BUILDERS) == tuple(e.name for e in catalogue.CATALOGUE)
    assert len(catalogue.BY_NAME) == len(catalogue.CATALOGUE)  # names are unique


def test_a_set_is_known_everywhere_through_its_entry(monkeypatch):
    """Its target defaults, modality and near-duplicate distance come from the entry alone."""
    from unet_jax.config import target_sets

    busi = catalogue.BY_NAME['busi']
    assert target_sets.builtin_target('busi', where='t').data.drop_normal is busi.drop_normal
    assert target_sets.builtin_target('jsrt', where='t').augment.flip is False
    assert modalities.modality('busi') == busi.modality and modalities.modality('folder') == ''
    assert duplicates.set_near_duplicate_bits('busi') == busi.near_duplicate_bits == 64
    assert duplicates.set_near_duplicate_bits('folder') == catalogue.NEAR_DUPLICATE_BITS
    changed = dataclasses.replace(busi, near_duplicate_bits=40, flip=False)
    monkeypatch.setitem(catalogue.BY_NAME, 'busi', changed)
    assert duplicates.set_near_duplicate_bits('busi') == 40
    assert target_sets.builtin_target('busi', where='t').augment.flip is False


def test_unknown_set_lists_known_ones():
    with pytest.raises(ValueError, match=r"Unknown data set 'busy'.*busi.*'folder'"):
        builders.make_builder('busy')


def test_synthetic_config_name_and_determinism(tmp_path):
    a = builders.make_builder(
        'synthetic_xray', data_dir=str(tmp_path / 'a'), image_size=32, num_examples=6, seed=3
    )
    assert a.builder_config.name == 'size32_n6_seed3'
    builders.build(a)
    b = builders.make_builder(
        'synthetic_xray', data_dir=str(tmp_path / 'b'), image_size=32, num_examples=6, seed=3
    )
    builders.build(b)
    ra, rb = _records(a)['train'], _records(b)['train']
    assert sorted(ra) == [f'synthetic_xray_{i:06d}' for i in range(6)]
    for id_ in ra:
        np.testing.assert_array_equal(ra[id_]['image'], rb[id_]['image'])
        np.testing.assert_array_equal(ra[id_]['mask'], rb[id_]['mask'])
    c = builders.make_builder(
        'synthetic_xray', data_dir=str(tmp_path / 'a'), image_size=32, num_examples=6, seed=4
    )
    builders.build(c)
    rc = _records(c)['train']
    assert not np.array_equal(
        rc['synthetic_xray_000000']['image'], ra['synthetic_xray_000000']['image']
    )


def test_natural_speckle_set_has_the_natural_sets_masks(tmp_path):
    kwargs = dict(data_dir=str(tmp_path), image_size=32, num_examples=3, seed=5)
    speckle = _build('synthetic_natural_speckle', '', **kwargs)
    natural = _build('synthetic_natural', '', **kwargs)
    rs, rn = _records(speckle)['train'], _records(natural)['train']
    assert speckle.info.features['image'].shape == (None, None, 1)
    for i in range(3):
        s, n = rs[f'synthetic_natural_speckle_{i:06d}'], rn[f'synthetic_natural_{i:06d}']
        np.testing.assert_array_equal(s['mask'], n['mask'])
        assert s['image'].shape == (32, 32, 1)


_NO_TF = textwrap.dedent('''
  import importlib.abc, importlib.machinery, json, sys
  class Refuse(importlib.abc.Loader):
    def create_module(self, spec):
      raise ModuleNotFoundError(f'{spec.name} is blocked in this test', name=spec.name)
    def exec_module(self, module):
      pass
  class NoTensorFlow(importlib.abc.MetaPathFinder):
    """Any import of tensorflow fails, as if it were not installed."""
    def find_spec(self, name, path=None, target=None):
      if name.split('.')[0] == 'tensorflow':
        return importlib.machinery.ModuleSpec(name, Refuse())
  sys.meta_path.insert(0, NoTensorFlow())
  from tests.conftest import make_layout
  from unet_jax.data import builders, fields, pipeline
  root = sys.argv[1]
  sizes = {}
  for name in ('busi', 'ecssd', 'synthetic_ultrasound', 'synthetic_natural'):
    c = fields.default_data_config()
    c.update(name=name, data_dir=root + '/tfds', image_size=32, num_examples=10,
             manual_dir=str(make_layout(name, __import__('pathlib').Path(root) / name)['root'])
             if not name.startswith('synthetic') else '')
    splits = pipeline.load_splits(c, in_channels=3)
    sizes[name] = {k: len(v) for k, v in splits.items()}
  assert not any(m.split('.')[0] == 'tensorflow' for m in sys.modules if sys.modules[m])
  print(json.dumps(sizes))
''')


def test_build_and_read_without_tensorflow(tmp_path):
    result = subprocess.run(
        [sys.executable, '-c', _NO_TF, str(tmp_path)],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        cwd=str(__import__('pathlib').Path(__file__).parents[1]),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sizes = json.loads(result.stdout.strip().splitlines()[-1])
    assert sizes['busi'] == {'train': 4, 'val': 1, 'test': 1}
    assert sizes['synthetic_ultrasound'] == {'train': 6, 'val': 2, 'test': 2}
