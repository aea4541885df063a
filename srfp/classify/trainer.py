"""The Ray Train adapter: one classifier trained by a ``TorchTrainer`` (DDP over the grid's workers)."""

from __future__ import annotations

import ray
from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from srfp.classify.data import CropRows, read_split
from srfp.classify.loop import train_loop_per_worker
from srfp.errors import UserError
from srfp.gridspec import ClassifierSettings
from srfp.storage import Storage


class ClassifierTrainingFailed(UserError, RuntimeError):
    """Ray Train gave up on a classifier (after ``classifier.max_failures`` restarts)."""


def labelled_crops(storage: Storage, model_ids: list[str], split: str, target: str, labels: list[str],
                   settings: ClassifierSettings) -> ray.data.Dataset:
    """Images and class indices of one split: random crops for training, centre crops otherwise."""
    training = split == "train"
    rows = read_split(storage, model_ids, split)
    if training:
        rows = rows.randomize_block_order()
    return rows.map_batches(CropRows(target, labels, settings.crop_size, training, settings.crops_per_image),
                            batch_format="numpy", num_cpus=0.5).select_columns(["image", "label"])


def fit(storage: Storage, folder: str, target: str, labels: list[str], train_ids: list[str],
        settings: ClassifierSettings, init_from: str | None = None) -> None:
    """Train (or finish training) the classifier whose state lives in ``folder`` of the storage root."""
    resources = {"CPU": settings.worker.cpus, **({"GPU": settings.worker.gpus} if settings.worker.gpus else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"root": storage.uri, "folder": folder, "labels": labels, "settings": settings,
                           "init_from": init_from},
        scaling_config=ScalingConfig(num_workers=settings.workers, use_gpu=settings.worker.gpus > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=folder.rsplit("/", 1)[-1], storage_path=storage.path(f"{folder}/ray"),
                             storage_filesystem=storage.fs, failure_config=FailureConfig(settings.max_failures)),
        # Validation crops are the same every epoch: computed once; training crops are new each epoch.
        datasets={"train": labelled_crops(storage, train_ids, "train", target, labels, settings),
                  "val": labelled_crops(storage, train_ids, "val", target, labels, settings).materialize()})
    try:
        trainer.fit()
    except Exception as error:  # Train raises its own error types, wrapping the worker's
        raise ClassifierTrainingFailed(f"{folder}: training failed after {settings.max_failures} restarts: "
                                       f"{type(error).__name__}: {error}") from error
