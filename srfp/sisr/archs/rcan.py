"""RCAN: Image Super-Resolution Using Very Deep Residual Channel Attention Networks (Zhang et al., ECCV 2018)."""

import torch
from torch import nn

from srfp.sisr.archs.common import ResBlock, ResidualSRNet, channel_gate, default_conv


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global average pool, 1x1 convs down by ``reduction`` and back, sigmoid gate."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = channel_gate(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class RCAB(ResBlock):
    """Residual channel attention block: a :class:`ResBlock` whose body ends in channel attention (``body.3``).

    The official code leaves the block's residual unscaled; ``res_scale=1.0`` (the default) matches it.
    """

    def __init__(self, n_feats: int, reduction: int, res_scale: float):
        super().__init__(n_feats, 3, res_scale)
        self.body.append(ChannelAttention(n_feats, reduction))


class ResidualGroup(nn.Module):
    """``n_resblocks`` RCABs plus a conv (``body.{n_resblocks}``), with a skip around the group."""

    def __init__(self, n_feats: int, reduction: int, res_scale: float, n_resblocks: int):
        super().__init__()
        self.body = nn.Sequential(
            *(RCAB(n_feats, reduction, res_scale) for _ in range(n_resblocks)),
            default_conv(n_feats, n_feats, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RCAN(ResidualSRNet):
    """EDSR's layout with ``n_resgroups`` residual groups of RCABs in the body.

    Keys as EDSR-PyTorch: ``sub_mean``, ``add_mean``, ``head.0``, ``body.{g}.body.{b}.body.{0,2}``,
    ``body.{g}.body.{b}.body.3.conv_du.{0,2}``, ``body.{g}.body.{n_resblocks}``, ``body.{n_resgroups}``,
    ``tail.0.{k}`` and ``tail.1``. Input and output are images in [0, rgb_range].
    """

    def __init__(self, scale: int, n_resgroups: int = 10, n_resblocks: int = 20, n_feats: int = 64,
                 reduction: int = 16, res_scale: float = 1.0, rgb_range: float = 255, n_colors: int = 3):
        if reduction > n_feats:
            raise ValueError(f"RCAN: reduction={reduction} is not allowed; it must be at most n_feats={n_feats}")
        groups = [ResidualGroup(n_feats, reduction, res_scale, n_resblocks) for _ in range(n_resgroups)]
        super().__init__("RCAN", scale, n_feats, groups, rgb_range, n_colors)

    def receptive_radius(self) -> int | None:
        """None: the channel attention pools over the whole image."""
        return None
