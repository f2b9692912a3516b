r"""Segments new images with a trained run: masks, probability maps, overlays and scores.

  python -m unet_jax.predict --checkpoint=runs/busi --input=scans/ --output=out/ \
      [--masks=scans_gt/ --mask_suffix=_mask] [--probabilities] [--threshold=0.5]

Images of any size and format (PNG/JPEG/BMP/TIFF/GIF, grey, RGB, 16-bit) go through the
training preprocessing of the run (`pipeline.preprocess` with the run's `config.data`: grey
conversion for 1-channel models, resize or aspect-preserving pad, per-image normalisation). The
probability map is cut back to the image's content (when padded), resized to the original size
(bilinear) and only then thresholded, so masks and scores live at the original resolution.

Per image `<stem>` the output folder gets `<stem>_mask.png` (0/255), `<stem>_prob.png`
(probability x 255, with --probabilities) and `<stem>_overlay.png`: the image with the
prediction's contour in red and, when masks are given, the ground truth's in green and the Dice
written on it. With masks, `scores.csv` holds per-image Dice, IoU and HD95 (pixels, original
resolution) and a final `mean` row.

Masks pair with images by file stem plus `--mask_suffix` (`a.jpg` <-> `a_mask.png`); further
masks of one image, `<stem><suffix>_<k>`, are OR-ed (BUSI's `_mask_1`), as in the folder set.

Every input is checked before anything is written: unreadable files and masks of another size
than their image are listed together in one error, or skipped with `--skip_bad` (the others
are segmented, the skipped ones listed at the end).

Over 400 lines because the command does the whole path from files to files (input checks,
the run's preprocessing, resizing back, overlays, scores); each step is a short function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import csv
import dataclasses
import functools
import glob
import io
import os
from pathlib import Path
from typing import Any

from absl import app, flags, logging
import jax
import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError
import scipy.ndimage

from unet_jax import checkpoint, cli, io_utils, metrics, models
from unet_jax.data import folder as folder_set
from unet_jax.data import imageio, pipeline

PREDICTION_COLOUR = (255, 40, 40)
TRUTH_COLOUR = (40, 255, 40)
SCORES_FILE = 'scores.csv'
_SHOWN = 10
_ACCEPTED = ', '.join(imageio.IMAGE_SUFFIXES)


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
    """The workdir of the finished run at or above `path` (a workdir, its best/ or a step)."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise PredictError(
            f'--checkpoint={path!r} does not exist. Pass the workdir of a '
            'finished run (the --workdir given to unet_jax.main).'
        )
    for folder in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
        if os.path.isfile(os.path.join(folder, 'config.json')):
            if not os.path.isfile(os.path.join(folder, 'results.json')):
                raise PredictError(
                    f'--checkpoint={path!r}: the run in {folder} has not finished (it has no '
                    'results.json). Let it finish, or re-run its unet_jax.main command to '
                    'resume it, then predict.'
                )
            return folder
    raise PredictError(
        f'--checkpoint={path!r} holds no run: no config.json there or above. '
        'Pass the workdir of a finished run (the --workdir given to '
        'unet_jax.main).'
    )


def load_predictor(checkpoint_path: str) -> Predictor:
    """The finished run's model with its best-validation variables, checked against its config."""
    workdir = run_folder(checkpoint_path)
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


def find_inputs(inputs: str | Sequence[str]) -> list[Path]:
    """The images to segment from folders, globs and files; each output stem must be unique."""
    specs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not specs:
        raise PredictError('--input is empty: pass a folder, a glob or image files.')
    files = sorted({f for spec in specs for f in _expand(str(spec), 'input')})
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
    images: Sequence[Path], masks: str, mask_suffix: str = ''
) -> tuple[list[Path], dict[Path, list[Path]]]:
    """(images, their mask files): a mask is named <image stem><mask_suffix>[_<k>] (the folder
    set's rule, `folder_set.mask_owner`); masks of other images are ignored, mask files that
    --input also matched are not segmented."""
    mask_files = _expand(masks, 'masks')
    mask_set = set(mask_files)
    if not mask_suffix and mask_set.issuperset(images):
        raise PredictError(
            f'--masks={masks!r} matches the input images themselves. Give the '
            'mask folder, or --mask_suffix when masks sit next to their images '
            '(e.g. --mask_suffix=_mask for a_mask.png).'
        )
    # Masks next to their images: files that are masks by name are not images to segment.
    images = [
        p
        for p in images
        if not (mask_suffix and p in mask_set and folder_set.mask_owner(p.stem, mask_suffix))
    ]
    if not images:
        raise PredictError(
            f'Every --input file is a mask by its name (<stem>{mask_suffix}); '
            'point --input at the images.'
        )
    by_owner = folder_set.masks_by_owner(mask_files, mask_suffix)
    lacking = [str(p) for p in images if p.stem not in by_owner]
    if lacking:
        rule = f'<stem>{mask_suffix}' if mask_suffix else 'the same stem'
        raise PredictError(
            f'{len(lacking)} image(s) have no mask named {rule} in --masks={masks!r}: '
            f'{_show(lacking)}. Add their masks, fix --mask_suffix, or leave them out of --input.'
        )
    return images, {p: by_owner[p.stem] for p in images}


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            imageio.check_size(path, *image.size)
            return image.size
    except imageio.ImageReadError as e:
        raise PredictError(str(e)) from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise PredictError(f'{path}: cannot be read as an image ({e}).') from None


def check_inputs(
    images: Sequence[Path], mask_files: Mapping[Path, Sequence[Path]]
) -> dict[Path, str]:
    """What is wrong with each input that its file headers already show (unreadable files,
    masks of another size than their image): image -> the reason, before anything is written."""
    problems = {}
    for image in images:
        try:
            width, height = _header_size(image)
            for mask in mask_files.get(image, ()):
                mask_width, mask_height = _header_size(mask)
                if (mask_width, mask_height) != (width, height):
                    raise PredictError(
                        f'{mask}: mask is {mask_width}x{mask_height} (WxH) but its image '
                        f"{image} is {width}x{height}; a mask must have its image's size."
                    )
        except PredictError as e:
            problems[image] = str(e)
    return problems


# ----------------------------------------------------------------------------- outputs


def _read_image(path: Path) -> np.ndarray:
    try:
        return imageio.read_image(path, channels=3)
    except imageio.ImageReadError as e:
        cause = e.__cause__ or e
        raise PredictError(f'{path}: cannot be read as an image ({cause}).') from e


def _read_mask(paths: Sequence[Path], image_path: Path, threshold: float) -> np.ndarray:
    """The OR of an image's masks (their sizes were checked against the image's already)."""
    try:
        return imageio.read_mask(list(paths), threshold=threshold, binary=True)
    except imageio.ImageReadError as e:
        if e.__cause__ is None:  # Values under the threshold: the message says what to change.
            raise PredictError(f'{e} (--mask_threshold)') from e
        raise PredictError(
            f'Mask of {image_path} ({_show(paths)}) cannot be read as an image ({e.__cause__}).'
        ) from e


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


def _write_scores(path: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    """scores.csv with one row per image and a final mean row; written atomically."""
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ('dice', 'iou', 'hd95')}
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(['image', 'mask', 'height', 'width', 'dice', 'iou', 'hd95'])
    for r in rows:
        writer.writerow(
            [
                r['image'],
                ';'.join(r['mask']),
                r['height'],
                r['width'],
                f'{r["dice"]:.6f}',
                f'{r["iou"]:.6f}',
                f'{r["hd95"]:.4f}',
            ]
        )
    writer.writerow(
        ['mean', '', '', '', f'{mean["dice"]:.6f}', f'{mean["iou"]:.6f}', f'{mean["hd95"]:.4f}']
    )
    io_utils.write_text_atomically(path, text.getvalue())
    return mean


def _problem_list(problems: Mapping[Path, str]) -> str:
    lines = [f'  {reason}' for reason in list(problems.values())[:_SHOWN]]
    if len(problems) > _SHOWN:
        lines.append(f'  ... ({len(problems)} in all)')
    return '\n'.join(lines)


def _segment_one(
    path: Path,
    original: np.ndarray,
    prob: np.ndarray,
    masks: Sequence[Path] | None,
    output: str,
    *,
    threshold: float,
    mask_threshold: float,
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
    mask = None
    if masks is not None:
        mask = _read_mask(masks, path, mask_threshold)
        scores = metrics.per_image_scores(prediction[None, ..., None], mask[None, ..., None])
        row.update(mask=[str(m) for m in masks], **{k: float(v[0]) for k, v in scores.items()})
    stem = os.path.join(output, path.stem)
    Image.fromarray(prediction.astype(np.uint8) * 255).save(f'{stem}_mask.png')
    if probabilities:
        Image.fromarray(np.round(prob * 255).astype(np.uint8)).save(f'{stem}_prob.png')
    overlay(original, prediction, mask, row.get('dice')).save(f'{stem}_overlay.png')
    return row


def predict_images(
    checkpoint_path: str,
    inputs: str | Sequence[str],
    output: str,
    *,
    masks: str = '',
    mask_suffix: str = '',
    mask_threshold: float = 0,
    probabilities: bool = False,
    threshold: float = 0.5,
    batch_size: int = 8,
    skip_bad: bool = False,
) -> dict[str, Any]:
    """Segments `inputs` with the run at `checkpoint_path` and writes the outputs to `output`.

    Every input is checked first (unreadable files, masks of another size): without
    `skip_bad` any problem is an error listing them all, and nothing is written. With it, bad
    inputs are skipped (logged, returned in 'skipped') and the others segmented. An input that
    fails only while it is decoded is skipped too; scores.csv of the others is written in any
    case, then the error is raised unless `skip_bad`.

    Returns {'rows': one dict per image (image, height, width, foreground fraction and, with
    masks, mask, dice, iou, hd95), 'mean': mean scores or None without masks, 'output': dir,
    'skipped': {image path: reason}}.
    """
    if not 0.0 <= threshold <= 1.0:
        raise cli.ConfigError(f'--threshold={threshold} must be a probability in [0, 1].')
    if batch_size < 1:
        raise cli.ConfigError(f'--batch_size={batch_size} must be >= 1.')
    images = find_inputs(inputs)
    mask_files: dict[Path, list[Path]] = {}
    if masks:
        images, mask_files = pair_masks(images, masks, mask_suffix)
    skipped = check_inputs(images, mask_files)
    if skipped and not skip_bad:
        raise PredictError(
            f'{len(skipped)} of {len(images)} inputs cannot be segmented or scored (nothing '
            f'was written):\n{_problem_list(skipped)}\nFix or remove these files, or pass '
            '--skip_bad to segment the others.'
        )
    images = [p for p in images if p not in skipped]
    if not images:
        raise PredictError(f'No input can be segmented:\n{_problem_list(skipped)}')
    predictor = load_predictor(checkpoint_path)
    os.makedirs(output, exist_ok=True)

    rows, failed = [], {}
    # Read in chunks of a batch: originals of any size are never all held in memory at once.
    for start in range(0, len(images), batch_size):
        originals = {}
        for path in images[start : start + batch_size]:
            try:
                originals[path] = _read_image(path)
            except PredictError as e:
                failed[path] = str(e)
        maps = predictor.probabilities(list(originals.values()), batch_size=batch_size)
        for (path, original), prob in zip(originals.items(), maps):
            try:
                row = _segment_one(
                    path,
                    original,
                    prob,
                    mask_files[path] if masks else None,
                    output,
                    threshold=threshold,
                    mask_threshold=mask_threshold,
                    probabilities=probabilities,
                )
            except PredictError as e:
                failed[path] = str(e)
                continue
            rows.append(row)
        logging.info('Segmented %d/%d images.', len(rows), len(images))

    mean = _write_scores(os.path.join(output, SCORES_FILE), rows) if masks and rows else None
    skipped.update(failed)
    if failed and not skip_bad:
        written = f'the other {len(rows)} were segmented' + (
            f' and scored in {SCORES_FILE}' if mean else ''
        )
        raise PredictError(
            f'{len(failed)} inputs failed while being read ({written}):\n'
            f'{_problem_list(failed)}\nFix or remove these files, or pass --skip_bad.'
        )
    if skipped:
        logging.warning('Skipped %d inputs:\n%s', len(skipped), _problem_list(skipped))
    return {'rows': rows, 'mean': mean, 'output': os.path.abspath(output), 'skipped': skipped}


# ----------------------------------------------------------------------------- command line

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command's flags (defined only when run as a command, so importing the API adds none)."""
    flags.DEFINE_string('checkpoint', None, 'Workdir of a finished run (or its best/ folder).')
    flags.DEFINE_list('input', None, 'Image folder(s), glob(s) or files, comma-separated.')
    flags.DEFINE_string('output', None, 'Folder for <stem>_mask.png, _prob.png, _overlay.png.')
    flags.DEFINE_string('masks', '', 'Ground-truth folder or glob: scores.csv and truth contours.')
    flags.DEFINE_string(
        'mask_suffix',
        '',
        'Mask stem = image stem + this (e.g. _mask); '
        'masks <stem><suffix>_<k> of the same image are OR-ed.',
    )
    flags.DEFINE_float(
        'mask_threshold',
        0,
        'A mask pixel > this is foreground (0: any non-zero; 127 for JPEG masks).',
    )
    flags.DEFINE_bool('probabilities', False, 'Also write probability maps (<stem>_prob.png).')
    flags.DEFINE_float('threshold', 0.5, 'Foreground where the probability exceeds this.')
    flags.DEFINE_integer('batch_size', 8, 'Images per model call.')
    flags.DEFINE_bool(
        'skip_bad',
        False,
        'Skip unreadable inputs and masks of the wrong size (listed at the end) instead of '
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
        mask_suffix=FLAGS.mask_suffix,
        mask_threshold=FLAGS.mask_threshold,
        probabilities=FLAGS.probabilities,
        threshold=FLAGS.threshold,
        batch_size=FLAGS.batch_size,
        skip_bad=FLAGS.skip_bad,
    )
    print(f'Wrote {len(result["rows"])} segmentations to {result["output"]}.')
    if result['skipped']:
        print(f'Skipped {len(result["skipped"])} inputs:\n{_problem_list(result["skipped"])}')
    if result['mean'] is not None:
        mean = result['mean']
        print(
            f'Mean over {len(result["rows"])} images: Dice {mean["dice"]:.4f}, '
            f'IoU {mean["iou"]:.4f}, HD95 {mean["hd95"]:.2f} px '
            f'({os.path.join(result["output"], SCORES_FILE)}).'
        )


if __name__ == '__main__':
    define_flags()
    cli.run(main)
