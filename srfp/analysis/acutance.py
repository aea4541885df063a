"""The study's hand-crafted baseline: a k-NN (k = 20) on acutance alone, for each parser task."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.neighbors import KNeighborsClassifier

from srfp.analysis.accuracy import image_accuracy, vote_accuracy


def acutance_baseline(measures: pd.DataFrame, target: str, train_models: list[str], test_models: list[str],
                      k: int = 20, vote_size: int = 10, repeats: int = 1000) -> dict:
    """Fit on the training images of the training models, score on the test images of the test models."""
    train = measures[measures["model_id"].isin(train_models) & (measures["split"] == "train")]
    test = measures[measures["model_id"].isin(test_models) & (measures["split"] == "test")]
    knn = KNeighborsClassifier(n_neighbors=min(k, len(train)))
    knn.fit(train[["acutance"]].to_numpy(), train[target].astype(str).to_numpy())
    labels = [str(label) for label in knn.classes_]
    probabilities = knn.predict_proba(test[["acutance"]].to_numpy())
    predictions = pd.DataFrame({"model_id": test["model_id"].to_numpy(), "true_label": test[target].astype(str).to_numpy(),
                                "predicted_label": np.array(labels)[probabilities.argmax(1)],
                                "probabilities": list(probabilities)})
    return {"accuracy_1_image": image_accuracy(predictions),
            "accuracy_vote": vote_accuracy(predictions, labels, vote_size, repeats, "majority"),
            "chance": 1.0 / len(labels), "images": len(predictions), "k": min(k, len(train))}
