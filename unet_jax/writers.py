"""Metric writers of a run: TensorBoard events + the log (CLU's default writer) + metrics.jsonl.

Kept apart from `metrics` because `clu.metric_writers` imports TensorFlow (seconds), which
nothing but a training run needs.
"""

from collections.abc import Mapping
import json
import os
from typing import Any

from clu import metric_writers
import jax


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
