"""The classifier stage: for each task, train on Ray Train, predict the test images, score, record.

``<root>/classifiers/<backbone>/<task>/`` holds ``checkpoint.pt`` and ``model.safetensors`` (see srfp.classify.loop),
``predictions.parquet`` and, written last, ``result.json`` (labels, models, settings, per-epoch history
and the headline accuracies). A task with a result is complete and skipped; an interrupted one
continues from its last finished epoch.
"""

from __future__ import annotations

import dataclasses
import json

from srfp.analysis.accuracy import summarise
from srfp.classify.loop import read_checkpoint, weights_path
from srfp.classify.predict import predict, read_predictions, write_predictions
from srfp.errors import UserError
from srfp.gridspec import GridSpec
from srfp.photos import read_manifest
from srfp.storage import Storage
from srfp.superres.shards import ModelInfo, complete_models
from srfp.tasks import Task

RESULT = "result.json"
PREDICTIONS = "predictions.parquet"


class ClassifyError(UserError):
    """A classifier task cannot run yet (missing shards or weights) or does not fit its inputs."""


def task_folder(backbone: str, task: Task | str) -> str:
    """Where a task's classifier lives; one folder per backbone, so backbones can be compared on one root."""
    return f"classifiers/{backbone}/{task if isinstance(task, str) else task.name}"


def is_complete(storage: Storage, folder: str) -> bool:
    return storage.is_file(f"{folder}/{RESULT}")


def read_result(storage: Storage, folder: str) -> dict:
    return json.loads(storage.read_text(f"{folder}/{RESULT}"))


def task_models(grid: GridSpec, task: Task, shards: list[ModelInfo]) -> list[ModelInfo]:
    """The models a task draws from, given the models with complete shards: the grid's for custom tasks
    (all must have complete shards), the ingested published ones otherwise."""
    complete = {model.model_id: model for model in shards}
    if task.population == "published":
        models = [model for model in complete.values() if model.source != "custom"]
        if len(models) < 2:
            raise ClassifyError(f"{task.name}: {len(models)} published models have complete shards; ingest their "
                                "images first (`python -m srfp.grid ingest FOLDER`)")
        return models
    wanted = task.train_models(grid.specs()) + task.test_models(grid.specs())
    missing = sorted({spec.model_id for spec in wanted} - set(complete))
    if missing:
        raise ClassifyError(f"{task.name}: {len(missing)} models have no complete shard yet (e.g. {missing[0]}); "
                            "run `python -m srfp.grid superresolve` first")
    return [complete[spec.model_id] for spec in grid.specs()]


def check_crop_fits(grid: GridSpec, storage: Storage) -> None:
    """Crops are never resized: every super-resolved photo must be at least ``crop_size`` on each side."""
    manifest = read_manifest(storage)
    smallest = int(min(manifest["height"].min(), manifest["width"].min())) - max(grid.models.scales) + 1
    if smallest < grid.classifier.crop_size:
        raise ClassifyError(f"classifier.crop_size {grid.classifier.crop_size} is larger than the smallest photo "
                            f"side ({smallest} px after cropping to the scale); crops are never resized, so use a "
                            "smaller crop_size or larger photos (photos.long_side)")


def run_task(grid: GridSpec, storage: Storage, task: Task, log=print) -> dict:
    """Train, predict and score one task (continuing an interrupted one); returns its result record."""
    from srfp.classify.trainer import fit  # Ray Train loads only when a classifier is trained

    settings = grid.classifier
    folder = task_folder(settings.backbone, task)
    shards = complete_models(storage)  # read once: on S3 each marker is a request
    models = task_models(grid, task, shards)
    task.validate(models)
    labels = [str(label) for label in task.labels(models)]
    train_ids = [m.model_id for m in task.train_models(models)]
    test_ids = [m.model_id for m in task.test_models(models)]
    published = ([m.model_id for m in shards if m.source != "custom"]
                 if task.population == "custom" and task.holdout is None else [])
    init_folder = task_folder(settings.backbone, task.init_from) if task.init_from else None
    if init_folder and not storage.is_file(weights_path(init_folder)):
        raise ClassifyError(f"{task.name}: starts from {task.init_from}, but "
                            f"{storage.uri_of(weights_path(init_folder))} does not exist; train that classifier first")
    total_epochs = settings.head_epochs + settings.finetune_epochs
    checkpoint = read_checkpoint(storage, folder)
    done = checkpoint["epoch"] if checkpoint else 0
    if done < total_epochs:
        log(f"{task.name}: {len(labels)} classes, training on {len(train_ids)} models"
            + (f", continuing after epoch {done}" if done else "")
            + f" ({settings.backbone}, {settings.workers} Ray Train workers)")
        fit(storage, folder, task.target, labels, train_ids, settings, init_folder)
        checkpoint = read_checkpoint(storage, folder)
    table = predict(storage, folder, settings, task.target, labels, {"test": test_ids, "published": published})
    write_predictions(storage, f"{folder}/{PREDICTIONS}", table)
    summary = summarise(read_predictions(storage, f"{folder}/{PREDICTIONS}"), labels, settings.vote_size,
                        settings.vote_repeats)
    result = {"task": task.name, "backbone": settings.backbone, "kind": task.kind, "target": task.target, "population": task.population,
              "holdout": dataclasses.asdict(task.holdout) if task.holdout else None,
              "exclude_seeds": list(task.exclude_seeds), "init_from": task.init_from, "labels": labels,
              "train_models": train_ids, "test_models": test_ids, "published_models": published,
              "settings": dataclasses.asdict(settings), "best_epoch": checkpoint["best_epoch"],
              "best_val_accuracy": checkpoint["best_accuracy"], "history": checkpoint["history"], "summary": summary}
    storage.write_text(f"{folder}/{RESULT}", json.dumps(result, indent=1))
    return result


def describe(result: dict) -> str:
    s = result["summary"]
    return (f"{result['task']}: test accuracy {s['accuracy_1_image']:.3f} per image, "
            f"{s['accuracy_vote']:.3f} by a {s['vote_size']}-image vote "
            f"({s['accuracy_vote_mean_probability']:.3f} averaging probabilities); chance {s['chance']:.3f} "
            f"({s['classes']} classes, {s['images']} test images of {s['models']} models)")


def classify(grid: GridSpec, storage: Storage, tasks: list[Task], log=print) -> list[dict]:
    """Run each task that is not complete; print every task's accuracy against chance; returns the results."""
    check_crop_fits(grid, storage)
    results = []
    for number, task in enumerate(tasks, 1):
        folder = task_folder(grid.classifier.backbone, task)
        if is_complete(storage, folder):
            result = read_result(storage, folder)
        else:
            log(f"classify: task {number}/{len(tasks)} {task.name}")
            result = run_task(grid, storage, task, log)
        log(describe(result))
        results.append(result)
    return results
