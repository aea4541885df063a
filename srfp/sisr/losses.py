"""SR training losses: pixel L1, perceptual (VGG-19 or ResNet-50 features) and relativistic GAN terms.

Every loss takes RGB float tensors N x 3 x H x W with values in [0, rgb_range] (255 by default, the
EDSR-PyTorch convention). The perceptual networks load their ImageNet weights through
``srfp.pretrained`` (torchvision's weights API; a missing file raises ``WeightsUnavailableError``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models
from torchvision.models import ResNet50_Weights, VGG19_Weights

from srfp.pretrained import torchvision_network
from srfp.spec import LOSSES

PERCEPTUAL_NETWORKS = ("vgg19", "resnet50")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _feature_network(network: str, pretrained: bool) -> nn.Module:
    """VGG-19 up to conv5_4 before its ReLU (ESRGAN), or ResNet-50 up to its 2048-d pooled features."""
    if network == "vgg19":
        return torchvision_network(models.vgg19, VGG19_Weights.IMAGENET1K_V1, pretrained).features[:35]
    resnet = torchvision_network(models.resnet50, ResNet50_Weights.IMAGENET1K_V1, pretrained)
    return nn.Sequential(*list(resnet.children())[:-1], nn.Flatten())


class PerceptualLoss(nn.Module):
    """Distance between the features of SR and HR images in a frozen ImageNet network.

    "vgg19": L1 between VGG-19 conv5_4 features before activation (ESRGAN). "resnet50": mean squared
    error between ResNet-50 globally pooled features (the study's "ResNet-50 pooled features, L2").
    Inputs in [0, rgb_range] are ImageNet-normalised first. The network stays in eval mode and gets no
    gradients; gradients flow to ``sr`` only.
    """

    def __init__(self, network: str, pretrained: bool = True, rgb_range: float = 255.0):
        super().__init__()
        if network not in PERCEPTUAL_NETWORKS:
            raise ValueError(f"unknown perceptual network {network!r}; allowed: {', '.join(PERCEPTUAL_NETWORKS)}")
        self.distance = F.l1_loss if network == "vgg19" else F.mse_loss
        self.features = _feature_network(network, pretrained).requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1) * rgb_range, persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1) * rgb_range, persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Set the mode of this module; the feature network always stays in eval mode."""
        super().train(mode)
        self.features.eval()
        return self

    def _embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.features((images - self.mean) / self.std)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self._embed(hr)
        return self.distance(self._embed(sr), target)


def _conv_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    """3x3 conv + BN + LeakyReLU, then a stride-2 4x4 conv + BN + LeakyReLU that halves the size."""
    return [nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(out_channels, out_channels, 4, 2, 1, bias=False), nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(0.2, inplace=True)]


class VGGDiscriminator(nn.Module):
    """ESRGAN's VGG-style discriminator (BasicSR ``VGGStyleDiscriminator``) for square patches.

    Five stride-2 stages (num_feat, 2, 4, 8, 8 x num_feat channels; the first without BN on its 3x3
    conv, as ESRGAN) reduce a ``patch_size`` input (a multiple of 32) to ``patch_size / 32`` squared,
    then Linear(8 * num_feat * (patch_size / 32)^2, 100), LeakyReLU, Linear(100, 1). Takes images in
    [0, rgb_range]; returns one logit per image, N x 1.
    """

    def __init__(self, patch_size: int, num_feat: int = 64, rgb_range: float = 255.0):
        super().__init__()
        if patch_size <= 0 or patch_size % 32:
            raise ValueError(f"discriminator patch_size must be a positive multiple of 32, got {patch_size}")
        self.rgb_range = rgb_range
        self.features = nn.Sequential(
            nn.Conv2d(3, num_feat, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(num_feat, num_feat, 4, 2, 1, bias=False), nn.BatchNorm2d(num_feat),
            nn.LeakyReLU(0.2, inplace=True),
            *_conv_block(num_feat, num_feat * 2), *_conv_block(num_feat * 2, num_feat * 4),
            *_conv_block(num_feat * 4, num_feat * 8), *_conv_block(num_feat * 8, num_feat * 8))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(num_feat * 8 * (patch_size // 32) ** 2, 100),
            nn.LeakyReLU(0.2, inplace=True), nn.Linear(100, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images / self.rgb_range))


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic average discriminator loss (ESRGAN): real should look more real than the average fake."""
    return 0.5 * (_bce(real_logits - fake_logits.mean(), 1.0) + _bce(fake_logits - real_logits.mean(), 0.0))


def generator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Relativistic average generator loss (ESRGAN): the discriminator loss with the labels swapped."""
    return 0.5 * (_bce(real_logits - fake_logits.mean(), 0.0) + _bce(fake_logits - real_logits.mean(), 1.0))


class SRLoss(nn.Module):
    """The training objective of one loss of the grid: "L1", "VGG_GAN" or "ResNet_GAN".

    Two phases, one pixel L1 (:meth:`pixel_l1`, the mean absolute error on the [0, rgb_range] scale):

    - :meth:`l1_terms`, the whole objective of "L1" models and the warm-up of adversarial ones: the
      pixel L1 alone, as EDSR-PyTorch.
    - :meth:`adversarial_terms` ("VGG_GAN" / "ResNet_GAN", ESRGAN-style): ``l1_weight * L1 +
      perceptual_weight * perceptual + adversarial_weight * relativistic generator loss`` with the
      VGG-19 / ResNet-50 perceptual loss. Here the pixel L1 is divided by rgb_range (images on [0, 1]),
      and the perceptual and adversarial networks see [0, 1]-based inputs too, so that the weights
      (ESRGAN's 1e-2, 1, 5e-3) mean what they do in ESRGAN; a 255-scale L1 would dominate the other terms.

    An adversarial loss owns the discriminator (``self.discriminator``, None for "L1"): train it with
    its own optimizer on ``discriminator_step_loss`` after each generator step.
    """

    def __init__(self, loss: str, *, l1_weight: float = 1e-2, perceptual_weight: float = 1.0,
                 adversarial_weight: float = 5e-3, patch_size: int = 128, pretrained: bool = True,
                 rgb_range: float = 255.0):
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")
        self.adversarial = loss != "L1"
        self.rgb_range = rgb_range
        self.weights = {"l1": l1_weight, "perceptual": perceptual_weight, "adversarial": adversarial_weight}
        self.perceptual = (PerceptualLoss("vgg19" if loss == "VGG_GAN" else "resnet50", pretrained, rgb_range)
                           if self.adversarial else None)
        self.discriminator = VGGDiscriminator(patch_size, rgb_range=rgb_range) if self.adversarial else None

    @staticmethod
    def pixel_l1(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """The mean absolute error between SR and HR on their [0, rgb_range] scale."""
        return F.l1_loss(sr, hr)

    def l1_terms(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """The L1 phase's objective, {"l1", "total"}: the pixel L1 alone."""
        l1 = self.pixel_l1(sr, hr)
        return {"l1": l1, "total": l1}

    def adversarial_terms(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """The adversarial phase's weighted terms and their sum: {"l1", "perceptual", "adversarial", "total"}.

        The discriminator gets no gradients from these terms.
        """
        if not self.adversarial:
            raise RuntimeError("the L1 loss has no adversarial phase")
        terms = {"l1": self.weights["l1"] * self.pixel_l1(sr, hr) / self.rgb_range,
                 "perceptual": self.weights["perceptual"] * self.perceptual(sr, hr),
                 "adversarial": self.weights["adversarial"] * self._generator_adversarial(sr, hr)}
        return {**terms, "total": sum(terms.values())}

    def _generator_adversarial(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            real_logits = self.discriminator(hr)
        self.discriminator.requires_grad_(False)
        try:
            fake_logits = self.discriminator(sr)
        finally:
            self.discriminator.requires_grad_(True)
        return generator_loss(real_logits, fake_logits)

    def discriminator_step_loss(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """The relativistic discriminator loss on real ``hr`` and fake ``sr`` (detached here)."""
        if not self.adversarial:
            raise RuntimeError("the L1 loss has no discriminator")
        return discriminator_loss(self.discriminator(hr), self.discriminator(sr.detach()))
