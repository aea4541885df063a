"""SAN: Second-order Attention Network for Single Image Super-Resolution (Dai et al., CVPR 2019).

The layout is daitao/SAN's ``TestCode/code/model/san.py`` (the layout of its released ``SAN_BIX4.pt``; the
README's test command: n_resgroups 20, n_resblocks 10, n_feats 64, ``option.py``'s reduction 16), as read
from a verbatim copy of that file: the code index holds daitao/SAN's ``MPNCOV.py``, ``option.py`` and
``model/__init__.py`` but not ``san.py`` itself. Images are in [0, 255] (``--rgb_range`` 255) with EDSR's
mean shift. The official test runs no self-ensemble; its ``--chop`` splits images into overlapping quarters
until each has fewer than 160,000 pixels, and since both attentions are global, its images depend on that
split: this module super-resolves what it is given whole.

Official quirks kept because released weights rely on them or they change images:

* ``_NonLocalBlockND`` overwrites its ``sub_sample`` argument with ``nn.Upsample`` for 2-D inputs, so ``g``
  and ``phi`` are always a 1x1 conv followed by a 2x2 max pool (keys ``g.0``, ``phi.0``);
* the non-local block attends within each quarter of the feature map, split at ``int(H / 2)``, ``int(W / 2)``;
* second-order channel attention pools the covariance of the central 1000 x 1000 features only, with the
  official code's slicing for every shape (:func:`covariance_region`), and takes its square root with five
  Newton-Schulz iterations (``MPNCOV.Sqrtm``);
* modules built but never run still hold weights: ``conv_last``, every group's ``gamma`` and the non-local
  module's ``soca`` (keys that a strict load needs).

The covariance is computed as the centred product X_c X_c^T / M, the same matrix as MPNCOV's X I_hat X^T
with I_hat = (I - 1 1^T / M) / M, without building the M x M matrix I_hat.
"""

import torch
from torch import nn
from torch.nn import functional

from srfp.sisr.archs.common import Upsampler, channel_gate, default_conv, mean_shifts

#: SOCA pools the covariance of at most this many rows and columns of features, the central ones.
COVARIANCE_REGION = 1000
#: Newton-Schulz iterations of the covariance's square root (``MPNCOV.SqrtmLayer(cov_mat, 5)``).
SQRT_ITERATIONS = 5
#: The non-local module: channels down by 8 in its attention and by 8 in its (unused) SOCA.
NON_LOCAL_REDUCTION = 8


def covariance_region(x: torch.Tensor) -> torch.Tensor:
    """The features SOCA pools, sliced as the official code slices them: whole when both sides are under
    1000, else the central 1000 along the sides over 1000. The official final branch also catches a side of
    exactly 1000, whose negative start Python slicing wraps: kept as it is."""
    h, w = x.shape[-2:]
    size = COVARIANCE_REGION
    if h < size and w < size:
        return x
    if h < size and w > size:
        left = (w - size) // 2
        return x[:, :, :, left:left + size]
    if w < size and h > size:
        top = (h - size) // 2
        return x[:, :, top:top + size, :]
    top, left = (h - size) // 2, (w - size) // 2
    return x[:, :, top:top + size, left:left + size]


def covariance(x: torch.Tensor) -> torch.Tensor:
    """The N x C x C covariance of the C channels over the spatial positions (divided by their number)."""
    features = x.flatten(2)
    centred = features - features.mean(dim=2, keepdim=True)
    return centred @ centred.transpose(1, 2) / features.shape[2]


def newton_schulz_sqrt(matrix: torch.Tensor, iterations: int = SQRT_ITERATIONS) -> torch.Tensor:
    """MPNCOV's matrix square root: normalise by the trace, ``iterations`` coupled Newton-Schulz steps
    (the last one computing Y only), then scale back by the trace's square root."""
    identity3 = 3.0 * torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device).expand_as(matrix)
    trace = ((1.0 / 3.0) * (matrix * identity3).sum(dim=1).sum(dim=1)).view(-1, 1, 1)
    a = matrix / trace
    zy = 0.5 * (identity3 - a)
    y, z = a @ zy, zy
    for _ in range(iterations - 2):
        zy = 0.5 * (identity3 - z @ y)
        y, z = y @ zy, zy @ z
    return 0.5 * y @ (identity3 - z @ y) * trace.sqrt()


class SOCA(nn.Module):
    """Second-order channel attention: the mean over rows of the covariance's square root, 1x1 convs down by
    ``reduction`` and back (``conv_du.0``, ``conv_du.2``) and a sigmoid gate on the input."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.conv_du = channel_gate(channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = newton_schulz_sqrt(covariance(covariance_region(x))).mean(dim=1)
        return self.conv_du(pooled.view(*pooled.shape, 1, 1)) * x


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local attention with a residual: ``theta`` (1x1), ``phi`` and ``g`` (1x1 then a
    2x2 max pool, keys ``.0``) to ``inter_channels``, a softmax over the pooled positions and ``W`` (1x1)."""

    def __init__(self, channels: int, inter_channels: int):
        super().__init__()
        self.inter_channels = inter_channels
        self.g = nn.Sequential(nn.Conv2d(channels, inter_channels, 1), nn.MaxPool2d(kernel_size=2))
        self.theta = nn.Conv2d(channels, inter_channels, 1)
        self.phi = nn.Sequential(nn.Conv2d(channels, inter_channels, 1), nn.MaxPool2d(kernel_size=2))
        self.W = nn.Conv2d(inter_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.g(x).flatten(2).transpose(1, 2)
        theta = self.theta(x).flatten(2).transpose(1, 2)
        attention = functional.softmax(theta @ self.phi(x).flatten(2), dim=-1)
        y = (attention @ g).transpose(1, 2).reshape(x.shape[0], self.inter_channels, *x.shape[2:])
        return self.W(y) + x


class RegionNonLocal(nn.Module):
    """``Nonlocal_CA``: the non-local block (``non_local``) run on each quarter of the feature map. Its
    ``soca`` is built by the official code but never run."""

    def __init__(self, channels: int):
        super().__init__()
        self.soca = SOCA(channels, NON_LOCAL_REDUCTION)
        self.non_local = NonLocalBlock(channels, channels // NON_LOCAL_REDUCTION)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = int(x.shape[2] / 2), int(x.shape[3] / 2)
        out = torch.zeros_like(x)
        for rows in (slice(None, h), slice(h, None)):
            for columns in (slice(None, w), slice(w, None)):
                out[:, :, rows, columns] = self.non_local(x[:, :, rows, columns])
        return out


class ResidualBlock(nn.Module):
    """conv-ReLU-conv (``conv_first.0``, ``conv_first.2``) with a skip."""

    def __init__(self, n_feats: int):
        super().__init__()
        self.conv_first = nn.Sequential(default_conv(n_feats, n_feats, 3), nn.ReLU(inplace=True),
                                        default_conv(n_feats, n_feats, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_first(x) + x


class LSRAG(nn.Module):
    """Local-source residual attention group: ``n_resblocks`` blocks (``rcab.{b}``), ``soca``, ``conv_last``
    and a skip around the group (its ``gamma`` is never used)."""

    def __init__(self, n_feats: int, reduction: int, n_resblocks: int):
        super().__init__()
        self.rcab = nn.ModuleList(ResidualBlock(n_feats) for _ in range(n_resblocks))
        self.soca = SOCA(n_feats, reduction)
        self.conv_last = default_conv(n_feats, n_feats, 3)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x
        for block in self.rcab:
            features = block(features)
        return self.conv_last(self.soca(features)) + x


class SAN(nn.Module):
    """``sub_mean``, ``head.0``, the region non-local module, ``n_resgroups`` groups (``RG.{g}``) each with a
    share-source skip weighted by ``gamma``, the non-local module again, the head's skip, EDSR's upsampler and
    output conv (``tail.0.{k}``, ``tail.1``) and ``add_mean``. Images are in [0, 255]."""

    def __init__(self, scale: int, n_resgroups: int = 20, n_resblocks: int = 10, n_feats: int = 64,
                 reduction: int = 16, n_colors: int = 3):
        super().__init__()
        if reduction > n_feats or NON_LOCAL_REDUCTION > n_feats:
            raise ValueError(f"SAN: n_feats={n_feats} is not allowed; it must be at least reduction={reduction} "
                             f"and {NON_LOCAL_REDUCTION}")
        self.sub_mean, self.add_mean = mean_shifts("SAN", 255, n_colors)
        self.head = nn.Sequential(default_conv(n_colors, n_feats, 3))
        self.gamma = nn.Parameter(torch.zeros(1))
        self.RG = nn.ModuleList(LSRAG(n_feats, reduction, n_resblocks) for _ in range(n_resgroups))
        self.conv_last = default_conv(n_feats, n_feats, 3)
        self.non_local = RegionNonLocal(n_feats)
        self.tail = nn.Sequential(Upsampler(scale, n_feats), default_conv(n_feats, n_colors, 3))

    def receptive_radius(self) -> int | None:
        """None: the non-local attention and the second-order channel attention span the whole image."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x))
        source = features = self.non_local(x)
        for group in self.RG:
            features = group(features) + self.gamma * source
        return self.add_mean(self.tail(self.non_local(features) + x))
