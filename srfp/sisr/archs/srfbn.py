"""SRFBN: Feedback Network for Image Super-Resolution (Li et al., CVPR 2019).

The layout is Paper99/SRFBN_CVPR19's ``networks/srfbn_arch.py`` with ``networks/blocks.py`` (the layout of
its released ``SRFBN_x4_BI.pth``; ``options/test/test_SRFBN_x4_BI.json``: num_features 64, num_steps 4,
num_groups 6). Every conv and deconv is followed by a one-parameter PReLU (``{name}.0`` the conv,
``{name}.1`` the PReLU) except ``conv_out`` (``conv_out.0``). Images are in [0, 255] (``rgb_range: 255``);
``sub_mean`` and ``add_mean`` shift by 255 times DIV2K's mean. The feedback block runs ``num_steps`` times,
its hidden state starting as its own input; the official test keeps the last step's image (``SR[-1]``) and
adds the bilinear upscaling of the mean-shifted input to every step's reconstruction. Its test options set
no self-ensemble. The official test loads ``checkpoint['state_dict']`` where the file has that key, into
the model wrapped in ``nn.DataParallel`` (networks/__init__.py wraps it whenever CUDA is present): the file's
keys are these with DataParallel's ``module.`` prefix.
"""

import torch
from torch import nn
from torch.nn import functional

from srfp.sisr.archs.common import mean_shifts

#: Per scale, the (kernel_size, stride, padding) of the projection convs and deconvs (srfbn_arch.py).
PROJECTION = {2: (6, 2, 2), 3: (7, 3, 2), 4: (8, 4, 2)}
#: SRFBN's images are in [0, 255] whatever the options: blocks.MeanShift multiplies the mean by 255.
RGB_RANGE = 255
#: The initial slope of every PReLU (blocks.activation's default).
PRELU_INIT = 0.2


def conv_prelu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
               padding: int | None = None) -> nn.Sequential:
    """A conv (``0``; padding keeps the size unless given) then a one-parameter PReLU (``1``)."""
    padding = (kernel_size - 1) // 2 if padding is None else padding
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding),
                         nn.PReLU(num_parameters=1, init=PRELU_INIT))


def deconv_prelu(channels: int, scale: int) -> nn.Sequential:
    """A transposed conv that upscales by ``scale`` (``0``) then a one-parameter PReLU (``1``)."""
    kernel_size, stride, padding = PROJECTION[scale]
    return nn.Sequential(nn.ConvTranspose2d(channels, channels, kernel_size, stride, padding),
                         nn.PReLU(num_parameters=1, init=PRELU_INIT))


class FeedbackBlock(nn.Module):
    """``compress_in`` of the input and the hidden state, ``num_groups`` up- and down-projections densely
    connected through 1x1 ``uptranBlocks`` / ``downtranBlocks`` (from the second group on), and
    ``compress_out`` of every group's low-resolution output: the next hidden state."""

    def __init__(self, num_features: int, num_groups: int, scale: int):
        super().__init__()
        kernel_size, stride, padding = PROJECTION[scale]
        self.compress_in = conv_prelu(2 * num_features, num_features, 1)
        self.upBlocks = nn.ModuleList(deconv_prelu(num_features, scale) for _ in range(num_groups))
        self.downBlocks = nn.ModuleList(conv_prelu(num_features, num_features, kernel_size, stride, padding)
                                        for _ in range(num_groups))
        self.uptranBlocks = nn.ModuleList(conv_prelu(num_features * (group + 1), num_features, 1)
                                          for group in range(1, num_groups))
        self.downtranBlocks = nn.ModuleList(conv_prelu(num_features * (group + 1), num_features, 1)
                                            for group in range(1, num_groups))
        self.compress_out = conv_prelu(num_groups * num_features, num_features, 1)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        low = [self.compress_in(torch.cat((x, hidden), 1))]
        high = []
        for group, (up, down) in enumerate(zip(self.upBlocks, self.downBlocks)):
            low_in = torch.cat(low, 1) if group == 0 else self.uptranBlocks[group - 1](torch.cat(low, 1))
            high.append(up(low_in))
            high_in = torch.cat(high, 1) if group == 0 else self.downtranBlocks[group - 1](torch.cat(high, 1))
            low.append(down(high_in))
        return self.compress_out(torch.cat(low[1:], 1))


class SRFBN(nn.Module):
    """``sub_mean``, ``conv_in`` (3x3 to 4 x num_features) and ``feat_in`` (1x1), the feedback ``block``
    run ``num_steps`` times, then ``out`` (a deconv by ``scale``) and ``conv_out`` (3x3) added to the
    bilinear upscaling of the input, and ``add_mean``. Scales 2, 3 and 4 (the official code's 2, 3, 4, 8)."""

    def __init__(self, scale: int, num_features: int = 64, num_steps: int = 4, num_groups: int = 6,
                 n_colors: int = 3):
        super().__init__()
        self.scale = scale
        self.num_steps = num_steps
        self.sub_mean, self.add_mean = mean_shifts("SRFBN", RGB_RANGE, n_colors)
        self.conv_in = conv_prelu(n_colors, 4 * num_features, 3)
        self.feat_in = conv_prelu(4 * num_features, num_features, 1)
        self.block = FeedbackBlock(num_features, num_groups, scale)
        self.out = deconv_prelu(num_features, scale)
        self.conv_out = nn.Sequential(nn.Conv2d(num_features, n_colors, 3, padding=1))

    def receptive_radius(self) -> int | None:
        """LR pixels either side that an output pixel depends on: ``conv_in``, then per step the feedback block's
        up- and down-projections (each reaches one LR pixel either side: a stride-``scale`` (de)conv whose kernel
        spans at most the neighbouring LR pixels), then ``out`` and ``conv_out``, one each; the bilinear
        upscaling beside them reaches one."""
        return 1 + self.num_steps * 2 * len(self.block.upBlocks) + 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_mean(x)
        upscaled = functional.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        features = self.feat_in(self.conv_in(x))
        hidden = features
        for _ in range(self.num_steps):
            hidden = self.block(features, hidden)
        return self.add_mean(upscaled + self.conv_out(self.out(hidden)))
