"""The Ray Train adapter: one classifier trained by a ``TorchTrainer`` with one worker.

A task trains on one worker (one GPU on a cluster) with the study's batch, so its results do not depend on
the number of GPUs; the tasks themselves run side by side as Ray Tune trials (see srfp.classify.tuning).
The worker reads its data itself (see srfp.classify.loop), a new pipeline of crops each epoch, and after
training predicts the test images itself (see srfp.classify.predict).
"""

from __future__ import annotations

from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from srfp.classify.loop import train_loop_per_worker
from srfp.errors import UserError
from srfp.gridspec import ClassifierSettings
from srfp.storage import Storage


class ClassifierTrainingFailed(UserError, RuntimeError):
    """Ray Train gave up on a classifier (after ``classifier.max_failures`` restarts)."""


def fit(storage: Storage, folder: str, target: str, labels: list[str], train_ids: list[str],
        test_ids_by_role: dict[str, list[str]], settings: ClassifierSettings, init_from: str | None = None) -> None:
    """Train (or finish training) the classifier whose state lives in ``folder`` of the storage root, then
    predict the images of the models of each role (see srfp.classify.results.ROLE_SPLITS) with it."""
    resources = {"CPU": settings.worker.cpus, **({"GPU": settings.worker.gpus} if settings.worker.gpus else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"root": storage.uri, "folder": folder, "target": target, "labels": labels,
                           "train_ids": train_ids, "test_ids_by_role": test_ids_by_role, "settings": settings,
                           "init_from": init_from},
        scaling_config=ScalingConfig(num_workers=1, use_gpu=settings.worker.gpus > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=folder.rsplit("/", 1)[-1], storage_path=storage.path(f"{folder}/ray"),
                             storage_filesystem=storage.fs, failure_config=FailureConfig(settings.max_failures)))
    try:
        trainer.fit()
    except Exception as error:  # Train raises its own error types, wrapping the worker's
        raise ClassifierTrainingFailed(f"{folder}: training failed after {settings.max_failures} restarts: "
                                       f"{type(error).__name__}: {error}") from error
