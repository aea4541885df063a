"""SPSR: Structure-Preserving Super Resolution with Gradient Guidance (Ma et al., CVPR 2020).

The layout is Maclory/SPSR's ``code/models/modules/architecture.py`` ``SPSRNet`` with ``block.py`` (the
layout of its released ``spsr.pth``; ``options/test/test_spsr.json``: nf 64, nb 23, gc 32, scale 4). Every
``conv_block`` is an ``nn.Sequential`` (``{name}.0`` the conv, ``{name}.1`` a leaky ReLU of slope 0.2 where it
has one) and ``block.sequential`` flattens nested ones, which fixes the indices of ``model`` and ``b_module``.

Images are RGB in [0, 1] with no mean shift: the test writes the second output (``fake_H``) through
``utils.tensor2img``, which clamps it to [0, 1]; the official LR loader (``data/LR_dataset.py``, read as
[0, 1] RGB by the BasicSR code it derives from) is not in the code index. The test runs no self-ensemble.

As in the official forward: the gradient branch starts from the gradient magnitude of the LR image
(``get_g_nopadding``: fixed central differences, zero padded despite the name, plus 1e-6 under the square
root), and takes the trunk's features after its RRDBs 5, 10, 15 and 20. ``HR_conv0_new`` is the same
module as ``model.{k}`` (both keys are in the state_dict). ``conv_w``, which makes the branch's gradient
image for the training loss, is not run: SPSR's image is ``f_HR_conv1``'s output.
"""

import torch
from torch import nn
from torch.nn import functional

from srfp.sisr.archs.common import conv_reach

#: The trunk's RRDBs after which the gradient branch takes its features (architecture.py's fixed indices).
TAPPED_BLOCKS = (5, 10, 15, 20)
#: The residual weight of every dense block and RRDB (block.py).
RESIDUAL_WEIGHT = 0.2


def conv(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2)


def leaky_relu() -> nn.LeakyReLU:
    return nn.LeakyReLU(negative_slope=0.2, inplace=True)


def conv_block(in_channels: int, out_channels: int, kernel_size: int = 3, act: bool = False) -> nn.Sequential:
    """``block.conv_block``: the conv (``0``) and, with ``act``, a leaky ReLU (``1``)."""
    layers = [conv(in_channels, out_channels, kernel_size)] + ([leaky_relu()] if act else [])
    return nn.Sequential(*layers)


def upconv_layers(channels: int, scale: int) -> list[nn.Module]:
    """``block.upconv_blcok`` per stage, flattened: nearest upsampling, a conv and a leaky ReLU; x2 and x4
    take one and two doublings, x3 one tripling."""
    factors = [3] if scale == 3 else [2] * (scale // 2)
    return [layer for factor in factors
            for layer in (nn.Upsample(scale_factor=factor, mode="nearest"), conv(channels, channels), leaky_relu())]


class DenseBlock(nn.Module):
    """``ResidualDenseBlock_5C``: ``conv1`` .. ``conv4`` (conv + leaky ReLU) growing ``gc`` channels each,
    ``conv5`` back to ``channels``, and a skip weighted 0.2."""

    def __init__(self, channels: int, gc: int):
        super().__init__()
        self.conv1 = conv_block(channels, gc, act=True)
        self.conv2 = conv_block(channels + gc, gc, act=True)
        self.conv3 = conv_block(channels + 2 * gc, gc, act=True)
        self.conv4 = conv_block(channels + 3 * gc, gc, act=True)
        self.conv5 = conv_block(channels + 4 * gc, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in (self.conv1, self.conv2, self.conv3, self.conv4):
            features.append(layer(torch.cat(features, 1)))
        return self.conv5(torch.cat(features, 1)) * RESIDUAL_WEIGHT + x


class RRDB(nn.Module):
    """Three dense blocks (``RDB1`` .. ``RDB3``) and a skip weighted 0.2."""

    def __init__(self, channels: int, gc: int):
        super().__init__()
        self.RDB1 = DenseBlock(channels, gc)
        self.RDB2 = DenseBlock(channels, gc)
        self.RDB3 = DenseBlock(channels, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.RDB3(self.RDB2(self.RDB1(x))) * RESIDUAL_WEIGHT + x


class Trunk(nn.Module):
    """``block.ShortcutBlock`` around the trunk: its ``sub`` holds the ``nb`` RRDBs and ``LR_conv``."""

    def __init__(self, nf: int, nb: int, gc: int):
        super().__init__()
        self.sub = nn.Sequential(*(RRDB(nf, gc) for _ in range(nb)), conv(nf, nf))


class GradientMagnitude(nn.Module):
    """``Get_gradient_nopadding``: per channel, sqrt(dv^2 + dh^2 + 1e-6) of the central differences, with the
    official fixed kernels as frozen parameters (``weight_h``, ``weight_v``)."""

    def __init__(self):
        super().__init__()
        kernel_v = torch.tensor([[0.0, -1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
        self.weight_h = nn.Parameter(kernel_v.transpose(2, 3).clone(), requires_grad=False)
        self.weight_v = nn.Parameter(kernel_v, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = []
        for channel in x.split(1, dim=1):
            vertical = functional.conv2d(channel, self.weight_v, padding=1)
            horizontal = functional.conv2d(channel, self.weight_h, padding=1)
            channels.append(torch.sqrt(vertical.pow(2) + horizontal.pow(2) + 1e-6))
        return torch.cat(channels, dim=1)


class SPSRNet(nn.Module):
    """The SR branch (``model``: ``fea_conv``, the trunk, the upsampler and ``HR_conv0_new``, then
    ``HR_conv1_new``), the gradient branch (``b_*``: four RRDBs on 2 nf channels fed by the trunk's taps,
    ``b_module`` upsampling it) and the fusion (``f_*``). Scales 2, 3 and 4; nb at least 20. Images in [0, 1]."""

    def __init__(self, scale: int, nf: int = 64, nb: int = 23, gc: int = 32, n_colors: int = 3):
        super().__init__()
        if nb < TAPPED_BLOCKS[-1]:
            raise ValueError(f"SPSR: nb={nb} is not allowed; the gradient branch taps RRDBs "
                             f"{', '.join(map(str, TAPPED_BLOCKS))}, so nb must be at least {TAPPED_BLOCKS[-1]}")
        self.HR_conv0_new = conv_block(nf, nf, act=True)
        self.HR_conv1_new = conv_block(nf, nf)
        self.model = nn.Sequential(conv(n_colors, nf), Trunk(nf, nb, gc), *upconv_layers(nf, scale),
                                   *self.HR_conv0_new)
        self.get_g_nopadding = GradientMagnitude()
        self.b_fea_conv = conv_block(n_colors, nf)
        for branch in range(1, len(TAPPED_BLOCKS) + 1):
            self.add_module(f"b_concat_{branch}", conv_block(2 * nf, nf))
            self.add_module(f"b_block_{branch}", RRDB(2 * nf, gc))
        self.b_LR_conv = conv_block(nf, nf)
        self.b_module = nn.Sequential(*upconv_layers(nf, scale), *conv_block(nf, nf, act=True), conv(nf, nf))
        self.conv_w = conv_block(nf, n_colors, kernel_size=1)
        self.f_concat = conv_block(2 * nf, nf)
        self.f_block = RRDB(2 * nf, gc)
        self.f_HR_conv0 = conv_block(nf, nf, act=True)
        self.f_HR_conv1 = conv_block(nf, n_colors)

    def receptive_radius(self) -> int | None:
        """LR pixels either side that an output pixel depends on at most: every conv, the two branches' as if
        chained, and one for the gradient's central differences."""
        return conv_reach(self) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gradient = self.get_g_nopadding(x)
        features = self.model[0](x)
        trunk, taps = features, []
        for index, block in enumerate(self.model[1].sub, start=1):
            trunk = block(trunk)
            if index in TAPPED_BLOCKS:
                taps.append(trunk)
        sr_features = self.HR_conv1_new(self.model[2:](features + trunk))
        branch_features = self.b_fea_conv(gradient)
        branch = branch_features
        for number, tap in enumerate(taps, start=1):
            merged = getattr(self, f"b_block_{number}")(torch.cat([branch, tap], 1))
            branch = getattr(self, f"b_concat_{number}")(merged)
        branch = self.b_module(self.b_LR_conv(branch) + branch_features)
        fused = self.f_concat(self.f_block(torch.cat([branch, sr_features], 1)))
        return self.f_HR_conv1(self.f_HR_conv0(fused))
