"""The five hyperparameters of an SISR model and the model ids built from them.

A model id follows the naming of the study's public code,
``{ARCH}-{dataset}-x{scale}-{loss}-s{seed}`` (``EDSR-div2k-x2-L1-s1``); published
models use ``{name}-NA-x{scale}-{name}-NA-pretrained`` and models made elsewhere (ingested, ``source:
external``) ``{name}-NA-x{scale}-{name}-NA-external``. Ids parse back to their
hyperparameters, so every stage can recover a model's spec from its id alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ARCHS = ("EDSR", "RDN", "RCAN")
DATASETS = ("div2k", "flickr2k", "quarter_div2k", "quarter_flickr2k")
SCALES = (2, 4)
LOSSES = ("L1", "VGG_GAN", "ResNet_GAN")

#: The hyperparameters a classifier can be asked to infer (parse), in the study's order.
TARGETS = ("scale", "loss", "arch", "dataset")
#: Every attribute a model can be grouped or held out by.
ATTRIBUTES = ("arch", "dataset", "scale", "loss", "seed")

SOURCES = ("custom", "pretrained", "external")

#: How scale and seed values are written as tokens (``x4``, ``s2``) in holdouts and selections.
VALUE_PREFIXES = {"scale": "x", "seed": "s"}

_CUSTOM_ID = re.compile(r"^(?P<arch>[A-Za-z0-9]+)-(?P<dataset>[a-z0-9_]+)-x(?P<scale>\d+)-(?P<loss>[A-Za-z0-9_]+)-s(?P<seed>\d+)$")
_PUBLISHED_ID = re.compile(r"^(?P<arch>[A-Za-z0-9_.+]+)-NA-x(?P<scale>\d+)-(?P<loss>[A-Za-z0-9_.+]+)-NA-"
                           r"(?P<source>pretrained|external)$")


class ModelIdError(ValueError):
    """A model id that does not follow the naming convention."""


def _check_allowed(field: str, value, allowed) -> None:
    if value not in allowed:
        raise ModelIdError(f"{field} {value!r} is not allowed; allowed values: {', '.join(map(str, allowed))}")


@dataclass(frozen=True, order=True)
class SISRSpec:
    """One super-resolution model of the grid: the five hyperparameters that name it."""

    arch: str
    dataset: str
    scale: int
    loss: str
    seed: int

    def __post_init__(self) -> None:
        _check_allowed("arch", self.arch, ARCHS)
        _check_allowed("dataset", self.dataset, DATASETS)
        _check_allowed("scale", self.scale, SCALES)
        _check_allowed("loss", self.loss, LOSSES)
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ModelIdError(f"seed must be a non-negative integer, got {self.seed!r}")

    @property
    def model_id(self) -> str:
        return f"{self.arch}-{self.dataset}-x{self.scale}-{self.loss}-s{self.seed}"

    @property
    def base_dataset(self) -> str:
        """The full dataset a quarter subset is drawn from (``quarter_div2k`` -> ``div2k``)."""
        return self.dataset.removeprefix("quarter_")

    @property
    def is_quarter(self) -> bool:
        return self.dataset.startswith("quarter_")

    @property
    def is_adversarial(self) -> bool:
        return self.loss != "L1"

    def value(self, attribute: str):
        return getattr(self, attribute)

    def as_dict(self) -> dict:
        return {"model_id": self.model_id, "arch": self.arch, "dataset": self.dataset,
                "scale": self.scale, "loss": self.loss, "seed": self.seed}

    @classmethod
    def from_id(cls, model_id: str) -> "SISRSpec":
        match = _CUSTOM_ID.match(model_id)
        if not match:
            raise ModelIdError(
                f"{model_id!r} is not a grid model id; expected {{ARCH}}-{{dataset}}-x{{scale}}-{{loss}}-s{{seed}}, "
                "e.g. EDSR-div2k-x2-L1-s1")
        parts = match.groupdict()
        return cls(arch=parts["arch"], dataset=parts["dataset"], scale=int(parts["scale"]),
                   loss=parts["loss"], seed=int(parts["seed"]))


@dataclass(frozen=True)
class PublishedModel:
    """A published, pretrained SR model (``source`` pretrained: the study's 16, with what else is known of them,
    are the catalogue ``grids/published.yaml``, :mod:`srfp.published`) or another model whose images were made
    elsewhere (``source`` external), by its name and scale only."""

    name: str
    scale: int
    source: str = "pretrained"

    def __post_init__(self) -> None:
        _check_allowed("source", self.source, SOURCES[1:])

    @property
    def model_id(self) -> str:
        return f"{self.name}-NA-x{self.scale}-{self.name}-NA-{self.source}"

    @classmethod
    def from_id(cls, model_id: str) -> "PublishedModel":
        match = _PUBLISHED_ID.match(model_id)
        if not match or match["arch"] != match["loss"]:
            raise ModelIdError(f"{model_id!r} is not a published model id; expected "
                               "{name}-NA-x{scale}-{name}-NA-pretrained or {name}-NA-x{scale}-{name}-NA-external")
        return cls(name=match["arch"], scale=int(match["scale"]), source=match["source"])


def parse_model_id(model_id: str) -> SISRSpec | PublishedModel:
    """Recover a model's hyperparameters from its id, for grid and published models alike."""
    if model_id.endswith(("-pretrained", "-external")):
        return PublishedModel.from_id(model_id)
    return SISRSpec.from_id(model_id)
