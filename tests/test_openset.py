"""The unknown-model detector's measures on known inputs."""

import numpy as np
import pandas as pd
import pytest

from srfp.analysis.openset import auroc, calibrate, detection, score_threshold, true_positive_rate, unknown_scores


def test_auroc_of_a_perfect_a_random_an_inverted_and_a_tied_score():
    known, unknown = np.array([0.1, 0.2, 0.3]), np.array([0.6, 0.7])
    assert auroc(known, unknown) == 1.0
    assert auroc(unknown, known) == 0.0
    assert auroc(np.full(4, 0.5), np.full(3, 0.5)) == 0.5
    assert auroc(np.array([0.1, 0.5]), np.array([0.5, 0.9])) == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    rng = np.random.default_rng(0)
    assert auroc(rng.random(4000), rng.random(4000)) == pytest.approx(0.5, abs=0.02)


def test_the_threshold_flags_at_most_the_false_alarm_rate_of_known_images_even_with_ties():
    known = np.arange(40) / 40  # 2 of 40 known images may be flagged at 5%
    assert score_threshold(known, 0.05) == 37 / 40 and (known > 37 / 40).sum() == 2
    tied = np.array([0.1] * 17 + [0.9] * 3)  # flagging the three tied top scores would be 15% false alarms
    assert score_threshold(tied, 0.05) == 0.9
    assert true_positive_rate(tied, np.array([0.9, 0.95, 1.0, 0.2]), 0.05) == 0.5  # a tie is not flagged
    assert true_positive_rate(known, np.array([0.92, 0.95, 0.96]), 0.05) == 2 / 3


def _rows(role: str, highest: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"role": role, "probabilities": [np.array([p, 1 - p]) for p in highest]})


def test_detection_separates_known_rows_from_held_out_test_rows_and_calibration_uses_validation_rows():
    rows = pd.concat([_rows("known", [0.9, 0.95, 0.99]), _rows("test", [0.6, 0.55]), _rows("validation", [0.8, 0.7]),
                      _rows("published", [0.5])], ignore_index=True)
    assert unknown_scores(rows[rows.role == "test"]) == pytest.approx([0.4, 0.45])
    measured = detection(rows, 0.05)
    assert measured["auroc"] == 1.0 and measured["tpr_at_5pct_false_alarms"] == 1.0
    assert (measured["known_images"], measured["unknown_images"]) == (3, 2)
    assert detection(rows[rows.role != "known"], 0.05) is None
    assert calibrate(rows, 0.05) == {"false_alarm_rate": 0.05, "validation_images": 2,
                                     "score_threshold": pytest.approx(0.3)}
