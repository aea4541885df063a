"""The CPU stages of the super-resolution pipeline (see :mod:`srfp.superres.pipeline`), free of torch.

Stage 1 reads photos and makes their (HR, LR) pairs, stage 3 turns super-resolved images into dataset rows
and stages each one under its shard, named by the photo's place in the manifest; stage 2, the model, is the
pipeline's actor. Between stages the images travel as ``.npy`` bytes. Nothing here imports torch, so the Ray
workers running these tasks start in about a second rather than the several seconds torch takes.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from srfp.images import downscale
from srfp.photos import read_photo
from srfp.storage import Storage
from srfp.superres.shards import SCHEMA, ModelInfo, make_row, pack_part, stage_row


def pack_image(image: np.ndarray) -> bytes:
    """An image as ``.npy`` bytes (its shape and dtype included): the form images take between stages."""
    buffer = io.BytesIO()
    np.save(buffer, image, allow_pickle=False)
    return buffer.getvalue()


def unpack_image(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def read_pairs(batch: pa.Table, root: str) -> pa.Table:
    """Stage 1: the batch's photos with their HR (cropped to a multiple of the row's ``scale``) and LR images."""
    storage = Storage(root)
    pairs = [downscale(read_photo(storage, image_id), scale)
             for image_id, scale in zip(batch.column("image_id").to_pylist(), batch.column("scale").to_pylist())]
    return (batch.append_column("hr", pa.array([pack_image(hr) for hr, _ in pairs], pa.binary()))
            .append_column("lr", pa.array([pack_image(lr) for _, lr in pairs], pa.binary())))


def encode_rows(batch: pa.Table, models: dict[str, ModelInfo]) -> pa.Table:
    """Stage 3: each super-resolved image's dataset row (lossless PNG, Y-PSNR against its HR image), its model
    that of the row's ``model_id``."""
    rows = [make_row(models[photo["model_id"]], photo, unpack_image(photo["hr"]), unpack_image(photo["sr"]))
            for photo in batch.to_pylist()]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def stage_rows(batch: pa.Table, models: dict[str, ModelInfo], root: str) -> pa.Table:
    """Stage 3 in the pipeline: store each photo's row alone under its model's shard, named by its ``position`` in
    the manifest (the shard's parts are packed from them in that order); rows whose model failed (an ``error``, no
    image) are not stored. Returns the model id, position and error of every row."""
    storage = Storage(root)
    made = batch.filter(pc.is_null(batch.column("error")))
    for model_id, position, row in zip(made.column("model_id").to_pylist(), made.column("position").to_pylist(),
                                       encode_rows(made, models).to_pylist()):
        stage_row(storage, model_id, position, row)
    return batch.select(["model_id", "position", "error"])


def pack(root: str, model_id: str, part: int, positions: range) -> int:
    """A packing task: one part of a shard from its staged rows, in a worker that never imports torch."""
    return pack_part(Storage(root), model_id, part, positions)
