"""The pre-registration record (unet_jax.config.registration) and what the report says of it."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from configs import layerwise
from tests.test_study import FakeTrainer, tiny_study_config
from unet_jax import layout
from unet_jax.config import registration
from unet_jax.report import registration as report_registration
from unet_jax.study import runner
from unet_jax.study.sweep_points import enumerate_sweep

T0, T1 = '2026-12-06T01:40:12Z', '2026-12-06T03:05:59Z'


def record_path(workdir) -> str:
    return os.path.join(str(workdir), layout.REGISTRATION_FILE)


def finish_runs(workdir, count: int) -> None:
    """`count` finished run folders (results.json) under WORKDIR/points."""
    for i in range(count):
        folder = layout.run_dir(str(workdir), f'us/n16/s{i}/full')
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, layout.RESULTS_FILE), 'w') as f:
            f.write('{}')
    os.makedirs(layout.run_dir(str(workdir), 'us/n16/s9/scratch'), exist_ok=True)  # unfinished


# ----------------------------------------------------------------------------- the record


def test_declaration_holds_the_inference_and_the_sweep():
    config = tiny_study_config(seeds=3)
    config.study.k_values = (1, 4)
    config.data.outer_folds = 5
    declared = registration.declaration(config)
    assert set(declared) == set(registration.FIELDS) - set(registration.OPTIONAL_FIELDS)
    assert declared['primary'] == dict(a='', b='', targets='', versus='', num_train=0)
    assert declared['primary_endpoint'] == dict(
        a='shallow_to_deep', b='deep_to_shallow', targets=['us'], versus='', num_train=16,
        k=[1, 4], order='forward', granularity='block',
    )  # fmt: skip
    assert declared['k_values'] == [1, 4] and declared['seeds'] == [0, 1, 2]
    assert declared['outer_folds'] == 5 and declared['targets'] == ['us']
    assert declared['pretrain_seeds'] == config.study.pretrain_seeds
    assert json.loads(json.dumps(declared)) == declared  # plain JSON
    config.data.outer_folds = 1  # < 2: no outer folds
    assert registration.declaration(config)['outer_folds'] == 0


def test_first_start_writes_the_registration_and_the_same_start_writes_nothing(tmp_path):
    config = tiny_study_config()
    entry = registration.register(str(tmp_path), config, total_runs=28, time=T0)
    record = json.loads(open(record_path(tmp_path)).read())
    assert record['entries'] == [entry]
    assert entry['kind'] == 'registration' and entry['time'] == T0
    assert entry['runs_finished'] == 0 and entry['total_runs'] == 28
    assert entry['declaration'] == registration.declaration(config)
    before = open(record_path(tmp_path), 'rb').read()
    assert registration.register(str(tmp_path), config, total_runs=28, time=T1) is None
    assert open(record_path(tmp_path), 'rb').read() == before
    copy = tiny_study_config()  # the same declaration from a new config object
    copy.study.amend_registration = True  # the flag alone is no change
    assert registration.register(str(tmp_path), copy, total_runs=28, time=T1) is None
    assert open(record_path(tmp_path), 'rb').read() == before


def test_the_record_names_the_commit_of_the_code_that_registered():
    """Run from a git checkout (the suite is), the entry's code is this checkout's HEAD: a path
    computed from the module's own folder breaks when the module moves (it did: the record of a
    study read None after the package split)."""
    root = registration.repository_root()
    assert os.path.isdir(os.path.join(root, 'unet_jax')) and os.path.isfile(
        os.path.join(root, 'pyproject.toml')
    )
    if not os.path.exists(os.path.join(root, '.git')):
        pytest.skip('not run from a git checkout')
    head = subprocess.run(
        ['git', '-C', root, 'rev-parse', 'HEAD'], capture_output=True, text=True, check=True
    ).stdout.strip()
    code = registration.code_version()
    assert code is not None and code['commit'] == head and isinstance(code['modified'], bool)


def test_a_changed_primary_is_refused_and_names_the_amendment_flag(tmp_path):
    config = tiny_study_config()
    registration.register(str(tmp_path), config, total_runs=28, time=T0)
    before = open(record_path(tmp_path), 'rb').read()
    changed = tiny_study_config()
    changed.study.primary.a = 'contracting'
    changed.study.primary.b = 'expanding'
    finish_runs(tmp_path, 3)
    with pytest.raises(registration.RegistrationError) as error:
        registration.register(str(tmp_path), changed, total_runs=28)
    text = str(error.value)
    assert '--config.study.amend_registration=True' in text
    assert record_path(tmp_path) in text and T0 in text
    assert 'study.primary: {"a": "", ' in text and '-> {"a": "contracting", ' in text
    assert '"a": "shallow_to_deep"' in text and '"a": "contracting"' in text  # the endpoint
    assert '3 of 28 have finished now' in text
    assert 'study.margin' not in text  # only what changed
    assert open(record_path(tmp_path), 'rb').read() == before
    assert error.value.exit_code == 2  # a config the user set: exit 2, no traceback


def test_an_amendment_is_appended_and_the_first_entry_keeps_its_bytes(tmp_path):
    config = tiny_study_config()
    registration.register(str(tmp_path), config, total_runs=28, time=T0)
    before = open(record_path(tmp_path)).read()
    first_entry = before[before.index('{', 1) : before.rindex('\n]}')]
    finish_runs(tmp_path, 5)
    amended = tiny_study_config()
    amended.study.k_values = (1,)
    amended.study.amend_registration = True
    entry = registration.register(str(tmp_path), amended, total_runs=24, time=T1)
    assert entry['kind'] == 'amendment' and entry['time'] == T1
    assert entry['runs_finished'] == 5 and entry['total_runs'] == 24
    assert entry['changed'] == ['primary_endpoint', 'k_values']
    after = open(record_path(tmp_path)).read()
    assert after.startswith(before[: -len('\n]}\n')] + ',\n')  # appended, nothing rewritten
    assert first_entry in after
    record = registration.read(str(tmp_path))
    assert [e['kind'] for e in record['entries']] == ['registration', 'amendment']
    assert record['entries'][0]['declaration']['k_values'] == []
    assert registration.in_force(record)['declaration']['k_values'] == [1]
    # the amended declaration is now the one in force: starting with it writes nothing, and
    # going back to the first one is another amendment
    assert registration.register(str(tmp_path), amended, total_runs=24) is None
    with pytest.raises(registration.RegistrationError, match='amend_registration'):
        registration.register(str(tmp_path), config, total_runs=28)


def test_a_study_started_before_registration_is_recorded_with_its_finished_runs(tmp_path):
    finish_runs(tmp_path, 4)
    assert registration.count_finished(str(tmp_path)) == 4
    entry = registration.register(str(tmp_path), tiny_study_config(), total_runs=28, time=T0)
    assert entry['kind'] == 'registration' and entry['runs_finished'] == 4
    lines = report_registration.lines(registration.read(str(tmp_path)))
    assert lines[0].startswith('Registered 2026-12-06 01:40 UTC, after 4 of 28 runs had finished')
    assert 'before any run' not in lines[0]
    assert report_registration.heading(registration.read(str(tmp_path))) == (
        'registered after 4 of 28 runs'
    )


def test_non_chief_processes_refuse_but_never_write(tmp_path):
    config = tiny_study_config()
    assert registration.register(str(tmp_path), config, total_runs=28, write=False)
    assert not os.path.exists(record_path(tmp_path))
    registration.register(str(tmp_path), config, total_runs=28)
    changed = tiny_study_config()
    changed.study.margin = 0.05
    with pytest.raises(registration.RegistrationError, match='study.margin: 0.02 -> 0.05'):
        registration.register(str(tmp_path), changed, total_runs=28, write=False)
    changed.study.amend_registration = True
    before = open(record_path(tmp_path), 'rb').read()
    registration.register(str(tmp_path), changed, total_runs=28, write=False)
    assert open(record_path(tmp_path), 'rb').read() == before


def test_an_unreadable_record_says_how_to_fix_it(tmp_path):
    with open(record_path(tmp_path), 'w') as f:
        f.write('{"entries": [')
    with pytest.raises(registration.RegistrationError, match='cannot be read.*restore it'):
        registration.register(str(tmp_path), tiny_study_config(), total_runs=28)


# ----------------------------------------------------------------------------- the report lines


def _record(tmp_path, *changes, finished=(0, 6)):
    """A record: the tiny study registered, then amended by each of `changes` (a function that
    changes a config) after `finished[i]` runs."""
    config = tiny_study_config(seeds=3)
    config.study.k_values = (1, 4)
    config.study.pretrain_seeds = 3
    registration.register(str(tmp_path), config, total_runs=30, runs_finished=finished[0], time=T0)
    for i, change in enumerate(changes):
        change(config)
        config.study.amend_registration = True
        registration.register(
            str(tmp_path), config, total_runs=12, runs_finished=finished[i + 1], time=T1
        )
    return registration.read(str(tmp_path))


def test_report_lines_of_a_registration_before_any_run(tmp_path):
    record = _record(tmp_path)
    (line,) = report_registration.lines(record)
    assert line.startswith('Registered 2026-12-06 01:40 UTC, before any run: primary = ')
    assert 'shallow->deep minus deep->shallow (test Dice averaged over k = 1, 4' in line
    assert 'margin 0.02' in line and 'k 1, 4' in line and 'sizes 16' in line
    assert 'seeds 0-2 with 3 pre-trainings' in line and 'targets us' in line
    assert report_registration.heading(record) == 'registered before any run'


def test_report_lines_of_an_amended_primary_endpoint(tmp_path):
    def cut_k(config):
        config.study.k_values = (4,)

    record = _record(tmp_path, cut_k)
    lines = report_registration.lines(record)
    assert len(lines) == 2 and lines[0].startswith('Registered ')
    assert lines[1].startswith(
        'Primary endpoint amended after 6 of 30 runs had finished (2026-12-06 03:05 UTC, '
        'study.amend_registration; study.k_values changed; the amended study has 12 runs): '
        'from shallow->deep minus deep->shallow (test Dice averaged over k = 1, 4,'
    )
    assert 'to shallow->deep minus deep->shallow (test Dice averaged over k = 4,' in lines[1]
    assert report_registration.heading(record) == 'amended after 6 of 30 runs'
    assert not any('declared before' in line for line in lines)


def test_report_lines_of_an_amendment_that_leaves_the_primary_alone(tmp_path):
    def widen(config):
        config.study.margin = 0.05

    record = _record(tmp_path, widen)
    lines = report_registration.lines(record)
    assert lines[1] == (
        'Declaration amended (study.margin 0.02 -> 0.05) after 6 of 30 runs had finished '
        '(2026-12-06 03:05 UTC, study.amend_registration; the amended study has 12 runs); the '
        'primary endpoint is as registered.'
    )
    assert report_registration.heading(record) == 'registered before any run'


def test_report_lines_without_a_record():
    assert report_registration.lines(None) == [report_registration.NO_RECORD]
    assert report_registration.NO_RECORD.startswith('No registration record')
    assert report_registration.heading(None) == 'no registration record'


# ----------------------------------------------------------------------------- end to end


def _first_screen(summary: str) -> str:
    """The summary up to its first second-level heading (what a reader sees first)."""
    return summary.split('\n## ', 1)[0]


def _primary_heading(summary: str) -> str:
    return re.search(r'^### Primary endpoint \((.*)\)$', summary, re.M).group(1)


def test_a_study_refuses_a_changed_primary_and_reports_the_amendment(tmp_path):
    workdir = str(tmp_path / 'w')
    config = tiny_study_config(families=('pretrained', 'shallow_to_deep', 'deep_to_shallow'))
    no_leak_check = dict(leak_check_fn=lambda _: None)
    trainer = FakeTrainer()
    outcome = runner.main(config, workdir, run_fn=trainer, **no_leak_check)
    total = len(enumerate_sweep(config).runs)
    (entry,) = registration.read(workdir)['entries']
    assert entry['runs_finished'] == 0 and entry['total_runs'] == total
    summary_path = os.path.join(workdir, 'report', 'summary.md')
    summary = open(summary_path).read()
    first = _first_screen(summary)
    assert 'Registered ' in first and ', before any run: primary = shallow->deep' in first
    assert _primary_heading(summary) == 'registered before any run'
    assert outcome['failed'] == []

    changed = tiny_study_config(families=('pretrained', 'shallow_to_deep', 'deep_to_shallow'))
    changed.study.k_values = (1,)
    plan_before = open(os.path.join(workdir, layout.PLAN_FILE), 'rb').read()
    record_before = open(record_path(workdir), 'rb').read()
    for sweep_index in (None, 'pretrain', 'report', 0):  # every way a study (re)starts
        with pytest.raises(registration.RegistrationError, match='amend_registration=True'):
            runner.main(changed, workdir, sweep_index, run_fn=trainer, **no_leak_check)
    assert open(os.path.join(workdir, layout.PLAN_FILE), 'rb').read() == plan_before
    assert open(record_path(workdir), 'rb').read() == record_before

    changed.study.amend_registration = True
    calls = len(trainer.calls)
    runner.main(changed, workdir, run_fn=trainer, **no_leak_check)
    assert len(trainer.calls) == calls  # k = 1 had run: nothing new trains
    entries = registration.read(workdir)['entries']
    assert [e['kind'] for e in entries] == ['registration', 'amendment']
    assert entries[1]['runs_finished'] == total
    assert open(record_path(workdir), 'rb').read().startswith(record_before[: -len(b'\n]}\n')])
    summary = open(summary_path).read()
    first = _first_screen(summary)
    assert f'Primary endpoint amended after {total} of {total} runs had finished' in first
    assert 'Registered ' in first
    assert _primary_heading(summary) == f'amended after {total} of {total} runs'
    assert 'declared before the study ran' not in summary.lower().replace(
        'declared before the study ran (study.primary)', ''
    )  # (the primary table's caption is unet_jax.report.answer_tables')


def test_each_source_of_a_sources_study_is_registered(tmp_path):
    config = layerwise.get_config('quick,seeds=2,targets=us,sources=natural+natural_speckle,ks=1')
    config.model.depth, config.model.base_width, config.data.image_size = 2, 4, 32
    workdir = str(tmp_path / 'w')
    runner.main(config, workdir, run_fn=FakeTrainer(), leak_check_fn=lambda _: None)
    for name in config.study.sources:
        record = registration.read(layout.source_dir(workdir, name))
        assert record is not None and len(record['entries']) == 1
        assert record['entries'][0]['declaration']['k_values'] == [1]
    config.study.primary.versus = 'none'
    with pytest.raises(registration.RegistrationError, match='study.primary'):
        runner.main(config, workdir, run_fn=FakeTrainer(), leak_check_fn=lambda _: None)
