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
from srfp.classify.results import METADATA, prediction_table, role_of_split
from srfp.devices import autocast
from srfp.gridspec import ClassifierSettings
from srfp.storage import Storage


def predict(classifier: Classifier, storage: Storage, settings: ClassifierSettings, target: str, labels: list[str],
            model_ids_by_role: dict[str, list[str]], validation, device) -> pa.Table:
    """Predict the images of the models of each role (of the role's split, see
    :data:`srfp.classify.results.ROLE_SPLITS`) with ``classifier`` on ``device``; rows sorted by model and image.

    ``validation`` holds the validation role's images already cut: the training loop's centre crops of the
    val split (a Ray Dataset of :func:`srfp.classify.data.evaluation_crops`, every column kept), so that
    only the test split is read and decoded here."""
    role_of = role_of_split(model_ids_by_role)
    tested = read_split(storage, sorted({model_id for split, model_id in role_of if split == "test"}), "test")
    crops = evaluation_crops(tested, target, labels, settings).union(validation)
    classifier.eval()
    tables = [_prediction_rows(classifier, batch, target, np.array(labels), role_of, device)
              for batch in crops.iter_batches(batch_size=settings.batch_size, batch_format="numpy")]
    return pa.concat_tables(tables).sort_by([("model_id", "ascending"), ("image_id", "ascending")])


@torch.no_grad()
def _prediction_rows(classifier: Classifier, batch: dict[str, np.ndarray], target: str, labels: np.ndarray,
                     role_of: dict[tuple[str, str], str], device) -> pa.Table:
    with autocast(device):
        logits, features = classifier.forward_with_features(torch.tensor(batch["image"], device=device))
    probabilities = logits.float().softmax(1).cpu().numpy()
    roles = [role_of[str(split), str(model_id)] for split, model_id in zip(batch["split"], batch["model_id"])]
    return prediction_table({name: batch[name] for name in METADATA}, roles,
                            [str(value) for value in batch[target]], labels, probabilities,
                            features.float().cpu().numpy())
