"""Which layers change: linear CKA, unit outputs, and the analysis of a fine-tuned run folder."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import tiny
from unet_jax import layout, representation_change
from unet_jax.models import UNet
from unet_jax.models.layer_registry import build_registry
from unet_jax.train import trainer


def _hsic_cka(x, y):
    """CKA by definition, n x n Gram matrices: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 6))
    y = x @ rng.standard_normal((6, 4)) + 0.5 * rng.standard_normal((50, 4))
    return x, y


def test_cka_of_a_representation_with_itself_is_one(xy):
    x, _ = xy
    assert representation_change.linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(xy):
    x, y = xy
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((6, 6)))
    reference = representation_change.linear_cka(x, y)
    assert 0.2 < reference < 0.99
    assert representation_change.linear_cka(x @ q, y) == pytest.approx(reference, rel=1e-10)
    assert representation_change.linear_cka(x, x @ q) == pytest.approx(1.0, rel=1e-10)
    assert representation_change.linear_cka(7.5 * x, y) == pytest.approx(reference, rel=1e-10)
    # ... but not to an anisotropic scaling of the features.
    assert representation_change.linear_cka(x, x * np.array([1, 1, 1, 1, 1, 30.0])) < 0.9


def test_cka_known_values():
    # One feature each: CKA is the squared Pearson correlation. By hand: x centred (-1, 0, 1),
    # y = (1, 2, 4) centred (-4, -1, 5)/3: cov 3, var_x 2, var_y 14/3, r^2 = 9 / (28/3) = 27/28.
    x = np.array([[1.0], [2.0], [3.0]])
    y = np.array([[1.0], [2.0], [4.0]])
    assert representation_change.linear_cka(x, y) == pytest.approx(27 / 28, rel=1e-12)
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((12, 3)), rng.standard_normal((12, 5))
    assert representation_change.linear_cka(a, b) == pytest.approx(_hsic_cka(a, b), rel=1e-10)


def test_cka_in_batches_equals_cka_at_once_even_far_from_the_origin(xy):
    x, y = xy
    x, y = x + 1e4, y - 3e3  # raw sums of products would cancel catastrophically
    accumulator = representation_change.CkaAccumulator()
    for start, stop in ((0, 7), (7, 30), (30, 50)):
        accumulator.add(x[start:stop], y[start:stop])
    assert accumulator.value() == pytest.approx(_hsic_cka(x - x.mean(0), y - y.mean(0)), rel=1e-8)


def test_constant_representation_has_no_cka():
    assert np.isnan(
        representation_change.linear_cka(np.ones((5, 2)), np.arange(10.0).reshape(5, 2))
    )


def test_unit_outputs_are_the_registry_units_and_identical_models_have_cka_one():
    model = UNet(depth=2, base_width=4)
    registry = build_registry(model, image_size=32, in_channels=1)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)
    images = tiny.disk_split(3).image
    outputs = jax.jit(lambda v, x: representation_change.unit_outputs(model, v, x))(
        variables, images
    )
    assert set(outputs) == set(registry.unit_names)
    for unit in registry.units:
        assert outputs[unit.name].shape == (3, *unit.output_shape)
    cka = representation_change.representation_similarity(
        model, registry, variables, variables, images, batch_size=2
    )
    assert list(cka) == list(registry.unit_names)
    assert all(v == pytest.approx(1.0, abs=1e-5) for v in cka.values() if not np.isnan(v))


@pytest.fixture(scope='module')
def tuned_run(tmp_path_factory):
    """A tiny pre-training on disks, then a fine-tuning of dec0 and the head from it."""
    root = tmp_path_factory.mktemp('analyze')
    splits = tiny.disk_splits()
    pretrain_dir = str(root / 'pretrain')
    trainer.train_and_evaluate(tiny.tiny_config(), pretrain_dir, splits=splits)
    config = tiny.tiny_config(**{'init_from': pretrain_dir, 'finetune.train': 'dec0,head'})
    config.optimizer.learning_rate = 3e-2
    run_dir = str(root / 'tuned')
    trainer.train_and_evaluate(config, run_dir, splits=splits)
    return pretrain_dir, run_dir, splits


def test_analyze_run_folder(tuned_run):
    pretrain_dir, run_dir, splits = tuned_run
    record = representation_change.analyze_run(run_dir, images=splits['test'].image, batch_size=2)
    names = [u['name'] for u in record['units']]
    registry = build_registry(UNet(depth=2, base_width=4), image_size=32, in_channels=1)
    assert names == list(registry.unit_names)
    trained = [u['name'] for u in record['units'] if u['trained']]
    assert trained == ['dec0/up', 'dec0/conv0', 'dec0/conv1', 'head/conv0']
    assert record['pretrained'] == os.path.abspath(pretrain_dir)
    assert record['num_images'] == len(splits['test'].image)
    for unit in record['units']:
        if unit['trained']:
            assert unit['weight_change'] > 0
        else:
            assert unit['weight_change'] == 0.0
    # Upstream of the first trained unit nothing changed; from there on the outputs moved.
    first = names.index('dec0/up')
    for unit in record['units'][:first]:
        assert unit['cka'] is None or unit['cka'] == pytest.approx(1.0, abs=1e-4)
    assert record['units'][-1]['cka'] < 0.999
    with open(os.path.join(run_dir, representation_change.RESULT_FILE)) as f:
        assert json.load(f) == record
    assert os.path.getsize(os.path.join(run_dir, representation_change.FIGURE_FILE)) > 1000


def test_scratch_run_is_refused_and_study_runs_are_found(tuned_run, tmp_path):
    pretrain_dir, run_dir, _ = tuned_run
    with pytest.raises(representation_change.AnalyzeError, match='no init_from'):
        representation_change.analyze_run(pretrain_dir)
    plan = {
        'points': [
            {'name': 'us/n8/s0/full', 'run': 'us/n8/s0/full', 'family': 'full'},
            {'name': 'us/n8/s1/full', 'run': 'us/n8/s1/full', 'family': 'full'},
            {'name': 'us/n8/s0/shallow_to_deep-k6', 'run': 'us/n8/s0/full', 'family': 'x'},
            {'name': 'us/n8/s0/expanding', 'run': 'us/n8/s0/expanding', 'family': 'expanding'},
        ]
    }
    (tmp_path / layout.PLAN_FILE).write_text(json.dumps(plan))
    for run in ('us/n8/s0/full', 'us/n8/s0/expanding'):  # s1 has not finished
        folder = layout.run_dir(str(tmp_path), run)
        os.makedirs(folder)
        open(os.path.join(folder, layout.RESULTS_FILE), 'w').close()
    assert representation_change.study_runs(str(tmp_path), ['full']) == [
        layout.run_dir(str(tmp_path), 'us/n8/s0/full')
    ]


def test_command_line_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        representation_change.main(['--help'])
    assert exit_.value.code == 0
    assert 'linear CKA' in capsys.readouterr().out
