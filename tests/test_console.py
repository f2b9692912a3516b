"""What a study prints (unet_jax.console) and what TensorBoard gets (report.dice_curves): the
console of command 1 on a tiny study, its answer and report path; -v bringing the log back;
each run's scalars and prediction images and the study's Dice against k, read back from the
event files."""

from __future__ import annotations

import glob
import io
import json
import logging as std_logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests import tiny
from tests.test_study import FakeTrainer, tiny_study_config
from unet_jax import console as console_lib
from unet_jax import layout
from unet_jax.data import pipeline
from unet_jax.study import runner
from unet_jax.train import outputs, writers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_CONSOLE_LINES = 60  # issue #30: command 1 prints at most about 60 lines


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


# ----------------------------------------------------------------------------- the console


def test_group_line_names_the_group_its_runs_dice_time_and_eta():
    out = io.StringIO()
    console = console_lib.Console(out)
    console.group_done(
        ' 3/36', 'us/n16/full', [0.7125, 0.6981], seconds=41, progress='9/104 runs, ETA 14m20s'
    )
    console.group_done('4/36', 'us/n16/scratch', [0.5], seconds=3, progress='10/104 runs')
    console.group_done(
        '5/36', 'us/n16/auto', [0.5], seconds=3, progress='12/104', runs=2, failed=1
    )
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        '[ 3/36] us/n16/full: 2 runs, test Dice 0.713 0.698 (mean 0.705) | 0m41s | '
        '9/104 runs, ETA 14m20s'
    )
    assert lines[1] == '[4/36] us/n16/scratch: 1 run, test Dice 0.500 | 0m03s | 10/104 runs'
    assert lines[2].startswith('[5/36] us/n16/auto: 2 runs, test Dice 0.500, 1 FAILED |')


def test_progress_within_a_group_is_one_line_a_minute_at_most():
    out, clock = io.StringIO(), Clock()
    console = console_lib.Console(out, clock=clock, progress_every_secs=60)
    console.group_started('pretrain')
    for now, step in ((10, 20), (59, 100), (61, 120), (100, 200), (125, 250), (200, 400)):
        clock.now = now
        console.progress('pretrain', step, 400)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines  # at 61 s and 125 s; none for the last step
    assert lines[0] == '  pretrain: step 120/400, 1.97 steps/s, ETA 2m22s'
    assert lines[1].startswith('  pretrain: step 250/400, 2 steps/s, ETA 1m15s')
    silent = console_lib.Console()  # outside a study: prints nothing, fails nothing
    silent.progress('x', 1, 2)
    assert console_lib.current().stream is None


def test_a_failure_is_named_with_its_error_file():
    out = io.StringIO()
    console_lib.Console(out).failure(
        'us/n16/s0/full', FloatingPointError('loss is NaN at step 3\nmore'), '/w/error.txt'
    )
    assert out.getvalue() == (
        'FAILED us/n16/s0/full: FloatingPointError: loss is NaN at step 3 (see /w/error.txt)\n'
    )


class OneRunDiverges(FakeTrainer):
    """FakeTrainer but for one run, which ends with an error while the others finish (as a
    run whose loss became NaN does)."""

    def __init__(self, diverges: str):
        super().__init__()
        self.diverges = diverges

    def __call__(self, runs, group_dir, name):
        outcome = {}
        for run in runs:
            if run.workdir.endswith(self.diverges):
                outcome[run.workdir] = FloatingPointError('loss is NaN at step 3')
            elif not layout.is_finished(run.workdir):
                outcome[run.workdir] = self.train(run.config, run.workdir)
        return outcome


def test_the_log_file_gets_everything_and_the_console_only_our_warnings(tmp_path):
    from absl import logging

    shown = console_lib._ShownOnConsole()

    def record(level, pathname):
        return std_logging.LogRecord('absl', level, pathname, 1, 'text', (), None)

    ours = os.path.join(ROOT, 'unet_jax', 'study', 'runner.py')
    tfds = '/venv/site-packages/tensorflow_datasets/core/dataset_builder.py'
    assert shown.filter(record(std_logging.WARNING, ours))
    assert not shown.filter(record(std_logging.INFO, ours))  # the story is printed, not logged
    assert not shown.filter(record(std_logging.WARNING, tfds))  # 'Using custom data config'
    assert shown.filter(record(std_logging.ERROR, tfds))
    def filtered():
        return any(isinstance(f, console_lib._ShownOnConsole) for f in handler.filters)

    handler = logging.get_absl_handler()
    with console_lib.study_log(str(tmp_path), verbose=True):
        assert not filtered()  # -v: the whole log on stderr
    with console_lib.study_log(str(tmp_path), verbose=False) as path:
        assert filtered()
        logging.info('[Hyperparameters] {"seed": 0}')
        std_logging.getLogger('jax._src.xla_bridge').info("Unable to initialize backend 'tpu'")
        with console_lib.printed_to_log():
            print('Downloading and preparing dataset Unknown size')
    assert path == str(tmp_path / layout.LOG_FILE)
    log = (tmp_path / layout.LOG_FILE).read_text()
    for line in ('[Hyperparameters]', "backend 'tpu'", 'Downloading and preparing dataset'):
        assert line in log
    assert not filtered()  # removed after the study


def test_study_tells_its_story_with_a_fake_trainer(tmp_path):
    """One line per group, the failed run named when its group ends, then the answer and the
    report's path; the study's curves of Dice against k in report/ (read back)."""
    config = tiny_study_config(seeds=2, families=('full', 'shallow_to_deep', 'deep_to_shallow'))
    out = io.StringIO()
    failing = OneRunDiverges('us/n16/s1/full')
    with pytest.raises(runner.RunsFailedError):
        runner.main(config, str(tmp_path), run_fn=failing, console=console_lib.Console(out))
    lines = out.getvalue().splitlines()
    sweep = runner.enumerate_sweep(config)
    group_lines = [line for line in lines if re.match(r'\[ ?\d+/\d+\] ', line)]
    assert len(group_lines) == len(sweep.groups)
    assert lines[0].startswith(f'Study in {tmp_path}: {len(sweep.runs)} runs in ')
    assert lines[1].startswith('[pre-training] ')
    failed = [line for line in lines if line.startswith('FAILED ')]
    error_file = tmp_path / 'points/us/n16/s1/full' / layout.ERROR_FILE
    assert failed == [
        f'FAILED us/n16/s1/full: FloatingPointError: loss is NaN at step 3 (see {error_file})'
    ]
    full = next(line for line in group_lines if '/full' in line)
    assert ': 2 runs, test Dice 0.700, 1 FAILED |' in full  # seed 0's Dice only
    assert lines.index(failed[0]) == lines.index(full) - 1  # named as its group ends
    answer, report = lines[-2], lines[-1]
    assert answer.startswith('Answer: ') and answer.endswith('.') and len(answer.split()) > 8
    assert report == f'Report: {tmp_path}/report/report.html'
    assert os.path.exists(report.removeprefix('Report: '))

    curves = read_scalars(tmp_path / 'report')
    assert read_layout(tmp_path / 'report') == {'us': [r'dice_vs_k/us/[^/]+$']}
    for family, spec in (('shallow_to_deep', 'first'), ('deep_to_shallow', 'last')):
        curve = curves[f'dice_vs_k/us/{family}']
        assert sorted(curve) == sorted({p.k for p in sweep.points if p.family == family})
        # FakeTrainer's Dice: 0.65 + 0.02 * seed (+ 0.02 for first:k), seeds 0 and 1
        expected = 0.66 + (0.02 if spec == 'first' else 0.0)
        assert curve[1] == pytest.approx(expected)


def test_overlays_show_the_image_the_prediction_and_the_truths_outline():
    image = np.zeros((1, 9, 9, 1), np.float32)
    image[0, :, 4:] = 2.0  # right half bright
    mask = np.zeros((1, 9, 9, 1), np.float32)
    mask[0, 2:7, 2:7] = 1
    prob = np.zeros((1, 9, 9, 1), np.float32)
    prob[0, 0, 0] = 0.9
    rgb = writers.overlays(image, mask, prob)
    assert rgb.shape == (1, 9, 9, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 8, 0]) == (0, 0, 0) and tuple(rgb[0, 8, 8]) == (255, 255, 255)  # grey
    green = (rgb[0, ..., 1] > 200) & (rgb[0, ..., 0] < 60)
    outline = np.zeros((9, 9), bool)
    outline[2:7, 2:7] = True
    outline[3:6, 3:6] = False
    np.testing.assert_array_equal(green, outline)
    assert rgb[0, 0, 0, 0] > 100 and rgb[0, 0, 0, 2] < 50  # predicted: orange over black


def test_summary_images_are_the_first_lesion_images():
    masks = np.zeros((5, 4, 4, 1), np.float32)
    masks[[1, 3, 4], 1, 1] = 1
    split = pipeline.Split(np.zeros((5, 4, 4, 1), np.float32), masks, list('abcde'))
    np.testing.assert_array_equal(outputs.summary_indices(split), [1, 3, 4])
    np.testing.assert_array_equal(outputs.summary_indices(split, 4), [1, 3, 4, 0])


# ----------------------------------------------------------------------------- command 1


TINY_STUDY_ARGS = [
    '--config=configs/layerwise.py:quick,seeds=2,sizes=8,ks=1+2,'
    'families=shallow_to_deep+deep_to_shallow',
    *tiny.TINY_STUDY_FLAGS,
    '--config.study.pretrain.num_train_steps=4',
    '--config.study.pretrain.eval_every_steps=2',
    '--config.study.pretrain.log_every_steps=2',
    '--config.num_train_steps=6',
    '--config.warmup_steps=1',
    '--config.eval_every_steps=3',
    '--config.checkpoint_every_steps=3',
    '--config.log_every_steps=2',
]


def run_command(workdir: str, *extra: str) -> subprocess.CompletedProcess:
    """Command 1 (the whole study in one process) on the tiny study: stdout and stderr."""
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='')
    env.pop('TF_CPP_MIN_LOG_LEVEL', None)  # conftest sets it; a user's shell does not
    cache = os.environ.get('JAX_COMPILATION_CACHE_DIR', '')
    command = [sys.executable, '-m', 'unet_jax.main', *TINY_STUDY_ARGS, f'--workdir={workdir}']
    return subprocess.run(
        [*command, f'--compilation_cache={cache}', *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_command_one_prints_its_story_and_tensorboard_has_runs_images_and_the_study(
    tmp_path, monkeypatch
):
    monkeypatch.setenv('UNET_JAX_DATA_DIR', str(tmp_path / 'data'))  # TFDS builds the sets
    workdir = tmp_path / 'study'
    done = run_command(str(workdir))
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout + done.stderr
    lines = printed.splitlines()
    plan = json.loads((workdir / layout.PLAN_FILE).read_text())
    assert len(lines) <= MAX_CONSOLE_LINES, printed
    assert done.stderr == '', done.stderr  # no warnings, banners, progress bars
    for noise in ('[Hyperparameters]', 'Downloading and preparing', 'oneDNN', "backend 'tpu'"):
        assert noise not in printed
    group_lines = [line for line in lines if re.match(r'\[ ?\d+/\d+\] ', line)]
    assert len(group_lines) == len(plan['groups'])
    assert all(re.search(r': 2 runs, test Dice [\d.]+ [\d.]+ \(mean [\d.]+\) \| ', line)
               for line in group_lines)  # fmt: skip
    answer, report = lines[-2], lines[-1]
    assert answer.startswith('Answer: ') and answer.endswith('.') and len(answer.split()) > 8
    assert report == f'Report: {workdir}/report/report.html' and os.path.exists(report[8:])
    # the detail is in the study's log and the runs' files
    log = (workdir / layout.LOG_FILE).read_text()
    assert '[Hyperparameters]' in log and 'oneDNN' in log and 'trained and frozen' in log
    run = workdir / 'points/us/n8/s0/shallow_to_deep-forward-block-k1'
    assert 'trained units' in (run / outputs.FREEZE_FILE).read_text()

    # TensorBoard: a run's curves and its predictions at every evaluation
    scalars, images = read_events(run)
    assert sorted(scalars['val/dice']) == [3, 6] and sorted(scalars['train/loss']) == [2, 4, 6]
    assert 'test/dice' in scalars
    assert sorted(images['val/predictions']) == [3, 6]
    for step_images in images['val/predictions'].values():
        assert len(step_images) == outputs.SUMMARY_IMAGES
        assert step_images[0].shape == (32, 32, 3)
    # the study: Dice against k per target and direction, as the runs' results.json say
    curves = read_scalars(workdir / 'report')
    for target in ('us', 'xray'):
        for family in ('shallow_to_deep', 'deep_to_shallow'):
            curve = curves[f'dice_vs_k/{target}/{family}']
            assert sorted(curve) == [1, 2]
            results = [
                json.loads((workdir / p['dir'] / layout.RESULTS_FILE).read_text())
                for p in plan['points']
                if (p['target'], p['family'], p['k']) == (target, family, 2)
            ]
            mean = np.mean([r['test']['dice'] for r in results])
            assert len(results) == 2 and curve[2] == pytest.approx(mean)

    # -v 0 brings the log back on stderr (one group trained again)
    shutil.rmtree(run)
    again = run_command(str(workdir), '-v', '0')
    assert again.returncode == 0, again.stderr[-3000:]
    assert '[Hyperparameters]' in again.stderr and 'trained and frozen' in again.stderr
    assert re.search(
        r'\n\[ ?\d+/\d+\] us/n8/shallow_to_deep-forward-block-k1/s0-1: 2 runs, ', again.stdout
    )
    total = plan['num_runs']
    assert f'{total - 1} of {total} runs finished earlier' in again.stdout


# ----------------------------------------------------------------------------- helpers


def _event_accumulator(folder):
    from tensorboard.backend.event_processing import event_accumulator

    files = glob.glob(os.path.join(folder, 'events.out.tfevents.*'))
    assert files, f'no event file in {folder}'
    accumulator = event_accumulator.EventAccumulator(
        str(folder), size_guidance={'scalars': 0, 'tensors': 0, 'images': 0}
    )
    accumulator.Reload()
    return accumulator


def read_scalars(folder) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of the scalars in a folder's event files (simple values)."""
    accumulator = _event_accumulator(folder)
    return {
        tag: {e.step: e.value for e in accumulator.Scalars(tag)}
        for tag in accumulator.Tags()['scalars']
    }


def read_layout(folder) -> dict[str, list[str]]:
    """{chart title: its tag regexes} of the Custom Scalars layout in a folder's event files."""
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata
    from tensorboard.util import tensor_util

    accumulator = _event_accumulator(folder)
    [event] = accumulator.Tensors(metadata.CONFIG_SUMMARY_TAG)
    layout = layout_pb2.Layout.FromString(tensor_util.make_ndarray(event.tensor_proto).item())
    return {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}


def read_events(folder):
    """({tag: {step: value}} of the scalars, {tag: {step: [images]}}) of a run's event files
    (TF2 summaries: tensors with the scalars' and images' plugins)."""
    from PIL import Image
    from tensorboard.util import tensor_util

    accumulator = _event_accumulator(folder)
    scalars, images = {}, {}
    for tag in accumulator.Tags()['tensors']:
        plugin = accumulator.SummaryMetadata(tag).plugin_data.plugin_name
        for event in accumulator.Tensors(tag):
            value = tensor_util.make_ndarray(event.tensor_proto)
            if plugin == 'scalars':
                scalars.setdefault(tag, {})[event.step] = float(value)
            elif plugin == 'images':  # [width, height, png, png, ...]
                decoded = [np.asarray(Image.open(io.BytesIO(png))) for png in value[2:]]
                images.setdefault(tag, {})[event.step] = decoded
    return scalars, images
