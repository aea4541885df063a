"""The Ray Tune adapter of the classifier stage: the tasks train side by side, one trial each.

Each trial is the driver of its task's ``TorchTrainer`` (Ray's idiom for Train inside Tune): it trains,
predicts and scores one task (:func:`srfp.classify.stage.run_task`) and takes no CPU of its own;
the trainer's one worker takes ``classifier.worker``. At most ``classifier.max_concurrent_tasks`` run at
once (0: no limit, each trainer waits for its worker's resources, which an autoscaling cluster adds).
A finished trial's process drives the next task (Tune's ``reuse_actors``): a new one would import srfp,
Ray Train and PyTorch again, seconds of CPU per task.
Trial logs and Tune's state are kept in ``<root>/classifiers/<backbone>/tune``.
"""

from __future__ import annotations

import time

from ray import tune

from srfp.classify.results import read_result
from srfp.classify.stage import TaskRun, run_task
from srfp.errors import UserError
from srfp.gridspec import ClassifierSettings
from srfp.storage import Storage

#: A trial only drives its trainer: no CPU (the worker and the data pipeline need them), memory for its process.
TRIAL_RESOURCES = {"cpu": 0, "memory": 256 * 1024**2}


class ClassifierTasksFailed(UserError, RuntimeError):
    """Some classifier tasks failed; finished ones are kept, the others continue on a rerun."""


def run_trial(config: dict, root: str, settings: ClassifierSettings, runs: dict[str, TaskRun]) -> None:
    """One Tune trial: one classifier task, end to end."""
    result = run_task(Storage(root), settings, runs[config["task"]])
    tune.report({"best_val_accuracy": result["best_val_accuracy"], **result["summary"]})


def train_tasks(storage: Storage, settings: ClassifierSettings, runs: list[TaskRun], log=print) -> dict[str, dict]:
    """Run every task of ``runs`` as a Tune trial; returns each task's result record by task name."""
    by_name = {run.task.name: run for run in runs}
    trainable = tune.with_resources(tune.with_parameters(run_trial, root=storage.uri, settings=settings, runs=by_name),
                                    TRIAL_RESOURCES)
    tuner = tune.Tuner(
        trainable,
        param_space={"task": tune.grid_search(list(by_name))},
        tune_config=tune.TuneConfig(max_concurrent_trials=settings.max_concurrent_tasks or None, reuse_actors=True,
                                    trial_name_creator=lambda trial: trial.config["task"],
                                    trial_dirname_creator=lambda trial: trial.config["task"]),
        run_config=tune.RunConfig(name=time.strftime("classify-%Y%m%d-%H%M%S"),
                                  storage_path=storage.path(f"classifiers/{settings.backbone}/tune"),
                                  storage_filesystem=storage.fs, verbose=0))
    failed = {result.config["task"]: result.error for result in tuner.fit() if result.error}
    if failed:
        reasons = "; ".join(f"{name}: {_last_line(error)}" for name, error in failed.items())
        raise ClassifierTasksFailed(f"{len(failed)} of {len(runs)} classifier tasks failed ({reasons}); logs in "
                                    f"{storage.uri_of(f'classifiers/{settings.backbone}/tune')}; rerun to continue "
                                    "them from their last finished epoch")
    return {name: read_result(storage, run.folder) for name, run in by_name.items()}


def _last_line(error: BaseException) -> str:
    """The innermost message of an error that crossed Ray's process boundaries (they add tracebacks)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
