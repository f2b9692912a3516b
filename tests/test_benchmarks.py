"""The benchmarks' JAX side (and PyTorch side, where installed) at toy size: the step they time
is the project's step, the profile attributes its operations, the PyTorch U-Net computes the
same first step from the same weights (else the comparison refuses to time), and
accelerator.sh --smoke writes the accelerator checks' table on CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from unet_jax import freeze, models
from unet_jax.models import metrics

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks')
sys.path.insert(0, BENCHMARKS)

import accelerator  # noqa: E402
import profile_step  # noqa: E402
import project_step  # noqa: E402
import step_time  # noqa: E402
import sweep_throughput  # noqa: E402
import vs_pytorch  # noqa: E402

TINY = dict(depth=2, base_width=4, image_size=32, batch_size=4)


def first_step_loss(config, step: project_step.JaxStep) -> float:
    """The loss of the benchmark's batch under its initial params, computed apart from it."""
    model = models.create_model(config.model)
    logits = model.apply({'params': step.initial_params}, step.batch['image'][0], train=False)
    loss = config.loss
    per_image = metrics.segmentation_loss(
        logits, step.batch['mask'][0], bce_weight=loss.bce_weight, dice_weight=loss.dice_weight
    )
    return float(per_image.mean())


@pytest.mark.parametrize('spec', ['@all', 'first:1'])
def test_project_step_is_the_training_step(spec):
    config = project_step.benchmark_config(**TINY, augment=False)
    step = project_step.JaxStep(config, spec)
    assert step.compiler_options == models.compiler_options()
    frozen_before = jax.tree.map(np.array, step.frozen)
    trained_before = jax.tree.map(np.array, step.state.trainable)
    loss, grad_norm = step()
    np.testing.assert_allclose(loss, first_step_loss(config, step), rtol=1e-5)
    assert grad_norm > 0
    step()  # the first step's learning rate is 0 (warm-up), the second's is not
    moved = jax.tree.map(
        lambda a, b: not np.array_equal(a, b), trained_before, step.state.trainable
    )
    assert all(jax.tree.leaves(moved))
    jax.tree.map(np.testing.assert_array_equal, frozen_before, step.frozen)
    assert 0 < step.flop_ratio() <= 1


def test_profile_attributes_convolutions():
    step = project_step.JaxStep(project_step.benchmark_config(**TINY), '@all')
    per_step, times = profile_step.profile(step, 1)
    categories = profile_step.by_category(per_step, step.compiled.as_text())
    assert len(times) == 1 and sum(per_step.values()) > 0
    assert set(categories) <= set(profile_step.CATEGORIES)
    for kind in ('conv forward', 'conv backward-input', 'conv backward-filter', 'optimiser'):
        assert categories[kind] > 0, kind


def test_pytorch_computes_the_same_step():
    pytest.importorskip('torch')
    steps = vs_pytorch.implementations(TINY, 'first:1', torch_compile=False)
    assert list(steps) == [vs_pytorch.JAX, vs_pytorch.EAGER]
    medians = vs_pytorch.compare(steps, 1, 'tiny')
    assert set(medians) == set(steps) and min(medians.values()) > 0
    table = vs_pytorch.table([('quick', 'first block only', medians)])
    assert 'JAX / eager' in table.splitlines()[0] and len(table.splitlines()) == 3


def test_comparison_refuses_different_networks():
    torch = pytest.importorskip('torch')
    steps = vs_pytorch.implementations(TINY, '@all', torch_compile=False)
    torch_step = steps[vs_pytorch.EAGER].func
    with torch.no_grad():
        torch_step.params[0].mul_(1.5)  # a different U-Net: same shapes, other weights
    with pytest.raises(SystemExit, match='the two U-Nets differ'):
        vs_pytorch.compare(steps, 1, 'tiny')


def test_frozen_modules_get_no_gradient():
    pytest.importorskip('torch')
    import torch_unet

    config = project_step.benchmark_config(**TINY, augment=False)
    step = project_step.JaxStep(config, 'last:1')
    model = torch_unet.TorchUNet(TINY['depth'], TINY['base_width'])
    torch_unet.load_jax_params(model, step.initial_params)
    torch_unet.TorchStep(model, step.plan.trained_units, compiled=False)
    trained = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trained == {'blocks.head.conv0.weight', 'blocks.head.conv0.bias'}
    assert freeze.merge({}, step.frozen).keys() == step.initial_params.keys() - {'head'}


def test_accelerator_script_smoke_writes_one_table(tmp_path):
    """benchmarks/accelerator.sh --smoke: every check's rows on CPU at toy size, one table."""
    out = tmp_path / 'accelerator.md'
    done = subprocess.run(
        ['bash', os.path.join(BENCHMARKS, 'accelerator.sh'), '--smoke', f'--out={out}'],
        env=dict(os.environ, PYTHON=sys.executable),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == f'wrote {out}'
    text = out.read_text()
    table = [line for line in text.splitlines() if line.startswith('| ')]
    assert table[0] == '| check | setting | quantity | measured | against | ratio |'
    rows = [line.split(' | ') for line in table[1:]]
    vs_torch = [r for r in rows if r[0] == '| vs PyTorch']
    assert [r[1].split(', ')[-2] for r in vs_torch] == ['float32', 'bfloat16']
    for r in vs_torch:
        assert float(r[3].split()[1].replace(',', '')) > 0  # 'JAX N images/s, ...'
        if vs_pytorch.torch is not None:
            assert r[4].startswith(vs_pytorch.EAGER) and r[5].endswith('x')
    frozen = [r for r in rows if r[0] == '| frozen step']
    assert len(frozen) == len(accelerator.SMOKE.specs)
    for spec_name, r in zip(accelerator.SMOKE.specs, frozen, strict=True):
        assert f'`{step_time.SPECS[spec_name]}`' in r[1] and r[4].startswith('FLOP model')
    if vs_pytorch.torch is None:
        assert 'PyTorch is not installed: its columns are left out' in text
    assert 'sweep: not run with --smoke' in text and 'whole run:' in text


def test_accelerator_refuses_the_full_size_without_an_accelerator(tmp_path):
    if jax.default_backend() != 'cpu':
        pytest.skip('an accelerator is there')
    rows = accelerator.Rows(str(tmp_path / 'rows.jsonl'))
    assert accelerator.steps_part(accelerator.GPU, rows, 0.0, smoke=False, peak='') == 1
    assert 'JAX finds no accelerator (backend cpu)' in (tmp_path / 'rows.jsonl').read_text()


def test_flop_utilisation_and_the_table():
    assert accelerator.peak_flops('NVIDIA H200', 'bfloat16') == pytest.approx(989.4e12)
    assert accelerator.peak_flops('NVIDIA H200', 'float32', override='100,200') == 100e12
    assert accelerator.peak_flops('cpu', 'float32') is None
    # 32 images in 0.016 s at 1 TFLOP per image: 2,000 images/s, 2 PFLOP/s of a 4 PFLOP/s peak.
    assert accelerator.throughput(0.016, 32, 1e12, 4e15) == '2,000 images/s, 50.0% of peak'
    assert accelerator.throughput(2.0, 4, 1e9, None) == '2.0 images/s, peak unknown'
    records = [
        dict(kind='context', text='a GPU'),
        dict(kind='row', check='c', setting='s', quantity='q', measured='m', against='', ratio=''),
        dict(kind='note', text='left out: x'),
    ]
    text = accelerator.render(records, total_s=12.3)
    assert text.splitlines() == [
        '- a GPU',
        '- whole run: 12 s',
        '',
        '| check | setting | quantity | measured | against | ratio |',
        '|---|---|---|---|---|---|',
        '| c | s | q | m | - | - |',
        '',
        '- left out: x',
    ]


def test_sweep_summary_speed_up_and_dice_differences():
    times = dict.fromkeys(sweep_throughput.SECTIONS, 1.0)
    rows = [
        dict(
            scale='quick', mode='sequential', runs=9, wall=90.0, dice={'a': 0.5, 'b': 0.7}, **times
        ),
        dict(scale='quick', mode='grouped', runs=9, wall=30.0, dice={'a': 0.5, 'b': 0.6}, **times),
    ]
    summary = sweep_throughput.summarise(rows, ['sequential', 'grouped'])
    assert [(s['mode'], round(s['runs_per_hour']), round(s['speed_up'], 6)) for s in summary] == [
        ('sequential', 360, 1.0),
        ('grouped', 1080, 3.0),
    ]
    (difference,) = sweep_throughput.dice_differences(rows)
    assert difference['runs'] == 2 and difference['diff'] == pytest.approx(0.1)


def test_group_trace_counts_the_files_of_a_group_in_order_of_use():
    """The layout measure: a group's life starts in train/trainer.py, passes through the
    freeze plan, and its count of returns is that of the sequence it prints."""
    import group_trace

    assert group_trace.returns(['a', 'b', 'a', 'a', 'c', 'b']) == 2
    assert group_trace.returns(['a', 'a', 'b']) == 0
    result = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, 'group_trace.py')],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    counts, order = result.stdout.strip().splitlines()
    files = order.removeprefix('files in order of first use: ').split()
    assert files[0] == 'train/trainer.py'
    assert {'train/groups.py', 'freeze/plan.py', 'train/outputs.py'} <= set(files)
    assert counts.endswith('returns to a file already left') and f'in {len(files)} files' in counts
