"""The Ray Tune adapter: one grid trial per model id, each running :func:`srfp.sisr.train.train_model`.

Trials take their CPUs and GPUs from the grid, at most ``max_concurrent_trials`` at once; a failed
trial is retried up to ``max_failures`` times and continues from its last checkpoint in the storage
root. Models already finished (their record exists) are not launched, so rerunning ``train`` after an
interruption, of a trial or of the driver, trains only what is missing. Trial metrics (iteration,
losses, validation PSNR, images per second) show in the Ray dashboard and in ``<root>/tune``.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import ray
import torch
from ray import tune

from srfp.datasets import training_images, validation_images
from srfp.devices import choose_device
from srfp.errors import UserError
from srfp.gridspec import GridSpec
from srfp.sisr.archs import check_options
from srfp.sisr.losses import SRLoss
from srfp.sisr.train import is_trained, record_path, train_model
from srfp.spec import SISRSpec
from srfp.storage import Storage


class TrainingFailed(UserError):
    """Some trials failed even after their retries; the finished models are kept."""


def run_trial(config: dict, grid: GridSpec, root: str) -> None:
    """One Tune trial: train the model named by ``config['model_id']``."""
    trial = grid.training.trial
    torch.set_num_threads(max(1, int(trial.cpus)))
    storage = Storage(root)
    spec = SISRSpec.from_id(config["model_id"])
    if is_trained(storage, spec.model_id):
        return
    train_model(spec, grid, storage, report=tune.report, device=choose_device(trial.gpus > 0),
                node=ray.get_runtime_context().get_node_id())


def preflight(grid: GridSpec, specs: list[SISRSpec]) -> None:
    """Fail before any trial starts on bad architecture options, a missing training set or missing weights."""
    for arch in sorted({s.arch for s in specs}):
        try:
            check_options(arch, grid.archs.get(arch, {}))
        except ValueError as error:
            raise TrainingFailed(f"{grid.source}: archs.{arch}: {error}") from None
    for dataset in sorted({s.dataset for s in specs}):
        training_images(grid.data, dataset)
    validation_images(grid.data)
    if grid.training.pretrained_perceptual:
        for loss in sorted({s.loss for s in specs if s.is_adversarial}):
            SRLoss(loss, pretrained=True)


def train_grid(grid: GridSpec, specs: list[SISRSpec], storage: Storage, log=print) -> pd.DataFrame:
    """Train every model of ``specs`` that is not finished, as Tune grid trials; returns the PSNR table."""
    pending = [s.model_id for s in specs if not is_trained(storage, s.model_id)]
    log(f"train: {len(specs) - len(pending)} of {len(specs)} models already trained, {len(pending)} to train")
    failed: list[str] = []
    if pending:
        preflight(grid, [s for s in specs if s.model_id in pending])
        settings = grid.training
        resources = {"cpu": settings.trial.cpus, "gpu": settings.trial.gpus}
        trainable = tune.with_resources(tune.with_parameters(run_trial, grid=grid, root=storage.uri), resources)
        tuner = tune.Tuner(
            trainable,
            param_space={"model_id": tune.grid_search(pending)},
            tune_config=tune.TuneConfig(max_concurrent_trials=settings.max_concurrent_trials or None,
                                        trial_name_creator=lambda t: t.config["model_id"],
                                        trial_dirname_creator=lambda t: t.config["model_id"]),
            run_config=tune.RunConfig(name=time.strftime("train-%Y%m%d-%H%M%S"), storage_path=storage.path("tune"),
                                      storage_filesystem=storage.fs, verbose=1,
                                      failure_config=tune.FailureConfig(max_failures=settings.max_failures)),
        )
        results = tuner.fit()
        failed = [r.config["model_id"] for r in results if r.error]
    table = psnr_table(storage, specs)
    storage.write_text("models/psnr.csv", table.to_csv(index=False, float_format="%.3f"))
    if failed:
        raise TrainingFailed(f"{len(failed)} trials failed after {grid.training.max_failures} retries: {', '.join(failed)} "
                             f"(logs in {storage.uri_of('tune')}); rerun `train` to continue them from their checkpoints")
    return table


def psnr_table(storage: Storage, specs: list[SISRSpec]) -> pd.DataFrame:
    """One row per finished model: its hyperparameters, validation PSNR, iterations and throughput."""
    rows = [json.loads(storage.read_text(record_path(s.model_id))) for s in specs if is_trained(storage, s.model_id)]
    columns = ["model_id", "arch", "dataset", "scale", "loss", "seed", "val_psnr", "iterations", "images_per_second"]
    return pd.DataFrame(rows).reindex(columns=columns)

