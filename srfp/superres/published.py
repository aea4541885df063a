"""The native published models super-resolve the photo set like the custom ones (``published superresolve``).

Each ``native`` entry of the catalogue (:mod:`srfp.published`) whose official weight file is in the weights
folder, where ``published fetch`` puts it (``DIR/<model_id>/<file>``), runs through the custom models' Ray Data
pipeline, precision, tiling and shard contract (:mod:`srfp.superres.pipeline`); its rows say ``source:
pretrained`` with the catalogue's hyperparameters. The network is the srfp architecture in the official
configuration (:data:`srfp.sisr.archs.PUBLISHED`), the file loads with ``weights_only=True`` and ``strict=True``
once the wrapper its official code saves around the state_dict is taken off (:data:`WRAPPERS`). A model whose
official script feeds it [0, 1] images gets the 8-bit image divided by 255 and its output is multiplied by 255,
then clamped and rounded like every model's (the official scripts clamp to [0, 1], multiply by 255 and round:
the same 8-bit image).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from srfp.gridspec import GridSpec
from srfp.published import Catalogue, PublishedEntry
from srfp.sisr.archs import PUBLISHED, create_model
from srfp.storage import Storage
from srfp.superres.pipeline import superresolve_networks
from srfp.superres.shards import ModelInfo

#: Why a model is skipped: its weight file is not in the weights folder.
NO_WEIGHTS = "without weights"


@dataclass(frozen=True)
class Wrapper:
    """How an official file holds the state_dict: under ``key`` where the file has that key, with ``prefix``
    before every key where all of them have it (``nn.DataParallel``'s ``module.``)."""

    key: str | None = None
    prefix: str = ""

    def unwrap(self, checkpoint: dict) -> dict:
        if self.key and self.key in checkpoint:
            checkpoint = checkpoint[self.key]
        if self.prefix and all(key.startswith(self.prefix) for key in checkpoint):
            checkpoint = {key[len(self.prefix):]: value for key, value in checkpoint.items()}
        return checkpoint


#: The official files that wrap their state_dict, by architecture. SRFBN's test (Paper99/SRFBN_CVPR19
#: solvers/SRSolver.py) loads ``checkpoint['state_dict']`` where the file has that key, into the network wrapped in
#: ``nn.DataParallel`` whenever CUDA is present (networks/__init__.py). The other official files are the bare
#: state_dict: EDSR-PyTorch's and RCAN's ``.pt`` (loaded by ``model.load_state_dict(torch.load(...))``), SAN's and
#: DRN's (their EDSR-derived loaders), xinntao/ESRGAN's test.py and Maclory/SPSR's BasicSR loader.
WRAPPERS = {"SRFBN": Wrapper(key="state_dict", prefix="module.")}


class UnitRange(nn.Module):
    """A network fed [0, 1] images by its official script, on srfp's [0, 255] images: the input divided by 255,
    the output multiplied by 255."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def receptive_radius(self) -> int | None:
        return self.network.receptive_radius()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x / 255) * 255


@dataclass(frozen=True)
class PublishedNetwork:
    """A native published model: its architecture in the official ``options``, and its weight file."""

    arch: str
    scale: int
    options: dict
    input_range: int
    path: str

    @classmethod
    def of_entry(cls, entry: PublishedEntry, path: Path) -> "PublishedNetwork":
        return cls(entry.arch, entry.scale, dict(PUBLISHED[entry.arch]), entry.input_range, str(path))

    def load(self, root: str | None = None) -> nn.Module:
        """The network with the official weights loaded strictly, taking and giving [0, 255] images."""
        network = create_model(self.arch, self.scale, **self.options)
        checkpoint = torch.load(self.path, weights_only=True, map_location="cpu")
        network.load_state_dict(WRAPPERS.get(self.arch, Wrapper()).unwrap(checkpoint), strict=True)
        network.eval()
        return UnitRange(network) if self.input_range == 1 else network


def model_info(entry: PublishedEntry) -> ModelInfo:
    """What a published model's rows say: ``source: pretrained`` and the catalogue's hyperparameters (its training
    sets joined by ``+``)."""
    return ModelInfo(model_id=entry.model_id, source="pretrained", arch=entry.name, dataset="+".join(entry.training_data),
                     scale=entry.scale, loss=entry.loss, seed=None)


def weights_file(entry: PublishedEntry, folder: str | Path) -> Path | None:
    """The entry's weight file in ``folder`` (``folder/<model_id>/<file>``) where it is there; None otherwise."""
    weights = entry.weights[0]
    if weights.file is None:
        return None
    path = entry.weights_path(folder, weights)
    return path if path.is_file() else None


def missing_weights_line(entry: PublishedEntry, folder: str | Path) -> str:
    """Where a skipped model's weights come from and where to put them."""
    weights = entry.weights[0]
    if weights.url is None or weights.file is None:
        return f"{entry.model_id}: skipped: no official PyTorch weight file is known (see grids/published.yaml)"
    return (f"{entry.model_id}: skipped: no weights; get {weights.file} from {weights.url} (python -m srfp.grid "
            f"published fetch --dest {folder}) and put it at {entry.weights_path(folder, weights)}")


def native_entries(catalogue: Catalogue) -> list[PublishedEntry]:
    return [entry for entry in catalogue.models if entry.run == "native"]


def superresolve_published(grid: GridSpec, catalogue: Catalogue, folder: str | Path, storage: Storage,
                           log=print) -> dict[str, str]:
    """Super-resolve the photo set with every native published model whose weights are in ``folder``; the others
    are listed with where their weights come from and skipped. Returns each model's shard state."""
    networks = []
    for entry in native_entries(catalogue):
        path = weights_file(entry, folder)
        if path is None:
            log(f"published superresolve: {missing_weights_line(entry, folder)}")
        networks.append((model_info(entry), PublishedNetwork.of_entry(entry, path) if path else None))
    return superresolve_networks(grid, networks, storage, "published superresolve", NO_WEIGHTS, log)
