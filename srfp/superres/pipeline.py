"""The Ray Data pipeline: every photo through every trained model, one Parquet shard per model.

For each model, the manifest's photos stream through an actor pool (each actor holds the model, on a
GPU or a share of one when the grid asks for it) and made in ``superres.precision``; the rows are
written under ``<root>/sr/model_id=<id>/`` and the shard is marked complete last, with its precision.
Complete shards are skipped; a partial one (an interrupted run) is deleted and redone, so a rerun
writes exactly what is missing.
"""

from __future__ import annotations

import math

import pyarrow as pa
import ray

from srfp.devices import choose_device
from srfp.errors import UserError
from srfp.gridspec import GridSpec
from srfp.photos import read_manifest, read_photo
from srfp.sisr.train import is_trained, load_trained
from srfp.spec import SISRSpec
from srfp.storage import Storage
from srfp.superres.core import superresolve_photo
from srfp.superres.shards import SCHEMA, ModelInfo, make_row, mark_complete, shard_folder, shard_status


class SuperresolveFailed(UserError):
    """Some models could not be super-resolved; the others' shards are complete."""


class SuperResolver:
    """A Ray Data actor: loads one trained model once, then turns batches of photo rows into dataset rows."""

    def __init__(self, root: str, grid: GridSpec, model_id: str):
        import torch

        settings = grid.superres
        self.storage = Storage(root)
        self.device = choose_device(settings.actor.gpus > 0)
        torch.set_num_threads(max(1, math.ceil(settings.actor.cpus)))
        self.model = load_trained(self.storage, model_id).to(self.device)
        self.info = ModelInfo.of_spec(SISRSpec.from_id(model_id))
        self.settings = settings

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        for photo in batch.to_pylist():
            image = read_photo(self.storage, photo["image_id"])
            hr, sr = superresolve_photo(self.model, image, self.info.scale, self.device, self.settings.tile_size,
                                        self.settings.tile_overlap, self.settings.precision)
            rows.append(make_row(self.info, photo, hr, sr))
        return pa.Table.from_pylist(rows, schema=SCHEMA)


def actor_pool_size(grid: GridSpec) -> int:
    """The grid's ``superres.actors``, or (0) as many actors as the cluster's GPUs or CPUs fit."""
    settings = grid.superres
    if settings.actors:
        return settings.actors
    resources = ray.cluster_resources()
    if settings.actor.gpus > 0:
        return max(1, int(resources.get("GPU", 0) / settings.actor.gpus))
    return max(1, int(resources.get("CPU", 1) / max(settings.actor.cpus, 0.5)) - 1)


def superresolve_model(spec: SISRSpec, grid: GridSpec, storage: Storage, photos: list[dict]) -> int:
    """Write one model's complete shard (replacing a partial one); returns its row count."""
    settings = grid.superres
    storage.delete(shard_folder(spec.model_id))
    dataset = ray.data.from_items(photos, override_num_blocks=max(1, math.ceil(len(photos) / settings.batch_size)))
    rows = dataset.map_batches(
        SuperResolver, fn_constructor_args=(storage.uri, grid, spec.model_id), batch_format="pyarrow",
        batch_size=settings.batch_size, num_cpus=settings.actor.cpus, num_gpus=settings.actor.gpus or None,
        compute=ray.data.ActorPoolStrategy(size=min(actor_pool_size(grid), len(photos))))
    rows.write_parquet(storage.path(shard_folder(spec.model_id)), filesystem=storage.fs,
                       min_rows_per_file=settings.rows_per_file)
    return mark_complete(storage, ModelInfo.of_spec(spec), len(photos), settings.precision)


def superresolve_grid(grid: GridSpec, specs: list[SISRSpec], storage: Storage, log=print) -> dict[str, str]:
    """Super-resolve the photo set with every trained model of ``specs``; returns each model's shard state."""
    manifest = read_manifest(storage)
    photos = manifest[["image_id", "tag", "split"]].to_dict("records")
    if not photos:
        raise SuperresolveFailed(f"{storage.uri_of('photos/manifest.parquet')} lists no photos")
    states = {}
    for number, spec in enumerate(specs, 1):
        status = shard_status(storage, spec.model_id)
        if status.state == "complete":
            states[spec.model_id] = "complete"
        elif not is_trained(storage, spec.model_id):
            states[spec.model_id] = "not trained"
        else:
            if status.state == "partial":
                log(f"superresolve: {spec.model_id}: removing a partial shard")
            try:
                rows = superresolve_model(spec, grid, storage, photos)
            except Exception as error:  # one model's failure must not stop the others
                states[spec.model_id] = f"failed: {error}"
                log(f"superresolve: model {number}/{len(specs)} {spec.model_id}: failed: {error}")
                continue
            states[spec.model_id] = "complete"
            log(f"superresolve: model {number}/{len(specs)} {spec.model_id}: {rows} images")
    done = sum(state == "complete" for state in states.values())
    untrained = sum(state == "not trained" for state in states.values())
    log(f"superresolve: {done} of {len(specs)} shards complete in {storage.uri_of('sr')}"
        + (f"; {untrained} models not trained yet" if untrained else ""))
    failed = [model_id for model_id, state in states.items() if state.startswith("failed")]
    if failed:
        raise SuperresolveFailed(f"{len(failed)} models failed: {', '.join(failed)}; rerun `superresolve` to redo them")
    return states
