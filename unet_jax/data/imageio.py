"""Reading images and binary masks as they come in the wild.

Real releases store images as PNG/JPEG/BMP/TIFF in grey, RGB, RGBA, palette or 16-bit modes,
and masks as 0/1, 0/255, 1-bit, RGB or RGBA, sometimes several files per case and sometimes at
another size than their image. Everything here returns uint8 arrays and says what was wrong
with which file when it cannot.
"""

from __future__ import annotations

from collections.abc import Sequence
import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.gif')
# The largest image read: 8192 x 8192 pixels (64 Mpixel; a 4000 x 5000 mammogram is 20).
# Larger files are refused from their header, before their pixels are decoded into memory.
MAX_PIXELS = 8192 * 8192


class ImageReadError(ValueError):
    """A file that cannot be read as an image, or a mask that does not fit its image."""


def _open(path: str | os.PathLike) -> Image.Image:
    try:
        image = Image.open(path)
        check_size(path, *image.size)
        image.load()
    except FileNotFoundError as e:
        raise ImageReadError(f'{path}: file not found.') from e
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageReadError(
            f'{path}: cannot be read as an image ({e}). Replace or remove the file.'
        ) from e
    return image


def check_size(path: str | os.PathLike, width: int, height: int) -> None:
    """Refuses an image over MAX_PIXELS (read from its header), saying how to shrink it."""
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            f'{path}: {width}x{height} pixels is over the limit of {MAX_PIXELS / 2**20:.0f} '
            'Mpixel (8192x8192) that unet_jax reads. Downscale the file first (e.g. to 2048 '
            'pixels on its longest side, which is still far above the model input), or remove it.'
        )


def _float_pixels(path: str | os.PathLike, a: np.ndarray) -> np.ndarray:
    """Floating-point pixels (TIFF mode 'F'), refused when some are NaN or infinite."""
    bad = ~np.isfinite(a)
    if bad.any():
        raise ImageReadError(
            f'{path}: {int(bad.sum())} of {bad.size} pixels are NaN or infinite (a floating-'
            'point image). Replace them (e.g. by 0) and save the image again, or remove it.'
        )
    return a


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Rescales 16-bit / float pixels to 0..255 by their range (X-ray PNGs are often 16-bit)."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    a = a.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_image(path: str | os.PathLike, *, channels: int) -> np.ndarray:
    """Reads an image as uint8 [H, W, channels] (channels 1: grey, 3: RGB), any common format."""
    if channels not in (1, 3):
        raise ValueError(f'channels must be 1 or 3, got {channels}.')
    image = _open(path)
    if image.mode in ('I', 'I;16', 'I;16B', 'I;16L', 'F'):
        grey = _to_uint8(_float_pixels(path, np.asarray(image)))
        a = grey[..., None] if channels == 1 else np.repeat(grey[..., None], 3, axis=-1)
        return np.ascontiguousarray(a)
    if image.mode in ('RGBA', 'LA', 'PA') or (image.mode == 'P' and 'transparency' in image.info):
        # Composite on black: transparent pixels are background, not arbitrary colour values.
        rgba = image.convert('RGBA')
        background = Image.new('RGBA', rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert('L' if channels == 1 else 'RGB')
    a = np.asarray(image, np.uint8)
    return np.ascontiguousarray(a[..., None] if channels == 1 else a)


def _mask_values(path: str | os.PathLike) -> np.ndarray:
    """One mask file as a [H, W] array of its strongest channel (any format or mode)."""
    image = _open(path)
    if image.mode == '1':
        return np.asarray(image, bool).astype(np.uint8)
    if image.mode == 'P':
        image = image.convert('RGBA')
    a = np.asarray(image)
    if a.ndim == 2:
        if a.dtype in (np.uint8, bool):
            return a.astype(np.uint8)
        return _to_uint8(_float_pixels(path, a))
    colour = a[..., :3].max(axis=-1) if a.shape[-1] >= 3 else a[..., 0]
    if a.shape[-1] in (2, 4):
        alpha = a[..., -1]
        if not colour.any() and alpha.min() != alpha.max():
            return alpha.astype(np.uint8)  # The mask is drawn in the alpha channel alone.
        colour = np.where(alpha > 0, colour, 0)
    return colour.astype(np.uint8)


def read_mask(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    threshold: float = 0,
    size: tuple[int, int] | None = None,
    resize: bool = False,
    binary: bool = False,
) -> np.ndarray:
    """Reads one or several mask files as uint8 [H, W] in {0, 1}: value > threshold, OR-ed.

    Args:
      paths: one mask file, or several (one per lesion) whose foregrounds are OR-ed.
      threshold: a pixel is foreground if its value is > threshold. 0 takes any non-zero value,
        so 0/1, 0/255 and 1-bit masks all work; use e.g. 127 for JPEG-compressed 0/255 masks.
      size: (height, width) of the image the mask belongs to; a mask of another size is an
        error unless resize is True.
      resize: resize masks of another size to `size` with nearest-neighbour.
      binary: with threshold 0, a file of more than two values is an error (a user's own
        masks: a JPEG mask, or an image given as a mask, would turn into noise).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ImageReadError('read_mask got no mask files.')
    union = None
    for path in paths:
        values = _mask_values(path)
        top = int(values.max())
        # A two-valued mask (0/1, 0/255) wholly under the threshold is a setting error, not an
        # empty mask; many-valued faint noise (JPEG) under it is a genuinely empty mask.
        if 0 < top <= threshold and np.isin(values, (0, top)).all():
            raise ImageReadError(
                f'{path}: mask values are 0/{top} but the threshold is {threshold}, '
                'so the mask would be empty. Lower the mask threshold '
                '(0 accepts any non-zero value).'
            )
        if binary and threshold == 0:
            _check_binary(path, values)
        mask = (values > threshold).astype(np.uint8)
        if size is not None and mask.shape != tuple(size):
            if not resize:
                raise ImageReadError(
                    f'{path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image is '
                    f'{size[1]}x{size[0]}. Fix the file, or set resize_masks=True '
                    '(config.data.folder.resize_masks, predict --resize_masks) to resize masks '
                    'with nearest neighbour.'
                )
            mask = np.asarray(Image.fromarray(mask).resize((size[1], size[0]), Image.NEAREST))
        if union is not None and mask.shape != union.shape:
            raise ImageReadError(
                f'{path}: mask is {mask.shape[1]}x{mask.shape[0]} but {paths[0]} is '
                f'{union.shape[1]}x{union.shape[0]}; the masks of one case must have one size.'
            )
        union = mask if union is None else np.maximum(union, mask)
    return union


def _check_binary(path: str | os.PathLike, values: np.ndarray) -> None:
    distinct = np.unique(values)
    if len(distinct) > 2:
        shown = ', '.join(str(v) for v in distinct[:5]) + (', ...' if len(distinct) > 5 else '')
        raise ImageReadError(
            f'{path}: the mask has {len(distinct)} values ({shown}), not two (0/1 or 0/255), so '
            'with mask threshold 0 every non-zero pixel would be foreground. If it is a JPEG or '
            'anti-aliased mask, set a mask threshold (e.g. 127: config.data.folder.'
            'mask_threshold, predict --mask_threshold); if it is an image, point the masks '
            'setting at the masks.'
        )


def encode_png(a: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W] or [H, W, C] array (TFDS stores these without TensorFlow)."""
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(a).save(buffer, format='PNG', compress_level=1)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """uint8 array of PNG/JPEG bytes as stored by TFDS, [H, W] or [H, W, 3]."""
    return np.asarray(Image.open(io.BytesIO(data)))


def cap_size(image: np.ndarray, mask: np.ndarray, max_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Shrinks an example so its longest side is at most max_size (0: unchanged), for speed."""
    h, w = image.shape[:2]
    if max_size <= 0 or max(h, w) <= max_size:
        return image, mask
    scale = max_size / max(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    squeezed = image[..., 0] if image.shape[-1] == 1 else image
    small = np.asarray(Image.fromarray(squeezed).resize(new, Image.BOX))
    small = small.reshape(small.shape[:2] + image.shape[2:])
    small_mask = np.asarray(Image.fromarray(mask).resize(new, Image.NEAREST))
    return small, small_mask
