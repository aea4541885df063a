"""Classifier inputs: super-resolved PNGs from the shards, cropped (never resized) and labelled.

Training takes a random ``crop_size`` square of each image every epoch (a new one each epoch, reproducible
from the classifier's seed), evaluation the centred one; resizing would erase the fingerprints. The rows
stream from the Parquet shards through Ray Data.
"""

from __future__ import annotations

import hashlib

import numpy as np

from srfp.errors import UserError
from srfp.gridspec import ClassifierSettings
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


def image_seed(seed: int, epoch: int, model_id: str, image_id: str) -> list[int]:
    """The random state of one training image's crops in one epoch: (classifier seed, epoch, image).

    Crops then differ across epochs and images, and a rerun draws them again, wherever the row is processed
    (a generator pickled into a Ray Data function would be copied, state and all, into every task)."""
    image = int.from_bytes(hashlib.blake2b(f"{model_id}/{image_id}".encode(), digest_size=8).digest(), "little")
    return [seed, epoch, image]


class CropRows:
    """A Ray Data batch function: decode each row's PNG, crop it, and add its class index.

    ``label`` is the index of the row's ``target`` value in ``labels``, or -1 for a value the
    classifier has no class for (published models seen by a custom-model classifier). Training crops
    (``epoch`` given) are drawn at random from :func:`image_seed`, ``crops_per_image`` of them per image;
    evaluation crops (``epoch`` None) are centred."""

    def __init__(self, target: str, labels: list[str], crop_size: int, epoch: int | None = None, seed: int = 0,
                 crops_per_image: int = 1):
        self.target, self.crop_size, self.epoch, self.seed = target, crop_size, epoch, seed
        self.copies = crops_per_image if epoch is not None else 1
        self.index = {label: position for position, label in enumerate(labels)}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = []
        for png, model_id, image_id in zip(batch["png"], batch["model_id"], batch["image_id"]):
            name = f"{model_id}/{image_id}"
            image = decode_image(png, name)
            rng = (None if self.epoch is None
                   else np.random.default_rng(image_seed(self.seed, self.epoch, str(model_id), str(image_id))))
            images += [crop(image, self.crop_size, rng, name) for _ in range(self.copies)]
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


def epoch_seed(settings: ClassifierSettings, epoch: int) -> int:
    """The seed of one epoch's block order and local shuffle, from the classifier's seed."""
    return int(np.random.SeedSequence([settings.seed, epoch]).generate_state(1)[0])


def training_crops(rows, target: str, labels: list[str], settings: ClassifierSettings, epoch: int):
    """One epoch of labelled random crops of the training rows (a Ray Dataset), reproducible from
    ``classifier.seed`` and the epoch: the block order and each image's crops are drawn anew for each epoch."""
    crops = CropRows(target, labels, settings.crop_size, epoch, settings.seed, settings.crops_per_image)
    return rows.randomize_block_order(seed=epoch_seed(settings, epoch)).map_batches(
        crops, batch_format="numpy", num_cpus=0.5)


def evaluation_crops(rows, target: str, labels: list[str], settings: ClassifierSettings):
    """Labelled centre crops of the rows (a Ray Dataset): validation and test images."""
    return rows.map_batches(CropRows(target, labels, settings.crop_size), batch_format="numpy", num_cpus=0.5)
