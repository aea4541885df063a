"""Batch inference with a trained classifier: one row per image, with its probabilities and features.

The classifier's Ray Train worker predicts right after training (see srfp.classify.loop), with the best
epoch's weights already on its device: no other process loads the network, and Ray Data tasks decode and
crop the images beside it, as for validation.

The rows' columns are those of ``predictions.parquet`` (:mod:`srfp.classify.results`); ``features`` are the
backbone's pooled pre-logits (e.g. 2048 for Xception).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from srfp.classify.data import evaluation_crops, read_split
from srfp.classify.network import Classifier
from srfp.classify.results import METADATA, prediction_table
from srfp.devices import autocast
from srfp.gridspec import ClassifierSettings
from srfp.storage import Storage


def predict(classifier: Classifier, storage: Storage, settings: ClassifierSettings, target: str, labels: list[str],
            model_ids_by_role: dict[str, list[str]], device) -> pa.Table:
    """Predict every test image of the models of each role with ``classifier`` on ``device``; rows sorted by
    model and image."""
    role_of = {model_id: role for role, model_ids in model_ids_by_role.items() for model_id in model_ids}
    crops = evaluation_crops(read_split(storage, list(role_of), "test"), target, labels, settings)
    classifier.eval()
    tables = [_prediction_rows(classifier, batch, target, np.array(labels), role_of, device)
              for batch in crops.iter_batches(batch_size=settings.batch_size, batch_format="numpy")]
    return pa.concat_tables(tables).sort_by([("model_id", "ascending"), ("image_id", "ascending")])


@torch.no_grad()
def _prediction_rows(classifier: Classifier, batch: dict[str, np.ndarray], target: str, labels: np.ndarray,
                     role_of: dict[str, str], device) -> pa.Table:
    with autocast(device):
        logits, features = classifier.forward_with_features(torch.tensor(batch["image"], device=device))
    probabilities = logits.float().softmax(1).cpu().numpy()
    return prediction_table({name: batch[name] for name in METADATA}, [role_of[str(m)] for m in batch["model_id"]],
                            [str(value) for value in batch[target]], labels, probabilities,
                            features.float().cpu().numpy())
