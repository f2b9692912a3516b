"""The project's train step as the benchmarks run it: built and compiled as the training loop
builds it (`initial_state.create_train_state`, `steps.train_step` with one run on the run axis,
compiled with `models.compiler_options()`), on a fixed random batch."""

from __future__ import annotations

import functools
import time

import jax
import ml_collections
import numpy as np

from unet_jax import freeze, models
from unet_jax.config import defaults
from unet_jax.models import layer_registry
from unet_jax.train import initial_state, steps


def benchmark_config(
    *,
    depth: int,
    base_width: int,
    image_size: int,
    batch_size: int,
    augment: bool = True,
    half_precision: bool = False,
) -> ml_collections.ConfigDict:
    """The default run config at the given size; `augment=False` feeds the batch unchanged."""
    config = defaults.default_config()
    config.model.depth, config.model.base_width = depth, base_width
    config.data.image_size, config.batch_size = image_size, batch_size
    config.half_precision = half_precision
    if not augment:
        config.augment.flip = config.augment.affine = config.augment.intensity = False
    return config


def make_batch(config: ml_collections.ConfigDict, seed: int = 0) -> dict[str, np.ndarray]:
    """Random images and masks of one run: [1 run, batch, H, W, 1]."""
    rng = np.random.default_rng(seed)
    size = config.data.image_size
    shape = (1, config.batch_size, size, size, config.model.in_channels)
    images = rng.standard_normal(shape).astype(np.float32)
    return steps.train_batch(images, (rng.random(shape) > 0.7).astype(np.float32), [config])


class JaxStep:
    """One run's train step for a freeze spec (block granularity, forward order).

    `xla_defaults=True` compiles without the project's XLA options, to measure what they do.
    """

    def __init__(self, config: ml_collections.ConfigDict, spec: str, *, xla_defaults=False):
        model = models.create_model(config.model, half_precision=config.half_precision)
        self.registry = layer_registry.build_registry(
            model, image_size=config.data.image_size, in_channels=config.model.in_channels
        )
        self.plan = freeze.compile_spec(spec, self.registry, order='forward', granularity='block')
        self.state, self.frozen, frozen_axis, _ = initial_state.create_train_state(
            [config], model=model, plan=self.plan
        )
        # The first run's full parameter tree, before any step (to copy into another library).
        first_run = jax.tree.map(lambda leaf: leaf[0], self.state.trainable)
        self.initial_params = freeze.merge(first_run, self.frozen)
        self.rngs = jax.numpy.stack([jax.random.key(config.seed)])
        self.batch = make_batch(config)
        self.batch_size = config.batch_size
        build = functools.partial(
            steps.train_step,
            model=model,
            config=steps.StepConfig.of(config),
            frozen_units=self.plan.frozen_units,
            frozen_axis=frozen_axis,
        )
        start = time.perf_counter()
        self.lowered = jax.jit(build, donate_argnums=0).lower(
            self.state, self.frozen, self.batch, self.rngs
        )
        self.compiler_options = None if xla_defaults else models.compiler_options()
        self.compiled = self.lowered.compile(self.compiler_options)
        self.compile_s = time.perf_counter() - start

    def __call__(self, batch: dict[str, np.ndarray] | None = None) -> tuple[float, float]:
        """One step on `batch` (default: the fixed batch); its loss and gradient norm."""
        self.state, summary = self.compiled(
            self.state, self.frozen, self.batch if batch is None else batch, self.rngs
        )
        return float(summary['loss'][0]), float(summary['grad_norm'][0])

    def flop_ratio(self) -> float:
        """The registry's FLOP model of this spec's step relative to training everything."""
        full = self.registry.train_step_flops(self.registry.unit_names)
        per_image = self.plan.step_flops_per_image
        return (per_image + self.plan.adapter_flops_per_step / self.batch_size) / full
