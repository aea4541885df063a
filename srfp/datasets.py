"""Training datasets (DIV2K, Flickr2K and their quarters) and the Flickr1K photo set.

Layouts, as the official archives unpack (see srfp.download):

- ``div2k``: ``<uri>/DIV2K_train_HR/0001.png .. 0800.png`` and ``<uri>/DIV2K_valid_HR/0801.png .. 0900.png``.
- ``flickr2k``: ``<uri>/Flickr2K_HR/000001.png .. 002650.png`` (the official tar), or the PNGs directly in
  ``<uri>`` (the HR-only zip).
- ``folder``: every image under ``<uri>``, sorted by path; its last ``validation_images`` are held out.

``<uri>`` is a local folder, ``s3://bucket/prefix``, or ``bundled:<tag>`` for the photos shipped with srfp.
A quarter subset is the first quarter (rounded up) of its base dataset's training images in file-name
order: DIV2K 0001-0200, Flickr2K 000001-000663. Validation images, for every model, are the first
``validation_images`` of DIV2K's validation set (of the ``div2k`` source).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from srfp.errors import UserError
from srfp.gridspec import DataSettings, TrainingSource
from srfp.images import decode_image
from srfp.storage import Storage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(UserError, RuntimeError):
    """A training dataset or photo folder that is missing or incomplete; the message says how to get it."""


def bundled_photos() -> Path:
    """The folder of CC0 photos shipped with srfp, one subfolder per tag."""
    return Path(str(resources.files("srfp") / "data" / "photos"))


def resolve_source(uri: str) -> Storage:
    """Storage for a data URI: a local folder, ``s3://...``, ``bundled`` or ``bundled:<tag>``."""
    if uri == "bundled" or uri.startswith("bundled:"):
        tag = uri.partition(":")[2]
        folder = bundled_photos() / tag if tag else bundled_photos()
        if not folder.is_dir():
            tags = ", ".join(sorted(p.name for p in bundled_photos().iterdir() if p.is_dir()))
            raise DatasetError(f"{uri}: no such bundled photo folder; bundled tags: {tags}")
        return Storage(folder)
    return Storage(uri)


def image_files(storage: Storage, folder: str = "", recursive: bool = True) -> list[str]:
    return [p for p in storage.list(folder, recursive=recursive) if p.lower().endswith(IMAGE_SUFFIXES)]


@dataclass(frozen=True)
class ImageSet:
    """A named, ordered list of images in one storage."""

    name: str
    storage: Storage
    files: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> np.ndarray:
        path = self.files[index]
        return decode_image(self.storage.read_bytes(path), self.storage.uri_of(path))


def _layout_files(source: TrainingSource, storage: Storage) -> tuple[list[str], list[str]]:
    """(training files, validation files) of a source, per its layout."""
    if source.layout == "div2k":
        return image_files(storage, "DIV2K_train_HR"), image_files(storage, "DIV2K_valid_HR")
    if source.layout == "flickr2k":
        nested = image_files(storage, "Flickr2K_HR")
        return (nested or image_files(storage, recursive=False)), []
    return image_files(storage), []


def _missing(dataset: str, source: TrainingSource) -> DatasetError:
    return DatasetError(
        f"{dataset}: no training images at {source.uri} (layout {source.layout}). Download it with "
        f"`python -m srfp.grid data download --dest DIR --only {dataset}` and point data.{dataset}.uri "
        "in the grid file at it, or copy the images there yourself")


def training_images(data: DataSettings, dataset: str) -> ImageSet:
    """The HR training images of a grid dataset (``div2k``, ``quarter_flickr2k``, ...)."""
    base = dataset.removeprefix("quarter_")
    source: TrainingSource = getattr(data, base)
    storage = resolve_source(source.uri)
    train, _ = _layout_files(source, storage)
    if source.layout == "folder" and base == "div2k":
        train = train[: len(train) - data.validation_images]  # held out as the validation images
    if not train:
        raise _missing(base, source)
    if dataset.startswith("quarter_"):
        train = train[: math.ceil(len(train) / 4)]
    return ImageSet(dataset, storage, tuple(train))


def validation_images(data: DataSettings) -> ImageSet:
    """The images every model's PSNR is validated on: the first ones of DIV2K's validation set."""
    source = data.div2k
    storage = resolve_source(source.uri)
    train, valid = _layout_files(source, storage)
    if source.layout == "folder":
        valid = train[len(train) - data.validation_images:] if data.validation_images else []
    if not valid:
        raise _missing("div2k", source)
    return ImageSet("validation", storage, tuple(valid[: data.validation_images]))


def check_training_data(data: DataSettings, datasets: list[str]) -> None:
    """List (without decoding) the training images of each dataset and the validation images, as a trial
    reads them where this runs; a :class:`DatasetError` says what is missing."""
    for dataset in datasets:
        training_images(data, dataset)
    validation_images(data)
