"""Segments new images with a trained run: masks, probability maps, overlays and scores.

`predict_images` is the whole of it (and `python -m unet_jax.predict`, whose --help, in
__main__, says what it does and what it never overwrites): the flags checked, the inputs found,
paired and read (inputs), the output folder guarded (outputs), the run loaded and applied
(model), each image's files written (outputs), the scores and their means (scores). Every
problem is a PredictError (problems) that names the file or flag and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
import os
from typing import Any

from absl import logging
import ml_collections

from unet_jax import errors
from unet_jax.predict.inputs import masks_of, pairing_settings, plan_inputs, read_input, spec_list
from unet_jax.predict.model import load_run, run_folder
from unet_jax.predict.outputs import (
    SCORES_FILE,
    check_no_overwrite,
    check_output_folder,
    output_files,
    write_outputs,
)
from unet_jax.predict.problems import PredictError, problem_list
from unet_jax.predict.scores import write_scores

__all__ = ['PredictError', 'predict_images']


def _check_numbers(threshold: float, batch_size: int, settings: ml_collections.ConfigDict) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise errors.ConfigError(f'--threshold={threshold} must be a probability in [0, 1].')
    if batch_size < 1:
        raise errors.ConfigError(f'--batch_size={batch_size} must be >= 1.')
    if settings.mask_threshold < 0:
        raise errors.ConfigError(
            f'--mask_threshold={settings.mask_threshold} must be >= 0 (0: any non-zero value is '
            'foreground; 127 for JPEG masks).'
        )


def predict_images(
    checkpoint_path: str,
    inputs: str | Sequence[str],
    output: str,
    *,
    masks: str = '',
    probabilities: bool = False,
    threshold: float = 0.5,
    batch_size: int = 8,
    overwrite: bool = False,
    **pairing: Any,
) -> dict[str, Any]:
    """Segments `inputs` with the run at `checkpoint_path` and writes the outputs to `output`.

    `pairing` holds the folder set's settings (pairing, mask_suffix, regex, mask_threshold,
    resize_masks, skip_bad; its defaults otherwise). Before anything is written: the output
    folder is checked (not an input or mask folder, no file replaced unless `overwrite`), every
    input is read and checked, and the run is loaded; a problem is an error and nothing is
    written, unless `skip_bad`, which skips bad inputs (logged, returned in 'skipped').

    Returns {'rows': one dict per image (image, height, width, foreground fraction and, with
    masks, mask, mask_pixels, predicted_pixels, empty, dice, iou, hd95), 'mean': the summary
    (means and counts, see summarise) or None without masks, 'output': dir, 'skipped':
    {image path: reason}}.
    """
    settings = pairing_settings(**pairing)
    _check_numbers(threshold, batch_size, settings)
    check_output_folder(output, spec_list(inputs), masks)
    workdir = run_folder(checkpoint_path)
    images, mask_files, skipped = plan_inputs(inputs, masks, settings)
    names = output_files([p.stem for p in images], probabilities=probabilities, scored=bool(masks))
    check_no_overwrite(output, names, overwrite=overwrite)
    predictor = load_run(workdir)
    os.makedirs(output, exist_ok=True)

    rows = []
    # Read in chunks of a batch: originals of any size are never all held in memory at once.
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        read = [read_input(p, masks_of(p, mask_files), settings) for p in chunk]
        maps = predictor.probabilities([image for image, _ in read], batch_size=batch_size)
        for path, (original, mask), prob in zip(chunk, read, maps):
            rows.append(
                write_outputs(
                    path,
                    original,
                    prob,
                    mask,
                    masks_of(path, mask_files),
                    output,
                    threshold=threshold,
                    probabilities=probabilities,
                )
            )
        logging.info('Segmented %d/%d images.', len(rows), len(images))

    summary = write_scores(os.path.join(output, SCORES_FILE), rows) if masks else None
    if skipped:
        logging.warning('Skipped %d inputs:\n%s', len(skipped), problem_list(skipped))
    return {'rows': rows, 'mean': summary, 'output': os.path.abspath(output), 'skipped': skipped}
