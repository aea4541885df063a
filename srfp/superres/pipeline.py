"""The Ray Data pipeline: every photo through every trained model, one Parquet shard per model.

For each model the manifest's photos stream, ``superres.batch_size`` at a time, through three stages, so
that the CPU work of some batches overlaps the model's work on others:

1. CPU tasks read each photo and make its (HR, LR) pair with the MATLAB-compatible bicubic;
2. an autoscaling actor pool runs the model alone (each actor holds it, on a GPU or a share of one when
   the grid asks for it), in ``superres.precision``;
3. CPU tasks encode each super-resolved image as PNG, score it, make its row and stage it alone under the
   shard, named by the photo's place in the manifest.

Then tasks pack the staged rows into the shard's Parquet parts of ``superres.rows_per_file`` rows, in the
manifest's order, and the shard is marked complete last, with its precision. A shard's bytes therefore never
depend on which worker finished first (a classifier reads the rows in their stored order, so a shard ordered
by the actors' timing trained the same classifier differently from run to run; Ray Data's ``preserve_order``
did not prevent it: one CI run swapped two rows). The CPU stages live in :mod:`srfp.superres.stages`. The
rows are those :func:`srfp.superres.shards.make_row` makes from
:func:`srfp.superres.core.superresolve_photo`, byte for byte. Complete shards are skipped; a partial one (an
interrupted run) is deleted and redone, so a rerun writes exactly what is missing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    """Stage 2, a Ray Data actor: loads one network once, then turns each LR image into the model's 8-bit output
    (the batch's LR column gives way to an SR column), in tiles of ``superres.tile_size`` that overlap by the
    network's receptive radius, or whole where its output depends on the whole image (:func:`tiling`)."""

    def __init__(self, root: str, grid: GridSpec, network: TrainedNetwork):
        import torch

        settings = grid.superres
        self.device = choose_device(settings.actor.gpus > 0)
        torch.set_num_threads(max(1, math.ceil(settings.actor.cpus)))
        self.model = network.load(root).to(self.device)
        self.scale = network.scale
        self.tile_size, self.tile_overlap = tiling(self.model, settings.tile_size)
        self.precision = settings.precision

    def __call__(self, batch: pa.Table) -> pa.Table:
        sr = [pack_image(superresolve(self.model, unpack_image(lr), self.scale, self.device, self.tile_size,
                                      self.tile_overlap, self.precision))
              for lr in batch.column("lr").to_pylist()]
        return batch.drop_columns(["lr"]).append_column("sr", pa.array(sr, pa.binary()))


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


def superresolution_rows(model: ModelInfo, network: TrainedNetwork, grid: GridSpec, root: str,
                         photos: list[dict]) -> ray.data.Dataset:
    """The three stages over the photos (lazy); each photo's ``position`` in the manifest names its staged row.
    The dataset's own rows are just the positions staged, in whatever order the workers finish."""
    settings = grid.superres
    batches = math.ceil(len(photos) / settings.batch_size)
    each_batch = {"batch_size": settings.batch_size, "batch_format": "pyarrow"}
    cpu_task = {"num_cpus": cpu_task_cpus(settings), **each_batch}
    return (ray.data.from_items([{**photo, "position": position} for position, photo in enumerate(photos)],
                                override_num_blocks=batches)
            .map_batches(read_pairs, fn_kwargs={"root": root, "scale": model.scale}, **cpu_task)
            .map_batches(SuperResolver, fn_constructor_args=(root, grid, network), num_cpus=settings.actor.cpus,
                         num_gpus=settings.actor.gpus or None, compute=actor_pool(settings, batches), **each_batch)
            .map_batches(stage_rows, fn_kwargs={"model": model, "root": root}, **cpu_task))


def pack_shard(storage: Storage, model_id: str, photos: int, rows_per_file: int, cpus: float) -> None:
    """Pack a model's staged rows into its parts (one task each, in parallel), then remove the staged rows."""
    parts = [range(start, min(start + rows_per_file, photos)) for start in range(0, photos, rows_per_file)]
    task = ray.remote(pack).options(num_cpus=cpus)
    ray.get([task.remote(storage.uri, model_id, part, positions) for part, positions in enumerate(parts)])
    storage.delete(f"{shard_folder(model_id)}/{STAGED}")


def superresolve_model(spec: SISRSpec, grid: GridSpec, storage: Storage, photos: list[dict]) -> ray.data.Dataset:
    """Write one trained model's complete shard (see :func:`superresolve_network`)."""
    return superresolve_network(ModelInfo.of_spec(spec), TrainedNetwork(spec.model_id), grid, storage, photos)


def superresolve_network(model: ModelInfo, network: TrainedNetwork, grid: GridSpec, storage: Storage,
                         photos: list[dict]) -> ray.data.Dataset:
    """Write one model's complete shard (replacing a partial one), its rows saying ``model``; returns the
    executed dataset, whose ``get_stats_summary()`` says where the time went."""
    storage.delete(shard_folder(model.model_id))
    staged = superresolution_rows(model, network, grid, storage.uri, photos).materialize()
    positions = sorted(staged.to_pandas()["position"])
    if positions != list(range(len(photos))):
        raise RuntimeError(f"{model.model_id}: {len(positions)} rows staged for {len(photos)} photos; the shard is "
                           "left unmarked and will be redone")
    pack_shard(storage, model.model_id, len(photos), grid.superres.rows_per_file,
               PACK_SHARE * cpu_task_cpus(grid.superres))
    mark_complete(storage, model, len(photos), grid.superres.precision)
    return staged


def superresolve_grid(grid: GridSpec, specs: list[SISRSpec], storage: Storage, log=print) -> dict[str, str]:
    """Super-resolve the photo set with every trained model of ``specs``; returns each model's shard state."""
    networks = [(ModelInfo.of_spec(spec), TrainedNetwork(spec.model_id) if is_trained(storage, spec.model_id) else None)
                for spec in specs]
    return superresolve_networks(grid, networks, storage, "superresolve", "not trained", log)


def superresolve_networks(grid: GridSpec, networks: list[tuple[ModelInfo, TrainedNetwork | None]], storage: Storage,
                          command: str, absent: str, log=print) -> dict[str, str]:
    """Super-resolve the photo set with each network not None (None: the model's network is ``absent``, e.g. not
    trained) whose shard is not complete yet; returns each model's shard state. ``command`` names the command
    that reruns it in the log lines and errors."""
    photos = read_manifest(storage)[["image_id", "tag", "split"]].to_dict("records")
    if not photos:
        raise SuperresolveFailed(f"{storage.uri_of('photos/manifest.parquet')} lists no photos")
    states = {}
    for number, (model, network) in enumerate(networks, 1):
        status = shard_status(storage, model.model_id)
        if status.state == "complete":
            states[model.model_id] = "complete"
        elif network is None:
            states[model.model_id] = absent
        else:
            if status.state == "partial":
                log(f"{command}: {model.model_id}: removing a partial shard")
            try:
                superresolve_network(model, network, grid, storage, photos)
            except Exception as error:  # one model's failure must not stop the others
                states[model.model_id] = f"failed: {error}"
                log(f"{command}: model {number}/{len(networks)} {model.model_id}: failed: {error}")
                continue
            states[model.model_id] = "complete"
            log(f"{command}: model {number}/{len(networks)} {model.model_id}: {len(photos)} images")
    done = sum(state == "complete" for state in states.values())
    skipped = sum(state == absent for state in states.values())
    log(f"{command}: {done} of {len(networks)} shards complete in {storage.uri_of('sr')}"
        + (f"; {skipped} models {absent}" if skipped else ""))
    failed = [model_id for model_id, state in states.items() if state.startswith("failed")]
    if failed:
        raise SuperresolveFailed(f"{len(failed)} models failed: {', '.join(failed)}; rerun `{command}` to redo them")
    return states
