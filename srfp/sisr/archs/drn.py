"""DRN: Closed-loop Matters: Dual Regression Networks for Single Image Super-Resolution (Guo et al., CVPR 2020).

The layout is guoyongcs/DRN's ``model/drn.py`` with ``model/common.py``, the primal network only: the dual
regression models are trained beside it but saved to a separate file and not used to super-resolve. Its
``utility.init_model`` configures x4 as DRN-S (n_blocks 30, n_feats 16, the released ``DRNS4x.pt``) or
DRN-L (n_blocks 40, n_feats 20, ``DRNL4x.pt``). Images are in [0, 255] (``--rgb_range`` 255). The network
upscales its input bicubically to the output size first, halves it ``log2(scale)`` times (``down``), then
doubles it back (``up_blocks``), concatenating each level's features; ``tail.{i}`` makes the image of each
level and the official test keeps the last one (``sr[-1]``); it runs no self-ensemble. The official code
loads the file with ``strict=False``; a released file holds exactly ``DRN.state_dict()``'s keys (its
``Model.save`` writes the primal model's ``state_dict()``), so srfp loads it strictly.

``common.MeanShift`` sets an attribute ``requires_grad`` instead of freezing its weights: the official
mean shifts are trained parameters, counted in the README's #Params, and a released file may hold trained
values for them, which loading copies in.
"""

import math

import torch
from torch import nn
from torch.nn import functional

from srfp.sisr.archs.common import default_conv, mean_shifts, upsampling_layers
from srfp.sisr.archs.rcan import RCAB

#: DRN's channel attention reduces its channels by 16 (common.RCAB's default).
REDUCTION = 16
#: The slope of the down blocks' leaky ReLUs (``--negval``).
NEGATIVE_SLOPE = 0.2


class DownBlock(nn.Module):
    """Halves the size: a bias-free stride-2 conv and a leaky ReLU (``dual_module.0.0``), then a bias-free conv
    to ``out_channels`` (``dual_module.1``)."""

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.dual_module = nn.Sequential(
            nn.Sequential(nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
                          nn.LeakyReLU(negative_slope=NEGATIVE_SLOPE, inplace=True)),
            nn.Conv2d(channels, out_channels, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dual_module(x)


def up_block(channels: int, out_channels: int, n_blocks: int) -> nn.Sequential:
    """``n_blocks`` RCABs, a sub-pixel doubling (``{n_blocks}.0``) and a 1x1 conv to ``out_channels``."""
    return nn.Sequential(*(RCAB(channels, REDUCTION, 1.0) for _ in range(n_blocks)),
                         nn.Sequential(*upsampling_layers(channels, channels, 2)),
                         default_conv(channels, out_channels, 1))


class DRN(nn.Module):
    """``sub_mean``, ``head``, ``log2(scale)`` down blocks (``down.{p}``: n_feats * 2**p channels in, twice
    that out), as many up blocks (``up_blocks.{i}``, level p = phases - i: on n_feats * 2**min(phases, p + 1)
    channels, to n_feats * 2**(p - 1), then concatenated with the features that entered ``down.{p - 1}``),
    ``tail.{i}`` (3x3 convs to RGB, one per level) and ``add_mean``. Scales 2 and 4; the published x4 models
    are DRN-S (the defaults) and DRN-L (n_blocks 40, n_feats 20)."""

    def __init__(self, scale: int, n_blocks: int = 30, n_feats: int = 16, n_colors: int = 3):
        super().__init__()
        if scale not in (2, 4):
            raise ValueError(f"DRN: scale {scale!r} is not allowed; allowed values: 2, 4")
        phases = int(math.log2(scale))
        widest = n_feats * 2**phases
        if widest < REDUCTION:
            raise ValueError(f"DRN: n_feats={n_feats} is too small for x{scale}: the channel attention divides "
                             f"n_feats * {2**phases} channels by {REDUCTION}")
        self.scale = scale
        self.sub_mean, self.add_mean = mean_shifts("DRN", 255, n_colors)
        self.head = default_conv(n_colors, n_feats, 3)
        self.down = nn.ModuleList(DownBlock(n_feats * 2**p, n_feats * 2**(p + 1)) for p in range(phases))
        self.up_blocks = nn.ModuleList(up_block(n_feats * 2**min(phases, p + 1), n_feats * 2**(p - 1), n_blocks)
                                       for p in range(phases, 0, -1))
        self.tail = nn.ModuleList([default_conv(widest, n_colors, 3)]
                                  + [default_conv(n_feats * 2**p, n_colors, 3) for p in range(phases, 0, -1)])

    def receptive_radius(self) -> int | None:
        """None: the up blocks' channel attention pools over the whole image."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = functional.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        x = self.head(self.sub_mean(x))
        skips = []
        for down in self.down:
            skips.append(x)
            x = down(x)
        for up in self.up_blocks:
            x = torch.cat((up(x), skips.pop()), 1)
        return self.add_mean(self.tail[-1](x))
