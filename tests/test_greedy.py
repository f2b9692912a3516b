"""The greedy criterion of the automatic layer choice (`auto:greedy:k`, after SubTuning): picks
by the validation Dice of short runs, never looks at the test split, counts its work."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import layerwise
from tests import tiny
from unet_jax import freeze, models
from unet_jax.config import auto_spec
from unet_jax.freeze import auto_choice, criteria
from unet_jax.models import UNet, layer_registry, metrics
from unet_jax.models.layer_registry import build_registry
from unet_jax.study import configurations, sweep_points
from unet_jax.train import groups

SIZE = 32
AUTO = auto_spec.default_auto_config()
AUTO.num_examples = 6
AUTO.batch_size = 4  # probe batches of 4 and 2 (+2 padding); validation of 5: 4 and 1 (+3)
AUTO.probe_steps = 3
LR = 1e-2  # large enough that 3 steps move a tiny model's validation Dice


@pytest.fixture(autouse=True)
def fresh_rounds(monkeypatch):
    """Each test computes its greedy rounds (some replace validation_dice, which the rounds'
    key cannot see)."""
    monkeypatch.setattr(criteria, '_GREEDY_ROUNDS', {})


@pytest.fixture(scope='module')
def setup():
    model = UNet(depth=2, base_width=4)
    registry = build_registry(model, image_size=SIZE, in_channels=1)
    variables = model.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)), train=False)
    train, val = tiny.disk_split(8, SIZE, seed=0), tiny.disk_split(5, SIZE, seed=1)
    return model, registry, flax.core.unfreeze(variables), train, val


def _greedy(setup, spec='auto:greedy:2', granularity='block', **kwargs):
    model, registry, variables, train, val = setup
    return auto_choice.choose(
        spec,
        model=model,
        registry=registry,
        variables=variables,
        images=train.image,
        masks=train.mask,
        val_images=kwargs.pop('val_images', val.image),
        val_masks=kwargs.pop('val_masks', val.mask),
        granularity=granularity,
        learning_rate=LR,
        auto=AUTO,
        **kwargs,
    )


@pytest.fixture(scope='module')
def greedy_two(setup):
    return _greedy(setup)


# ---------------------------------------------------------------------------- independently


@functools.cache
def _grad(model):
    def loss(p, i, m):
        logits = model.apply({'params': p}, i, train=False)
        return metrics.segmentation_loss(logits, m, bce_weight=1.0, dice_weight=1.0).mean()

    return jax.jit(jax.grad(loss))


@functools.cache
def _predict(model):
    return jax.jit(lambda p, i: model.apply({'params': p}, i, train=False) > 0)


def _short_run(setup, trained):
    """`trained` (block names) after the probe's steps, through frozen training (labels and
    multi_transform), as a run that trains them would: not the criteria's one-step-for-all."""
    model, registry, variables, train, _ = setup
    images, masks = auto_choice.probe_set(train.image, train.mask, AUTO.num_examples, AUTO.seed)
    batches = [(images[:4], masks[:4]), (images[4:], masks[4:])]

    params = variables['params']
    if not trained:
        return params
    tx = freeze.make_optimizer(
        optax.adam(LR), freeze.compile_spec(','.join(trained), registry).labels(params)
    )
    state = tx.init(params)
    for s in range(AUTO.probe_steps):
        grads = _grad(model)(params, *batches[s % 2])
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def _val_dice(setup, params):
    """Mean per-image Dice of the thresholded predictions over the validation lesion images."""
    model, _, _, _, val = setup
    predictions = np.asarray(_predict(model)(params, val.image), np.float32)
    tp = (predictions * val.mask).sum(axis=(1, 2, 3))
    total = predictions.sum(axis=(1, 2, 3)) + val.mask.sum(axis=(1, 2, 3))
    lesion = val.mask.sum(axis=(1, 2, 3)) > 0
    return float(np.mean(((2 * tp + 1e-6) / (total + 1e-6))[lesion]))


# ---------------------------------------------------------------------------- the picks


def test_greedy_picks_k_distinct_names_in_pick_order_deterministically(setup, greedy_two):
    _, registry, _, _, _ = setup
    choice = greedy_two
    assert choice.criterion == 'greedy' and choice.k == 2 and len(set(choice.chosen)) == 2
    assert set(choice.chosen) <= set(registry.block_names)
    assert list(choice.raw_scores) == list(registry.block_names)  # forward order
    assert all(np.isfinite(v) for v in choice.raw_scores.values())
    # Unpicked names keep their gain of the last round: at most that round's pick's.
    last = choice.raw_scores[choice.chosen[-1]]
    assert all(v <= last for n, v in choice.raw_scores.items() if n not in choice.chosen)
    assert freeze.compile_spec(choice.spec, registry).trained_units == registry.expand(
        choice.chosen
    )
    again = _greedy(setup)
    assert again.chosen == choice.chosen and again.raw_scores == choice.raw_scores
    assert auto_choice.Choice.from_dict(choice.to_dict()) == choice


def test_greedy_scores_are_validation_dice_gains_of_the_chosen_sets(setup, greedy_two):
    first, second = greedy_two.chosen
    other = next(n for n in greedy_two.raw_scores if n not in greedy_two.chosen)
    pretrained = _val_dice(setup, _short_run(setup, []))
    with_first = _val_dice(setup, _short_run(setup, [first]))
    raw = greedy_two.raw_scores
    assert raw[first] == pytest.approx(with_first - pretrained, abs=1e-6)
    assert raw[second] == pytest.approx(
        _val_dice(setup, _short_run(setup, [first, second])) - with_first, abs=1e-6
    )
    assert raw[other] == pytest.approx(
        _val_dice(setup, _short_run(setup, [first, other])) - with_first, abs=1e-6
    )


def test_greedy_follows_validation_dice(setup, monkeypatch):
    """A validation Dice that only training `deep` (most) and `middle` can raise: greedy picks
    them in that order, against the tie rule (shallowest first) and whatever the loss says."""
    _, registry, variables, _, _ = setup
    deep, middle = registry.block_names[-2], registry.block_names[1]
    pretrained = variables['params']

    def trained_blocks(params):
        return {
            block
            for block in registry.block_names
            if any(
                np.any(np.asarray(a) != np.asarray(b))
                for a, b in zip(*(jax.tree.leaves(p[block]) for p in (params, pretrained)))
            )
        }

    def made_up_dice(evaluate, params, batches):
        del evaluate, batches
        trained = trained_blocks(params)
        return 0.1 + 0.5 * (deep in trained) + 0.2 * (middle in trained)

    monkeypatch.setattr(criteria, 'validation_dice', made_up_dice)
    choice = _greedy(setup)
    assert choice.chosen == (deep, middle)
    assert choice.raw_scores[deep] == pytest.approx(0.5)
    assert choice.raw_scores[middle] == pytest.approx(0.2)
    assert all(v == 0.0 for n, v in choice.raw_scores.items() if n not in (deep, middle))
    assert choice.scores[deep] == 1.0


def test_greedy_at_unit_granularity_picks_units(setup):
    _, registry, _, _, _ = setup
    choice = _greedy(setup, 'auto:greedy:1', granularity='unit')
    assert list(choice.raw_scores) == list(registry.unit_names)
    assert len(choice.chosen) == 1 and choice.chosen[0] in registry.unit_names
    assert freeze.compile_spec(choice.spec, registry).trained_units == choice.chosen


# ---------------------------------------------------------------------------- the cost


def test_greedy_cost_counts_each_short_run_as_full_steps_and_each_validation_pass(
    setup, greedy_two
):
    _, registry, _, _, _ = setup
    names = registry.block_names
    step_passes = AUTO.probe_steps * 4  # batches of 4 and 2 + 2 padding
    val_passes = 8  # 5 validation images: batches of 4 and 1 + 3 padding
    runs = sum(1 for r in range(2) for n in names if n not in greedy_two.chosen[:r])
    # The one compiled step differentiates every parameter: each pass costs a full step.
    gradient_flops = runs * step_passes * registry.train_step_flops(registry.unit_names)
    assert runs == 2 * len(names) - 1
    # Every short run is evaluated on validation, and so are the pre-trained weights.
    forward_flops = (runs + 1) * val_passes * registry.forward_flops()
    cost = greedy_two.cost
    assert cost['flops'] == pytest.approx(gradient_flops + forward_flops, rel=1e-12)
    assert cost['image_passes'] == runs * step_passes + (runs + 1) * val_passes
    assert cost['num_examples'] == 6 and cost['val_examples'] == 5
    assert cost['seconds'] > cost['compile_s'] > 0


# ---------------------------------------------------------------------------- what it reads


def test_greedy_soft_is_refused_with_the_fix():
    with pytest.raises(auto_spec.AutoSpecError, match="no 'soft' variant.*'auto:greedy:K'"):
        auto_spec.parse_auto('auto:greedy:soft', 6)
    assert auto_spec.parse_auto('auto:greedy:6', 6) == auto_spec.AutoSpec('greedy', 6)
    assert not auto_spec.has_soft('greedy') and auto_spec.has_soft('rgn')


def test_greedy_needs_a_validation_split_with_a_lesion(setup):
    _, _, _, _, val = setup
    with pytest.raises(auto_spec.AutoSpecError, match='val_images=, val_masks='):
        _greedy(setup, val_images=None, val_masks=None)
    with pytest.raises(auto_spec.AutoSpecError, match='no validation image has a lesion'):
        _greedy(setup, val_masks=np.zeros_like(val.mask))


class _ReadSplits(dict):
    """Splits that record which of them were read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read = []

    def __getitem__(self, key):
        self.read.append(key)
        return super().__getitem__(key)


def test_group_choice_reads_validation_never_test(tmp_path, monkeypatch):
    config = tiny.tiny_config(
        **{
            'init_from': 'a pre-training (stood in for by the initial weights)',
            'finetune.train': 'auto:greedy:2',
            'finetune.granularity': 'block',
            'finetune.auto.num_examples': 4,
            'finetune.auto.batch_size': 2,
            'finetune.auto.probe_steps': 2,
        }
    )
    monkeypatch.setattr(groups.initial_state, 'load_init_from', lambda variables, config: variables)
    model = models.create_model(config.model)
    registry = layer_registry.build_registry(model, image_size=SIZE, in_channels=1)
    passed = []
    choose = auto_choice.choose

    def recording_choose(spec, **kwargs):
        passed.append(kwargs)
        return choose(spec, **kwargs)

    monkeypatch.setattr(auto_choice, 'choose', recording_choose)

    def group_choice(folder, poison):
        splits = _ReadSplits(tiny.disk_splits())
        if poison:
            test = dict.__getitem__(splits, 'test')
            splits['test'] = type(test)(np.full_like(test.image, np.nan), test.mask, test.ids)
        member = groups.Member(config, str(tmp_path / folder))
        choice = groups.resolve_auto([member], lambda _: splits, model=model, registry=registry)
        return choice, splits.read

    clean, read = group_choice('clean', poison=False)
    poisoned, read_poisoned = group_choice('poisoned', poison=True)
    assert 'test' not in read + read_poisoned and 'val' in read
    assert poisoned.chosen == clean.chosen and poisoned.raw_scores == clean.raw_scores
    assert all(np.isfinite(v) for v in poisoned.raw_scores.values())
    val = tiny.disk_splits()['val']
    np.testing.assert_array_equal(passed[1]['val_images'], val.image)  # its ids are in order
    arrays = [a for kwargs in passed for a in kwargs.values() if isinstance(a, np.ndarray)]
    assert not any(np.isnan(a).any() for a in arrays)


# ---------------------------------------------------------------------------- the sweep


def test_sweep_enumerates_greedy_k_without_soft():
    config = layerwise.get_config('quick,families=full+auto,criteria=greedy+rgn')
    config.model.depth, config.model.base_width, config.data.image_size = 2, 4, 32
    assert config.study.auto_criteria == ('greedy', 'rgn')
    registry = sweep_points.registry_for(config)
    n = len(registry.block_names)
    specs = [c['spec'] for c in configurations._auto_configurations(config.study, registry)]
    assert specs == [f'auto:greedy:{k}' for k in range(1, n + 1)] + [
        f'auto:rgn:{k}' for k in [*range(1, n + 1), 'soft']
    ]
    points = sweep_points.enumerate_sweep(config, registry=registry).points
    assert {p.spec for p in points if p.family == 'auto'} >= {'auto:greedy:1', 'auto:rgn:soft'}
    assert not any(p.spec == 'auto:greedy:soft' for p in points)


def test_greedy_rounds_are_computed_once_per_process_for_every_k(setup):
    """auto:greedy:k picks the first k of auto:greedy:k+1's: a later k reuses the rounds; its
    choice and counted cost are those it has alone."""
    after_two = (_greedy(setup, 'auto:greedy:2'), _greedy(setup, 'auto:greedy:3'))
    again = _greedy(setup, 'auto:greedy:2')
    assert again.cost['compile_s'] == 0.0  # nothing left to train: no probe step compiled
    assert again.chosen == after_two[0].chosen and again.cost['flops'] == after_two[0].cost['flops']
    criteria._GREEDY_ROUNDS.clear()
    alone = _greedy(setup, 'auto:greedy:3')
    assert alone.chosen == after_two[1].chosen and alone.chosen[:2] == after_two[0].chosen
    assert alone.cost['flops'] == after_two[1].cost['flops']
    assert alone.raw_scores == after_two[1].raw_scores
