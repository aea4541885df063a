"""EDSR: Enhanced Deep Residual Networks for Single Image Super-Resolution (Lim et al., CVPRW 2017)."""

import torch
from torch import nn

from srfp.sisr.archs.common import ResBlock, Upsampler, default_conv, mean_shifts


class EDSR(nn.Module):
    """Head conv, ``n_resblocks`` residual blocks plus a conv with a global skip, then the upsampler.

    Keys as EDSR-PyTorch: ``sub_mean``, ``add_mean``, ``head.0``, ``body.{i}.body.{0,2}``,
    ``body.{n_resblocks}``, ``tail.0.{k}`` (upsampler convs) and ``tail.1``. Input and output are
    images in [0, rgb_range].
    """

    def __init__(self, scale: int, n_resblocks: int = 32, n_feats: int = 256, res_scale: float = 0.1,
                 rgb_range: float = 255, n_colors: int = 3):
        super().__init__()
        self.sub_mean, self.add_mean = mean_shifts("EDSR", rgb_range, n_colors)
        self.head = nn.Sequential(default_conv(n_colors, n_feats, 3))
        self.body = nn.Sequential(
            *(ResBlock(n_feats, 3, res_scale) for _ in range(n_resblocks)),
            default_conv(n_feats, n_feats, 3),
        )
        self.tail = nn.Sequential(Upsampler(scale, n_feats), default_conv(n_feats, n_colors, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x))
        return self.add_mean(self.tail(x + self.body(x)))
