r"""Segments new images with a trained run: masks, probability maps, overlays and scores.

  python -m unet_jax.predict --checkpoint=runs/busi --input=scans/ --output=out/ \
      [--masks=scans_gt/ --pairing=stem|suffix|regex --mask_suffix=_mask --regex=...
       --resize_masks --mask_threshold=0] [--probabilities] [--threshold=0.5] [--overwrite]

Images of any size and format (PNG/JPEG/BMP/TIFF/GIF, grey, RGB, 16-bit) go through the
training preprocessing of the run (`pipeline.preprocess` with the run's `config.data`: grey
conversion for 1-channel models, resize or aspect-preserving pad, per-image normalisation). The
probability map is cut back to the image's content (when padded), resized to the original size
(bilinear) and only then thresholded, so masks and scores live at the original resolution.

Per image `<stem>` the output folder gets `<stem>_mask.png` (0/255), `<stem>_prob.png`
(probability x 255, with --probabilities) and `<stem>_overlay.png`: the image with the
prediction's contour in red and, when masks are given, the ground truth's in green and the Dice
written on it. With masks, `scores.csv` holds per-image Dice, IoU and HD95 (pixels, original
resolution), which of prediction and mask are empty, and a final `mean` row (see _scores).

Masks pair with their images by the folder set's code and settings (unet_jax.data.folder, the
same names and defaults as `config.data.folder`): --pairing=stem (same stem, two folders),
suffix (`<stem><mask_suffix>[_<k>]`, several masks OR-ed, one folder is fine) or regex (group
`key` of --regex in both stems); --resize_masks resizes masks of another size (nearest),
--mask_threshold sets what counts as foreground. A folder that works as a `folder:` target of
the study works here with the same words.

Nothing a user has is ever overwritten:
  * --output may not be an input or mask folder, nor inside one;
  * an output file that exists already is an error listing them, unless --overwrite;
  * a file named as a mask (`<stem><mask_suffix>[_<k>]`, default `_mask`) or matched by
    --masks is never segmented as an image.
Every input is read and checked (decoded, masks thresholded and sized) before the first file is
written: every problem is listed in one error and nothing is written, or with --skip_bad the bad
inputs are skipped and listed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import csv
import dataclasses
import functools
import glob
import io
import math
import os
from pathlib import Path
from typing import Any

from absl import app, flags, logging
import jax
import ml_collections
import numpy as np
from PIL import Image, ImageDraw, ImageFont
import scipy.ndimage

from unet_jax import errors, find_run, io_utils, models
from unet_jax.data import fields, imageio, pipeline
from unet_jax.data import folder as folder_set
from unet_jax.models import metrics
from unet_jax.train import checkpoint

PREDICTION_COLOUR = (255, 40, 40)
TRUTH_COLOUR = (40, 255, 40)
SCORES_FILE = 'scores.csv'
OUTPUT_SUFFIXES = ('_mask.png', '_overlay.png')  # per image; _prob.png with --probabilities
PROB_SUFFIX = '_prob.png'
_SHOWN = 10
_ACCEPTED = ', '.join(imageio.IMAGE_SUFFIXES)
_NAMING = folder_set.FLAG_NAMING
# The folder set's settings (config.data.folder) that predict takes as flags of the same names.
PAIRING_FLAGS = ('pairing', 'mask_suffix', 'regex', 'mask_threshold', 'resize_masks', 'skip_bad')


class PredictError(ValueError):
    """Bad input to predict; the message names the file or flag and how to fix it."""


def _show(items: Sequence[Any]) -> str:
    items = [str(i) for i in items]
    more = f' ... ({len(items)} in all)' if len(items) > _SHOWN else ''
    return ', '.join(items[:_SHOWN]) + more


# ----------------------------------------------------------------------------- the model


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
    return _load_run(run_folder(checkpoint_path))


def _load_run(workdir: str) -> Predictor:
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


# ----------------------------------------------------------------------------- finding files


def pairing_settings(**settings: Any) -> ml_collections.ConfigDict:
    """The folder set's pairing settings (`config.data.folder`, its defaults) with `settings`
    (pairing, mask_suffix, regex, mask_threshold, resize_masks, skip_bad) set."""
    config = fields.default_folder_config().to_dict()
    unknown = sorted(set(settings) - set(PAIRING_FLAGS))
    if unknown:
        raise TypeError(f'pairing_settings: no setting {unknown}; valid: {PAIRING_FLAGS}.')
    return ml_collections.ConfigDict({**config, **settings})


def _image_files(candidates: Sequence[Path]) -> list[Path]:
    return sorted(
        p
        for p in candidates
        if p.is_file() and not p.name.startswith('.') and p.suffix.lower() in imageio.IMAGE_SUFFIXES
    )


def _expand(spec: str, flag: str) -> list[Path]:
    """Image files of a folder (non-recursive), a glob (`**` recurses) or one file."""
    path = Path(spec).expanduser()
    if path.is_dir():
        candidates = list(path.iterdir())
    elif path.is_file():
        if path.suffix.lower() not in imageio.IMAGE_SUFFIXES:
            raise PredictError(f'--{flag}: {spec} is not an image file (accepted: {_ACCEPTED}).')
        return [path]
    elif glob.has_magic(spec):
        candidates = [Path(p) for p in glob.glob(str(path), recursive=True)]
    else:
        raise PredictError(
            f'--{flag}: {spec!r} does not exist (expected a folder, a glob or an image file).'
        )
    files = _image_files(candidates)
    if not files:
        others = sorted(p.name for p in candidates if p.is_file())
        holds = f'it holds: {_show(others)}' if others else 'it is empty'
        raise PredictError(f'--{flag}: no images in {spec!r} ({holds}). Accepted: {_ACCEPTED}.')
    return files


def _specs(inputs: str | Sequence[str]) -> list[str]:
    return [str(inputs)] if isinstance(inputs, (str, os.PathLike)) else [str(s) for s in inputs]


def find_inputs(inputs: str | Sequence[str], mask_suffix: str = '_mask') -> list[Path]:
    """The images to segment from folders, globs and files; each output stem must be unique.

    Files named as masks (`<stem><mask_suffix>[_<k>]`) are never images: they are left out
    and logged (`mask_suffix=''` keeps them)."""
    specs = _specs(inputs)
    if not specs:
        raise PredictError('--input is empty: pass a folder, a glob or image files.')
    files = sorted({f for spec in specs for f in _expand(spec, 'input')})
    masks = [f for f in files if mask_suffix and folder_set.mask_owner(f.stem, mask_suffix)]
    if masks and len(masks) == len(files):
        raise PredictError(
            f'Every --input file is named as a mask (<stem>{mask_suffix}[_<k>]): '
            f'{_show(masks)}. Point --input at the images, or set --mask_suffix to the '
            "masks' suffix if these are images."
        )
    if masks:
        logging.info(
            'Not segmenting %d --input files named as masks (<stem>%s[_<k>]; --mask_suffix): %s',
            len(masks),
            mask_suffix,
            _show(masks),
        )
    files = [f for f in files if f not in masks]
    by_stem: dict[str, list[Path]] = {}
    for f in files:
        by_stem.setdefault(f.stem, []).append(f)
    clashes = [' and '.join(map(str, v)) for v in by_stem.values() if len(v) > 1]
    if clashes:
        raise PredictError(
            f'Several inputs share a file stem, so their outputs would collide: '
            f'{_show(clashes)}. Predict them into separate --output folders.'
        )
    return files


def pair_masks(
    images: Sequence[Path], masks: str, settings: ml_collections.ConfigDict
) -> tuple[list[Path], dict[Path, tuple[Path, ...]], dict[Path, str]]:
    """(images, their mask files, skipped image -> reason) by the folder set's pairing code
    (`folder_set.pair_files`, messages in predict's flags). Masks of images not in --input
    are ignored; files that --input and --masks both match are masks, never images."""
    mask_files = _expand(masks, 'masks')
    report = folder_set.Report()
    try:
        pairs = folder_set.pair_files(
            list(images), mask_files, settings, report, _NAMING, lonely_masks='ignore'
        )
    except folder_set.FolderError as e:
        raise PredictError(f'--masks={masks!r}: {e}') from None
    skipped = {
        Path(file): f'{file}: {reason} (pairing={settings.pairing!r})'
        for reason, files in report.skipped.items()
        if reason.startswith('images')
        for file in files
    }
    if not pairs:
        raise PredictError(f'No --input image has a mask in --masks={masks!r}.')
    return [image for _, image, _ in pairs], {image: m for _, image, m in pairs}, skipped


# ----------------------------------------------------------------------------- the output folder


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
            f'{_show(existing)}. Nothing was written. Pass a new --output, or --overwrite to '
            'replace them.'
        )


# ----------------------------------------------------------------------------- checking inputs


def _read_error(error: imageio.ImageReadError) -> str:
    return str(error).replace('Lower the mask threshold', 'Lower --mask_threshold')


def read_input(
    image: Path, masks: Sequence[Path] | None, settings: ml_collections.ConfigDict
) -> tuple[np.ndarray, np.ndarray | None]:
    """An image (uint8 RGB, own size) and the OR of its masks (folder set rules), or
    PredictError naming the file and the fix."""
    try:
        if masks is None:
            return imageio.read_image(image, channels=3), None
        return folder_set.read_pair(image, tuple(masks), settings, channels=3)
    except imageio.ImageReadError as e:
        raise PredictError(_read_error(e)) from None


def check_inputs(
    images: Sequence[Path],
    mask_files: Mapping[Path, Sequence[Path]] | None,
    settings: ml_collections.ConfigDict,
) -> dict[Path, str]:
    """Reads every image and its masks as the segmenting will (decoded, thresholded, sized):
    image -> what is wrong, before anything is written. Nothing is kept in memory."""
    problems = {}
    for image in images:
        try:
            read_input(image, _masks_of(image, mask_files), settings)
        except PredictError as e:
            problems[image] = str(e)
    return problems


def _masks_of(image: Path, mask_files: Mapping[Path, Sequence[Path]] | None):
    return None if mask_files is None else mask_files[image]


def _problem_list(problems: Mapping[Path, str]) -> str:
    lines = [f'  {reason}' for reason in list(problems.values())[:_SHOWN]]
    if len(problems) > _SHOWN:
        lines.append(f'  ... ({len(problems)} in all)')
    return '\n'.join(lines)


# ----------------------------------------------------------------------------- scores

SCORE_COLUMNS = (
    'image', 'mask', 'height', 'width', 'mask_pixels', 'predicted_pixels', 'empty',
    'dice', 'iou', 'hd95',
)  # fmt: skip


def score(prediction: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """Dice, IoU and HD95 of one image, with what is empty.

    `empty` is '' | 'prediction' | 'mask' | 'both'. HD95 is a distance between two contours,
    so it is None (missing) when either is empty, instead of metrics.hd95's image diagonal,
    which would stand for a distance that was never measured and dominate a mean."""
    predicted, truth = int(prediction.sum()), int(mask.sum())
    empty = {(True, True): 'both', (True, False): 'prediction', (False, True): 'mask'}.get(
        (predicted == 0, truth == 0), ''
    )
    scores = metrics.per_image_scores(prediction[None, ..., None], mask[None, ..., None])
    return {
        'mask_pixels': truth,
        'predicted_pixels': predicted,
        'empty': empty,
        'dice': float(scores['dice'][0]),
        'iou': float(scores['iou'][0]),
        'hd95': None if empty else float(scores['hd95'][0]),
    }


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The means and what they are over, as the study scores a test split: Dice and IoU over
    images whose mask is not empty (a missed lesion counts, with Dice 0); HD95 over those
    whose prediction is not empty either. Images with an empty mask are counted apart."""
    lesion = [r for r in rows if r['empty'] not in ('mask', 'both')]
    measured = [r for r in lesion if r['hd95'] is not None]
    empty_masks = [r for r in rows if r['empty'] in ('mask', 'both')]
    mean = lambda rs, k: float(np.mean([r[k] for r in rs])) if rs else None
    return {
        'dice': mean(lesion, 'dice'),
        'iou': mean(lesion, 'iou'),
        'hd95': mean(measured, 'hd95'),
        'images': len(rows),
        'scored': len(lesion),
        'hd95_scored': len(measured),
        'empty_prediction': sum(r['empty'] == 'prediction' for r in rows),
        'empty_mask': len(empty_masks),
        'empty_mask_predicted': sum(r['empty'] == 'mask' for r in rows),
    }


def describe(summary: Mapping[str, Any]) -> str:
    """What the means are over, in words (scores.csv's mean row and the screen)."""
    text = f'Dice and IoU over the {summary["scored"]} images with a non-empty mask'
    if summary['empty_prediction']:
        text += (
            f' ({summary["empty_prediction"]} with an empty prediction: Dice 0, HD95 missing)'
        )
    text += f'; HD95 over {summary["hd95_scored"]}'
    if summary['empty_mask']:
        text += (
            f'; {summary["empty_mask"]} images with an empty mask are not in the means '
            f'({summary["empty_mask_predicted"]} of them with a predicted foreground)'
        )
    return text


def _number(value: float | None, digits: int) -> str:
    return '' if value is None or math.isnan(value) else f'{value:.{digits}f}'


def _write_scores(path: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """scores.csv: a row per image, then the mean row whose `empty` cell says what the means
    are over (describe); written atomically. Returns the summary."""
    summary = summarise(rows)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(SCORE_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r['image'], ';'.join(r['mask']), r['height'], r['width'], r['mask_pixels'],
                r['predicted_pixels'], r['empty'], _number(r['dice'], 6), _number(r['iou'], 6),
                _number(r['hd95'], 4),
            ]
        )  # fmt: skip
    writer.writerow(
        [
            'mean', '', '', '', '', '', describe(summary), _number(summary['dice'], 6),
            _number(summary['iou'], 6), _number(summary['hd95'], 4),
        ]
    )  # fmt: skip
    io_utils.write_text_atomically(path, text.getvalue())
    return summary


# ----------------------------------------------------------------------------- outputs


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


def _segment_one(
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


def plan_inputs(
    inputs: str | Sequence[str], masks: str, settings: ml_collections.ConfigDict
) -> tuple[list[Path], dict[Path, tuple[Path, ...]] | None, dict[Path, str]]:
    """(images, their masks or None without --masks, skipped image -> reason): found, paired
    and every file read and checked; without skip_bad any problem is one error listing all."""
    images = find_inputs(inputs, settings.mask_suffix)
    mask_files, skipped = None, {}
    if masks:
        images, mask_files, skipped = pair_masks(images, masks, settings)
    skipped.update(check_inputs(images, mask_files, settings))
    if skipped and not settings.skip_bad:
        raise PredictError(
            f'{len(skipped)} of {len(images)} inputs cannot be segmented or scored (nothing '
            f'was written):\n{_problem_list(skipped)}\nFix or remove these files, or pass '
            '--skip_bad to segment the others.'
        )
    images = [p for p in images if p not in skipped]
    if not images:
        raise PredictError(f'No input can be segmented:\n{_problem_list(skipped)}')
    return images, mask_files, skipped


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
    check_output_folder(output, _specs(inputs), masks)
    workdir = run_folder(checkpoint_path)
    images, mask_files, skipped = plan_inputs(inputs, masks, settings)
    names = output_files([p.stem for p in images], probabilities=probabilities, scored=bool(masks))
    check_no_overwrite(output, names, overwrite=overwrite)
    predictor = _load_run(workdir)
    os.makedirs(output, exist_ok=True)

    rows = []
    # Read in chunks of a batch: originals of any size are never all held in memory at once.
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        read = [read_input(p, _masks_of(p, mask_files), settings) for p in chunk]
        maps = predictor.probabilities([image for image, _ in read], batch_size=batch_size)
        for path, (original, mask), prob in zip(chunk, read, maps):
            rows.append(
                _segment_one(
                    path,
                    original,
                    prob,
                    mask,
                    _masks_of(path, mask_files),
                    output,
                    threshold=threshold,
                    probabilities=probabilities,
                )
            )
        logging.info('Segmented %d/%d images.', len(rows), len(images))

    summary = _write_scores(os.path.join(output, SCORES_FILE), rows) if masks else None
    if skipped:
        logging.warning('Skipped %d inputs:\n%s', len(skipped), _problem_list(skipped))
    return {'rows': rows, 'mean': summary, 'output': os.path.abspath(output), 'skipped': skipped}


# ----------------------------------------------------------------------------- command line

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (defined only when run as a command, so importing the API adds none).
    The pairing flags take the folder set's names and defaults (config.data.folder)."""
    folder = fields.default_folder_config()
    flags.DEFINE_string('checkpoint', None, 'Workdir of a finished run (or its best/ folder).')
    flags.DEFINE_list('input', None, 'Image folder(s), glob(s) or files, comma-separated.')
    flags.DEFINE_string(
        'output',
        None,
        'Folder for <stem>_mask.png, _prob.png, _overlay.png; not an input or mask folder.',
    )
    flags.DEFINE_bool('overwrite', False, 'Replace files of an earlier predict in --output.')
    flags.DEFINE_string('masks', '', 'Ground-truth folder, glob or file: scores.csv and contours.')
    flags.DEFINE_enum(
        'pairing',
        folder.pairing,
        fields.PAIRINGS,
        'How masks pair with images, as config.data.folder.pairing: stem (same stem, two '
        'folders), suffix (<stem><mask_suffix>[_<k>], one folder is fine), regex (--regex).',
    )
    flags.DEFINE_string(
        'mask_suffix',
        folder.mask_suffix,
        'Mask stem = image stem + this (--pairing=suffix; <stem><suffix>_<k> are OR-ed). '
        "--input files named so are masks, never segmented ('' to segment them).",
    )
    flags.DEFINE_string(
        'regex', folder.regex, '--pairing=regex: a regex with a named group `key`, in both stems.'
    )
    flags.DEFINE_float(
        'mask_threshold',
        folder.mask_threshold,
        'A mask pixel > this is foreground (0: any non-zero; 127 for JPEG masks).',
    )
    flags.DEFINE_bool(
        'resize_masks',
        folder.resize_masks,
        'Resize masks of another size than their image (nearest) instead of failing.',
    )
    flags.DEFINE_bool('probabilities', False, 'Also write probability maps (<stem>_prob.png).')
    flags.DEFINE_float('threshold', 0.5, 'Foreground where the probability exceeds this.')
    flags.DEFINE_integer('batch_size', 8, 'Images per model call.')
    flags.DEFINE_bool(
        'skip_bad',
        folder.skip_bad,
        'Skip unpaired and unreadable inputs and bad masks (listed at the end) instead of '
        'stopping before anything is written.',
    )
    flags.mark_flags_as_required(['checkpoint', 'input', 'output'])


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    result = predict_images(
        FLAGS.checkpoint,
        FLAGS.input,
        FLAGS.output,
        masks=FLAGS.masks,
        probabilities=FLAGS.probabilities,
        threshold=FLAGS.threshold,
        batch_size=FLAGS.batch_size,
        overwrite=FLAGS.overwrite,
        **{name: FLAGS[name].value for name in PAIRING_FLAGS},
    )
    print(f'Wrote {len(result["rows"])} segmentations to {result["output"]}.')
    if result['skipped']:
        print(f'Skipped {len(result["skipped"])} inputs:\n{_problem_list(result["skipped"])}')
    if result['mean'] is not None:
        print(_mean_line(result['mean'], os.path.join(result['output'], SCORES_FILE)))


def _mean_line(summary: Mapping[str, Any], scores_file: str) -> str:
    if summary['dice'] is None:
        return f'No image has a non-empty mask, so no mean: {describe(summary)} ({scores_file}).'
    hd95 = f'{summary["hd95"]:.2f} px' if summary['hd95'] is not None else 'missing'
    return (
        f'Mean: Dice {summary["dice"]:.4f}, IoU {summary["iou"]:.4f}, HD95 {hd95}. '
        f'{describe(summary)} ({scores_file}).'
    )


if __name__ == '__main__':
    define_flags()
    errors.run(main)
