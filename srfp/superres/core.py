"""Super-resolve one photo with one model, whole or in overlapping tiles (plain PyTorch, no Ray)."""

from __future__ import annotations

import numpy as np
import torch

from srfp.devices import image_precision
from srfp.images import downscale
from srfp.sisr.data import image_to_tensor, tensor_to_image


def _spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(start, stop) of each tile's core and of its input padded by ``overlap``, along one axis."""
    spans = []
    for start in range(0, length, tile):
        stop = min(start + tile, length)
        spans.append((start, stop, max(0, start - overlap), min(length, stop + overlap)))
    return spans


@torch.no_grad()
def superresolve(model: torch.nn.Module, lr: np.ndarray, scale: int, device: torch.device,
                 tile_size: int = 0, tile_overlap: int = 16, precision: str = "float32") -> np.ndarray:
    """The model's 8-bit output for an LR image (clamped to [0, 255], then rounded), computed in
    ``precision`` (see :func:`srfp.devices.image_precision`).

    With ``tile_size`` > 0 the LR image is cut into tiles of that size, each run with ``tile_overlap``
    pixels of context on every side, and only each tile's core is kept: memory stays bounded whatever the
    photo's size, and the result equals the untiled one while the overlap covers the receptive field.
    """
    height, width = lr.shape[:2]
    if not tile_size or (height <= tile_size and width <= tile_size):
        with image_precision(device, precision):
            return tensor_to_image(model(image_to_tensor(lr).to(device)).float())
    out = np.empty((height * scale, width * scale, 3), np.float32)
    for top, bottom, pad_top, pad_bottom in _spans(height, tile_size, tile_overlap):
        for left, right, pad_left, pad_right in _spans(width, tile_size, tile_overlap):
            with image_precision(device, precision):
                tile = model(image_to_tensor(lr[pad_top:pad_bottom, pad_left:pad_right]).to(device)).float()
            tile = tile[0].permute(1, 2, 0).cpu().numpy()
            y, x = (top - pad_top) * scale, (left - pad_left) * scale
            out[top * scale:bottom * scale, left * scale:right * scale] = \
                tile[y:y + (bottom - top) * scale, x:x + (right - left) * scale]
    return np.clip(out, 0, 255).round().astype(np.uint8)


def tiling(model: torch.nn.Module, tile_size: int) -> tuple[int, int]:
    """The (tile size, overlap) that keep a model's output that of the whole image: tiles of ``tile_size`` that
    overlap by the model's receptive radius, or whole images (0, 0) for a model whose output depends on the
    whole image (channel or non-local attention)."""
    radius = model.receptive_radius()
    return (0, 0) if radius is None else (tile_size, radius)


def superresolve_photo(model: torch.nn.Module, photo: np.ndarray, scale: int, device: torch.device,
                       tile_size: int = 0, tile_overlap: int = 16,
                       precision: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """(HR, SR): the photo cropped to a multiple of the scale, and the model's output for its bicubic LR."""
    hr, lr = downscale(photo, scale)
    return hr, superresolve(model, lr, scale, device, tile_size, tile_overlap, precision)
