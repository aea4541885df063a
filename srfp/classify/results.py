"""The classifier results' contract: where each task's results live, and how they are written and read.

``<root>/classifiers/<backbone>/<task>/`` holds the training state (``checkpoint.pt``, ``progress.json``,
``model.safetensors``; see :mod:`srfp.classify.loop`), ``predictions.parquet`` (one row per test image; its
columns in :mod:`srfp.classify.predict`) and, written last, ``result.json``: labels, models, settings,
per-epoch history and the headline accuracies. A task with a result is complete. The classifier stage
writes them; ``status`` and the report read them through this module only.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from srfp.storage import Storage

RESULT = "result.json"
PREDICTIONS = "predictions.parquet"


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


def write_predictions(storage: Storage, folder: str, table: pa.Table) -> None:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    storage.write_bytes(f"{folder}/{PREDICTIONS}", sink.getvalue())


def read_predictions(storage: Storage, folder: str):
    """A task's predictions as a pandas DataFrame (probabilities and features as arrays)."""
    return pq.read_table(io.BytesIO(storage.read_bytes(f"{folder}/{PREDICTIONS}"))).to_pandas()
