"""Accuracy of a classifier from its predictions: per image, by a vote over images of one model, by group.

Every function takes the rows of ``predictions.parquet`` (a pandas DataFrame) that a task is scored on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def image_accuracy(predictions: pd.DataFrame) -> float:
    """The 1-image accuracy: the share of images whose predicted label is the true one."""
    return float((predictions["predicted_label"] == predictions["true_label"]).mean())


def vote_accuracy(predictions: pd.DataFrame, labels: list[str], vote_size: int = 10, repeats: int = 1000,
                  method: str = "majority", seed: int = 0) -> float:
    """The study's N-image accuracy: for each model, ``vote_size`` of its images drawn at random (without
    replacement; all of them when it has fewer), one label from their votes, averaged over ``repeats``
    draws and then over models.

    ``majority`` counts predicted labels (ties go to the label with the higher summed probability);
    ``mean`` takes the label of highest mean probability."""
    rng = np.random.default_rng(seed)
    index = {label: position for position, label in enumerate(labels)}
    per_model = []
    for _, rows in predictions.groupby("model_id", sort=True):
        probabilities = np.stack(rows["probabilities"].to_numpy())
        predicted = rows["predicted_label"].map(index).to_numpy()
        truth = index.get(rows["true_label"].iloc[0], -1)
        size = min(vote_size, len(rows))
        hits = 0
        for _ in range(repeats):
            chosen = rng.choice(len(rows), size=size, replace=False)
            summed = probabilities[chosen].sum(0)
            if method == "majority":
                counts = np.bincount(predicted[chosen], minlength=len(labels))
                winner = np.lexsort((summed, counts))[-1]  # most votes, then most probability
            else:
                winner = summed.argmax()
            hits += winner == truth
        per_model.append(hits / repeats)
    return float(np.mean(per_model)) if per_model else float("nan")


def grouped_accuracy(predictions: pd.DataFrame, by: str) -> pd.DataFrame:
    """1-image accuracy and image count for each value of a hyperparameter (``by``)."""
    hits = predictions["predicted_label"] == predictions["true_label"]
    table = hits.groupby(predictions[by]).agg(["mean", "size"]).reset_index()
    return table.rename(columns={"mean": "accuracy", "size": "images", by: "value"}).assign(attribute=by)[
        ["attribute", "value", "accuracy", "images"]]


def seed_triplets(predictions: pd.DataFrame) -> dict[tuple, list[str]]:
    """Models that differ only in their seed, by (arch, dataset, scale, loss), for groups of two or more."""
    groups = predictions.groupby(["arch", "dataset", "scale", "loss"], sort=True)["model_id"].unique()
    return {key: sorted(ids) for key, ids in groups.items() if len(ids) > 1}


def seed_triplet_accuracy(predictions: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """For attribution: per image of a seed group, whether its own model scores highest among the group's
    models (can the classifier tell apart models trained identically but for the seed?)."""
    index = {label: position for position, label in enumerate(labels)}
    rows = []
    for (arch, dataset, scale, loss), ids in seed_triplets(predictions).items():
        columns = [index[i] for i in ids if i in index]
        members = predictions[predictions["model_id"].isin(ids)]
        for model_id, probabilities in zip(members["model_id"], members["probabilities"]):
            own = index.get(model_id)
            if own is None:
                continue
            best = columns[int(np.argmax(np.asarray(probabilities)[columns]))]
            rows.append({"arch": arch, "dataset": dataset, "scale": scale, "loss": loss, "correct": best == own})
    return pd.DataFrame(rows, columns=["arch", "dataset", "scale", "loss", "correct"])


def summarise(predictions: pd.DataFrame, labels: list[str], vote_size: int, repeats: int) -> dict:
    """The headline figures of a task, on its ``test`` rows."""
    scored = predictions[predictions["role"] == "test"]
    return {"images": len(scored), "models": int(scored["model_id"].nunique()), "classes": len(labels),
            "chance": 1.0 / len(labels), "vote_size": vote_size, "accuracy_1_image": image_accuracy(scored),
            "accuracy_vote": vote_accuracy(scored, labels, vote_size, repeats, "majority"),
            "accuracy_vote_mean_probability": vote_accuracy(scored, labels, vote_size, repeats, "mean")}
