"""Metric writers of a run: TensorBoard events + the log (CLU's default writer) + metrics.jsonl,
and the predictions overlaid on a few validation images (`overlays`, written at each evaluation).

Kept apart from `metrics` because `clu.metric_writers` imports TensorFlow (seconds), which
nothing but a training run needs.
"""

from collections.abc import Mapping
import json
import os
from typing import Any

from clu import metric_writers
import jax
import numpy as np


class JsonlWriter(metric_writers.MetricWriter):
    """One JSON line per write (big_vision style): trivially aggregated with pandas or jq."""

    def __init__(self, path: str):
        self._file = open(path, 'a')  # opened once per run; lines are flushed with the writer

    def _append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, default=float) + '\n')

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        self._append({'step': int(step), **{k: float(v) for k, v in scalars.items()}})

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        self._append({'hparams': dict(hparams)})

    def write_summaries(self, step, values, metadata=None):
        pass

    def write_images(self, step, images):
        pass

    def write_videos(self, step, videos):
        pass

    def write_audios(self, step, audios, *, sample_rate):
        pass

    def write_texts(self, step, texts):
        pass

    def write_histograms(self, step, arrays, num_buckets=None):
        pass

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def create_writer(workdir: str) -> metric_writers.MetricWriter:
    """TensorBoard events + the log (CLU's default writer) + `metrics.jsonl`."""
    is_chief = jax.process_index() == 0
    default = metric_writers.create_default_writer(workdir, just_logging=not is_chief)
    if not is_chief:
        return default
    return metric_writers.MultiWriter(
        [default, JsonlWriter(os.path.join(workdir, 'metrics.jsonl'))]
    )


PREDICTION_COLOUR = np.array([1.0, 0.25, 0.1])  # predicted foreground, blended over the image
TRUTH_COLOUR = np.array([0.1, 1.0, 0.2])  # the ground truth's outline
PREDICTION_ALPHA = 0.45


def overlays(images: np.ndarray, masks: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """uint8 [n, H, W, 3]: each image in grey (its own min-max range), the prediction
    (probability > 0.5) blended in orange and the ground truth's outline in green.

    images [n, H, W, C], masks and probs [n, H, W, 1] (or [n, H, W])."""
    grey = np.asarray(images, np.float32).mean(axis=-1)
    low = grey.min(axis=(1, 2), keepdims=True)
    high = grey.max(axis=(1, 2), keepdims=True)
    grey = (grey - low) / np.maximum(high - low, 1e-6)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    predicted = _plane(probs) > 0.5
    rgb[predicted] = (1 - PREDICTION_ALPHA) * rgb[predicted] + PREDICTION_ALPHA * PREDICTION_COLOUR
    rgb[_outline(_plane(masks) > 0.5)] = TRUTH_COLOUR
    return np.round(rgb * 255).astype(np.uint8)


def _plane(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x[..., 0] if x.ndim == 4 else x


def _outline(mask: np.ndarray) -> np.ndarray:
    """The pixels of `mask` [n, H, W] with a 4-neighbour outside it (the image's edge is
    outside)."""
    padded = np.pad(mask, ((0, 0), (1, 1), (1, 1)), constant_values=False)
    inner = (
        padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    )
    return mask & ~inner
