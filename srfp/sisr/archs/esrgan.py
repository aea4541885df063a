"""ESRGAN's generator, RRDBNet: Enhanced Super-Resolution GANs (Wang et al., ECCVW 2018).

The layout is xinntao/ESRGAN's ``RRDBNet_arch.py`` (the layout of its released ``RRDB_ESRGAN_x4.pth``
and ``RRDB_PSNR_x4.pth``): the model maps RGB images in [0, 1] to [0, 1] (its ``test.py`` divides by 255
and clamps the output to [0, 1]), has no mean shift, and upscales by 4 with two nearest-neighbour
doublings, each followed by a conv.
"""

import torch
from torch import nn
from torch.nn import functional

from srfp.sisr.archs.common import conv_reach, default_conv

#: The weight of a residual branch before it is added back (0.2 in every block of the official model).
RESIDUAL_WEIGHT = 0.2


def _leaky_relu() -> nn.LeakyReLU:
    return nn.LeakyReLU(negative_slope=0.2, inplace=True)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs (``conv1`` .. ``conv5``); the first four grow ``gc`` channels."""

    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.conv1 = default_conv(nf, gc, 3)
        self.conv2 = default_conv(nf + gc, gc, 3)
        self.conv3 = default_conv(nf + 2 * gc, gc, 3)
        self.conv4 = default_conv(nf + 3 * gc, gc, 3)
        self.conv5 = default_conv(nf + 4 * gc, nf, 3)
        self.lrelu = _leaky_relu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            features.append(self.lrelu(conv(torch.cat(features, 1))))
        return self.conv5(torch.cat(features, 1)) * RESIDUAL_WEIGHT + x


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks (``RDB1`` .. ``RDB3``) and a weighted skip."""

    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.RDB1 = ResidualDenseBlock(nf, gc)
        self.RDB2 = ResidualDenseBlock(nf, gc)
        self.RDB3 = ResidualDenseBlock(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.RDB3(self.RDB2(self.RDB1(x))) * RESIDUAL_WEIGHT + x


class RRDBNet(nn.Module):
    """``conv_first``, ``nb`` RRDBs (``RRDB_trunk.{i}``) and ``trunk_conv`` with a global skip, then
    ``upconv1`` and ``upconv2`` after nearest-neighbour doublings, ``HRconv`` and ``conv_last``.

    Only scale 4 exists: the official model has exactly two doublings. Images are in [0, 1].
    """

    def __init__(self, scale: int, nf: int = 64, nb: int = 23, gc: int = 32, n_colors: int = 3):
        super().__init__()
        if scale != 4:
            raise ValueError(f"ESRGAN: scale {scale!r} is not allowed; allowed values: 4")
        self.conv_first = default_conv(n_colors, nf, 3)
        self.RRDB_trunk = nn.Sequential(*(RRDB(nf, gc) for _ in range(nb)))
        self.trunk_conv = default_conv(nf, nf, 3)
        self.upconv1 = default_conv(nf, nf, 3)
        self.upconv2 = default_conv(nf, nf, 3)
        self.HRconv = default_conv(nf, nf, 3)
        self.conv_last = default_conv(nf, n_colors, 3)
        self.lrelu = _leaky_relu()

    def receptive_radius(self) -> int | None:
        """LR pixels either side that an output pixel depends on (the dense blocks chain every conv)."""
        return conv_reach(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv_first(x)
        features = features + self.trunk_conv(self.RRDB_trunk(features))
        for upconv in (self.upconv1, self.upconv2):
            features = self.lrelu(upconv(functional.interpolate(features, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.HRconv(features)))
