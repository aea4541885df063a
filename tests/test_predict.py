"""`predict` with a Ray Train classifier, the prediction rows the unknown-model detector needs, and its report
table, on the classified root of tests/conftest.py."""

import json

import numpy as np
import pytest

from srfp import grid as cli
from srfp.analysis.openset import unknown_scores
from srfp.analysis.report import build_report
from srfp.classify.data import crop
from srfp.classify.identify import NETWORK_CROPS_PER_SIDE, NetworkReader
from srfp.classify.results import all_results, read_predictions
from srfp.classify.spectral import crop_corners
from srfp.gridspec import load_grid
from srfp.images import decode_image, encode_png
from srfp.superres.shards import complete_models, read_shard

NETWORK = "xception_narrow"  # the smoke grid's classifier.backbone


def test_each_task_predicts_its_validation_images_and_a_holdout_tasks_known_test_images(classified_root):
    for backbone, tasks in all_results(classified_root).items():
        for task, result in tasks.items():
            rows = read_predictions(classified_root, result["folder"])
            trained, tested = set(result["train_models"]), set(result["test_models"])
            validation = rows[rows.role == "validation"]
            assert set(validation.model_id) == trained and set(rows[rows.role == "known"].model_id) == trained - tested
            assert bool(trained - tested) == (result["holdout"] is not None), (backbone, task)
            unknown = result["unknown"]
            assert unknown["validation_images"] == len(validation) and unknown["false_alarm_rate"] == 0.05
            assert (unknown_scores(validation) > unknown["score_threshold"]).mean() <= 0.05


def test_the_report_measures_the_unknown_model_detector_of_each_holdout_task_and_backbone(classified_root):
    section = next(s for s in build_report(load_grid("smoke"), classified_root, log=lambda *_: None)
                   if s.title.startswith("Unknown-model detection"))
    table = section.tables["unknown_models"]
    assert set(zip(table.task, table.backbone)) == {("parse-scale-holdout-L1", NETWORK),
                                                    ("parse-scale-holdout-L1", "spectral")}
    assert ((table.auroc >= 0) & (table.auroc <= 1)).all() and (table.known_images == 8).all()
    assert (table.unknown_images == 8).all() and table.tpr_at_5pct_false_alarms.between(0, 1).all()


def _test_image(root) -> tuple[str, str, np.ndarray]:
    model = complete_models(root)[0]
    row = next(r for r in read_shard(root, model.model_id).to_pylist() if r["split"] == "test")
    return model.model_id, row["image_id"], decode_image(row["png"])


def test_predict_with_the_network_backbone_gives_the_stored_answer_on_its_centre_crop(classified_root, tmp_path,
                                                                                       capsys):
    model_id, image_id, image = _test_image(classified_root)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "centre.png").write_bytes(encode_png(crop(image, 96)))
    (tmp_path / "images" / "whole.png").write_bytes(encode_png(image))
    assert cli.main(["predict", str(tmp_path / "images"), "--root", classified_root.uri, "--backbone", NETWORK,
                     "--format", "json"]) == 0
    answers = {a["image"].rsplit("/", 1)[-1]: a for a in json.loads(capsys.readouterr().out)}
    attribution = all_results(classified_root)[NETWORK]["attribution"]
    stored = read_predictions(classified_root, attribution["folder"]).set_index(["model_id", "image_id"])
    row = stored.loc[(model_id, image_id)]
    assert answers["centre.png"]["model_1"] == row.predicted_label
    assert answers["centre.png"]["probability_1"] == pytest.approx(row.probabilities.max(), abs=1e-4)
    for answer in answers.values():
        assert answer["scale"] in ("2", "4") and answer["unknown_score"] == pytest.approx(1 - answer["probability_1"])
        threshold = attribution["unknown"]["score_threshold"]
        assert answer["verdict"] == ("unknown" if answer["unknown_score"] > threshold else "known")


def test_a_network_classifier_averages_the_probabilities_of_a_grid_of_crops(classified_root):
    _, _, image = _test_image(classified_root)
    reader = NetworkReader(classified_root, all_results(classified_root)[NETWORK]["attribution"])
    corners = crop_corners(*image.shape[:2], 96, NETWORK_CROPS_PER_SIDE)
    assert len(set(corners)) == NETWORK_CROPS_PER_SIDE ** 2
    each = [reader.probabilities(np.ascontiguousarray(image[y:y + 96, x:x + 96])) for y, x in corners]
    assert np.allclose(reader.probabilities(image), np.mean(each, axis=0), atol=1e-6)
    assert not np.allclose(each[0], each[-1], atol=1e-3)  # the crops do differ


def test_predict_names_the_backbones_a_root_has_and_the_command_that_trains_another(classified_root, tmp_path,
                                                                                    capsys):
    (tmp_path / "image.png").write_bytes(encode_png(np.zeros((128, 128, 3), np.uint8)))
    assert cli.main(["predict", str(tmp_path / "image.png"), "--root", classified_root.uri,
                     "--backbone", "resnet18"]) == 2
    error = capsys.readouterr().err
    assert f"has no resnet18 attribution classifier; it has those of spectral, {NETWORK} (--backbone)" in error
    assert "python -m srfp.grid attribute" in error and "classifier.backbone: resnet18" in error
