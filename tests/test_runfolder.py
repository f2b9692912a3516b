"""unet_jax.train.runfolder: the lock of a run folder and the comparison with its stored config."""

from __future__ import annotations

import json
import os
import re

import pytest

from tests import tiny
from unet_jax import errors
from unet_jax.layout import run_dir
from unet_jax.study import loop, run_configs, runner
from unet_jax.study.sweep_points import enumerate_sweep
from unet_jax.train import runfolder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def store(config, folder) -> None:
    """config.json as a run writes it."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, runfolder.CONFIG_FILE), 'w') as f:
        f.write(config.to_json_best_effort(indent=2))


def test_result_fields_differ_free_fields_may_change(tmp_path):
    config = tiny.tiny_config()
    store(config, tmp_path)
    runfolder.check_same_config(config, str(tmp_path))  # the same config
    free = tiny.tiny_config(
        log_every_steps=7, checkpoint_every_steps=5, **{'data.data_dir': '/elsewhere'}
    )
    runfolder.check_same_config(free, str(tmp_path))
    for field, value in (('seed', 1), ('model.base_width', 8), ('augment.flip', False)):
        changed = tiny.tiny_config(**{field: value})
        with pytest.raises(errors.ConfigError, match=re.escape(f'config.{field}: ')):
            runfolder.check_same_config(changed, str(tmp_path))


def test_a_path_may_move_but_not_appear_or_vanish(tmp_path):
    store(tiny.tiny_config(init_from='/runs/pretrain'), tmp_path)
    runfolder.check_same_config(tiny.tiny_config(init_from='/moved/pretrain'), str(tmp_path))
    moved = "config.init_from: '/runs/pretrain' there, '' now"
    with pytest.raises(errors.ConfigError, match=moved):
        runfolder.check_same_config(tiny.tiny_config(), str(tmp_path))


def test_a_field_the_stored_config_lacks_is_a_difference(tmp_path):
    config = tiny.tiny_config()
    store(config, tmp_path)
    stored = json.loads((tmp_path / runfolder.CONFIG_FILE).read_text())
    del stored['optimizer']['grad_clip_norm'], stored['finetune']['allow_random_frozen']
    (tmp_path / runfolder.CONFIG_FILE).write_text(json.dumps(stored))
    with pytest.raises(errors.ConfigError, match=r"grad_clip_norm: '\(not recorded\)' there, 0.0"):
        runfolder.check_same_config(config, str(tmp_path))


def test_the_docs_list_every_free_field():
    page = open(os.path.join(REPO, 'docs', 'runs.md')).read()
    section = page[page.index('## One folder, one run') :]
    section = section[: section.index('\n## ')]
    assert [f for f in runfolder.FREE_FIELDS if f'`{f}`' not in section] == []


def test_a_lock_is_one_process_at_a_time_even_in_one_process(tmp_path):
    """flock belongs to an open file: a second open in the same process is refused too."""
    with runfolder.lock(str(tmp_path)):
        with pytest.raises(runfolder.FolderInUseError, match=f'in use by process {os.getpid()} '):
            with runfolder.lock(str(tmp_path)):
                pass
    with runfolder.lock(str(tmp_path)):  # released at the end of the block
        pass


def tiny_study(families=('scratch', 'full')):
    from tests.test_study import tiny_study_config

    return tiny_study_config(seeds=1, families=families)


def test_a_study_group_and_a_whole_study_lock_their_folders(tmp_path):
    from tests.test_study import FakeTrainer

    config, workdir, fake = tiny_study(), str(tmp_path), FakeTrainer()
    sweep = enumerate_sweep(config)
    scratch = next(g for g in sweep.groups if 'scratch' in g.name)
    with runfolder.lock(loop.group_dir(workdir, scratch)):
        with pytest.raises(runfolder.FolderInUseError, match='groups/us/n16/scratch/s0 is in use'):
            runner.main(config, workdir, sweep_index=scratch.index, run_fn=fake)
    with runfolder.lock(workdir):
        with pytest.raises(runfolder.FolderInUseError, match=f'{workdir} is in use'):
            runner.main(config, workdir, run_fn=fake, leak_check_fn=lambda _: None)
    assert fake.calls == []
    with runfolder.lock(loop.group_dir(workdir, scratch)):  # the whole study stops there
        with pytest.raises(runfolder.FolderInUseError, match='scratch/s0 is in use'):
            runner.main(config, workdir, run_fn=fake, leak_check_fn=lambda _: None)
    assert runner.run_dir(workdir, scratch.runs[0].run_name) not in fake.calls


def test_a_study_refuses_run_folders_of_another_config_before_anything(tmp_path):
    from tests.test_study import FakeTrainer

    config, workdir = tiny_study(), str(tmp_path)
    point = next(p for p in enumerate_sweep(config).runs if p.family == 'full')
    stored = run_configs.point_config(config, point, workdir)
    stored.optimizer.learning_rate = 0.5
    store(stored, run_dir(workdir, point.run_name))
    fake = FakeTrainer()
    with pytest.raises(errors.ConfigError, match='learning_rate: 0.5 there, 0.001 now'):
        runner.main(config, workdir, run_fn=fake, leak_check_fn=lambda _: None)
    assert fake.calls == [] and sorted(os.listdir(workdir)) == ['points']
