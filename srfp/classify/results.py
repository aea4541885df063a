"""The classifier results' contract: where each task's results live, and how they are written and read.

``<root>/classifiers/<backbone>/<task>/`` holds the training state (``checkpoint.pt``, ``progress.json``,
``model.safetensors``; see :mod:`srfp.classify.loop`), ``predictions.parquet`` (one row per test image; see
:func:`prediction_table`) and, written last, ``result.json``: labels, models, settings,
per-epoch history and the headline accuracies. A task with a result is complete. The classifier stage
writes them; ``status`` and the report read them through this module only.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from srfp.storage import Storage

RESULT = "result.json"
PREDICTIONS = "predictions.parquet"
#: The image's model, its hyperparameters and the image: the first columns of a prediction row.
METADATA = ["model_id", "source", "arch", "dataset", "scale", "loss", "seed", "image_id"]
_COLUMN_TYPES = {**{name: pa.string() for name in METADATA}, "scale": pa.int32(), "seed": pa.int32(),
                 "role": pa.string(), "true_label": pa.string(), "predicted_label": pa.string()}
#: The roles of prediction rows and the split of each role's images: ``test``, the images a task is scored
#: on; ``published``, published models' images shown to a custom-model classifier; ``known``, the test
#: images of a holdout task's training models (the unknown-model detector's known images, see
#: :mod:`srfp.analysis.openset`); ``validation``, the training models' validation images (what the detector's
#: threshold is calibrated on).
ROLE_SPLITS = {"test": "test", "published": "test", "known": "test", "validation": "val"}


def role_of_split(model_ids_by_role: dict[str, list[str]]) -> dict[tuple[str, str], str]:
    """(split, model_id) -> role: which role a model's images of a split are predicted in."""
    return {(ROLE_SPLITS[role], model_id): role for role, model_ids in model_ids_by_role.items()
            for model_id in model_ids}


def task_folder(backbone: str, task) -> str:
    """Where a task's classifier lives (``task``: a Task or its name); one folder per backbone, so backbones
    can be compared on one root."""
    return f"classifiers/{backbone}/{task if isinstance(task, str) else task.name}"


def is_complete(storage: Storage, folder: str) -> bool:
    return storage.is_file(f"{folder}/{RESULT}")


def read_result(storage: Storage, folder: str) -> dict:
    return json.loads(storage.read_text(f"{folder}/{RESULT}"))


def write_result(storage: Storage, folder: str, result: dict) -> None:
    storage.write_text(f"{folder}/{RESULT}", json.dumps(result, indent=1))


def all_results(storage: Storage) -> dict[str, dict[str, dict]]:
    """Every finished classifier of a root: backbone -> task name -> result record (with its ``folder``)."""
    results = {}
    for backbone_folder in storage.list_dirs("classifiers"):
        for folder in storage.list_dirs(backbone_folder):
            if is_complete(storage, folder):
                result = read_result(storage, folder)
                results.setdefault(result["backbone"], {})[result["task"]] = {**result, "folder": folder}
    return results


def _float_lists(matrix: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.astype(np.float32).ravel()), matrix.shape[1])


def prediction_table(metadata: dict, roles: list[str], true_labels: list[str], labels, probabilities: np.ndarray,
                     features: np.ndarray) -> pa.Table:
    """Prediction rows: ``metadata`` (the :data:`METADATA` columns), ``role`` (see :data:`ROLE_SPLITS`), ``true_label``
    and ``predicted_label`` (strings), ``probabilities`` (one per class, in the order of ``labels``) and
    ``features`` (what the classifier saw last before its decision, one vector per image)."""
    columns = {**metadata, "role": roles, "true_label": true_labels,
               "predicted_label": list(np.asarray(labels)[probabilities.argmax(1)]) if len(probabilities) else []}
    return pa.table({**{name: pa.array(list(values), type=_COLUMN_TYPES[name], from_pandas=True)
                        for name, values in columns.items()},
                     "probabilities": _float_lists(probabilities), "features": _float_lists(features)})


def write_predictions(storage: Storage, folder: str, table: pa.Table) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    storage.write_bytes(f"{folder}/{PREDICTIONS}", sink.getvalue())


def read_predictions(storage: Storage, folder: str):
    """A task's predictions as a pandas DataFrame (probabilities and features as arrays)."""
    return pq.read_table(io.BytesIO(storage.read_bytes(f"{folder}/{PREDICTIONS}"))).to_pandas()
