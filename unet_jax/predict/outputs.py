"""What predict writes into --output, and the guard that keeps it from writing over a user's
files: --output is no input or mask folder, an existing file is replaced only with --overwrite;
per image the mask, the overlay (contours, Dice) and the probability map.
"""

from __future__ import annotations

from collections.abc import Sequence
import glob
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
import scipy.ndimage

from unet_jax.predict.problems import PredictError, show
from unet_jax.predict.scores import score

PREDICTION_COLOUR = (255, 40, 40)
TRUTH_COLOUR = (40, 255, 40)
SCORES_FILE = 'scores.csv'
OUTPUT_SUFFIXES = ('_mask.png', '_overlay.png')  # per image; _prob.png with --probabilities
PROB_SUFFIX = '_prob.png'


def _spec_folder(spec: str) -> Path | None:
    """The folder an --input/--masks spec reads from: the folder, a file's folder, or the
    part of a glob before its first wildcard (None for a path that does not exist)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.is_file():
        return path.resolve().parent
    if not glob.has_magic(spec):
        return None
    parts = []
    for part in path.parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return Path(*parts).resolve() if parts else Path.cwd()


def check_output_folder(output: str, inputs: Sequence[str], masks: str) -> None:
    """Refuses an --output that is, or is inside, a folder that --input or --masks reads."""
    out = Path(output).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise PredictError(f'--output={output!r} is a file; pass a folder (it is created).')
    named = [('--input', spec) for spec in inputs] + ([('--masks', masks)] if masks else [])
    for flag, spec in named:
        folder = _spec_folder(spec)
        if folder is not None and (out == folder or folder in out.parents):
            where = 'is' if out == folder else 'is inside'
            raise PredictError(
                f'--output={output!r} {where} the folder that {flag}={spec!r} reads ({folder}): '
                'predict would write its files among yours (and <stem>_mask.png is how masks '
                f'are named). Pass an --output outside it, e.g. --output={folder}_predicted.'
            )


def output_files(stems: Sequence[str], *, probabilities: bool, scored: bool) -> list[str]:
    """The names predict writes into --output for images of these stems."""
    suffixes = OUTPUT_SUFFIXES + ((PROB_SUFFIX,) if probabilities else ())
    names = [f'{stem}{suffix}' for stem in stems for suffix in suffixes]
    return names + ([SCORES_FILE] if scored else [])


def check_no_overwrite(output: str, names: Sequence[str], *, overwrite: bool) -> None:
    """Refuses to replace files in --output unless --overwrite."""
    existing = [n for n in names if os.path.lexists(os.path.join(output, n))]
    if existing and not overwrite:
        raise PredictError(
            f'--output={output!r} holds {len(existing)} of the files predict would write: '
            f'{show(existing)}. Nothing was written. Pass a new --output, or --overwrite to '
            'replace them.'
        )


def _contour(mask: np.ndarray, width: int) -> np.ndarray:
    """Inner boundary band of a binary mask, `width` pixels thick."""
    mask = mask.astype(bool)
    return mask & ~scipy.ndimage.binary_erosion(mask, iterations=width)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or without FreeType.
        return ImageFont.load_default()


def overlay(
    image: np.ndarray,
    prediction: np.ndarray,
    mask: np.ndarray | None = None,
    dice: float | None = None,
) -> Image.Image:
    """RGB image with the prediction's contour (red), the truth's (green) and the Dice."""
    height, width = image.shape[:2]
    line = max(1, round(max(height, width) / 200))
    canvas = np.array(image, np.uint8)
    if mask is not None:
        canvas[_contour(mask, line)] = TRUTH_COLOUR
    canvas[_contour(prediction, line)] = PREDICTION_COLOUR
    picture = Image.fromarray(canvas, 'RGB')
    if dice is not None:
        draw = ImageDraw.Draw(picture)
        font = _font(int(np.clip(width / 16, 8, 48)))
        text = f'Dice {dice:.3f}'
        box = draw.textbbox((2, 2), text, font=font)
        draw.rectangle((0, 0, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text((2, 2), text, fill=(255, 255, 255), font=font)
    return picture


def write_outputs(
    path: Path,
    original: np.ndarray,
    prob: np.ndarray,
    mask: np.ndarray | None,
    mask_paths: Sequence[Path] | None,
    output: str,
    *,
    threshold: float,
    probabilities: bool,
) -> dict[str, Any]:
    """Writes the outputs of one image (mask, overlay, probabilities) and returns its row."""
    prediction = prob > threshold
    row = {
        'image': str(path),
        'height': original.shape[0],
        'width': original.shape[1],
        'foreground': float(prediction.mean()),
    }
    if mask is not None:
        row.update(mask=[str(m) for m in mask_paths], **score(prediction, mask))
    stem = os.path.join(output, path.stem)
    Image.fromarray(prediction.astype(np.uint8) * 255).save(f'{stem}_mask.png')
    if probabilities:
        Image.fromarray(np.round(prob * 255).astype(np.uint8)).save(f'{stem}{PROB_SUFFIX}')
    overlay(original, prediction, mask, row.get('dice')).save(f'{stem}_overlay.png')
    return row
