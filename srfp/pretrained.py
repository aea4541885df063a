"""ImageNet networks through torchvision's weights API, with an error that says which file goes where.

Weights load from ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``) or by download;
when neither works, ``WeightsUnavailableError`` names the file, its URL and the folder to put it in.
Random weights are used only when asked for with ``pretrained=False``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import WeightsEnum

from srfp.errors import UserError


class WeightsUnavailableError(UserError, RuntimeError):
    """Pretrained ImageNet weights are neither in the torch hub checkpoints folder nor downloadable."""


def torchvision_network(builder: Callable[..., nn.Module], weights: WeightsEnum, pretrained: bool) -> nn.Module:
    """``builder(weights=weights)``, or random weights when ``pretrained`` is False."""
    if not pretrained:
        return builder(weights=None)
    try:
        return builder(weights=weights)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a corrupt file raises RuntimeError
        file_name = os.path.basename(urlparse(weights.url).path)
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        raise WeightsUnavailableError(
            f"pretrained weights {file_name} are missing or unreadable in {folder} and could not be "
            f"downloaded from {weights.url} ({error}); download {weights.url} and put {file_name} in "
            f"{folder} ($TORCH_HOME/hub/checkpoints) so that it loads with no download") from error
