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
resolution), which of prediction and mask are empty, and a final `mean` row that says what
the means are over.

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

from collections.abc import Sequence
import os

from absl import app, flags

from unet_jax import errors, predict
from unet_jax.data import fields
from unet_jax.predict.inputs import PAIRING_FLAGS
from unet_jax.predict.outputs import SCORES_FILE
from unet_jax.predict.problems import problem_list
from unet_jax.predict.scores import mean_line

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
    result = predict.predict_images(
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
        print(f'Skipped {len(result["skipped"])} inputs:\n{problem_list(result["skipped"])}')
    if result['mean'] is not None:
        print(mean_line(result['mean'], os.path.join(result['output'], SCORES_FILE)))


if __name__ == '__main__':
    define_flags()
    errors.run(main)
