"""Building blocks shared by the SISR architectures.

Module nesting follows EDSR-PyTorch's ``src/model/common.py`` so that state_dict keys and shapes are
those of the published checkpoints.
"""

import torch
from torch import nn

#: DIV2K's mean RGB colour on a [0, 1] range, subtracted before and added after EDSR and RCAN (std 1).
RGB_MEAN = (0.4488, 0.4371, 0.4040)


def default_conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> nn.Conv2d:
    """A stride-1 convolution that keeps the spatial size for odd kernels (padding kernel_size // 2)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


def channel_gate(channels: int, reduction: int) -> nn.Sequential:
    """1x1 convolutions down by ``reduction`` and back, then a sigmoid: the gate of RCAN's and SAN's channel
    attention (their official ``conv_du`` layout)."""
    return nn.Sequential(nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(inplace=True),
                         nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid())


def conv_reach(*modules: nn.Module) -> int:
    """LR pixels either side that the convolutions of ``modules`` reach when they all lie on one path: the sum of
    their radii, each counted in pixels of its own resolution (at least the LR pixels it reaches after
    upsampling). An upper bound where some convs run side by side instead."""
    convs = {conv for module in modules for conv in module.modules() if isinstance(conv, nn.Conv2d)}
    return sum(conv.dilation[0] * (conv.kernel_size[0] // 2) for conv in convs)


class MeanShift(nn.Conv2d):
    """Frozen identity 1x1 convolution whose bias adds ``sign * rgb_range * RGB_MEAN`` to an RGB image."""

    def __init__(self, rgb_range: float, sign: int):
        super().__init__(3, 3, kernel_size=1)
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(RGB_MEAN))
        self.requires_grad_(False)


def mean_shifts(arch: str, rgb_range: float, n_colors: int) -> tuple[MeanShift, MeanShift]:
    """The (sub_mean, add_mean) pair around a network; the mean is an RGB one, so n_colors must be 3."""
    if n_colors != len(RGB_MEAN):
        raise ValueError(f"{arch}: n_colors={n_colors!r} is not allowed; the mean shift needs n_colors=3")
    return MeanShift(rgb_range, sign=-1), MeanShift(rgb_range, sign=1)


class ResBlock(nn.Module):
    """conv-ReLU-conv (``body.0``, ``body.2``) whose output, times ``res_scale``, is added to the input."""

    def __init__(self, n_feats: int, kernel_size: int, res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(
            default_conv(n_feats, n_feats, kernel_size),
            nn.ReLU(inplace=True),
            default_conv(n_feats, n_feats, kernel_size),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


def upsampling_layers(in_channels: int, channels: int, scale: int, kernel_size: int = 3) -> list[nn.Module]:
    """Sub-pixel upsampling: per factor, a conv to ``factor**2 * channels`` then PixelShuffle(factor).

    Scales 2 and 3 take one stage, scale 4 two stages of 2. The first conv reads ``in_channels``,
    every stage outputs ``channels``.
    """
    factors = {2: [2], 3: [3], 4: [2, 2]}[scale]
    layers: list[nn.Module] = []
    for factor in factors:
        layers += [default_conv(in_channels, factor**2 * channels, kernel_size), nn.PixelShuffle(factor)]
        in_channels = channels
    return layers


class Upsampler(nn.Sequential):
    """EDSR-PyTorch's upsampler: :func:`upsampling_layers` on ``n_feats`` channels with 3x3 convs."""

    def __init__(self, scale: int, n_feats: int):
        super().__init__(*upsampling_layers(n_feats, n_feats, scale))


class ResidualSRNet(nn.Module):
    """The layout EDSR and RCAN share: mean shift, head conv, body blocks + conv with a global skip,
    upsampler and output conv, mean shift back (keys ``sub_mean``, ``add_mean``, ``head.0``, ``body.*``,
    ``tail.0.{k}``, ``tail.1``). Input and output are images in [0, rgb_range]."""

    def __init__(self, arch: str, scale: int, n_feats: int, blocks: list[nn.Module], rgb_range: float,
                 n_colors: int):
        super().__init__()
        self.sub_mean, self.add_mean = mean_shifts(arch, rgb_range, n_colors)
        self.head = nn.Sequential(default_conv(n_colors, n_feats, 3))
        self.body = nn.Sequential(*blocks, default_conv(n_feats, n_feats, 3))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), default_conv(n_feats, n_colors, 3))

    def receptive_radius(self) -> int | None:
        """LR pixels either side that an output pixel depends on (every conv lies on the one path)."""
        return conv_reach(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x))
        return self.add_mean(self.tail(x + self.body(x)))
