"""The classifier network: a timm backbone with a new final layer, its two training phases, and its weights.

Phase ``head`` trains only the new final layer (the backbone frozen, batch-norm statistics included);
phase ``all`` fine-tunes every layer. Images arrive as uint8 crops and are normalised here with the
backbone's own pretrained configuration.
"""

from __future__ import annotations

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from srfp.classify.backbones import create_backbone, normalization
from srfp.errors import UserError


class ClassifierInitError(UserError, RuntimeError):
    """The weights a classifier should start from (``--init-from``) are missing or do not fit."""


class Classifier(nn.Module):
    """A backbone and its final layer, taking uint8 NHWC crops; ``features`` are the pooled pre-logits."""

    def __init__(self, backbone: str, num_classes: int, pretrained: bool, weights_file: str = ""):
        super().__init__()
        self.network = create_backbone(backbone, num_classes, pretrained, weights_file)
        mean, std = normalization(self.network)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255, persistent=False)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images.permute(0, 3, 1, 2).float() - self.mean) / self.std

    def forward_with_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.network.forward_head(self.network.forward_features(self.normalise(images)), pre_logits=True)
        return self.network.get_classifier()(features), features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(images)[0]

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.network.get_classifier().parameters())

    def set_phase(self, phase: str) -> list[nn.Parameter]:
        """Make the parameters of ``phase`` (head | all) trainable, freeze the rest; returns the trainable ones."""
        head = {id(p) for p in self.head_parameters()}
        for parameter in self.parameters():
            parameter.requires_grad = phase == "all" or id(parameter) in head
        return [p for p in self.parameters() if p.requires_grad]

    def train_mode(self, phase: str) -> None:
        """Training mode for the phase: a frozen backbone keeps its batch-norm statistics (as Keras does)."""
        self.train(phase == "all")


def weights_bytes(model: Classifier) -> bytes:
    return save_safetensors({name: tensor.contiguous() for name, tensor in model.state_dict().items()})


def load_weights(model: Classifier, data: bytes) -> None:
    model.load_state_dict(load_safetensors(data))


def init_backbone_from(model: Classifier, data: bytes, source: str) -> None:
    """Start from another classifier's backbone (``--init-from``); the final layer stays new."""
    head = {name for name, _ in model.state_dict().items()
            if name.startswith("network." + model.network.pretrained_cfg["classifier"])}
    state = {name: tensor for name, tensor in load_safetensors(data).items() if name not in head}
    own = model.state_dict()
    wrong = sorted(name for name, tensor in state.items() if name not in own or own[name].shape != tensor.shape)
    missing = sorted(set(own) - head - set(state))
    if wrong or missing:
        raise ClassifierInitError(f"{source} has another backbone than classifier.backbone "
                                  f"({len(wrong)} unexpected and {len(missing)} missing tensors, e.g. "
                                  f"{(wrong + missing)[0]})")
    model.load_state_dict(state, strict=False)
