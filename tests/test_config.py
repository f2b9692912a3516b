"""Config files and target definitions: arguments checked, targets applied with clear errors."""

import importlib

import ml_collections
import pytest

from configs import finetune, layerwise, pretrain
from unet_jax import errors
from unet_jax.config import defaults, target_sets
from unet_jax.study import checks


@pytest.mark.parametrize(
    'module,valid',
    [
        ('configs.default', ['quick']),
        ('configs.pretrain', ['quick', 'source', 'data']),
        ('configs.finetune', ['quick', 'target', 'data_root']),
        ('configs.layerwise', ['quick', 'source', 'targets', 'data_root', 'sizes', 'seeds']),
    ],
)
def test_every_config_file_rejects_unknown_arguments_listing_the_valid_ones(module, valid):
    get_config = importlib.import_module(module).get_config
    name = module.replace('.', '/') + '.py'
    with pytest.raises(
        ValueError, match=rf"{name}: unknown argument 'targt' in 'quick,targt=xray'"
    ):
        get_config('quick,targt=xray')
    with pytest.raises(ValueError) as error:
        get_config('targt')
    for argument in valid:
        assert f'\n  {argument}: ' in str(error.value)


def test_pretraining_sets_have_their_own_generation_seed():
    """Example i of a synthetic set depends on (seed, i) only: a pre-training set generated
    with a target's seed would hold the target's images."""
    target_seeds = {
        layerwise.get_config(f'quick,targets={t}').data.seed for t in ('us', 'xray', 'natural')
    }
    for source in defaults.SOURCES:
        for config in (
            pretrain.get_config(f'source={source}'),
            layerwise.get_config(f'quick,source={source}').study.pretrain,
        ):
            assert config.data.name == defaults.SOURCES[source]
            assert config.data.seed == defaults.PRETRAIN_DATA_SEED
            assert config.data.seed not in target_seeds
    with pytest.raises(ValueError, match=r"configs/pretrain.py: source='mri' is not one of"):
        pretrain.get_config('source=mri')


def test_builtin_targets_flip_and_normal_cases():
    for name in target_sets.target_names():
        target = target_sets.builtin_target(name, data_root='/data', where='test')
        data_name = target.data.name
        assert target.augment.flip == (data_name not in target_sets.XRAY_SETS), name
        assert target.data.drop_normal == (data_name in target_sets.ULTRASOUND_SETS), name
        assert target.data.get('manual_dir', '/data') == '/data'
    assert {'jsrt', 'montgomery', 'shenzhen', 'synthetic_xray'} == set(target_sets.XRAY_SETS)
    assert finetune.get_config('target=xray').augment.flip is False
    assert finetune.get_config('quick').data.drop_normal is True  # us, the default target
    busi = finetune.get_config('target=busi,data_root=/data/busi')
    assert (busi.data.name, busi.data.manual_dir, busi.augment.flip) == ('busi', '/data/busi', True)
    study = layerwise.get_config('quick,targets=us+xray+jsrt+dataset_b,data_root=/d').study
    flips = {t: study.targets[t].augment.flip for t in study.targets}
    assert flips == {'us': True, 'xray': False, 'jsrt': False, 'dataset_b': True}
    drops = {t: study.targets[t].data.drop_normal for t in study.targets}
    assert drops == {'us': True, 'xray': False, 'jsrt': False, 'dataset_b': True}
    with pytest.raises(ValueError, match=r"unknown target 'mri'; valid: us, xray, natural, busi"):
        finetune.get_config('target=mri')


def _run_config():
    return defaults.default_config('quick')


def test_apply_target_sets_data_and_augment_fields():
    config = _run_config()
    target_sets.apply_target(
        config,
        {
            'data': {'name': 'folder', 'folder': {'images': '/x/img', 'pairing': 'suffix'}},
            'augment': {'flip': False, 'max_contrast': 0},
        },
        where='config.study.targets.mine',
    )
    assert config.data.name == 'folder' and config.data.folder.images == '/x/img'
    assert config.data.folder.pairing == 'suffix' and config.data.folder.masks == ''
    assert config.augment.flip is False and config.augment.max_contrast == 0.0
    assert config.data.image_size == 64  # untouched fields keep the run's values


@pytest.mark.parametrize(
    'target,message',
    [
        ({'optimizer': {'learning_rate': 1}}, r'mine\.optimizer: a target sets fields of data and'),
        ({'data': {'nmae': 'busi'}}, r"mine\.data\.nmae: config\.data has no field 'nmae'; valid:"),
        (
            {'data': {'name': 'folder', 'folder': {'image': '/x'}}},
            r"mine\.data\.folder\.image: config\.data\.folder has no field 'image'; valid: images",
        ),
        ({'data': {'num_examples': 'many'}}, r"mine\.data\.num_examples='many': .* takes a int"),
        ({'data': {'num_train': 10}}, r'mine\.data\.num_train: a target cannot set it \(the stud'),
        ({'data': {'image_size': 32}}, r'mine\.data\.image_size: a target cannot set it'),
        ({'data': {'outer_fold': 1}}, r'mine\.data\.outer_fold: a target cannot set it \(the st'),
        ({'data': {'outer_folds': 5}}, r'mine\.data\.outer_folds: .* --config\.data\.outer_folds'),
        ({'data': {'name': 'bussi'}}, r"mine\.data\.name='bussi' is not a data set; valid: .*busi"),
        ({'data': {'name': 'folder'}}, r'mine is a folder set without images: set mine\.data\.fo'),
        ({'data': 'busi'}, r"mine\.data: expected a mapping of config\.data fields, got 'busi'"),
        ('busi', r'mine: a target definition is a mapping'),
    ],
)
def test_apply_target_errors_name_the_field(target, message):
    with pytest.raises(ValueError, match=message):
        target_sets.apply_target(_run_config(), target, where='mine')


TARGET_FILE = """
def get_targets():
    return {
        'left': {'data': {'name': 'folder', 'folder': {'images': '/d/left/img',
                                                       'masks': '/d/left/gt'}}},
        'right': {'data': {'name': 'folder', 'drop_normal': True,
                           'folder': {'images': '/d/right', 'pairing': 'suffix'}},
                  'augment': {'flip': False}},
    }
"""


def test_layerwise_targets_from_a_file_and_folder_arguments(tmp_path):
    path = tmp_path / 'mine.py'
    path.write_text(TARGET_FILE)
    config = layerwise.get_config(f'quick,targets=us+{path}+folder:third')
    targets = config.study.targets
    assert sorted(targets) == ['left', 'right', 'third', 'us']
    assert targets.right.augment.flip is False and targets.right.data.drop_normal is True
    # Every folder field of a folder:NAME target can be set as --config.study.targets...:
    targets.third.data.folder.images = '/d/third/images'
    targets.third.data.folder.mask_threshold = 127
    runs = {}
    for name in targets:
        runs[name] = config.copy_and_resolve_references()
        target_sets.apply_target(runs[name], targets[name], where=f'config.study.targets.{name}')
    third = runs['third'].data.folder
    assert third.images == '/d/third/images' and third.mask_threshold == 127
    assert runs['left'].data.folder.masks == '/d/left/gt' and runs['us'].data.name != 'folder'
    # A folder:NAME target left empty fails when it is applied, naming the flag to set.
    empty = layerwise.get_config('quick,targets=folder:fourth')
    with pytest.raises(
        ValueError, match=r'--config\.study\.targets\.fourth\.data\.folder\.images='
    ):
        target_sets.apply_target(
            _run_config(), empty.study.targets.fourth, where='config.study.targets.fourth'
        )


def test_layerwise_target_errors(tmp_path):
    with pytest.raises(ValueError, match=r"target file '.*nowhere\.py' does not exist"):
        layerwise.get_config(f'targets={tmp_path / "nowhere.py"}')
    bad = tmp_path / 'bad.py'
    bad.write_text('TARGETS = {}\n')
    with pytest.raises(ValueError, match=r'has no function get_targets\(\)'):
        layerwise.get_config(f'targets={bad}')
    bad.write_text("def get_targets():\n    return {'my-set': {'data': {'name': 'busi'}}}\n")
    with pytest.raises(ValueError, match=r"target name 'my-set' must be a Python identifier"):
        layerwise.get_config(f'targets={bad}')
    with pytest.raises(ValueError, match=r"target 'us' is given twice"):
        layerwise.get_config('targets=us+us')
    with pytest.raises(ValueError, match=r"unknown target 'mri'"):
        layerwise.get_config('targets=us+mri')
    with pytest.raises(ValueError, match='data_root'):
        layerwise.get_config('targets=busi')


def test_sources_and_targets_are_one_table():
    """configs/ read the tables of unet_jax.config; none keeps its own copy."""
    for module in (pretrain, finetune, layerwise):
        assert not hasattr(module, 'SOURCES') and not hasattr(module, 'TARGETS')
    assert isinstance(layerwise.get_config('quick').study.targets, ml_collections.ConfigDict)


# Arguments each config file is made with in the test below: '' and 'quick' for every file, and
# these besides (a new file in configs/ is made with the first two until it is listed here).
CONFIG_ARGUMENTS = {
    'pretrain': ['source=ultrasound', 'quick,source=natural_speckle', 'data=ecssd'],
    'finetune': ['target=xray', 'quick,target=busi,data_root=/data'],
    'layerwise': [
        'medium',
        'quick,targets=us+xray,families=scratch+full+auto,criteria=rgn',
        'targets=busi+jsrt,data_root=/data,sizes=10+all,seeds=2',
        'medium,targets=busi,pretrain_data=ecssd,data_root=/data',
        'quick,source=natural_speckle,targets=us+folder:mine',
    ],
}
# What making a config must not import: JAX and its libraries, and TFDS / TensorFlow.
HEAVY_MODULES = ('jax', 'jaxlib', 'flax', 'optax', 'tensorflow_datasets', 'tensorflow')
_MAKE_EVERY_CONFIG = """
import importlib, json, pathlib, sys
import unet_jax.config
made, extra = [], json.loads(sys.argv[1])
for path in sorted(pathlib.Path('configs').glob('*.py')):
    module = importlib.import_module('configs.' + path.stem)
    for arg in ['', 'quick', *extra.get(path.stem, [])]:
        module.get_config(arg).to_json_best_effort()  # every field made and readable
        made.append(f'{path.stem}:{arg}')
heavy = sorted({name.split('.')[0] for name in sys.modules} & set(json.loads(sys.argv[2])))
print(json.dumps({'made': made, 'heavy': heavy}))
"""


def test_configs_are_made_without_jax_or_tfds():
    """unet_jax.config's rule: a config is made without JAX (launchers, the report and `--help` make
    configs), and without TFDS, which takes seconds to import. A fresh interpreter imports
    unet_jax.config and makes every configs/*.py with its arguments; neither was loaded."""
    import json
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [
            sys.executable,
            '-c',
            _MAKE_EVERY_CONFIG,
            json.dumps(CONFIG_ARGUMENTS),
            json.dumps(HEAVY_MODULES),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {m.split(':')[0] for m in result['made']} == {'default', *CONFIG_ARGUMENTS}
    assert len(result['made']) == 8 + sum(map(len, CONFIG_ARGUMENTS.values()))
    assert result['heavy'] == [], f'making the configs imported {result["heavy"]}'


def test_the_declared_inference_is_checked():
    import runpy

    layerwise = runpy.run_path('configs/layerwise.py')['get_config']
    config = layerwise('quick,families=scratch+full')  # the default primary needs no directions
    checks.check_config(config)
    config.study.primary.a, config.study.primary.versus = 'shallow_to_deep', 'jsrt'
    config.study.margin = 0
    with pytest.raises(errors.ConfigError) as error:
        checks.check_config(config)
    text = str(error.value)
    assert "config.study.primary.a='shallow_to_deep' is not a family of this study" in text
    assert "target 'jsrt' is not a target of this study" in text
    assert 'config.study.margin=0.0: the TOST margin is a positive Dice' in text
