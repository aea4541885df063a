"""LPIPS, the perceptual distance of Table 6 (Zhang et al. 2018, version 0.1 with the AlexNet trunk).

The learned linear layers ship inside the ``lpips`` package. The AlexNet trunk's ImageNet weights load
through torchvision (``srfp.pretrained``): from ``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``
or by download; when neither works, ``WeightsUnavailableError`` names the file and the folder. Each
super-resolved test image is compared with its photo cropped to a multiple of the scale (the PSNR's
reference); distances are cached per model in ``<root>/report/lpips.parquet``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lpips
import numpy as np
import pandas as pd
import torch
from torchvision import models
from torchvision.models import AlexNet_Weights

from srfp.analysis.measures import cached_per_model
from srfp.devices import choose_device
from srfp.images import crop_to_multiple, decode_image
from srfp.photos import read_photo
from srfp.pretrained import torchvision_network
from srfp.storage import Storage
from srfp.superres.shards import ModelInfo, read_shard

LPIPS_PATH = "report/lpips.parquet"
LPIPS_SPLIT = "test"
LINEAR_WEIGHTS = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"


def lpips_network() -> lpips.LPIPS:
    """LPIPS v0.1 (AlexNet): the package's linear layers on torchvision's ImageNet AlexNet, frozen, in eval mode."""
    with warnings.catch_warnings():  # the package builds its random trunk with torchvision's old `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        network = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    trunk = torchvision_network(models.alexnet, AlexNet_Weights.IMAGENET1K_V1, pretrained=True).features.state_dict()
    # The package's trunk keeps torchvision's layer numbers inside its slices: "slice2.3.weight" is "3.weight".
    network.net.load_state_dict({key: trunk[key.split(".", 1)[1]] for key in network.net.state_dict()})
    linear = torch.load(LINEAR_WEIGHTS, map_location="cpu", weights_only=True)
    network.lins.load_state_dict({key.removeprefix("lin"): value for key, value in linear.items()})
    return network.eval().requires_grad_(False)


def lpips_distance(network: lpips.LPIPS, reference: np.ndarray, image: np.ndarray) -> float:
    """LPIPS between two RGB uint8 images of one size (0 for identical images)."""
    device = next(network.parameters()).device
    pair = torch.from_numpy(np.stack([reference, image])).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.inference_mode():
        return float(network(pair[:1], pair[1:]).item())


class _ModelLpips:
    """The LPIPS rows of one model's test images; the network is built on first use."""

    def __init__(self, storage: Storage):
        self.storage, self.network = storage, None

    def __call__(self, model: ModelInfo) -> list[dict]:
        if self.network is None:
            self.network = lpips_network().to(choose_device())
        rows = []
        for row in read_shard(self.storage, model.model_id, columns=["image_id", "split", "png"]).to_pylist():
            if row["split"] != LPIPS_SPLIT:
                continue
            reference = crop_to_multiple(read_photo(self.storage, row["image_id"]), model.scale)
            image = decode_image(row["png"], f"{model.model_id}/{row['image_id']}")
            rows.append({"model_id": model.model_id, "image_id": row["image_id"],
                         "lpips": lpips_distance(self.network, reference, image)})
        return rows


def lpips_of_models(storage: Storage, models: list[ModelInfo], log=print) -> pd.DataFrame:
    """LPIPS of every test image of these models against its photo: model_id, image_id, lpips.

    Raises ``WeightsUnavailableError`` when a model still needs measuring and the AlexNet weights cannot
    be had; models already cached need no weights.
    """
    return cached_per_model(storage, LPIPS_PATH, models, _ModelLpips(storage),
                            "LPIPS of the test images", log)
