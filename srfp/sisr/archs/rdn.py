"""RDN: Residual Dense Network for Image Super-Resolution (Zhang et al., CVPR 2018)."""

import torch
from torch import nn

from srfp.sisr.archs.common import conv_reach, default_conv, upsampling_layers


class DenseLayer(nn.Module):
    """Conv-ReLU (``conv.0``) producing ``growth`` channels, concatenated to its input."""

    def __init__(self, in_channels: int, growth: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Sequential(default_conv(in_channels, growth, kernel_size), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv(x)), 1)


class RDB(nn.Module):
    """Residual dense block: C dense layers (``convs.{c}``), a 1x1 local fusion (``LFF``), a skip."""

    def __init__(self, G0: int, G: int, C: int, kernel_size: int):
        super().__init__()
        self.convs = nn.Sequential(*(DenseLayer(G0 + c * G, G, kernel_size) for c in range(C)))
        self.LFF = nn.Conv2d(G0 + C * G, G0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.LFF(self.convs(x))


class RDN(nn.Module):
    """Two shallow convs, D residual dense blocks fused globally, then sub-pixel upsampling.

    Keys as EDSR-PyTorch: ``SFENet1``, ``SFENet2``, ``RDBs.{d}.convs.{c}.conv.0``, ``RDBs.{d}.LFF``,
    ``GFF.{0,1}`` and ``UPNet.{0,2}`` (x2, x3) or ``UPNet.{0,2,4}`` (x4). Like the official model, RDN
    has no mean shift: it maps [0, rgb_range] images directly, so ``rgb_range`` is accepted only to
    give the three architectures one interface.
    """

    def __init__(self, scale: int, G0: int = 64, D: int = 16, C: int = 8, G: int = 64, kernel_size: int = 3,
                 rgb_range: float = 255, n_colors: int = 3):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"RDN: kernel_size={kernel_size} is not allowed; it must be odd")
        self.SFENet1 = default_conv(n_colors, G0, kernel_size)
        self.SFENet2 = default_conv(G0, G0, kernel_size)
        self.RDBs = nn.ModuleList(RDB(G0, G, C, kernel_size) for _ in range(D))
        self.GFF = nn.Sequential(nn.Conv2d(D * G0, G0, 1), default_conv(G0, G0, kernel_size))
        self.UPNet = nn.Sequential(
            *upsampling_layers(G0, G, scale, kernel_size),
            default_conv(G, n_colors, kernel_size),
        )

    def receptive_radius(self) -> int | None:
        """LR pixels either side that an output pixel depends on (the dense blocks chain every conv)."""
        return conv_reach(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.SFENet1(x)
        x = self.SFENet2(shallow)
        block_outputs = []
        for block in self.RDBs:
            x = block(x)
            block_outputs.append(x)
        return self.UPNet(shallow + self.GFF(torch.cat(block_outputs, 1)))
