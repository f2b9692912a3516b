"""Any data as a study target: a study over two folder sets of generated images, end to end."""

import json
import os

import ml_collections
import numpy as np
import pandas as pd
import pytest

from configs import layerwise
from tests.conftest import save_image
from unet_jax import layout
from unet_jax.data import pipeline
from unet_jax.report import load
from unet_jax.study import leakage, runner
from unet_jax.train import trainer


def _disk_images(folder, n, *, seed, mask_folder=None, mask_suffix='', empty=()):
    """n bright disks on noise at 40x48 (other than the model's 32x32), PNG image and mask."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:40, :48]
    for i in range(n):
        r, c, radius = rng.uniform(12, 28), rng.uniform(14, 34), rng.uniform(5, 10)
        mask = ((rows - r) ** 2 + (cols - c) ** 2 < radius**2).astype(np.uint8)
        if i in empty:
            mask[:] = 0
        image = np.clip(70 + 110 * mask + 25 * rng.standard_normal(mask.shape), 0, 255)
        save_image(folder / f'case{i:02d}.png', image.astype(np.uint8))
        save_image((mask_folder or folder) / f'case{i:02d}{mask_suffix}.png', mask * 255)


TARGETS = """
def get_targets():
    return {{
        'left': {{
            'data': {{'name': 'folder', 'folder': {{'images': {left!r}, 'masks': {masks!r}}}}},
        }},
        'right': {{
            'data': {{'name': 'folder', 'drop_normal': True,
                      'folder': {{'images': {right!r}, 'pairing': 'suffix'}}}},
            'augment': {{'flip': False}},
        }},
    }}
"""


def test_a_study_with_two_folder_targets_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv('UNET_JAX_DATA_DIR', str(tmp_path / 'tfds'))
    left, right = tmp_path / 'left' / 'images', tmp_path / 'right'
    _disk_images(left, 12, seed=1, mask_folder=tmp_path / 'left' / 'masks')
    _disk_images(right, 12, seed=2, mask_suffix='_mask', empty=(5,))
    target_file = tmp_path / 'targets.py'
    target_file.write_text(
        TARGETS.format(left=str(left), masks=str(tmp_path / 'left' / 'masks'), right=str(right))
    )
    config = layerwise.get_config(
        f'quick,seeds=1,sizes=4,targets={target_file},families=scratch+contracting'
    )
    config.model.depth, config.model.base_width, config.data.image_size = 2, 4, 32
    for run in (config, config.study.pretrain):
        run.batch_size = 4
        run.num_train_steps = run.eval_every_steps = run.checkpoint_every_steps = 3
        run.log_every_steps, run.warmup_steps = 3, 1
    config.study.pretrain.data.num_examples = 24
    workdir = str(tmp_path / 'study')

    outcome = runner.main(config, workdir)

    assert outcome['failed'] == [] and len(outcome['done']) == 4
    for target, folder, flip in (('left', left, True), ('right', right, False)):
        for family in ('scratch', 'contracting'):
            path = os.path.join(layout.run_dir(workdir, f'{target}/n4/s0/{family}'), 'results.json')
            with open(path) as f:
                results = json.load(f)
            data = results['config']['data']
            assert (data['name'], data['folder']['images']) == ('folder', str(folder))
            assert results['config']['augment']['flip'] is flip
            assert results['num_train_examples'] == 4
    right_ids = pipeline.load_splits(leakage.target_data(config, 'right'), in_channels=1)
    assert 'case05' not in {i for split in right_ids.values() for i in split.ids}  # no lesion
    with open(os.path.join(workdir, 'study.json')) as f:
        plan = json.load(f)
    assert plan['targets']['right']['data']['folder']['images'] == str(right)
    page = open(outcome['report']).read()
    assert 'left' in page and 'right' in page


def test_an_external_set_is_scored_by_every_run_and_never_selects(tmp_path, monkeypatch):
    """external=folder:clinic@left: every run trained on `left` (2 outer folds x 2 seeds) also
    scores every image of the folder set `clinic`; the report has the cell left_on_clinic
    with its own comparison; a run trained again without the external set picks the same
    step and scores the same test Dice (the external set plays no part in selection)."""
    monkeypatch.setenv('UNET_JAX_DATA_DIR', str(tmp_path / 'tfds'))
    left, clinic = tmp_path / 'left' / 'images', tmp_path / 'clinic'
    _disk_images(left, 12, seed=1, mask_folder=tmp_path / 'left' / 'masks')
    _disk_images(clinic, 9, seed=3, mask_suffix='_mask')
    config = layerwise.get_config(
        'quick,seeds=2,sizes=4,targets=folder:left,families=scratch+full,'
        'external=folder:clinic@left'
    )
    config.study.targets.left.data.folder.images = str(left)
    config.study.targets.left.data.folder.masks = str(tmp_path / 'left' / 'masks')
    config.study.external.clinic.data.folder.images = str(clinic)
    config.study.external.clinic.data.folder.pairing = 'suffix'
    config.data.outer_folds = 2
    config.model.depth, config.model.base_width, config.data.image_size = 2, 4, 32
    for run in (config, config.study.pretrain):
        run.batch_size = 4
        run.num_train_steps, run.eval_every_steps = 6, 2
        run.checkpoint_every_steps = run.log_every_steps = 2
        run.warmup_steps = 1
    config.study.pretrain.data.num_examples = 24
    workdir = str(tmp_path / 'study')

    outcome = runner.main(config, workdir)

    assert outcome['failed'] == [] and len(outcome['done']) == 8
    external_dice = []
    for name in ('s0/f0', 's0/f1', 's1/f0', 's1/f1'):
        directory = layout.run_dir(workdir, f'left/n4/{name}/full')
        results = layout.read_results(directory)
        scored = results['external']['clinic']
        assert scored['per_image']['ids'] == [f'case{i:02d}' for i in range(9)]
        # the external set's own first images are kept for its figure, beside the run's own
        with np.load(os.path.join(directory, layout.predictions_file('clinic'))) as kept:
            assert list(kept['ids']) == [f'case{i:02d}' for i in range(8)]
            assert kept['prob'].shape[0] == 8
            clinic_first = kept['image'][0]
        with np.load(os.path.join(directory, layout.predictions_file())) as own:
            # both sets name their files caseNN: the pixels tell them apart
            assert not any(np.array_equal(clinic_first, image) for image in own['image'])
        assert results['config']['data']['folder']['images'] == str(left)  # trained on left
        external_dice.append(scored['dice'])
    # Trained again without the external set: the same chosen step and test Dice.
    alone = ml_collections.ConfigDict(results['config'])
    alone.external = ml_collections.ConfigDict()
    again = trainer.train_and_evaluate(alone, str(tmp_path / 'alone'))
    assert again['best_step'] == results['best_step'] and 'external' not in again
    assert again['test']['dice'] == pytest.approx(results['test']['dice'], abs=1e-6)

    loaded = load.load(workdir)
    assert 'left_on_clinic' in loaded.targets
    summary = pd.read_csv(os.path.join(workdir, 'report', 'summary.csv'))
    row = summary[(summary.target == 'left_on_clinic') & (summary.configuration == 'full')]
    assert row['dice_mean'].iloc[0] == pytest.approx(np.mean(external_dice))
    comparisons = pd.read_csv(os.path.join(workdir, 'report', 'comparisons.csv'))
    on_clinic = comparisons[comparisons.target == 'left_on_clinic']
    assert len(on_clinic) and (on_clinic['num_images'] == 9).all()
    assert 'left_on_clinic' in open(outcome['report']).read()
    # its qualitative figure draws the external set's images, not the runs' own test split
    from unet_jax.report import qualitative

    runs = loaded.runs
    row = runs[(runs.target == 'left_on_clinic') & (runs.configuration == 'full')].head(1)
    assert qualitative._predictions_path(row).endswith(layout.predictions_file('clinic'))
    assert os.path.exists(os.path.join(workdir, 'report', 'qualitative_left_on_clinic.png'))
