"""The spectral classifier: its features, a fingerprint it finds where upsampling differs, and its results
beside the Ray Train classifier's on a classified root."""

import numpy as np
import pandas as pd
import pytest

from srfp.analysis.report import build_report
from srfp.classify.results import all_results, read_predictions, task_folder
from srfp.classify.spectral import (
    BACKBONE,
    cache_features,
    crop_corners,
    crop_probabilities,
    features_file,
    fit_and_predict,
    high_pass,
    model_arrays,
    spectral_features,
)
from srfp.gridspec import SpectralSettings, load_grid
from srfp.schema import SchemaError
from srfp.superres.shards import complete_models

SETTINGS = SpectralSettings(crop_size=32, crops_per_side=2, pool=8)


def test_the_high_pass_residual_of_a_smooth_image_is_zero_and_a_crop_grid_covers_the_image():
    ramp = np.add.outer(np.arange(40.0), np.arange(50.0))
    assert np.abs(high_pass(ramp)[1:-1, 1:-1]).max() == 0
    assert crop_corners(40, 50, 32, 2) == [(0, 0), (0, 18), (8, 0), (8, 18)]
    with pytest.raises(ValueError, match="smaller than the 32 px crop"):
        crop_corners(31, 50, 32, 2)


def test_features_are_one_pooled_spectrum_per_crop_and_the_pool_must_divide_the_crop():
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    features = spectral_features(image, SETTINGS)
    assert features.shape == (4, 64) and features.dtype == np.float32
    assert np.array_equal(features, spectral_features(image.copy(), SETTINGS))
    with pytest.raises(SchemaError, match="spectral.pool: 12 is not allowed; expected a divisor of spectral.crop_size"):
        SpectralSettings(crop_size=32, pool=12)


def _upsampled(rng, kind: str) -> np.ndarray:
    """A 64 px image upsampled x2 from random smooth content, by pixel repetition or by linear interpolation."""
    low = rng.normal(128, 40, (32, 32, 3)).clip(0, 255)
    if kind == "nearest":
        return low.repeat(2, 0).repeat(2, 1).astype(np.uint8)
    grid = np.linspace(0, 31, 64)
    rows = np.stack([np.interp(grid, np.arange(32), low[:, x, c]) for x in range(32) for c in range(3)], 1)
    rows = rows.reshape(64, 32, 3)
    return np.stack([np.interp(grid, np.arange(32), rows[y, :, c]) for y in range(64) for c in range(3)], 0).reshape(
        64, 3, 64).transpose(0, 2, 1).astype(np.uint8)


def test_two_upsamplings_of_different_photos_are_told_apart_from_their_spectra():
    rng, settings = np.random.default_rng(1), SpectralSettings(crop_size=32, crops_per_side=2, pool=8)
    rows = []
    for model in ("nearest", "linear"):
        for number, split in enumerate(["train"] * 12 + ["val"] * 3 + ["test"] * 5):
            rows.append({"model_id": model, "source": "custom", "arch": model, "dataset": "d", "scale": 2, "loss": "L1",
                         "seed": 1, "image_id": f"photo-{number}", "split": split,
                         "features": spectral_features(_upsampled(rng, model), settings).ravel()})
    fit = fit_and_predict(pd.DataFrame(rows), "model_id", ["linear", "nearest"], ["nearest", "linear"],
                          {"test": ["nearest", "linear"], "validation": ["nearest", "linear"]}, settings)
    frame, model = fit.predictions.to_pandas(), fit.arrays
    assert frame.role.value_counts().to_dict() == {"test": 10, "validation": 6} and fit.val_accuracy == 1.0
    assert (frame.predicted_label == frame.true_label).all()
    assert np.allclose(np.stack(frame.probabilities).sum(1), 1, atol=1e-6)
    assert set(model) == {"mean", "scale", "coef", "intercept", "classes"} and model["coef"].shape == (1, 64)


def test_the_stored_arrays_give_scikit_learns_probabilities_for_two_and_more_classes():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(2)
    for classes in (2, 4):
        x, y = rng.normal(size=(60, 5)) * [1, 2, 3, 4, 5] + 7, rng.integers(0, classes, 60)
        model = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
        ours = crop_probabilities(model_arrays(model), x, classes + 1)  # one label the model never saw
        assert np.allclose(ours[:, :classes], model.predict_proba(x), atol=1e-9) and not ours[:, classes].any()


def test_every_task_gets_a_spectral_classifier_with_the_same_results_contract(classified_root):
    results = all_results(classified_root)
    assert set(results[BACKBONE]) == set(results["xception_narrow"])
    for task, result in results[BACKBONE].items():
        spectral = read_predictions(classified_root, task_folder(BACKBONE, task))
        xception = read_predictions(classified_root, task_folder("xception_narrow", task))
        assert list(spectral.columns) == list(xception.columns)
        assert spectral[["model_id", "image_id", "role", "true_label"]].equals(
            xception[["model_id", "image_id", "role", "true_label"]])
        assert result["labels"] == results["xception_narrow"][task]["labels"]
    attribution = results[BACKBONE]["attribution"]["summary"]
    assert attribution["accuracy_1_image"] >= 3 * attribution["chance"]  # untrained networks' fingerprints


def test_features_are_computed_once_per_model_and_setting(classified_root, ray_local):
    grid, models = load_grid("smoke"), complete_models(classified_root)
    files = [classified_root.path(features_file(grid.spectral, model.model_id)) for model in models]
    stamps = [classified_root.fs.get_file_info(path).mtime_ns for path in files]
    cache_features(classified_root, models, grid.spectral, log=lambda *_: pytest.fail("nothing to compute"))
    assert [classified_root.fs.get_file_info(path).mtime_ns for path in files] == stamps


def test_the_report_compares_the_spectral_classifier_with_the_backbone(classified_root):
    section = next(s for s in build_report(load_grid("smoke"), classified_root, log=lambda *_: None)
                   if s.title.startswith("Backbone comparison"))
    table = section.tables["backbones"]
    assert set(table.backbone) == {BACKBONE, "xception_narrow"}
    assert set(table[table.backbone == BACKBONE].task) == set(table[table.backbone == "xception_narrow"].task)


def _known_and_other_images(root, folder):
    """Two test images of the attribution's models, as PNG files, and a bundled photo no model made."""
    from srfp.datasets import bundled_photos
    from srfp.superres.shards import read_shard

    folder.mkdir()
    known = {}
    for model in complete_models(root)[:2]:
        row = next(r for r in read_shard(root, model.model_id).to_pylist() if r["split"] == "test")
        (folder / f"{model.model_id}.png").write_bytes(row["png"])
        known[str(folder / f"{model.model_id}.png")] = (model.model_id, row["image_id"])
    photo = sorted((bundled_photos() / "everyday").iterdir())[0]
    (folder / f"photo{photo.suffix}").write_bytes(photo.read_bytes())
    return known


def test_predict_names_each_images_likely_models_parsers_and_an_unknown_verdict(classified_root, tmp_path, capsys):
    import json

    from srfp import grid as cli

    known = _known_and_other_images(classified_root, tmp_path / "images")
    assert cli.main(["predict", str(tmp_path / "images"), "--root", classified_root.uri, "--format", "json"]) == 0
    answers = {a["image"]: a for a in json.loads(capsys.readouterr().out)}
    assert len(answers) == 3
    stored = read_predictions(classified_root, task_folder(BACKBONE, "attribution")).set_index(["model_id", "image_id"])
    labels = all_results(classified_root)[BACKBONE]["attribution"]["labels"]
    for path, (model_id, image_id) in known.items():  # the same answer as when the classifier was tested
        answer, row = answers[path], stored.loc[(model_id, image_id)]
        assert answer["model_1"] == row.predicted_label
        assert answer["probability_1"] == pytest.approx(row.probabilities[labels.index(row.predicted_label)], abs=1e-6)
    for answer in answers.values():
        assert answer["probability_1"] >= answer["probability_2"] >= answer["probability_3"]
        assert answer["scale"] in ("2", "4") and 0 <= answer["scale_probability"] <= 1  # the all-model parser
        assert answer["unknown_score"] == pytest.approx(1 - answer["probability_1"])
        assert answer["verdict"] in ("known", "unknown")
    assert cli.main(["predict", str(tmp_path / "images"), "--root", classified_root.uri, "--format", "csv",
                     "--output", str(tmp_path / "answers.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "answers.csv")) == 3


def test_predict_names_unreadable_files_and_the_command_a_root_without_classifiers_needs(classified_root, tmp_path,
                                                                                         capsys):
    from srfp import grid as cli

    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert cli.main(["predict", str(tmp_path / "broken.png"), "--root", classified_root.uri]) == 2
    assert "broken.png: cannot be read as an image" in capsys.readouterr().err
    (tmp_path / "empty-root").mkdir()
    assert cli.main(["predict", str(tmp_path / "broken.png"), "--root", str(tmp_path / "empty-root")]) == 2
    assert "python -m srfp.grid attribute" in capsys.readouterr().err
