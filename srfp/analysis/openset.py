"""The unknown-model detector: an open-set score per image, its threshold, and how well it separates.

An image's *unknown score* is one minus the classifier's highest probability (the maximum softmax
probability, a standard open-set baseline). An image is flagged unknown when its score is above a threshold
chosen on images of known models so that at most ``false_alarm_rate`` of them are flagged: ``predict``
calibrates it on the validation images (the ``validation`` rows of ``predictions.parquet``), the report
measures it on the test images of a holdout task's training models (``known`` rows) against those of its
held-out models (``test`` rows), with the AUROC and the true-positive rate at that false-alarm rate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata


def unknown_scores(predictions: pd.DataFrame) -> np.ndarray:
    """One minus each row's highest probability."""
    return 1.0 - np.stack(predictions["probabilities"].to_numpy()).max(axis=1) if len(predictions) else np.zeros(0)


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """The probability that an unknown image scores above a known one, ties counting one half
    (the Mann-Whitney statistic): 1 separates perfectly, 0.5 is chance, 0 is inverted."""
    ranks = rankdata(np.concatenate([known, unknown]))  # ties get their mean rank
    above = ranks[len(known):].sum() - len(unknown) * (len(unknown) + 1) / 2
    return float(above / (len(known) * len(unknown)))


def score_threshold(known: np.ndarray, false_alarm_rate: float) -> float:
    """The lowest threshold that flags (score strictly above it) at most ``false_alarm_rate`` of the known
    images; known images tied at it all stay unflagged."""
    allowed = int(np.floor(false_alarm_rate * len(known) + 1e-9))
    return float(np.sort(known)[::-1][min(allowed, len(known) - 1)])


def true_positive_rate(known: np.ndarray, unknown: np.ndarray, false_alarm_rate: float) -> float:
    """The share of unknown images flagged at the threshold of :func:`score_threshold` on the known ones."""
    return float((unknown > score_threshold(known, false_alarm_rate)).mean())


def calibrate(predictions: pd.DataFrame, false_alarm_rate: float) -> dict:
    """The threshold ``predict`` applies, from a task's ``validation`` rows: recorded in its ``result.json``
    as ``unknown``."""
    validation = unknown_scores(predictions[predictions["role"] == "validation"])
    if not len(validation):
        raise ValueError("no validation rows to calibrate the unknown score on")
    return {"false_alarm_rate": false_alarm_rate, "validation_images": len(validation),
            "score_threshold": score_threshold(validation, false_alarm_rate)}


def detection(predictions: pd.DataFrame, false_alarm_rate: float) -> dict | None:
    """AUROC and the true-positive rate at ``false_alarm_rate`` of a holdout task's known (``known`` rows)
    against unknown (``test`` rows) images; None when it has no known rows."""
    known = unknown_scores(predictions[predictions["role"] == "known"])
    unknown = unknown_scores(predictions[predictions["role"] == "test"])
    if not len(known) or not len(unknown):
        return None
    return {"known_images": len(known), "unknown_images": len(unknown), "auroc": auroc(known, unknown),
            f"tpr_at_{round(false_alarm_rate * 100)}pct_false_alarms": true_positive_rate(known, unknown,
                                                                                       false_alarm_rate)}
