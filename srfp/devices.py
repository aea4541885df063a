"""Where tensors run: the device a Ray task was given, and the precision used on it.

Training steps (SISR models and classifiers) run under :func:`autocast`: bfloat16 on CUDA. Images
(super-resolution, SISR validation) are made under :func:`image_precision`: float32 with TF32 off unless
the grid asks for bfloat16, because the precision would otherwise become part of a model's fingerprint.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch

from srfp.gridspec import PRECISIONS


def choose_device(use_gpu: bool = True) -> torch.device:
    """CUDA when asked for and present (Ray sets CUDA_VISIBLE_DEVICES per trial), else the CPU."""
    return torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, cache: bool = True):
    """bfloat16 mixed precision on CUDA; plain float32 on the CPU. ``cache``: autocast's cache of cast weights
    within the region (off in a region captured as a CUDA graph)."""
    return (torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache) if device.type == "cuda"
            else nullcontext())


@contextmanager
def image_precision(device: torch.device, precision: str = "float32") -> Iterator[None]:
    """The precision images are made in, on any device; TF32 is off for the duration (restored after).

    "float32": no autocast (even inside an autocast region), so convolutions and matrix products are
    IEEE float32 on CUDA as on the CPU. "bfloat16": bfloat16 autocast, on the CPU too, so that the
    recorded precision is the one used.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
