"""Batch inference with a trained classifier: one row per image, with its probabilities and features.

``predictions.parquet`` columns: the image's model and its hyperparameters (``model_id``, ``source``,
``arch``, ``dataset``, ``scale``, ``loss``, ``seed``), ``image_id``, ``role`` (``test``: an image the task
is scored on; ``published``: a published model's image shown to a custom-model classifier),
``true_label`` and ``predicted_label`` (strings), ``probabilities`` (one per class, in the task's label
order) and ``features`` (the backbone's pooled pre-logits, e.g. 2048 for Xception).
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from srfp.classify.data import CropRows, read_split
from srfp.classify.loop import weights_path
from srfp.gridspec import ClassifierSettings
from srfp.storage import Storage

METADATA = ["model_id", "source", "arch", "dataset", "scale", "loss", "seed", "image_id"]
COLUMN_TYPES = {**{name: pa.string() for name in METADATA}, "scale": pa.int32(), "seed": pa.int32(),
                "role": pa.string(), "true_label": pa.string(), "predicted_label": pa.string()}


def _float_lists(matrix: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.astype(np.float32).ravel()), matrix.shape[1])


class Predictor:
    """A Ray Data actor holding a trained classifier; turns shard rows into prediction rows."""

    def __init__(self, root: str, folder: str, settings: ClassifierSettings, target: str, labels: list[str]):
        import torch

        from srfp.classify.network import Classifier, load_weights
        from srfp.devices import choose_device

        self.torch = torch
        self.device = choose_device(settings.worker.gpus > 0)
        torch.set_num_threads(max(1, int(settings.worker.cpus)))
        self.classifier = Classifier(settings.backbone, len(labels), pretrained=False)
        load_weights(self.classifier, Storage(root).read_bytes(weights_path(folder)))
        self.classifier.to(self.device).eval()
        self.crop = CropRows(target, labels, settings.crop_size)
        self.target, self.labels = target, np.array(labels)

    def __call__(self, batch: dict[str, np.ndarray], role: str) -> pa.Table:
        from srfp.devices import autocast

        rows = self.crop(batch)
        with self.torch.no_grad(), autocast(self.device):
            logits, features = self.classifier.forward_with_features(self.torch.from_numpy(rows["image"]).to(self.device))
        probabilities = logits.float().softmax(1).cpu().numpy()
        table = {name: rows[name] for name in METADATA}
        table.update(role=[role] * len(probabilities), true_label=[str(v) for v in rows[self.target]],
                     predicted_label=self.labels[probabilities.argmax(1)] if len(probabilities) else [])
        return pa.table({**{k: pa.array(list(v), type=COLUMN_TYPES[k], from_pandas=True) for k, v in table.items()},
                         "probabilities": _float_lists(probabilities), "features": _float_lists(features.float().cpu().numpy())})


def predict(storage: Storage, folder: str, settings: ClassifierSettings, target: str, labels: list[str],
            model_ids_by_role: dict[str, list[str]]) -> pa.Table:
    """Predict every test image of the models of each role, on Ray Data; rows sorted by model and image."""
    import ray

    tables = []
    for role, model_ids in model_ids_by_role.items():
        if not model_ids:
            continue
        rows = read_split(storage, model_ids, "test").map_batches(
            Predictor, fn_constructor_args=(storage.uri, folder, settings, target, labels), fn_kwargs={"role": role},
            batch_size=settings.batch_size, batch_format="numpy", num_cpus=min(settings.worker.cpus, 1.0),
            num_gpus=settings.worker.gpus or None, compute=ray.data.ActorPoolStrategy(size=1))
        tables += [table for table in ray.get(rows.to_arrow_refs()) if table.num_rows]
    return pa.concat_tables(tables).sort_by([("model_id", "ascending"), ("image_id", "ascending")])


def write_predictions(storage: Storage, path: str, table: pa.Table) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    storage.write_bytes(path, sink.getvalue())


def read_predictions(storage: Storage, path: str):
    """The predictions as a pandas DataFrame (probabilities and features as arrays)."""
    return pq.read_table(io.BytesIO(storage.read_bytes(path))).to_pandas()
