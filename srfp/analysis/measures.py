"""Per-image measures of the super-resolved dataset: size, PNG bits per pixel, greyscale entropy, acutance.

Acutance is the variance of the Laplacian of the greyscale image (4-neighbour kernel, inner pixels),
the study's hand-crafted baseline feature. Measures are cached in ``<root>/report/image_measures.parquet``
and computed only for models that are not in it yet.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from srfp.images import decode_image
from srfp.storage import Storage
from srfp.superres.shards import ModelInfo, read_shard

MEASURES_PATH = "report/image_measures.parquet"


def greyscale(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an RGB uint8 image, as float64 in [0, 255]."""
    return image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def acutance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over the inner pixels."""
    laplacian = (grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1])
    return float(laplacian.var())


def entropy(grey: np.ndarray) -> float:
    """Shannon entropy (bits) of the 256-level histogram of the greyscale image."""
    counts = np.bincount(np.clip(np.rint(grey), 0, 255).astype(np.int64).ravel(), minlength=256)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def measure_png(png: bytes, name: str = "<png>") -> dict:
    image = decode_image(png, name)
    grey = greyscale(image)
    pixels = image.shape[0] * image.shape[1]
    return {"pixels": pixels, "png_bits_per_pixel": 8 * len(png) / pixels, "grey_entropy": entropy(grey),
            "acutance": acutance(grey)}


def cached_per_model(storage: Storage, path: str, models: list[ModelInfo], measure: Callable[[ModelInfo], list[dict]],
                     what: str, log=print) -> pd.DataFrame:
    """Rows of ``measure(model)`` for these models, cached in the Parquet file ``path`` of the root.

    Models already in the file are read back; each newly measured model is added to the file at once, so
    an interrupted report keeps the models it finished.
    """
    cached = (pq.read_table(io.BytesIO(storage.read_bytes(path))).to_pandas()
              if storage.is_file(path) else pd.DataFrame(columns=["model_id"]))
    missing = [m for m in models if m.model_id not in set(cached["model_id"])]
    for number, model in enumerate(missing, 1):
        rows = pd.DataFrame(measure(model))
        cached = pd.concat([cached, rows], ignore_index=True) if len(cached) else rows
        sink = io.BytesIO()
        cached.to_parquet(sink, index=False)
        storage.write_bytes(path, sink.getvalue())
        log(f"report: {what} of model {number}/{len(missing)} {model.model_id}")
    wanted = {m.model_id for m in models}
    return cached[cached["model_id"].isin(wanted)].reset_index(drop=True)


def _measure_model(storage: Storage, model: ModelInfo) -> list[dict]:
    shard = read_shard(storage, model.model_id, columns=["image_id", "split", "png"]).to_pylist()
    return [{"model_id": model.model_id, "source": model.source, "arch": model.arch, "dataset": model.dataset,
             "scale": model.scale, "loss": model.loss, "seed": model.seed, "image_id": row["image_id"],
             "split": row["split"], **measure_png(row["png"], f"{model.model_id}/{row['image_id']}")}
            for row in shard]


def image_measures(storage: Storage, models: list[ModelInfo], log=print) -> pd.DataFrame:
    """Measures of every image of these models (cached per model in the storage root)."""
    return cached_per_model(storage, MEASURES_PATH, models, lambda model: _measure_model(storage, model),
                            "measured the images", log)
