"""The Ray Data pipeline: every photo through every model, one Parquet shard per model.

All the models still to do share one pipeline: their (model, photo) rows stream, model after model,
``superres.batch_size`` at a time, through three stages, so that the CPU work of some batches overlaps the
models' work on others and no model waits for a pipeline of its own to start or drain:

1. CPU tasks read each photo and make its (HR, LR) pair with the MATLAB-compatible bicubic, at its model's scale;
2. an autoscaling actor pool runs the models alone (each actor holds one network at a time, on a GPU or a share of
   one when the grid asks for it, and loads the next when its rows arrive), in ``superres.precision``;
3. CPU tasks encode each super-resolved image as PNG, score it, make its row and stage it alone under its model's
   shard, named by the photo's place in the manifest.

As soon as every photo of a model has passed, the driver packs the staged rows into the shard's Parquet parts of
``superres.rows_per_file`` rows, in the manifest's order, and marks the shard complete last, with its precision;
an interrupted run keeps every shard finished before it. A shard's bytes never depend on which worker finished
first, nor on which models shared the pipeline (a classifier reads the rows in their stored order, so a shard
ordered by the actors' timing trained the same classifier differently from run to run; Ray Data's
``preserve_order`` did not prevent it: one CI run swapped two rows). The CPU stages live in
:mod:`srfp.superres.stages`. The rows are those :func:`srfp.superres.shards.make_row` makes from
:func:`srfp.superres.core.superresolve_photo`, byte for byte. A model whose network fails (its weights do not
load, its image does not fit) gets no shard and the others go on. Complete shards are skipped; a partial one (an
interrupted run) is deleted and redone, so a rerun writes exactly what is missing.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Iterator, Protocol

import pyarrow as pa
import ray

from srfp.devices import choose_device
from srfp.errors import UserError
from srfp.gridspec import GridSpec, SuperresSettings
from srfp.photos import read_manifest
from srfp.sisr.train import is_trained, load_trained
from srfp.spec import SISRSpec
from srfp.storage import Storage
from srfp.superres.core import superresolve, tiling
from srfp.superres.shards import STAGED, ModelInfo, mark_complete, shard_folder, shard_status
from srfp.superres.stages import pack, pack_image, read_pairs, stage_rows, unpack_image

#: A packing task's CPUs, as a share of a CPU stage task's: it mostly waits on storage.
PACK_SHARE = 0.25


class Network(Protocol):
    """What the pipeline super-resolves with: a model's scale and how an actor loads its network."""

    scale: int

    def load(self, root: str): ...


class SuperresolveFailed(UserError):
    """Some models could not be super-resolved; the others' shards are complete."""


@dataclass(frozen=True)
class TrainedNetwork:
    """A model srfp trained, loaded from the run's storage root (a published one:
    :class:`srfp.superres.published.PublishedNetwork`)."""

    model_id: str

    @property
    def scale(self) -> int:
        return SISRSpec.from_id(self.model_id).scale

    def load(self, root: str):
        return load_trained(Storage(root), self.model_id)


class SuperResolver:
    """Stage 2, a Ray Data actor: turns each row's LR image into its model's 8-bit output (the batch's LR column
    gives way to an SR column), in tiles of ``superres.tile_size`` that overlap by the network's receptive radius,
    or whole where its output depends on the whole image (:func:`tiling`). It holds one network at a time, loaded
    when the first row of its model arrives. A network that fails to load or run leaves its rows without an image
    and with the ``error``, so that the other models go on."""

    def __init__(self, root: str, grid: GridSpec, networks: dict[str, Network]):
        import torch

        settings = grid.superres
        self.root, self.networks, self.precision, self.tile_size = root, networks, settings.precision, settings.tile_size
        self.device = choose_device(settings.actor.gpus > 0)
        torch.set_num_threads(max(1, math.ceil(settings.actor.cpus)))
        self.model_id, self.model, self.tiling = None, None, None
        self.errors: dict[str, str] = {}

    def _hold(self, model_id: str) -> None:
        """Hold the network of ``model_id``, in place of the one held before."""
        if model_id != self.model_id:
            self.model_id, self.model = None, None  # the previous network's memory is freed before the next loads
            self.model = self.networks[model_id].load(self.root).to(self.device)
            self.model_id, self.tiling = model_id, tiling(self.model, self.tile_size)

    def _superresolve(self, model_id: str, lr: bytes) -> bytes | None:
        if model_id not in self.errors:
            try:
                self._hold(model_id)
                return pack_image(superresolve(self.model, unpack_image(lr), self.networks[model_id].scale,
                                               self.device, *self.tiling, self.precision))
            except Exception as error:  # this model fails; the others' rows go on
                self.errors[model_id] = f"{type(error).__name__}: {error}"
        return None

    def __call__(self, batch: pa.Table) -> pa.Table:
        model_ids = batch.column("model_id").to_pylist()
        sr = [self._superresolve(model_id, lr) for model_id, lr in zip(model_ids, batch.column("lr").to_pylist())]
        return (batch.drop_columns(["lr"]).append_column("sr", pa.array(sr, pa.binary()))
                .append_column("error", pa.array([self.errors.get(model_id) for model_id in model_ids], pa.string())))


def cpu_task_cpus(settings: SuperresSettings) -> float:
    """The CPUs of each CPU-stage task: half an actor's, and at most one.

    No more than an actor: actors with a fraction of a CPU can leave every node less than one free CPU (two
    0.5-CPU actors on two 1-CPU nodes leave 0.5 on each), and 1-CPU tasks would then wait for ever, while a
    smaller task fits wherever another actor would. Not the same as an actor's: Ray Data fuses a task stage
    into the next actor stage when both ask for the same resources, and the model's actors would then read
    and downscale photos themselves.
    """
    return min(1.0, settings.actor.cpus / 2) if settings.actor.cpus else 1.0


def actors_that_fit(settings: SuperresSettings) -> int:
    """How many model actors the cluster holds now, beside one CPU for the CPU stages' tasks (at least one)."""
    total = ray.cluster_resources()
    fits = [(total.get("CPU", 0) - 1) / settings.actor.cpus] if settings.actor.cpus else []
    if settings.actor.gpus:
        fits.append(total.get("GPU", 0) / settings.actor.gpus)
    return max(1, math.floor(min(fits, default=1) + 1e-9))


def actor_pool(settings: SuperresSettings, batches: int) -> ray.data.ActorPoolStrategy:
    """The model actors: as many as the cluster fits now to start with, growing while batches wait (onto
    nodes an autoscaler adds) up to ``superres.actors``, or (0) one per batch of photos."""
    most = min(settings.actors or batches, batches)
    return ray.data.ActorPoolStrategy(min_size=min(actors_that_fit(settings), most), max_size=most)


def superresolution_rows(models: dict[str, tuple[ModelInfo, Network]], grid: GridSpec, root: str,
                         photos: list[dict]) -> ray.data.Dataset:
    """The three stages over every (model, photo) row, model after model (lazy); each photo's ``position`` in the
    manifest names its staged row. The dataset's own rows are the ``model_id``, ``position`` and ``error`` (None, or
    why the model failed) of each row passed, in whatever order the workers finish."""
    settings = grid.superres
    rows = [{"model_id": model_id, "scale": model.scale, **photo, "position": position}
            for model_id, (model, _) in models.items() for position, photo in enumerate(photos)]
    batches = len(models) * math.ceil(len(photos) / settings.batch_size)
    each_batch = {"batch_size": settings.batch_size, "batch_format": "pyarrow"}
    cpu_task = {"num_cpus": cpu_task_cpus(settings), **each_batch}
    networks = {model_id: network for model_id, (_, network) in models.items()}
    infos = {model_id: model for model_id, (model, _) in models.items()}
    return (ray.data.from_items(rows, override_num_blocks=batches)
            .map_batches(read_pairs, fn_kwargs={"root": root}, **cpu_task)
            .map_batches(SuperResolver, fn_constructor_args=(root, grid, networks), num_cpus=settings.actor.cpus,
                         num_gpus=settings.actor.gpus or None, compute=actor_pool(settings, batches), **each_batch)
            .map_batches(stage_rows, fn_kwargs={"models": infos, "root": root}, **cpu_task))


def pack_shard(storage: Storage, model_id: str, photos: int, rows_per_file: int, cpus: float) -> None:
    """Pack a model's staged rows into its parts (one task each, in parallel), then remove the staged rows."""
    parts = [range(start, min(start + rows_per_file, photos)) for start in range(0, photos, rows_per_file)]
    task = ray.remote(pack).options(num_cpus=cpus)
    ray.get([task.remote(storage.uri, model_id, part, positions) for part, positions in enumerate(parts)])
    storage.delete(f"{shard_folder(model_id)}/{STAGED}")


def finished_shards(rows: ray.data.Dataset, models: dict[str, ModelInfo], grid: GridSpec, storage: Storage,
                    photos: int) -> Iterator[tuple[str, str]]:
    """Run the pipeline's ``rows``, and as each model's last photo passes, yield its model id and state: "complete"
    once its shard is packed and marked, or "failed: why" (its shard left unmarked, to be redone). Should the
    pipeline itself fail, every model not finished yet fails with it."""
    passed: dict[str, set[int]] = collections.defaultdict(set)
    errors: dict[str, str] = {}
    try:
        for batch in rows.iter_batches(batch_size=None, batch_format="pyarrow"):
            for model_id, position, error in zip(*(batch.column(name).to_pylist()
                                                   for name in ("model_id", "position", "error"))):
                passed[model_id].add(position)
                if error:
                    errors.setdefault(model_id, error)
                if len(passed[model_id]) == photos:
                    failed = model_id in errors
                    yield model_id, (f"failed: {errors[model_id]}" if failed
                                     else _finish_shard(models[model_id], grid, storage, photos))
    except Exception as error:  # the pipeline failed: every unfinished model with it
        for model_id in models:
            if len(passed[model_id]) < photos:
                yield model_id, f"failed: {error}"


def _finish_shard(model: ModelInfo, grid: GridSpec, storage: Storage, photos: int) -> str:
    """Pack and mark a model whose every row is staged; returns its state."""
    try:
        pack_shard(storage, model.model_id, photos, grid.superres.rows_per_file,
                   PACK_SHARE * cpu_task_cpus(grid.superres))
        mark_complete(storage, model, photos, grid.superres.precision)
    except Exception as error:  # this model's shard fails; the others go on
        return f"failed: {error}"
    return "complete"


def superresolve_model(spec: SISRSpec, grid: GridSpec, storage: Storage, photos: list[dict]) -> ray.data.Dataset:
    """Write one trained model's complete shard (replacing a partial one) through the pipeline; returns the
    executed dataset, whose ``get_stats_summary()`` says where the time went."""
    model = ModelInfo.of_spec(spec)
    storage.delete(shard_folder(model.model_id))
    rows = superresolution_rows({model.model_id: (model, TrainedNetwork(spec.model_id))}, grid, storage.uri, photos)
    for _, state in finished_shards(rows, {model.model_id: model}, grid, storage, len(photos)):
        if state != "complete":
            raise RuntimeError(f"{model.model_id}: {state}")
    return rows


def superresolve_grid(grid: GridSpec, specs: list[SISRSpec], storage: Storage, log=print) -> dict[str, str]:
    """Super-resolve the photo set with every trained model of ``specs``; returns each model's shard state."""
    networks = [(ModelInfo.of_spec(spec), TrainedNetwork(spec.model_id) if is_trained(storage, spec.model_id) else None)
                for spec in specs]
    return superresolve_networks(grid, networks, storage, "superresolve", "not trained", log)


def superresolve_networks(grid: GridSpec, networks: list[tuple[ModelInfo, Network | None]], storage: Storage,
                          command: str, absent: str, log=print) -> dict[str, str]:
    """Super-resolve the photo set, in one pipeline, with each network not None (None: the model's network is
    ``absent``, e.g. not trained) whose shard is not complete yet; returns each model's shard state. ``command``
    names the command that reruns it in the log lines and errors."""
    photos = read_manifest(storage)[["image_id", "tag", "split"]].to_dict("records")
    if not photos:
        raise SuperresolveFailed(f"{storage.uri_of('photos/manifest.parquet')} lists no photos")
    states, todo = {}, {}
    for model, network in networks:
        status = shard_status(storage, model.model_id)
        if status.state == "complete":
            states[model.model_id] = "complete"
        elif network is None:
            states[model.model_id] = absent
        else:
            if status.state == "partial":
                log(f"{command}: {model.model_id}: removing a partial shard")
            storage.delete(shard_folder(model.model_id))
            todo[model.model_id] = (model, network)
    if todo:
        numbers = {model.model_id: number for number, (model, _) in enumerate(networks, 1)}
        rows = superresolution_rows(todo, grid, storage.uri, photos)
        infos = {model_id: model for model_id, (model, _) in todo.items()}
        for model_id, state in finished_shards(rows, infos, grid, storage, len(photos)):
            states[model_id] = state
            log(f"{command}: model {numbers[model_id]}/{len(networks)} {model_id}: "
                + (f"{len(photos)} images" if state == "complete" else state))
    done = sum(state == "complete" for state in states.values())
    skipped = sum(state == absent for state in states.values())
    log(f"{command}: {done} of {len(networks)} shards complete in {storage.uri_of('sr')}"
        + (f"; {skipped} models {absent}" if skipped else ""))
    failed = [model_id for model_id, state in states.items() if state.startswith("failed")]
    if failed:
        raise SuperresolveFailed(f"{len(failed)} models failed: {', '.join(failed)}; rerun `{command}` to redo them")
    return states
