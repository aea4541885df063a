"""The super-resolved dataset's contract: one folder of Parquet files per model, complete once marked.

``<root>/sr/model_id=<id>/part-*.parquet`` holds one row per photo (the columns of :data:`SCHEMA`), in the
photos' manifest order: part ``k`` holds photos ``k * rows_per_file`` onwards. The pipeline first stores
each row alone under ``_staged/`` (named by the photo's place in the manifest), then packs them into the
parts, so the order never depends on which worker finished first. ``<root>/sr/model_id=<id>/_SUCCESS`` is
written last and records the row count, the model's hyperparameters, the precision the images were made in
and the PNG compression level. A folder without the marker is partial: it is deleted and redone, so the
finished dataset has exactly one row per (model, photo), no duplicates and no partial shards.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from srfp.images import encode_png, psnr_y
from srfp.photos import photos_digest
from srfp.provenance import check_unchanged, digest
from srfp.spec import SISRSpec
from srfp.storage import Storage

SCHEMA = pa.schema([
    ("model_id", pa.string()), ("source", pa.string()), ("arch", pa.string()), ("dataset", pa.string()),
    ("scale", pa.int32()), ("loss", pa.string()), ("seed", pa.int32()), ("image_id", pa.string()),
    ("tag", pa.string()), ("split", pa.string()), ("png", pa.binary()), ("height", pa.int32()),
    ("width", pa.int32()), ("psnr", pa.float64()),
])
MARKER = "_SUCCESS"
#: The sub-folder of a shard where the pipeline stores each row alone before packing them into parts.
STAGED = "_staged"
#: zlib level of the stored PNGs. Lossless at any level, so no pixel depends on it, but Table 5's PNG bits
#: per pixel do, so each shard's marker records it. Measured on 960 px images (bench/png_levels.py, README),
#: level 4 encodes in about half the time of level 6 (Pillow's default) for 1.5-3.2% more bytes and the
#: same decode time; levels 1 to 3, faster still, cost 3-13% more bytes.
PNG_LEVEL = 4
#: The precision recorded for images made outside srfp (ingested): whoever made them did not say.
UNKNOWN_PRECISION = "unknown"


def shard_folder(model_id: str) -> str:
    return f"sr/model_id={model_id}"


def part_file(model_id: str, part: int) -> str:
    return f"{shard_folder(model_id)}/part-{part:05d}.parquet"


def staged_row_file(model_id: str, position: int) -> str:
    """Where the pipeline stores the row of the manifest's ``position``-th photo until it is packed."""
    return f"{shard_folder(model_id)}/{STAGED}/{position:08d}.parquet"


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def stage_row(storage: Storage, model_id: str, position: int, row: dict) -> None:
    storage.write_bytes(staged_row_file(model_id, position), _parquet_bytes(pa.Table.from_pylist([row], schema=SCHEMA)))


def pack_part(storage: Storage, model_id: str, part: int, positions: range) -> int:
    """Write one part of a shard from the staged rows of ``positions``, in that order; returns its rows."""
    table = pa.concat_tables([pq.read_table(io.BytesIO(storage.read_bytes(staged_row_file(model_id, position))))
                              for position in positions])
    storage.write_bytes(part_file(model_id, part), _parquet_bytes(table))
    return table.num_rows


@dataclass(frozen=True)
class ModelInfo:
    """What the rows say about the model that made them, and the display name of a model made elsewhere
    (``CARN-M``, where the id-safe ``arch`` is ``CARN_M``; None for the others, and in markers written before it)."""

    model_id: str
    source: str
    arch: str
    dataset: str
    scale: int
    loss: str
    seed: int | None
    name: str | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.arch

    @classmethod
    def of_spec(cls, spec) -> "ModelInfo":
        return cls(spec.model_id, "custom", spec.arch, spec.dataset, spec.scale, spec.loss, spec.seed)

    def value(self, attribute: str):
        return getattr(self, attribute)


def make_row(model: ModelInfo, photo: dict, hr: np.ndarray, sr: np.ndarray) -> dict:
    """One dataset row: the SR image as lossless PNG and its Y-PSNR against the (cropped) photo."""
    if hr.shape != sr.shape:
        raise ValueError(f"{model.model_id} / {photo['image_id']}: super-resolved image is "
                         f"{sr.shape[1]}x{sr.shape[0]}, expected {hr.shape[1]}x{hr.shape[0]}")
    return {"model_id": model.model_id, "source": model.source, "arch": model.arch, "dataset": model.dataset,
            "scale": model.scale, "loss": model.loss, "seed": model.seed, "image_id": photo["image_id"],
            "tag": photo["tag"], "split": photo["split"], "png": encode_png(sr, PNG_LEVEL), "height": sr.shape[0],
            "width": sr.shape[1], "psnr": psnr_y(hr, sr, border=model.scale)}


@dataclass(frozen=True)
class ShardStatus:
    model_id: str
    state: str  # complete | partial | missing
    rows: int


def shard_status(storage: Storage, model_id: str) -> ShardStatus:
    """Whether a model's shard is complete, from storage alone."""
    folder = shard_folder(model_id)
    if storage.is_file(f"{folder}/{MARKER}"):
        return ShardStatus(model_id, "complete", json.loads(storage.read_text(f"{folder}/{MARKER}"))["rows"])
    files = storage.list(folder, recursive=True)
    return ShardStatus(model_id, "partial" if files else "missing", 0)


def mark_complete(storage: Storage, model: ModelInfo, expected_rows: int, precision: str) -> int:
    """Check the shard has exactly one row per expected photo, then write its marker; returns the row count.

    The marker also records the model's hyperparameters, so later stages list models without reading images,
    the ``precision`` the images were made in (``float32``, ``bfloat16``, or ``unknown``), :data:`PNG_LEVEL`
    and what the images were made from (:func:`shard_inputs`)."""
    folder = shard_folder(model.model_id)
    table = read_shard(storage, model.model_id, columns=["image_id"])
    ids = table.column("image_id").to_pylist()
    if len(ids) != expected_rows or len(set(ids)) != len(ids):
        raise RuntimeError(f"{storage.uri_of(folder)}: {len(ids)} rows ({len(set(ids))} distinct photos), "
                           f"expected {expected_rows}; the shard is left unmarked and will be redone")
    marker = {"rows": len(ids), "model": asdict(model), "precision": precision, "png_level": PNG_LEVEL,
              **shard_inputs(storage, model.model_id, photos_digest(storage))}
    storage.write_text(f"{folder}/{MARKER}", json.dumps(marker))
    return len(ids)


def shard_inputs(storage: Storage, model_id: str, photos: str) -> dict:
    """What a shard's images are made from: the photo set (its :func:`~srfp.photos.photos_digest`, ``photos``)
    and the trained model (the digest of its record, unique to each training; None for images made elsewhere)."""
    from srfp.sisr.train import record_path  # imports torch: not when the pipeline's CPU stages import this module

    record = record_path(model_id)
    return {"photos_digest": photos, "trained_model_digest": digest(storage.read_text(record))
            if storage.is_file(record) else None}


def prepare_shards(storage: Storage, specs: list[SISRSpec], precision: str, force: bool = False) -> None:
    """Before any super-resolution: with ``force``, delete the models' shards; remove the temporaries of killed
    writes; stop with :class:`~srfp.provenance.StaleWork` when a complete shard was made from other photos, another
    training of its model, or in another precision."""
    storage.remove_stale_temporaries("sr")
    photos = photos_digest(storage)
    for spec in specs:
        folder = shard_folder(spec.model_id)
        if force:
            storage.delete(folder)
        if storage.is_file(f"{folder}/{MARKER}"):
            current = {"precision": precision, **shard_inputs(storage, spec.model_id, photos)}
            stored = json.loads(storage.read_text(f"{folder}/{MARKER}"))
            check_unchanged(f"the shard {storage.uri_of(folder)}", stored, current, "superresolve")


def complete_models(storage: Storage) -> list[ModelInfo]:
    """Every model with a complete shard (grid, published and external ones), in model id order."""
    models = []
    for folder in storage.list_dirs("sr"):
        if storage.is_file(f"{folder}/{MARKER}"):
            models.append(ModelInfo(**json.loads(storage.read_text(f"{folder}/{MARKER}"))["model"]))
    return sorted(models, key=lambda model: model.model_id)


def read_shard(storage: Storage, model_id: str, columns: list[str] | None = None) -> pa.Table:
    """Every row of a model's shard (its Parquet parts, in name order)."""
    parts = [p for p in storage.list(shard_folder(model_id)) if p.endswith(".parquet")]
    tables = [pq.read_table(io.BytesIO(storage.read_bytes(p)), columns=columns) for p in parts]
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table().select(columns or SCHEMA.names)


def write_shard(storage: Storage, model: ModelInfo, rows: list[dict], precision: str) -> None:
    """Write a whole shard in one Parquet file, then its marker (for shards made outside Ray Data)."""
    storage.delete(shard_folder(model.model_id))
    storage.write_bytes(part_file(model.model_id, 0), _parquet_bytes(pa.Table.from_pylist(rows, schema=SCHEMA)))
    mark_complete(storage, model, len(rows), precision)
