"""Classifier inputs: super-resolved PNGs from the shards, cropped (never resized) and labelled.

Training takes a random ``crop_size`` square of each image every epoch, evaluation the centred one;
resizing would erase the fingerprints. The rows stream from the Parquet shards through Ray Data.
"""

from __future__ import annotations

import numpy as np

from srfp.errors import UserError
from srfp.images import decode_image
from srfp.storage import Storage
from srfp.superres.shards import shard_folder

#: Shard columns a classifier reads: the image, what to label it with, and what to report it under.
COLUMNS = ["model_id", "source", "arch", "dataset", "scale", "loss", "seed", "image_id", "split", "png"]


class CropError(UserError, ValueError):
    """An image is smaller than the classifier's crop (crops are never resized)."""


def crop(image: np.ndarray, size: int, rng: np.random.Generator | None = None, name: str = "image") -> np.ndarray:
    """A ``size`` x ``size`` crop of an HxWxC image: at a random place when ``rng`` is given, else centred."""
    height, width = image.shape[:2]
    if height < size or width < size:
        raise CropError(f"{name} is {width}x{height}, smaller than the {size}x{size} crop "
                        "(classifier.crop_size); crops are never resized, so use a smaller crop or larger photos")
    if rng is None:
        top, left = (height - size) // 2, (width - size) // 2
    else:
        top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
    return image[top:top + size, left:left + size]


class CropRows:
    """A Ray Data batch function: decode each row's PNG, crop it, and add its class index.

    ``label`` is the index of the row's ``target`` value in ``labels``, or -1 for a value the
    classifier has no class for (published models seen by a custom-model classifier). With
    ``crops_per_image`` > 1 each image is decoded once and gives that many random crops (small photo sets)."""

    def __init__(self, target: str, labels: list[str], crop_size: int, random_crops: bool, crops_per_image: int = 1):
        self.target, self.crop_size, self.copies = target, crop_size, crops_per_image if random_crops else 1
        self.index = {label: position for position, label in enumerate(labels)}
        self.rng = np.random.default_rng() if random_crops else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = []
        for png, model_id, image_id in zip(batch["png"], batch["model_id"], batch["image_id"]):
            name = f"{model_id}/{image_id}"
            image = decode_image(png, name)
            images += [crop(image, self.crop_size, self.rng, name) for _ in range(self.copies)]
        out = {name: np.repeat(values, self.copies, axis=0) for name, values in batch.items() if name != "png"}
        out["image"] = (np.stack(images) if images
                        else np.zeros((0, self.crop_size, self.crop_size, 3), dtype=np.uint8))
        out["label"] = np.array([self.index.get(str(value), -1) for value in out[self.target]], dtype=np.int64)
        return out


def shard_files(storage: Storage, model_ids: list[str]) -> list[str]:
    """The Parquet files of these models' shards, as paths of the storage's filesystem."""
    return [storage.path(path) for model_id in model_ids for path in storage.list(shard_folder(model_id))
            if path.endswith(".parquet")]


def read_split(storage: Storage, model_ids: list[str], split: str):
    """A Ray Dataset of these models' rows of one split (train | val | test)."""
    import ray
    from ray.data.expressions import col

    dataset = ray.data.read_parquet(shard_files(storage, model_ids), filesystem=storage.fs).select_columns(COLUMNS)
    return dataset.filter(expr=col("split") == split)
