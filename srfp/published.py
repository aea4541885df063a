"""The study's published models (the paper's Table 4), read from the catalogue ``grids/published.yaml``.

The catalogue is the one place that names them: per model and scale, the hyperparameters the paper states,
the official weight files, the licence, and how srfp runs it: ``native`` (an srfp architecture of
:mod:`srfp.sisr.archs` with the official state_dict layout) or ``ingest`` (the official code makes the images,
by the steps written in the entry, and ``python -m srfp.grid ingest`` imports them). ``load_catalogue``
validates the whole file, as ``load_grid`` does a grid file.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from srfp.errors import UserError
from srfp.schema import SchemaError, build, choices
from srfp.spec import SCALES, PublishedModel
from srfp.storage import Storage

RUNS = ("native", "ingest")
#: The losses of the paper's Table 4.
LOSSES = ("L1", "adversarial")
_NAME = re.compile(r"^[A-Za-z0-9_.+]+$")
_HEX = re.compile(r"^[0-9a-f]{8,64}$")


class CatalogueError(UserError, ValueError):
    """An invalid catalogue of published models."""


@dataclass(frozen=True)
class WeightsFile:
    """An official weight file: its address (an archive or a folder holding ``file``, or the file itself), its
    file name and the leading hex digits of its SHA-256 where the official code publishes them. Each is null
    where the official repository does not give it."""

    url: str | None
    file: str | None
    sha256_prefix: str | None

    def __post_init__(self):
        if self.sha256_prefix is not None and not _HEX.match(self.sha256_prefix):
            raise ValueError(f"sha256_prefix: {self.sha256_prefix!r} is not allowed; expected 8 to 64 lowercase "
                              f"hex digits")


@dataclass(frozen=True)
class PublishedEntry:
    """One published model at one scale. ``native`` entries name their srfp ``arch`` and ``input_range``;
    ``ingest`` entries write out the steps that make their images in ``ingest``."""

    name: str
    training_data: list[str]
    paper: str
    code: str
    scale: int = choices(*SCALES)
    loss: str = choices(*LOSSES)
    run: str = choices(*RUNS)
    licence: str | None
    weights: list[WeightsFile]
    arch: str | None = None
    input_range: int | None = choices(1, 255, None, default=None)
    ingest: str | None = None

    def __post_init__(self):
        if not _NAME.match(self.name):
            raise ValueError(f"name: {self.name!r} is not allowed; expected letters, digits, _ . +")
        if not self.training_data or not self.paper or not self.code or not self.weights:
            raise ValueError(f"{self.model_id}: training_data, paper, code and weights must not be empty")
        native = self.run == "native"
        if native != (self.arch is not None) or native != (self.input_range is not None):
            raise ValueError(f"{self.model_id}: arch and input_range are required for run: native and not "
                              f"allowed for run: ingest")
        if native == (self.ingest is not None):
            raise ValueError(f"{self.model_id}: ingest (the steps that make the images) is required for "
                              f"run: ingest and not allowed for run: native")

    @property
    def model_id(self) -> str:
        return PublishedModel(self.name, self.scale).model_id

    def weights_path(self, folder: str | Path, weights: WeightsFile) -> Path:
        """Where ``published fetch`` puts one of the entry's weight files and ``published superresolve`` reads it:
        ``folder/<model_id>/<file>``."""
        return Path(folder).expanduser() / self.model_id / weights.file


@dataclass(frozen=True)
class Catalogue:
    models: list[PublishedEntry]
    source: str = ""

    def __post_init__(self):
        ids = [entry.model_id for entry in self.models]
        twice = sorted({model_id for model_id in ids if ids.count(model_id) > 1})
        if twice:
            raise SchemaError(f"models: {twice[0]} is listed twice")

    def native_archs(self) -> set[str]:
        return {entry.arch for entry in self.models if entry.arch}

    def render(self, storage: Storage | None = None, weights: str | Path | None = None) -> list[str]:
        """The plan's lines: each model's run kind, arch and licence, whether the official weights' address is
        known, given ``weights`` (the weights folder) whether a native model's weight files are there (present or
        missing; ingest models have none: n/a), and given ``storage`` the state of its shard there (complete,
        partial or missing)."""
        native = sum(entry.run == "native" for entry in self.models)
        lines = [f"published models ({self.source}): {len(self.models)}, {native} native, "
                 f"{len(self.models) - native} ingest"]
        for entry in self.models:
            how = f"native {entry.arch}" if entry.arch else "ingest"
            present = f"weights {_weights_state(entry, weights):<8} " if weights else ""
            shard = f"shard {_shard_state(storage, entry.model_id):<9} " if storage else ""
            found = "" if all(weights.url for weights in entry.weights) else "  (no official weights address)"
            lines.append(f"  {entry.model_id:<42} {how:<14} {present}{shard}{entry.licence or 'no licence file'}{found}")
        return lines


def _weights_state(entry: PublishedEntry, folder: str | Path) -> str:
    if entry.run != "native":
        return "n/a"
    return "present" if all(weights.file and entry.weights_path(folder, weights).is_file()
                            for weights in entry.weights) else "missing"


def _shard_state(storage: Storage, model_id: str) -> str:
    from srfp.superres.shards import shard_status  # reads Parquet metadata: only when a root is given

    return shard_status(storage, model_id).state


def catalogue_path() -> Path:
    return Path(str(resources.files("srfp.grids") / "published.yaml"))


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """The catalogue (the bundled ``grids/published.yaml`` unless ``path``), validated whole."""
    path = Path(path) if path else catalogue_path()
    try:
        data = yaml.safe_load(path.read_text())
        catalogue = build(Catalogue, data, where="")
    except (OSError, yaml.YAMLError, SchemaError) as error:
        raise CatalogueError(f"{path}: {error}") from None
    from srfp.sisr.archs import ARCHITECTURES  # imports torch: here, not when this module is imported

    unknown = sorted(catalogue.native_archs() - set(ARCHITECTURES))
    if unknown:
        raise CatalogueError(f"{path}: arch {unknown[0]!r} has no srfp architecture; allowed values: "
                             f"{', '.join(ARCHITECTURES)}")
    return dataclasses.replace(catalogue, source=path.name)
