"""The bad-input catalogue: every input a user can get wrong, run through the real commands.

Each case asserts what a user sees: a non-zero exit status (2: the command line or config, 1:
anything else, see unet_jax/errors.py), one `error:` message that names the field or file and the
fix (key words below), no Python traceback on stderr, and nothing half-written: no
results.json, and where the input can be fixed, the same command then runs to the end.

Command-line and config cases run `python -m unet_jax.main ARGS` as a fresh __main__ in a
process forked from one that has imported the libraries (they fail before anything is written,
in a fraction of a second). Cases that need a model, a checkpoint or data run what the commands
run in this process, inside `cli.errors_reported` as the commands do, sharing one tiny trained
run. What only a whole process shows (tracebacks of threads at exit, a full disk) runs the
command in a subprocess.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import json
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from tests import tiny
from tests.conftest import blob_mask, save_image
from tests.test_predict import busi_layout, checksums, fake_study
from unet_jax import errors, predict, representation_change
from unet_jax.study import checks
from unet_jax.train import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRACEBACK = 'Traceback (most recent call last)'
TINY_ARGS = (
    '--config=configs/default.py',
    '--config.model.depth=2',
    '--config.model.base_width=4',
    '--config.data.image_size=32',
    '--config.batch_size=4',
    '--config.num_train_steps=2',
)


def assert_one_clear_message(stderr: str, code: int, expected_code: int, words) -> None:
    """Non-zero status, exactly one `error:` message holding every key word, no traceback."""
    assert code == expected_code, stderr[-3000:]
    assert TRACEBACK not in stderr, stderr[-3000:]
    assert stderr.count('error: ') == 1, stderr[-3000:]
    message = stderr[stderr.index('error: ') :]
    for word in words:
        assert word in message, f'{word!r} not in:\n{message}'


# ----------------------------------------------------------------------------- command line


@dataclasses.dataclass(frozen=True)
class CommandCase:
    args: tuple[str, ...]
    words: tuple[str, ...]
    code: int = errors.USAGE_EXIT
    tiny: bool = True  # prepend TINY_ARGS and --workdir


COMMAND_CASES = {
    'flag-unknown': CommandCase(('--epochs=3',), ("Unknown command line flag 'epochs'", '--help')),
    'flag-workdir-missing': CommandCase(
        ('--config=configs/default.py',), ('--workdir is required', '--help'), tiny=False
    ),
    'flag-unexpected-argument': CommandCase(('extra',), ('Unexpected arguments', '--help')),
    'config-file-missing': CommandCase(
        ('--config=configs/nope.py', '--workdir=w'),
        ("'configs/nope.py' does not exist", '--config=configs/finetune.py'),
        tiny=False,
    ),
    'config-argument-typo': CommandCase(
        ('--config=configs/finetune.py:quick,targt=xray', '--workdir=w'),
        ("unknown argument 'targt'", 'Valid arguments', 'target: '),
        tiny=False,
    ),
    'config-target-unknown': CommandCase(
        ('--config=configs/finetune.py:target=mri', '--workdir=w'),
        ("unknown target 'mri'", 'xray'),
        tiny=False,
    ),
    'config-argument-not-a-number': CommandCase(
        ('--config=configs/layerwise.py:quick,seeds=three', '--workdir=w'),
        ("seeds='three' is not a whole number",),
        tiny=False,
    ),
    'config-field-typo': CommandCase(
        ('--config.optimizer.learnng_rate=0.1',),
        ('--config.optimizer.learnng_rate', 'no field', '"learning_rate"'),
    ),
    'config-field-wrong-type': CommandCase(
        ('--config.batch_size=eight',), ('--config.batch_size=eight', 'takes int values')
    ),
    'batch-size-zero': CommandCase(
        ('--config.batch_size=0',), ('config.batch_size=0', 'positive integer')
    ),
    'steps-negative': CommandCase(
        ('--config.num_train_steps=-5',), ('config.num_train_steps=-5', '>= 0')
    ),
    'eval-every-zero': CommandCase(
        ('--config.eval_every_steps=0',), ('config.eval_every_steps=0', 'positive')
    ),
    'image-size-not-divisible': CommandCase(
        ('--config.data.image_size=30',),
        ('config.data.image_size', 'not divisible by 2**depth = 4', '28 or 32'),
    ),
    'depth-zero': CommandCase(('--config.model.depth=0',), ('config.model.depth=0', '>= 1')),
    'norm-unknown': CommandCase(
        ('--config.model.norm=layer',), ("config.model.norm='layer'", "'batch'")
    ),
    'upsample-unknown': CommandCase(
        ('--config.model.upsample=nearest',), ("config.model.upsample='nearest'", "'bilinear'")
    ),
    'in-channels-two': CommandCase(
        ('--config.model.in_channels=2',), ('config.model.in_channels=2', '1 (grey) or 3 (RGB)')
    ),
    'optimizer-unknown': CommandCase(
        ('--config.optimizer.name=sgd',), ("config.optimizer.name='sgd'", "'adamw'")
    ),
    'schedule-unknown': CommandCase(
        ('--config.optimizer.schedule=linear',), ("config.optimizer.schedule='linear'", "'cosine'")
    ),
    'learning-rate-zero': CommandCase(
        ('--config.optimizer.learning_rate=0',), ('config.optimizer.learning_rate=0', 'positive')
    ),
    'learning-rate-nan': CommandCase(
        ('--config.optimizer.learning_rate=nan',), ('config.optimizer.learning_rate=nan', 'finite')
    ),
    'several-fields': CommandCase(
        ('--config.batch_size=0', '--config.warmup_steps=-1'),
        ('2 config fields are wrong', 'config.batch_size=0', 'config.warmup_steps=-1'),
    ),
    'data-set-unknown': CommandCase(
        ('--config.data.name=imagenet',), ("config.data.name='imagenet'", 'folder')
    ),
    'split-fractions': CommandCase(
        ('--config.data.test_fraction=0.6', '--config.data.val_fraction=0.5'),
        ('test_fraction + val_fraction = 1.1', 'below 1'),
    ),
    'outer-folds-one': CommandCase(
        ('--config.data.outer_folds=1',), ('config.data.outer_folds=1', '0 (no outer', 'at least 2')
    ),
    'outer-fold-out-of-range': CommandCase(
        ('--config.data.outer_folds=5', '--config.data.outer_fold=5'),
        ('config.data.outer_fold=5', 'must be in 0..4', 'outer_folds=5'),
    ),
    'near-duplicate-bits-out-of-range': CommandCase(
        ('--config.data.near_duplicate_bits=300',),
        ('config.data.near_duplicate_bits=300', "-1 (the set's own)", '0..254'),
    ),
    'folder-images-unset': CommandCase(
        ('--config.data.name=folder',),
        ('config.data.folder.images', '--config.data.folder.images='),
    ),
    'sweep-index-without-study': CommandCase(
        ('--sweep_index=3',), ('--sweep_index needs a study config', 'configs/layerwise.py')
    ),
    'study-pretrain-field': CommandCase(
        (
            '--config=configs/layerwise.py:quick',
            '--workdir=w',
            '--config.study.pretrain.batch_size=0',
        ),
        ('config.study.pretrain.batch_size=0',),
        tiny=False,
    ),
    'study-folder-target-without-images': CommandCase(
        ('--config=configs/layerwise.py:quick,targets=us+folder:mine', '--workdir=w'),
        ('config.study.targets.mine', '--config.study.targets.mine.data.folder.images='),
        tiny=False,
    ),
    'spec-unknown-block': CommandCase(
        ('--config.finetune.train=enc7',), ("Unknown layer 'enc7'", 'Valid names', 'enc1')
    ),
    'spec-range-backwards': CommandCase(
        ('--config.finetune.train=dec0..enc0',), ('runs backwards', "write 'enc0..dec0'")
    ),
    'spec-first-zero': CommandCase(
        ('--config.finetune.train=first:0',), ("'first:0'", 'from 1 to')
    ),
    'spec-bad-regex': CommandCase(('--config.finetune.train=re:enc[',), ("Bad regex 're:enc['",)),
    'spec-none-mixed': CommandCase(
        ('--config.finetune.train=@none,enc0',), ('@none trains nothing', 'whole spec')
    ),
    'spec-trains-nothing': CommandCase(
        ('--config.finetune.train=enc0,-enc0',), ('trains nothing', "'@none'")
    ),
    'spec-order-unknown': CommandCase(
        ('--config.finetune.order=depth',), ("config.finetune.order='depth'", 'level')
    ),
    'spec-freezes-random-layers': CommandCase(
        ('--config=configs/finetune.py:quick', '--workdir=w'),
        (
            "config.finetune.train='@contracting' freezes 12 of 18 units",
            'config.init_from is empty',
            'random initialisation',
            '--config.init_from',
            '--config.finetune.train=@all',
            '--config.finetune.allow_random_frozen=True',
        ),
        tiny=False,
    ),
    'spec-none-from-scratch': CommandCase(
        ('--config.finetune.train=@none', '--config.num_train_steps=0'),
        ("'@none' freezes", 'config.init_from is empty', '--config.init_from'),
    ),
    'study-training-set-size-zero': CommandCase(
        ('--config=configs/layerwise.py:quick,sizes=0', '--workdir=w'),
        (
            'config.data.num_train=0 must be -1',
            'in sweep point us/n0/s0/pretrained and 71 other run(s)',
            'config.study.num_train (sizes=)',
        ),
        tiny=False,
    ),
}


# Runs `python -m unet_jax.main ARGS` in a child forked from a process that has imported the
# libraries already: the command's own code, flag parsing included, runs as a fresh __main__,
# without paying the interpreter start and imports (seconds on a busy CPU) for every case.
FORK_SERVER = r"""
import json, os, runpy, sys, traceback
import absl.app, jax, ml_collections.config_flags, unet_jax.errors, unet_jax.config.defaults
import unet_jax.study.checks
import unet_jax.freeze, unet_jax.models.layer_registry, unet_jax.models
print('ready', flush=True)
for line in sys.stdin:
    request = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.chdir(request['cwd'])
        for fd, path in ((1, request['stdout']), (2, request['stderr'])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv = [os.path.join(request['cwd'], 'unet_jax', 'main.py'), *request['args']]
        try:
            runpy.run_module('unet_jax.main', run_name='__main__', alter_sys=True)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (e.code is not None)
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({'code': os.waitstatus_to_exitcode(status)}), flush=True)
"""


@pytest.fixture(scope='module')
def main_command():
    """main_command(args, folder) -> (exit status, stderr) of `python -m unet_jax.main ARGS`."""
    server = subprocess.Popen(
        [sys.executable, '-c', FORK_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert server.stdout.readline().strip() == 'ready'

    def run(args, folder: Path) -> tuple[int, str]:
        out, err = folder / 'stdout.txt', folder / 'stderr.txt'
        request = dict(args=list(args), cwd=REPO, stdout=str(out), stderr=str(err))
        server.stdin.write(json.dumps(request) + '\n')
        server.stdin.flush()
        code = json.loads(server.stdout.readline())['code']
        return code, err.read_text()

    yield run
    server.stdin.close()
    server.wait(timeout=60)


@pytest.mark.parametrize('case', COMMAND_CASES.values(), ids=COMMAND_CASES.keys())
def test_command_line_and_config(case, main_command, tmp_path):
    workdir = tmp_path / 'run'
    args = (*TINY_ARGS, f'--workdir={workdir}', *case.args) if case.tiny else case.args
    code, stderr = main_command(args, tmp_path)
    assert_one_clear_message(stderr, code, case.code, case.words)
    assert not workdir.exists() and not (Path(REPO) / 'w').exists()  # nothing written


def test_workdir_that_is_a_file(main_command, tmp_path):
    """--workdir naming a file (or a path under one), for a run and for a study: one message
    naming --workdir (a FileExistsError traceback from the run-folder lock before), the file
    untouched."""
    file = tmp_path / 'notes.txt'
    file.write_text('a user file')
    study = ('--config=configs/layerwise.py:quick,seeds=1,families=scratch',)
    for args, workdir in (
        ((*TINY_ARGS, f'--workdir={file}'), file),
        ((*study, f'--workdir={file}'), file),
        ((*TINY_ARGS, f'--workdir={file / "run"}'), file / 'run'),
    ):
        code, stderr = main_command(args, tmp_path)
        what = 'is a file' if workdir == file else f'lies under {file}, which is a file'
        words = (f'--workdir={workdir} {what}', 'pass a --workdir that is a folder')
        assert_one_clear_message(stderr, code, errors.ERROR_EXIT, words)
        assert file.read_text() == 'a user file'


def test_unknown_external_set_names_external(main_command, tmp_path):
    args = ('--config=configs/layerwise.py:quick,external=nope@us', '--workdir=w')
    code, stderr = main_command(args, tmp_path)
    words = ('configs/layerwise.py:external', "'nope'")
    assert_one_clear_message(stderr, code, errors.USAGE_EXIT, words)
    assert 'targets' not in stderr[stderr.index('error: ') :].split(';')[0]


@pytest.mark.parametrize(
    'command',
    [
        '-m unet_jax.main --help',
        '-m unet_jax.main --helpfull',
        '-m unet_jax.predict --help',
        '-m unet_jax.predict --helpfull',
        '-m unet_jax.representation_change --help',
        '-m unet_jax.report --help',
        'launch/sweep.py --help',
    ],
)
def test_every_command_answers_help(command):
    result = subprocess.run(
        [sys.executable, *command.split()], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert '--' in result.stdout and not result.stderr.strip()


# ----------------------------------------------------------------------------- runs and files


def write_folder(root: Path, n: int = 12, size: int = 32) -> Path:
    """A folder set of n grey images with blob masks (0/255): images/ and masks/, same stems."""
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = blob_mask(rng, size, size)
        image = np.clip(80 + 100 * mask + 20 * rng.standard_normal((size, size)), 0, 255)
        save_image(root / 'images' / f'case{i}.png', image.astype(np.uint8))
        save_image(root / 'masks' / f'case{i}.png', mask * 255)
    return root


def run_config(data: Path, **overrides):
    """The tiny run of TINY_ARGS on a folder set: 2 steps, every step checkpointed."""
    overrides = {
        'data.name': 'folder',
        'data.folder.images': str(data / 'images'),
        'data.folder.masks': str(data / 'masks'),
        'num_train_steps': 2,
        'log_every_steps': 1,
        'eval_every_steps': 2,
        'checkpoint_every_steps': 1,
        **overrides,
    }
    return tiny.tiny_config(**overrides)


def train_run(config, workdir: Path) -> None:
    """What `python -m unet_jax.main` runs for a single-run config."""
    from unet_jax.train import trainer

    checks.check_config(config)
    trainer.train_and_evaluate(config, str(workdir))


def mount_tmpfs(folder: Path, options: str) -> bool:
    """Mounts a tmpfs on folder (root only); False where that is not possible."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which('mount'):
        return False
    return (
        subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(folder)]).returncode
        == 0
    )


@pytest.fixture(scope='module')
def good_data(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp('data'))


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory, good_data) -> Path:
    """A finished tiny run: the pre-training of init_from cases and a folder to damage."""
    workdir = tmp_path_factory.mktemp('trained')
    train_run(run_config(good_data), workdir)
    return workdir


@dataclasses.dataclass
class Bad:
    """A bad input prepared for one command: `run` what the command runs, raising on it."""

    run: Callable[[], object]
    words: tuple[str, ...]
    code: int = errors.ERROR_EXIT
    prog: str = 'main'
    workdir: Path | None = None  # the run folder: no results.json may appear in it
    untouched: Path | None = None  # a folder that must not be created
    fix: Callable[[], object] | None = None  # repairs the input and runs the command again
    unchanged: tuple[Path, ...] = ()  # folders whose every file keeps its checksum


@dataclasses.dataclass
class Context:
    tmp: Path
    good_data: Path
    trained_run: Path

    def data(self) -> Path:
        """A fresh copy of the good folder set, to damage."""
        return Path(shutil.copytree(self.good_data, self.tmp / 'data'))

    def run(self, data: Path, words, *, fix=None, **overrides) -> Bad:
        workdir = self.tmp / 'run'
        return Bad(
            lambda: train_run(run_config(data, **overrides), workdir),
            words,
            workdir=workdir,
            fix=fix,
        )

    def copy_of_trained_run(self, *, finished: bool = False) -> Path:
        workdir = Path(shutil.copytree(self.trained_run, self.tmp / 'copy'))
        if not finished:
            os.remove(workdir / 'results.json')
        return workdir


RUN_CASES: dict[str, Callable[[Context], Bad]] = {}


def case(name: str):
    def register(prepare: Callable[[Context], Bad]) -> Callable[[Context], Bad]:
        RUN_CASES[name] = prepare
        return prepare

    return register


@pytest.fixture
def ctx(tmp_path, good_data, trained_run) -> Context:
    return Context(tmp_path, good_data, trained_run)


@pytest.mark.parametrize('name', RUN_CASES)
def test_runs_and_files(name, ctx, capfd):
    bad = RUN_CASES[name](ctx)
    before = [checksums(folder) for folder in bad.unchanged]
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        with errors.errors_reported(bad.prog):
            bad.run()
    assert_one_clear_message(capfd.readouterr().err, exit_.value.code, bad.code, bad.words)
    assert [checksums(folder) for folder in bad.unchanged] == before
    if bad.workdir is not None:
        assert not (bad.workdir / 'results.json').exists()
    if bad.untouched is not None:
        assert not bad.untouched.exists()
    if bad.fix is not None:
        bad.fix()
        assert (bad.workdir / 'results.json').exists()


# Data folders and files.


@case('folder-missing')
def _(ctx):
    missing = ctx.tmp / 'nowhere'
    return ctx.run(
        ctx.good_data,
        ('config.data.folder.images=', 'nowhere', 'neither a folder nor a glob'),
        **{'data.folder.images': str(missing)},
    )


@case('folder-empty')
def _(ctx):
    (ctx.tmp / 'empty').mkdir()
    return ctx.run(
        ctx.good_data,
        ('No images found', 'it is empty'),
        **{'data.folder.images': str(ctx.tmp / 'empty')},
    )


@case('folder-unpaired')
def _(ctx):
    data = ctx.data()
    os.remove(data / 'masks' / 'case3.png')
    bad = ctx.run(data, ('1 images without a mask', 'case3.png', 'skip_bad=True'))
    fix = lambda: train_run(run_config(data, **{'data.folder.skip_bad': True}), bad.workdir)
    return dataclasses.replace(bad, fix=fix)


@case('image-unreadable')
def _(ctx):
    data = ctx.data()
    (data / 'images' / 'case2.png').write_bytes(b'this is not a png')
    return ctx.run(data, ('case2.png', 'cannot be read as an image', 'skip_bad=True'))


@case('image-truncated')
def _(ctx):
    data = ctx.data()
    path = data / 'images' / 'case4.png'
    path.write_bytes(path.read_bytes()[:60])
    return ctx.run(data, ('case4.png', 'cannot be read as an image', 'skip_bad=True'))


@case('image-huge')
def _(ctx):
    data = ctx.data()
    Image.new('1', (9000, 9000)).save(data / 'images' / 'case5.png')  # a few kB on disk
    return ctx.run(data, ('case5.png', '9000x9000', 'over the limit', 'Downscale'))


@case('image-nan-pixels')
def _(ctx):
    data = ctx.data()
    os.remove(data / 'images' / 'case6.png')
    pixels = np.ones((32, 32), np.float32)
    pixels[3, 4] = np.nan
    Image.fromarray(pixels, 'F').save(data / 'images' / 'case6.tif')
    return ctx.run(data, ('case6.tif', 'NaN or infinite', 'Replace them'))


@case('mask-other-size')
def _(ctx):
    data = ctx.data()
    save_image(data / 'masks' / 'case1.png', np.zeros((16, 16), np.uint8))
    bad = ctx.run(data, ('case1.png', 'mask is 16x16', 'image is 32x32', 'resize_masks'))
    fix = lambda: train_run(run_config(data, **{'data.folder.resize_masks': True}), bad.workdir)
    return dataclasses.replace(bad, fix=fix)


@case('mask-not-binary')
def _(ctx):
    data = ctx.data()
    ramp = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))
    save_image(data / 'masks' / 'case7.png', ramp)  # an image where a mask should be
    return ctx.run(data, ('case7.png', 'the mask has 32 values', 'mask_threshold'))


@case('mask-under-threshold')
def _(ctx):
    data = ctx.data()
    for path in (data / 'masks').iterdir():
        save_image(path, (np.asarray(Image.open(path)) > 0).astype(np.uint8))  # 0/1 masks
    return ctx.run(
        data, ('mask values are 0/1', 'threshold is 127'), **{'data.folder.mask_threshold': 127}
    )


@case('pairing-regex-without-key')
def _(ctx):
    return ctx.run(
        ctx.good_data,
        ('config.data.folder.regex', 'named group', 'key'),
        **{'data.folder.pairing': 'regex', 'data.folder.regex': r'case\d+'},
    )


@case('too-few-images')
def _(ctx):
    return ctx.run(write_folder(ctx.tmp / 'two', n=2), ('split', 'is empty', '2 cases'))


@case('num-train-over-the-split')
def _(ctx):
    return ctx.run(ctx.good_data, ('config.data.num_train=50', 'only'), **{'data.num_train': 50})


# Checkpoints.


@case('init-from-missing')
def _(ctx):
    return ctx.run(
        ctx.good_data,
        ('nowhere', 'does not exist', 'config.init_from'),
        **{'init_from': str(ctx.tmp / 'nowhere')},
    )


@case('init-from-empty-folder')
def _(ctx):
    (ctx.tmp / 'empty').mkdir()
    return ctx.run(
        ctx.good_data, ('No checkpoint found', 'best'), **{'init_from': str(ctx.tmp / 'empty')}
    )


def damage_checkpoint(folder: Path, how: str) -> None:
    """Truncates every file of the checkpoint's steps to half, or fills them with garbage."""
    for path in folder.rglob('*'):
        if path.is_file():
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2] if how == 'truncated' else b'\x13' * len(data))


@case('init-from-truncated')
def _(ctx):
    pretrained = ctx.copy_of_trained_run(finished=True)
    damage_checkpoint(pretrained / checkpoint.BEST_DIR, 'truncated')
    return ctx.run(
        ctx.good_data,
        ('cannot be read', str(pretrained / checkpoint.BEST_DIR)),
        **{'init_from': str(pretrained)},
    )


@case('init-from-garbage')
def _(ctx):
    pretrained = ctx.copy_of_trained_run(finished=True)
    damage_checkpoint(pretrained / checkpoint.BEST_DIR, 'garbage')
    return ctx.run(
        ctx.good_data,
        ('cannot be read', str(pretrained / checkpoint.BEST_DIR)),
        **{'init_from': str(pretrained)},
    )


@case('init-from-another-model')
def _(ctx):
    return ctx.run(
        ctx.good_data,
        ('do not fit the model', 'Shape mismatch', 'config.model', 'config.dont_load'),
        **{'init_from': str(ctx.trained_run), 'model.base_width': 8},
    )


@case('resume-truncated')
def _(ctx):
    workdir = ctx.copy_of_trained_run()
    damage_checkpoint(workdir / checkpoint.LATEST_DIR, 'truncated')

    def fix():
        shutil.rmtree(workdir / checkpoint.LATEST_DIR / '2')
        train_run(run_config(ctx.good_data), workdir)

    return Bad(
        lambda: train_run(run_config(ctx.good_data), workdir),
        ('cannot be read', str(workdir / checkpoint.LATEST_DIR)),
        workdir=workdir,
        fix=fix,
    )


@case('resume-another-model')
def _(ctx):
    workdir = ctx.copy_of_trained_run()
    return Bad(
        lambda: train_run(run_config(ctx.good_data, **{'model.base_width': 8}), workdir),
        (str(workdir), 'another', '--workdir'),
        workdir=workdir,
    )


# Training.


@case('loss-nan')
def _(ctx):
    """A learning rate that makes the loss diverge (test_loss_nan_command: the whole command)."""
    return ctx.run(
        ctx.good_data,
        ('stopped at step', 'config.optimizer.learning_rate'),
        **{'optimizer.learning_rate': 1e30, 'optimizer.schedule': 'constant', 'warmup_steps': 0},
    )


@case('workdir-read-only')
def _(ctx):
    workdir = ctx.tmp / 'read_only'
    if mount_tmpfs(workdir, 'ro,size=64k'):
        undo = lambda: subprocess.run(['umount', str(workdir)], check=True)
    elif os.geteuid() != 0:
        workdir.chmod(0o555)
        undo = lambda: workdir.chmod(0o755)
    else:
        pytest.skip('root without mount: no folder is read-only to it')

    def run():
        try:
            train_run(run_config(ctx.good_data), workdir)
        finally:
            assert not any(workdir.iterdir())
            undo()

    return Bad(run, (str(workdir), 'make the folder writable', '--workdir'))


# Predict, analyze, report.


@case('predict-mask-of-another-size')
def _(ctx):
    data = ctx.data()
    save_image(data / 'masks' / 'case0.png', np.zeros((16, 16), np.uint8))
    out = ctx.tmp / 'out'
    return Bad(
        lambda: predict.predict_images(
            str(ctx.trained_run), str(data / 'images'), str(out), masks=str(data / 'masks')
        ),
        ('case0.png', 'mask is 16x16', 'nothing was written', '--skip_bad'),
        prog='predict',
        untouched=out,
    )


@case('predict-unreadable-image')
def _(ctx):
    data = ctx.data()
    (data / 'images' / 'case1.png').write_bytes(b'GIF89a but no more')
    return Bad(
        lambda: predict.predict_images(str(ctx.trained_run), str(data / 'images'), str(ctx.tmp)),
        ('case1.png', 'cannot be read as an image', '--skip_bad'),
        prog='predict',
    )


def predict_run(ctx, *args, **kwargs) -> Callable[[], object]:
    return lambda: predict.predict_images(str(ctx.trained_run), *map(str, args), **kwargs)


@case('predict-output-is-the-input-folder')
def _(ctx):
    """BUSI as released: images and <stem>_mask.png in one folder, --output the same folder
    (which replaced the ground truth by the prediction, exit 0, before issue #28)."""
    busi = busi_layout(ctx.tmp / 'busi')
    return Bad(
        predict_run(ctx, busi, busi),
        (f"--output='{busi}' is the folder that --input", 'Pass an --output outside it'),
        prog='predict',
        unchanged=(busi,),
    )


@case('predict-output-inside-the-mask-folder')
def _(ctx):
    data = ctx.data()
    out = data / 'masks' / 'predicted'
    return Bad(
        predict_run(ctx, data / 'images', out, masks=data / 'masks'),
        ('--output=', 'is inside the folder that --masks', 'Pass an --output outside it'),
        prog='predict',
        untouched=out,
        unchanged=(data,),
    )


@case('predict-output-files-exist')
def _(ctx):
    busi = busi_layout(ctx.tmp / 'busi')
    out = ctx.tmp / 'out'
    out.mkdir()
    shutil.copy(busi / 'benign (1)_mask.png', out / 'benign (1)_mask.png')  # a user's copy
    return Bad(
        predict_run(ctx, busi, out),
        ('holds 1 of the files', 'benign (1)_mask.png', 'Nothing was written', '--overwrite'),
        prog='predict',
        unchanged=(busi, out),
    )


@case('predict-mask-of-several-values-writes-nothing')
def _(ctx):
    """Masks of several values under --mask_threshold=0: one error, not 1 of 4 segmented and
    a scores.csv over it."""
    data = ctx.data()
    ramp = np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1))
    for name in ('case1.png', 'case2.png', 'case3.png'):
        save_image(data / 'masks' / name, ramp)
    out = ctx.tmp / 'out'
    return Bad(
        predict_run(ctx, data / 'images', out, masks=data / 'masks', mask_threshold=0),
        ('3 of 12 inputs', 'nothing was written', 'case3.png: the mask has 32 values',
         '--mask_threshold', '--skip_bad'),  # fmt: skip
        prog='predict',
        untouched=out,
        unchanged=(data,),
    )


@case('predict-study-root')
def _(ctx):
    study = fake_study(ctx.tmp / 'study', str(ctx.trained_run))
    return Bad(
        lambda: predict.predict_images(str(study), str(ctx.good_data / 'images'), 'out'),
        ('is the workdir of a study, not a run', 'the best of each target and family',
         f'us contracting: {study}/points/us/n4/s0/contracting'),  # fmt: skip
        prog='predict',
    )


@case('predict-unknown-point')
def _(ctx):
    study = fake_study(ctx.tmp / 'study', str(ctx.trained_run))
    return Bad(
        lambda: predict.predict_images(
            str(study / 'points/us/n4/s0/ful'), str(ctx.good_data / 'images'), 'out'
        ),
        ("has no point 'us/n4/s0/ful'", 'us contracting: '),
        prog='predict',
    )


@case('predict-unfinished-run')
def _(ctx):
    unfinished = ctx.copy_of_trained_run()
    return Bad(
        lambda: predict.predict_images(str(unfinished), str(ctx.good_data / 'images'), 'out'),
        ('has not finished', 'results.json', 'resume'),
        prog='predict',
    )


@case('representation-change-of-a-run-from-scratch')
def _(ctx):
    return Bad(
        lambda: representation_change.main([str(ctx.trained_run)]),
        ('no init_from', 'trained from scratch', 'fine-tuned'),
        prog='representation_change',
    )


@case('report-not-a-study')
def _(ctx):
    from unet_jax.report.__main__ import main as report_main

    return Bad(
        lambda: report_main([str(ctx.trained_run)]),
        ('study.json', 'not a study workdir'),
        prog='report',
    )


# ----------------------------------------------------------------------------- whole commands


def main_args(data: Path, workdir: Path, *extra: str) -> list[str]:
    """The tiny run on a folder set, as a command line (XLA cache shared with this process)."""
    cache = os.environ.get('JAX_COMPILATION_CACHE_DIR', '')
    return [
        sys.executable,
        '-m',
        'unet_jax.main',
        *TINY_ARGS,
        f'--workdir={workdir}',
        '--config.data.name=folder',
        f'--config.data.folder.images={data / "images"}',
        f'--config.data.folder.masks={data / "masks"}',
        '--config.log_every_steps=1',
        '--config.eval_every_steps=2',
        '--config.checkpoint_every_steps=1',
        '--config.warmup_steps=1',
        '--config.num_saved_predictions=2',
        f'--compilation_cache={cache}',
        *extra,
    ]


def run_main(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600)


def assert_nothing_half_written(workdir: Path) -> None:
    assert not (workdir / 'results.json').exists()
    leftovers = [p.name for p in workdir.rglob('*') if 'tmp' in p.name]
    assert not leftovers, leftovers


def test_loss_nan_command(good_data, tmp_path):
    """The whole command: the message is the last thing it prints, the last good step saved."""
    workdir = tmp_path / 'run'
    lr = ('--config.warmup_steps=0', '--config.optimizer.schedule=constant')
    result = run_main(main_args(good_data, workdir, *lr, '--config.optimizer.learning_rate=1e30'))
    assert_one_clear_message(
        result.stderr,
        result.returncode,
        errors.ERROR_EXIT,
        ('stopped at step 1', 'config.optimizer.learning_rate'),
    )
    after = result.stderr[result.stderr.index('error: ') :]
    assert not re.search(r'^[EW]\d{4} ', after, re.MULTILINE), after  # no log after it
    assert not (workdir / 'results.json').exists()
    assert not list(workdir.rglob('*.orbax-checkpoint-tmp'))
    assert (workdir / checkpoint.LATEST_DIR / '1').is_dir()


def test_full_disk(good_data, tmp_path):
    """An evaluation-only run on a 48 kB disk (it needs about 170 kB): saving its best
    checkpoint fails; with room again, the same run finishes."""
    disk = tmp_path / 'disk'
    if not mount_tmpfs(disk, 'size=48k'):
        pytest.skip('needs root to mount a small tmpfs')
    try:
        result = run_main(main_args(good_data, disk / 'run', '--config.num_train_steps=0'))
        assert_one_clear_message(
            result.stderr,
            result.returncode,
            errors.ERROR_EXIT,
            ('No space left on device', str(disk / 'run'), 'free some space', '--workdir'),
        )
        assert not (disk / 'run' / 'results.json').exists()
        subprocess.run(['mount', '-o', 'remount,size=64m', str(disk)], check=True)
        train_run(run_config(good_data, num_train_steps=0), disk / 'run')
        assert (disk / 'run' / 'results.json').exists()
    finally:
        subprocess.run(['umount', str(disk)])


def test_accepted_odd_inputs(tmp_path):
    """16-bit images, RGBA and palette images, 1-bit and RGB masks are read, not refused."""
    from unet_jax.data import pipeline

    rng = np.random.default_rng(1)
    (tmp_path / 'i').mkdir()
    truth = {}
    for i, (image_mode, mask_mode) in enumerate(
        [('I;16', '1'), ('RGBA', 'RGB'), ('P', 'L'), ('RGB', 'P'), ('L', 'RGBA'), ('I;16', 'L')] * 2
    ):
        mask = blob_mask(rng, 32, 32)
        image = np.clip(80 + 100 * mask + 20 * rng.standard_normal((32, 32)), 0, 255)
        if image_mode == 'I;16':
            Image.fromarray((image * 200).astype(np.uint16)).save(tmp_path / 'i' / f'c{i}.png')
        else:
            save_image(tmp_path / 'i' / f'c{i}.png', image.astype(np.uint8), image_mode)
        save_image(tmp_path / 'm' / f'c{i}.png', mask * 255, mask_mode)
        truth[f'c{i}'] = mask
    config = run_config(tmp_path / 'unused').data
    config.folder.images, config.folder.masks = str(tmp_path / 'i'), str(tmp_path / 'm')
    splits = pipeline.load_splits(config, in_channels=1)
    for split in splits.values():
        for id_, mask in zip(split.ids, split.mask):
            np.testing.assert_array_equal(mask[..., 0], truth[id_])


# ----------------------------------------------------------------------------- run folders


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under folder, by relative path: what a refused process must leave as it was."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob('*'))
        if path.is_file()
    }


@dataclasses.dataclass(frozen=True)
class FolderCase:
    """The tiny run's command (main_args) on a folder that holds the trained run."""

    extra: tuple[str, ...]
    words: tuple[str, ...]
    code: int
    finished: bool = True  # the folder holds the finished run (else: its results.json removed)
    held: bool = False  # this test process holds the folder's lock while the command runs


FOLDER_CASES = {
    'config-changed-in-a-finished-run': FolderCase(
        ('--config.optimizer.learning_rate=0.01',),
        (
            'holds a run of another config',
            'config.json',
            '1 field(s) that change the result differ',
            'config.optimizer.learning_rate: 0.001 there, 0.01 now',
            'use a new --workdir',
        ),
        errors.USAGE_EXIT,
    ),
    'config-changed-in-an-unfinished-run': FolderCase(
        ('--config.optimizer.learning_rate=0.01', '--config.model.base_width=8'),
        (
            '2 field(s) that change the result differ',
            'config.model.base_width: 4 there, 8 now',
            'config.optimizer.learning_rate: 0.001 there, 0.01 now',
            'use a new --workdir',
        ),
        errors.USAGE_EXIT,
        finished=False,
    ),
    'folder-in-use': FolderCase(
        (),
        ('is in use by process', 'since', 'Only one process', 'wait until', 'a new --workdir'),
        errors.ERROR_EXIT,
        finished=False,
        held=True,
    ),
}


@pytest.mark.parametrize('case', FOLDER_CASES.values(), ids=FOLDER_CASES.keys())
def test_run_folders_refuse_a_second_process_and_another_config(
    case, main_command, trained_run, good_data, tmp_path
):
    """Refused at once, with the exit status and message, and not one byte of the folder
    changed (the lock file included)."""
    from unet_jax.train import runfolder

    workdir = Path(shutil.copytree(trained_run, tmp_path / 'run'))
    if not case.finished:
        os.remove(workdir / 'results.json')
    args = [*main_args(good_data, workdir)[3:], *case.extra]
    with runfolder.lock(str(workdir), enabled=case.held):
        before = folder_bytes(workdir)
        code, stderr = main_command(args, tmp_path)
        after = folder_bytes(workdir)
    assert_one_clear_message(stderr, code, case.code, case.words)
    assert after == before
    if case.held:
        holder = json.loads((workdir / runfolder.LOCK_FILE).read_text())
        assert f'{workdir} is in use by process {os.getpid()} on {holder["host"]} since ' in stderr


def test_a_finished_run_says_so_and_does_nothing(main_command, trained_run, good_data, tmp_path):
    """The same command again (with a logging interval changed, which is allowed and listed):
    exit 0, one line, the folder untouched."""
    workdir = Path(shutil.copytree(trained_run, tmp_path / 'run'))
    dice = json.loads((workdir / 'results.json').read_text())['test']['dice']
    before = folder_bytes(workdir)
    args = [*main_args(good_data, workdir)[3:], '--config.log_every_steps=2']
    code, stderr = main_command(args, tmp_path)
    assert code == 0, stderr[-3000:]
    stdout = (tmp_path / 'stdout.txt').read_text()
    assert stdout == f'{workdir}: finished at step 2 (test Dice {dice:.4f}); nothing to do\n'
    assert 'config.log_every_steps changes from 1 to 2 (allowed' in stderr
    assert folder_bytes(workdir) == before


def test_a_killed_holder_leaves_no_stale_lock(good_data, tmp_path):
    """SIGKILL a process that holds a folder's lock: the next process takes it at once."""
    from unet_jax.train import runfolder

    holder = subprocess.Popen(
        [
            sys.executable,
            '-c',
            'import sys, time; from unet_jax.train import runfolder\n'
            'with runfolder.lock(sys.argv[1]):\n    print("held", flush=True); time.sleep(600)',
            str(tmp_path / 'run'),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == 'held'
    with pytest.raises(runfolder.FolderInUseError, match=f'in use by process {holder.pid} '):
        with runfolder.lock(str(tmp_path / 'run')):
            pass
    holder.kill()
    holder.wait()
    with runfolder.lock(str(tmp_path / 'run')):
        record = json.loads((tmp_path / 'run' / runfolder.LOCK_FILE).read_text())
        assert record['pid'] == os.getpid()


def test_a_study_with_failed_runs_ends_non_zero_and_says_where(tmp_path, capfd):
    """The report is written, then `N of M runs failed: see ...` and exit 1."""
    from tests.test_study import FakeTrainer, tiny_study_config
    from unet_jax.study import runner

    config = tiny_study_config(seeds=1, families=('scratch', 'full'))
    failing = FakeTrainer(fail_on=('us/n16/s0/full',))
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_:
        with errors.errors_reported('main'):
            runner.main(config, str(tmp_path), run_fn=failing, leak_check_fn=lambda _: None)
    error_file = tmp_path / 'points' / 'us' / 'n16' / 's0' / 'full' / runner.ERROR_FILE
    words = (f'1 of 2 runs failed: see {error_file}', 'run the same command again')
    assert_one_clear_message(capfd.readouterr().err, exit_.value.code, errors.ERROR_EXIT, words)
    assert (tmp_path / 'report' / 'report.html').exists()


def test_slurm_without_sbatch_names_it_and_the_fix(tmp_path):
    empty = tmp_path / 'bin'
    empty.mkdir()
    env = dict(os.environ, PATH=str(empty), PYTHONPATH=REPO)
    workdir = tmp_path / 'study'
    args = ['--config=configs/layerwise.py:quick,seeds=1,families=scratch', f'--workdir={workdir}']
    result = subprocess.run(
        [sys.executable, 'launch/sweep.py', *args, '--executor=slurm'],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    words = ('sbatch and squeue', 'not found on the PATH', 'install SLURM', '--executor=local')
    assert_one_clear_message(result.stderr, result.returncode, errors.ERROR_EXIT, words)
    assert not workdir.exists()
