"""Image decoding and encoding, MATLAB-compatible bicubic resizing, and Y-channel PSNR.

``imresize`` reproduces MATLAB's ``imresize(img, scale, 'bicubic')``: cubic kernel a = -0.5, widened by
the scale when shrinking (antialiasing), weights normalised per output pixel, symmetric borders,
one dimension at a time (the more-shrunk one first, rows first on ties), and for uint8 images a
rounding to uint8 (half away from zero) after each pass. On Set5 it matches MATLAB's files exactly.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class ImageDecodeError(ValueError):
    """A file that is not a readable image; the message names the file."""


class ImageTooLargeError(ImageDecodeError):
    """An image with more pixels than allowed, refused from its header before any pixel is decoded."""


#: The most megapixels srfp decodes from one file unless told otherwise (``photos.max_megapixels``).
DEFAULT_MAX_MEGAPIXELS = 50.0
#: The highest limit a grid may set. PIL's own decompression-bomb check, which runs inside ``Image.open``
#: before srfp's, warns above it and refuses twice it, so that srfp's check (which names the limit) decides.
MAX_MEGAPIXELS_ALLOWED = 200.0
Image.MAX_IMAGE_PIXELS = int(MAX_MEGAPIXELS_ALLOWED * 1e6)
#: The most values (pixels x channels) of output computed at once by ``imresize``: its memory beyond its
#: input and output is a few such blocks in float64 (8 MiB each), whatever the size of the image.
BLOCK_VALUES = 1 << 20


# ---------------------------------------------------------------- bicubic


def _cubic(x: np.ndarray) -> np.ndarray:
    absx = np.abs(x)
    absx2, absx3 = absx**2, absx**3
    return ((1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
            + (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2)))


def _contributions(in_length: int, out_length: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights and (0-based, mirrored) input indices of each output pixel, as MATLAB computes them."""
    kernel_width = 4.0
    if scale < 1:
        kernel = lambda x: scale * _cubic(scale * x)  # noqa: E731 - MATLAB's antialiasing kernel
        kernel_width /= scale
    else:
        kernel = _cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    weights = kernel(u[:, None] - indices)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], indices[:, keep]


def _round_half_away(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.floor(np.abs(values) + 0.5)


def _resize_axis(image: np.ndarray, axis: int, out_length: int, scale: float, to_uint8: bool) -> np.ndarray:
    """Resize along ``axis``, a block of rows at a time (uint8 in and out when ``to_uint8``).

    Along the rows, each block of output rows is summed from the rows it needs; along the columns, each
    block of rows is copied with its columns first (so that every line a tap reads is contiguous), resized
    the same way, and put back. Either way a block holds at most ``BLOCK_VALUES`` values of each kind.
    """
    weights, indices = _contributions(image.shape[axis], out_length, scale)
    out = np.empty(_with_length(image.shape, axis, out_length), np.uint8 if to_uint8 else np.float64)
    if axis == 0:
        for rows in _blocks_of_rows(out_length, math.prod(image.shape[1:])):
            out[rows] = _weighted_lines(image, weights[rows], indices[rows], to_uint8)
    else:
        for rows in _blocks_of_rows(len(image), max(image.shape[1], out_length) * math.prod(image.shape[2:])):
            columns_first = np.ascontiguousarray(np.swapaxes(image[rows], 0, 1))
            out[rows] = np.swapaxes(_weighted_lines(columns_first, weights, indices, to_uint8), 0, 1)
    return out


def _with_length(shape: tuple[int, ...], axis: int, length: int) -> tuple[int, ...]:
    return (*shape[:axis], length, *shape[axis + 1:])


def _blocks_of_rows(rows: int, values_per_row: int) -> list[slice]:
    rows_per_block = max(1, BLOCK_VALUES // max(1, values_per_row))
    return [slice(start, start + rows_per_block) for start in range(0, rows, rows_per_block)]


def _weighted_lines(source: np.ndarray, weights: np.ndarray, indices: np.ndarray, to_uint8: bool) -> np.ndarray:
    """Each output line's weighted sum of its source lines (along axis 0) in float64, tap after tap from zero.

    The order of the sum is that of ``np.einsum("ok,ok...->o...")`` over whole gathers, which srfp used
    before: the photos stay bit-identical. Only one source line per output line is gathered at a time, in
    its own dtype (uint8 stays uint8 until the multiplication).
    """
    shape = (len(weights), *source.shape[1:])
    total, term = np.zeros(shape), np.empty(shape)
    per_line = (slice(None),) + (None,) * (source.ndim - 1)
    for tap in range(weights.shape[1]):
        np.multiply(source[indices[:, tap]], weights[:, tap][per_line], out=term)
        total += term
    return np.clip(_round_half_away(total), 0, 255) if to_uint8 else total


def imresize(image: np.ndarray, scale: float | None = None, output_shape: tuple[int, int] | None = None) -> np.ndarray:
    """MATLAB ``imresize(image, scale, 'bicubic')``, or to ``output_shape`` (height, width).

    uint8 input gives uint8 output (rounded after each pass, as MATLAB does); float input stays float64.
    """
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale or output_shape")
    height, width = image.shape[:2]
    if output_shape is None:
        scales = (float(scale), float(scale))
        output_shape = (int(math.ceil(height * scale)), int(math.ceil(width * scale)))
    else:
        scales = (output_shape[0] / height, output_shape[1] / width)
    to_uint8 = image.dtype == np.uint8
    out = image
    for axis in sorted((0, 1), key=lambda a: scales[a]):  # stable: rows first on ties
        out = _resize_axis(out, axis, output_shape[axis], scales[axis], to_uint8)
    return out


def crop_to_multiple(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom and right edges so that height and width are multiples of ``scale``."""
    height, width = image.shape[:2]
    return image[: height - height % scale, : width - width % scale]


def downscale(image: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """The (HR, LR) pair for a model of this scale: HR cropped to a multiple of it, LR = HR bicubic / scale."""
    hr = crop_to_multiple(image, scale)
    return hr, imresize(hr, scale=1 / scale)


def fit_long_side(image: np.ndarray, long_side: int) -> np.ndarray:
    """Shrink (never enlarge) so that the longer side is ``long_side`` pixels, with the MATLAB bicubic."""
    height, width = image.shape[:2]
    if max(height, width) <= long_side:
        return image
    factor = long_side / max(height, width)
    shape = (max(1, round(height * factor)), max(1, round(width * factor)))
    return imresize(image, output_shape=shape)


# ---------------------------------------------------------------- quality


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr`` luma of an RGB uint8 image, as float64 in [16, 235]."""
    rgb = image.astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def psnr_y(reference: np.ndarray, test: np.ndarray, border: int) -> float:
    """PSNR on the Y channel with ``border`` pixels cropped at every edge (the SR literature's figure)."""
    if reference.shape != test.shape:
        raise ValueError(f"images differ in size: {reference.shape} and {test.shape}")
    ref, out = rgb_to_y(reference), rgb_to_y(test)
    if border:
        ref, out = ref[border:-border, border:-border], out[border:-border, border:-border]
    mse = np.mean((ref - out) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


# ---------------------------------------------------------------- decode / encode


def _to_rgb_uint8(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if values.max(initial=0) > 255 or image.mode.startswith("I;16") else 255.0
        grey = np.clip(_round_half_away(values * 255.0 / peak), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(_round_half_away(values * (255.0 if values.max(initial=0) <= 1.0 else 1.0)), 0, 255)
        return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)
    # Palette, greyscale, CMYK and alpha modes: alpha is dropped, colours kept as they are.
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


def decode_image(data: bytes, name: str = "<bytes>", max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> np.ndarray:
    """Decode image bytes to an RGB uint8 array (H, W, 3), applying the EXIF orientation.

    Greyscale, palette, RGBA and 16-bit images are converted; alpha is dropped. A file that is not a
    complete, readable image raises :class:`ImageDecodeError` naming it; one of more than ``max_megapixels``,
    read from its header, raises :class:`ImageTooLargeError` before its pixels are decoded.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:  # lazy: reads the header only
            _refuse_above(image.size, max_megapixels, name)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of an upright photo
            return _to_rgb_uint8(image)
    except ImageTooLargeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageDecodeError(f"{name}: cannot decode image ({error})") from None


def _refuse_above(size: tuple[int, int], max_megapixels: float, name: str) -> None:
    width, height = size
    if width * height > max_megapixels * 1e6:
        raise ImageTooLargeError(f"{name}: {width}x{height} pixels ({width * height / 1e6:.1f} MP) is above the limit "
                                 f"of {max_megapixels:g} MP; not decoded")


def read_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    return decode_image(path.read_bytes(), str(path))


def encode_png(image: np.ndarray, compress_level: int = 6) -> bytes:
    """Lossless PNG bytes of an RGB uint8 array."""
    if image.dtype != np.uint8:
        raise ValueError(f"encode_png needs uint8 pixels, got {image.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()
