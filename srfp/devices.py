"""Where tensors run: the device a Ray task was given, and the precision used on it."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def choose_device(use_gpu: bool = True) -> torch.device:
    """CUDA when asked for and present (Ray sets CUDA_VISIBLE_DEVICES per trial), else the CPU."""
    return torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")


def autocast(device: torch.device):
    """bfloat16 mixed precision on CUDA; plain float32 on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
