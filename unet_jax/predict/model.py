"""The trained run that segments: its model with the best-validation variables, checked
against its config, applied to images of any size (the run's preprocessing, then back to each
image's own size).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import functools
from typing import Any

from absl import logging
import jax
import numpy as np
from PIL import Image

from unet_jax import find_run, models
from unet_jax.data import pipeline
from unet_jax.predict.problems import PredictError
from unet_jax.train import checkpoint


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A trained run ready to segment: its model, best variables and preprocessing settings."""

    workdir: str
    variables: dict[str, Any]
    apply: Callable[[dict[str, Any], np.ndarray], Any]  # jitted: images -> probabilities
    image_size: int
    in_channels: int
    resize: str
    pad: bool

    def probabilities(
        self, images: Sequence[np.ndarray], *, batch_size: int = 8
    ) -> list[np.ndarray]:
        """Foreground probability maps float32 [H, W] at each uint8 image's own size."""
        maps = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = np.stack([self._model_input(image) for image in chunk])
            # Pad the last batch: one compiled shape for the whole run.
            batch = np.pad(batch, ((0, batch_size - len(chunk)), (0, 0), (0, 0), (0, 0)))
            probs = np.asarray(self.apply(self.variables, batch))[: len(chunk), ..., 0]
            maps += [self._to_original(p, image.shape[:2]) for p, image in zip(probs, chunk)]
        return maps

    def _model_input(self, image: np.ndarray) -> np.ndarray:
        empty_mask = np.zeros(image.shape[:2], np.uint8)
        x, _ = pipeline.preprocess(
            image,
            empty_mask,
            image_size=self.image_size,
            in_channels=self.in_channels,
            resize=self.resize,
            pad=self.pad,
        )
        return x

    def _to_original(self, prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Undoes the preprocessing geometry: crop the content (if padded), resize bilinearly."""
        height, width = shape
        top, left, content_h, content_w = _content_box(height, width, self.image_size, self.pad)
        content = prob[top : top + content_h, left : left + content_w].astype(np.float32)
        resized = Image.fromarray(content).resize((width, height), Image.BILINEAR)
        return np.clip(np.asarray(resized, np.float32), 0.0, 1.0)


def _content_box(height: int, width: int, image_size: int, pad: bool) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the image inside the model input, as pipeline.preprocess
    places it (the whole square unless the aspect-preserving pad is on)."""
    if not pad:
        return 0, 0, image_size, image_size
    scale = image_size / max(height, width)
    content_w, content_h = max(1, round(width * scale)), max(1, round(height * scale))
    return (image_size - content_h) // 2, (image_size - content_w) // 2, content_h, content_w


def _sigmoid_probabilities(variables, images, *, model):
    return jax.nn.sigmoid(model.apply(variables, images, train=False))


def run_folder(path: str) -> str:
    """The workdir of the finished run at or above `path` (a workdir, its best/ or a step),
    or of the run a study point names (see unet_jax.find_run)."""
    try:
        return find_run.run_folder(path, flag='--checkpoint')
    except find_run.RunNotFoundError as e:
        raise PredictError(str(e)) from None


def load_predictor(checkpoint_path: str) -> Predictor:
    """The finished run's model with its best-validation variables, checked against its config."""
    return load_run(run_folder(checkpoint_path))


def load_run(workdir: str) -> Predictor:
    """The model of the finished run in `workdir` (run_folder's answer)."""
    config = checkpoint.load_run_config(workdir)
    model_config, data_config = config['model'], config['data']
    if model_config.get('out_channels', 1) != 1:
        raise PredictError(
            f'The run in {workdir} has model.out_channels='
            f'{model_config["out_channels"]}; predict segments one foreground '
            'class (out_channels=1).'
        )
    model = models.create_model(model_config)
    image_size, in_channels = int(data_config['image_size']), int(model_config['in_channels'])
    loaded, _ = checkpoint.load_variables(workdir)
    shapes = jax.eval_shape(
        functools.partial(model.init, train=False),
        jax.random.key(0),
        jax.ShapeDtypeStruct((1, image_size, image_size, in_channels), np.float32),
    )
    # Strict: a config.json that does not describe the checkpoint fails here, listing the keys.
    variables = checkpoint.merge_pretrained(dict(shapes), loaded, source=workdir)
    logging.info(
        'Loaded %s: %dx%d input, %d channel(s).', workdir, image_size, image_size, in_channels
    )
    return Predictor(
        workdir=workdir,
        variables=variables,
        apply=jax.jit(functools.partial(_sigmoid_probabilities, model=model)),
        image_size=image_size,
        in_channels=in_channels,
        resize=data_config.get('resize', 'bilinear'),
        pad=bool(data_config.get('pad', False)),
    )
