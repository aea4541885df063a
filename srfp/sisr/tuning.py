"""The Ray Tune adapter: one grid trial per model id, each running :func:`srfp.sisr.train.train_model`.

Trials take their CPUs and GPUs from the grid, at most ``max_concurrent_trials`` at once; a failed
trial is retried up to ``max_failures`` times and continues from its last checkpoint in the storage
root. Models already finished (their record exists) are not launched, so rerunning ``train`` after an
interruption, of a trial or of the driver, trains only what is missing. A finished trial's process takes the
next trial of the same resources (Tune's ``reuse_actors``): on the smoke grid, starting a process and
importing torch cost more than 40 iterations of training; every model sets its own seeds, so a model
trained in a reused process is bit-identical to one trained in a new one. Trial metrics (iteration,
losses, validation PSNR, images per second) show in the Ray dashboard and in ``<root>/tune``.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import ray
import torch
from ray import tune
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from srfp.datasets import check_training_data
from srfp.devices import choose_device
from srfp.errors import UserError
from srfp.gridspec import GridSpec, Resources
from srfp.sisr.archs import check_options
from srfp.sisr.losses import SRLoss
from srfp.sisr.train import is_trained, record_path, train_model
from srfp.spec import SISRSpec
from srfp.storage import Storage


class TrainingFailed(UserError):
    """Some trials failed even after their retries; the finished models are kept."""


def run_trial(config: dict, grid: GridSpec, root: str) -> None:
    """One Tune trial: train the model named by ``config['model_id']``."""
    spec = SISRSpec.from_id(config["model_id"])
    trial = grid.training.trial_of(spec.arch)
    torch.set_num_threads(max(1, int(trial.cpus)))
    storage = Storage(root)
    if is_trained(storage, spec.model_id):
        return
    train_model(spec, grid, storage, report=tune.report, device=choose_device(trial.gpus > 0),
                node=ray.get_runtime_context().get_node_id())


def preflight(grid: GridSpec, specs: list[SISRSpec], log=print) -> None:
    """Fail before any trial starts on bad architecture options, a training set missing here or on a node
    where trials run, or missing weights."""
    for arch in sorted({s.arch for s in specs}):
        try:
            check_options(arch, grid.archs.get(arch, {}))
        except ValueError as error:
            raise TrainingFailed(f"{grid.source}: archs.{arch}: {error}") from None
    datasets = sorted({s.dataset for s in specs})
    check_training_data(grid.data, datasets)
    check_training_data_on_nodes(grid, datasets, smallest_trial(grid, specs), log)
    if grid.training.pretrained_perceptual:
        for loss in sorted({s.loss for s in specs if s.is_adversarial}):
            SRLoss(loss, pretrained=True)


def trial_resources(grid: GridSpec):
    """Tune's resource request of a trial, from its config: the trial's share of a GPU for its architecture
    (``training.trials_per_gpu``), so that trials of launch-bound models share a GPU."""
    def request(config: dict) -> tune.PlacementGroupFactory:
        trial = grid.training.trial_of(SISRSpec.from_id(config["model_id"]).arch)
        return tune.PlacementGroupFactory([{"CPU": trial.cpus, **({"GPU": trial.gpus} if trial.gpus else {})}])
    return request


def smallest_trial(grid: GridSpec, specs: list[SISRSpec]) -> Resources:
    """The least any trial of ``specs`` asks for: a node with it can run trials."""
    trials = [grid.training.trial_of(arch) for arch in sorted({s.arch for s in specs})]
    return min(trials, key=lambda trial: (trial.gpus, trial.cpus))


def trial_nodes(nodes: list[dict], trial: Resources) -> list[dict]:
    """The alive nodes (as ``ray.nodes()`` lists them) with the resources of a trial."""
    return [node for node in nodes if node["Alive"] and node["Resources"].get("CPU", 0) >= trial.cpus
            and node["Resources"].get("GPU", 0) >= trial.gpus]


def check_training_data_on_nodes(grid: GridSpec, datasets: list[str], trial: Resources, log=print) -> None:
    """List the training data, as a trial would, on every other node where trials can run.

    A trial reads ``data.*.uri`` on its own node, with that node's home folder, mounts and AWS
    credentials, so a folder the driver sees may be missing there. The check is a Ray task per node
    (no CPU asked, so a busy node answers at once; it imports srfp.datasets alone), listing files and
    decoding nothing. ``trial``: the resources a node needs to run a trial.
    """
    check = ray.remote(check_training_data)
    nodes = trial_nodes(ray.nodes(), trial)
    if nodes:
        driver, checks = ray.get_runtime_context().get_node_id(), {}
        for node in (n for n in nodes if n["NodeID"] != driver):
            on_node = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            checks[f"{node['NodeManagerAddress']} (node {node['NodeID'][:8]})"] = check.options(
                num_cpus=0, scheduling_strategy=on_node).remote(grid.data, datasets)
    else:
        # No node can take a trial yet: an autoscaling cluster at zero workers, as cluster.yaml starts.
        # Checking on the driver alone would say nothing about where trials will run, so the check asks
        # for a trial's resources: the autoscaler starts the node type trials get, and the check runs
        # there (the first trial would have waited for that node anyway).
        log(f"train: no node has a trial's resources yet (CPU {trial.cpus:g}, GPU {trial.gpus:g}); "
            "checking the training data on the first node that joins")
        checks = {"the first node with a trial's resources":
                  check.options(num_cpus=trial.cpus, num_gpus=trial.gpus).remote(grid.data, datasets)}
    for node, task in checks.items():
        try:
            ray.get(task)
        except ray.exceptions.RayTaskError as error:
            if not isinstance(error.cause, UserError):
                raise
            raise TrainingFailed(
                f"trials on {node} cannot read the training data: {error.cause}. Every node that runs trials "
                "reads it: put it on S3 (`python -m srfp.grid data download --dest s3://BUCKET/PREFIX`, then "
                "data.div2k.uri: s3://BUCKET/PREFIX/DIV2K and data.flickr2k.uri: s3://BUCKET/PREFIX/Flickr2K) "
                "or on a shared file system mounted at the same path on every node") from None
    if checks:
        log(f"train: training data readable on {len(checks)} other node{'s' * (len(checks) != 1)}")


def train_grid(grid: GridSpec, specs: list[SISRSpec], storage: Storage, log=print) -> pd.DataFrame:
    """Train every model of ``specs`` that is not finished, as Tune grid trials; returns the PSNR table."""
    pending = [s.model_id for s in specs if not is_trained(storage, s.model_id)]
    log(f"train: {len(specs) - len(pending)} of {len(specs)} models already trained, {len(pending)} to train")
    failed: list[str] = []
    if pending:
        preflight(grid, [s for s in specs if s.model_id in pending], log)
        settings = grid.training
        trainable = tune.with_resources(tune.with_parameters(run_trial, grid=grid, root=storage.uri),
                                        trial_resources(grid))
        tuner = tune.Tuner(
            trainable,
            param_space={"model_id": tune.grid_search(pending)},
            tune_config=tune.TuneConfig(max_concurrent_trials=settings.max_concurrent_trials or None,
                                        trial_name_creator=lambda t: t.config["model_id"],
                                        trial_dirname_creator=lambda t: t.config["model_id"],
                                        reuse_actors=True),  # a new trial skips process start and imports
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

