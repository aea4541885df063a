"""The classifier stage: for each task, train and predict the test images on Ray Train, score, record; the
tasks run side by side, one Ray Tune trial each (see srfp.classify.tuning). Then, unless the grid turns it
off, the spectral classifier of each task (see srfp.classify.spectral), one Ray task each. What each task
leaves in the root, and how it is read, is :mod:`srfp.classify.results`; a complete task is skipped, an
interrupted one continues from its last finished epoch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from srfp.analysis import openset
from srfp.analysis.accuracy import summarise
from srfp.classify.loop import read_progress, weights_path
from srfp.classify.results import is_complete, read_predictions, read_result, task_folder, write_predictions, write_result
from srfp.errors import UserError
from srfp.gridspec import ClassifierSettings, GridSpec
from srfp.photos import read_manifest
from srfp.storage import Storage
from srfp.superres.shards import ModelInfo, complete_models
from srfp.tasks import Task


class ClassifyError(UserError):
    """A classifier task cannot run yet (missing shards or weights) or does not fit its inputs."""


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
    """Crops are never resized: every super-resolved photo must be at least each crop size on each side."""
    manifest = read_manifest(storage)
    smallest = int(min(manifest["height"].min(), manifest["width"].min())) - max(grid.models.scales) + 1
    crops = {"classifier.crop_size": grid.classifier.crop_size}
    if grid.spectral.enabled:
        crops["spectral.crop_size"] = grid.spectral.crop_size
    for setting, size in crops.items():
        if smallest < size:
            raise ClassifyError(f"{setting} {size} is larger than the smallest photo side ({smallest} px after "
                                "cropping to the scale); crops are never resized, so use a smaller crop size or "
                                "larger photos (photos.long_side)")


@dataclass(frozen=True)
class TaskRun:
    """A task resolved on the driver against the shards: everything its trial needs to train, predict and score."""

    task: Task
    folder: str
    labels: list[str]
    train_ids: list[str]
    test_ids: list[str]
    published: list[str]
    init_folder: str | None

    def roles(self) -> dict[str, list[str]]:
        """The models whose images the classifier predicts, by role (see srfp.classify.results.ROLE_SPLITS)."""
        return {"test": self.test_ids, "published": self.published,
                "known": [model_id for model_id in self.train_ids if model_id not in self.test_ids],
                "validation": self.train_ids}


def prepare(grid: GridSpec, task: Task, shards: list[ModelInfo]) -> TaskRun:
    """Resolve a task's models and labels from the complete shards; a task that cannot run yet raises here,
    before any trial starts."""
    models = task_models(grid, task, shards)
    task.validate(models)
    published = ([m.model_id for m in shards if m.source != "custom"]
                 if task.population == "custom" and task.holdout is None else [])
    return TaskRun(task, task_folder(grid.classifier.backbone, task), [str(label) for label in task.labels(models)],
                   [m.model_id for m in task.train_models(models)], [m.model_id for m in task.test_models(models)],
                   published, task_folder(grid.classifier.backbone, task.init_from) if task.init_from else None)


def run_task(storage: Storage, settings: ClassifierSettings, run: TaskRun, log=print) -> dict:
    """Train (continuing an interrupted training) and predict on Ray Train, then score one task; returns its
    result record. Runs inside the task's Ray Tune trial."""
    from srfp.classify.trainer import fit  # Ray Train loads only when a classifier is trained

    task, folder = run.task, run.folder
    progress = read_progress(storage, folder)
    done = progress["epoch"] if progress else 0
    log(f"{task.name}: {len(run.labels)} classes, training on {len(run.train_ids)} models"
        + (f", continuing after epoch {done}" if done else "") + f" ({settings.backbone})")
    fit(storage, folder, task.target, run.labels, run.train_ids, run.roles(), settings, run.init_folder)
    progress = read_progress(storage, folder)
    predictions = read_predictions(storage, folder)
    summary = summarise(predictions, run.labels, settings.vote_size, settings.vote_repeats)
    result = _result_record(task, run, settings.backbone, dataclasses.asdict(settings), summary, progress["best_epoch"],
                            progress["best_accuracy"], progress["history"],
                            openset.calibrate(predictions, settings.false_alarm_rate))
    write_result(storage, folder, result)
    return result


def _result_record(task: Task, run: TaskRun, backbone: str, settings: dict, summary: dict, best_epoch: int,
                   best_val_accuracy: float, history: list, unknown: dict) -> dict:
    """What ``result.json`` records of a finished task, whatever its backbone (``unknown``: the unknown-model
    score's threshold, see :func:`srfp.analysis.openset.calibrate`)."""
    return {"task": task.name, "backbone": backbone, "kind": task.kind, "target": task.target,
            "population": task.population, "holdout": dataclasses.asdict(task.holdout) if task.holdout else None,
            "exclude_seeds": list(task.exclude_seeds), "init_from": task.init_from, "labels": run.labels,
            "train_models": run.train_ids, "test_models": run.test_ids, "published_models": run.published,
            "settings": settings, "best_epoch": best_epoch, "best_val_accuracy": best_val_accuracy,
            "history": history, "summary": summary, "unknown": unknown}


def run_spectral_task(root: str, grid: GridSpec, run: TaskRun) -> dict:
    """Fit one task's spectral classifier on its models' cached features, predict, score and record; returns its
    result record. Runs in a Ray task."""
    from srfp.classify import spectral

    storage, task = Storage(root), run.task
    models = {model.model_id: model for model in complete_models(storage)}
    wanted = list(dict.fromkeys(run.train_ids + run.test_ids + run.published))
    rows = spectral.read_features(storage, [models[model_id] for model_id in wanted], grid.spectral)
    fit = spectral.fit_and_predict(rows, task.target, run.labels, run.train_ids, run.roles(), grid.spectral)
    folder = task_folder(spectral.BACKBONE, task)
    spectral.write_model(storage, folder, fit.arrays)
    write_predictions(storage, folder, fit.predictions)
    predictions = read_predictions(storage, folder)
    summary = summarise(predictions, run.labels, grid.classifier.vote_size, grid.classifier.vote_repeats)
    result = _result_record(task, run, spectral.BACKBONE, dataclasses.asdict(grid.spectral), summary, 0,
                            fit.val_accuracy, [], openset.calibrate(predictions, grid.spectral.false_alarm_rate))
    write_result(storage, folder, result)
    return result


def classify_spectral(grid: GridSpec, storage: Storage, tasks: list[Task], shards: list[ModelInfo],
                      log=print) -> list[dict]:
    """The spectral classifier of every task: the features of their models (cached), then one Ray task per
    task that is not complete; returns the results in task order."""
    import ray

    from srfp.classify import spectral

    results, pending = {}, []
    for task in tasks:
        folder = task_folder(spectral.BACKBONE, task)
        if is_complete(storage, folder):
            results[task.name] = read_result(storage, folder)
        else:
            pending.append(prepare(grid, task, shards))
    if pending:
        models = {model.model_id: model for model in shards}
        needed = sorted({model_id for run in pending for model_id in run.train_ids + run.test_ids + run.published})
        spectral.cache_features(storage, [models[model_id] for model_id in needed], grid.spectral, log)
        log(f"classify: spectral classifiers of {', '.join(run.task.name for run in pending)}")
        fit = ray.remote(run_spectral_task).options(num_cpus=grid.spectral.cpus)
        for run, result in zip(pending, ray.get([fit.remote(storage.uri, grid, run) for run in pending])):
            results[run.task.name] = result
    return [results[task.name] for task in tasks]


def describe(result: dict) -> str:
    s = result["summary"]
    return (f"{result['task']}: test accuracy {s['accuracy_1_image']:.3f} per image, "
            f"{s['accuracy_vote']:.3f} by a {s['vote_size']}-image vote "
            f"({s['accuracy_vote_mean_probability']:.3f} averaging probabilities); chance {s['chance']:.3f} "
            f"({s['classes']} classes, {s['images']} test images of {s['models']} models)")


def classify(grid: GridSpec, storage: Storage, tasks: list[Task], log=print) -> list[dict]:
    """Run every task that is not complete, side by side as Ray Tune trials (a task that starts from another's
    backbone after it); print every task's accuracy against chance; returns the results in task order."""
    check_crop_fits(grid, storage)
    shards = complete_models(storage)  # read once: on S3 each marker is a request
    results, pending = {}, []
    for task in tasks:
        folder = task_folder(grid.classifier.backbone, task)
        if is_complete(storage, folder):
            results[task.name] = read_result(storage, folder)
        else:
            pending.append(prepare(grid, task, shards))
    for wave in _waves(storage, pending):
        from srfp.classify.tuning import train_tasks  # Ray Tune loads only when a classifier is trained

        log(f"classify: {', '.join(run.task.name for run in wave)}")
        results.update(train_tasks(storage, grid.classifier, wave, log))
    for task in tasks:
        log(describe(results[task.name]))
    if grid.spectral.enabled:
        for result in classify_spectral(grid, storage, tasks, shards, log):
            log(f"spectral: {describe(result)}")
    return [results[task.name] for task in tasks]


def _waves(storage: Storage, runs: list[TaskRun]) -> list[list[TaskRun]]:
    """The tasks in the order they can run: those that start from another pending task's backbone wait for it."""
    def waits(run: TaskRun) -> bool:
        return any(run.init_folder == other.folder for other in runs if other is not run)

    first, later = [run for run in runs if not waits(run)], [run for run in runs if waits(run)]
    for run in first:
        if run.init_folder and not storage.is_file(weights_path(run.init_folder)):
            raise ClassifyError(f"{run.task.name}: starts from {run.task.init_from}, but "
                                f"{storage.uri_of(weights_path(run.init_folder))} does not exist; train that "
                                "classifier first")
    return [wave for wave in (first, later) if wave]
