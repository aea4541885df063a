"""The report: every table checked against values computed independently from predictions and images."""

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.signal import convolve2d
from sklearn.neighbors import KNeighborsClassifier

from conftest import untrained_root
from srfp import grid as cli
from srfp.gridspec import load_grid
from srfp.superres.shards import read_shard


@pytest.fixture(scope="module")
def report(classified_root):
    assert cli.main(["report", "--root", classified_root.uri]) == 0
    return classified_root


def table(root, name) -> pd.DataFrame:
    return pd.read_csv(root.path(f"report/tables/{name}.csv"))


def predictions(root, task) -> pd.DataFrame:
    return pd.read_parquet(root.path(f"classifiers/xception_narrow/{task}/predictions.parquet"))


def test_attribution_accuracy_by_each_hyperparameter(report):
    rows = predictions(report, "attribution")
    rows = rows[rows.role == "test"]
    grouped = table(report, "attribution_by_hyperparameter")
    for attribute in ("scale", "loss", "arch", "dataset"):
        for value, members in rows.groupby(attribute):
            expected = sum(p == t for p, t in zip(members.predicted_label, members.true_label)) / len(members)
            cell = grouped[(grouped.attribute == attribute) & (grouped.value.astype(str) == str(value))]
            assert cell.accuracy.item() == pytest.approx(expected) and cell.images.item() == len(members)
    overall = table(report, "attribution").set_index("backbone")
    assert list(overall.index) == ["xception_narrow", "spectral"]  # the spectral classifier's row beside it
    assert list(overall.chance) == pytest.approx([1 / 16, 1 / 16])
    assert overall.loc["xception_narrow", "accuracy_1_image"] == pytest.approx((rows.predicted_label == rows.true_label).mean())
    spectral = pd.read_parquet(report.path("classifiers/spectral/attribution/predictions.parquet"))
    spectral = spectral[spectral.role == "test"]
    assert overall.loc["spectral", "accuracy_1_image"] == pytest.approx((spectral.predicted_label == spectral.true_label).mean())


def test_the_parser_table_has_one_and_ten_image_accuracy_per_held_out_value(report):
    rows = predictions(report, "parse-scale-holdout-L1")
    rows = rows[rows.role == "test"]
    per_model = rows.groupby("model_id").apply(lambda m: (m.predicted_label == m.true_label).mean(), include_groups=False)
    one_image = (rows.predicted_label == rows.true_label).mean()
    parsers = table(report, "parsers").set_index(["target", "backbone"])
    # One test photo per model: the 10-image vote has that one image, so it is the per-model accuracy.
    assert parsers.loc[("scale", "xception_narrow"), "L1"] == f"{one_image:.3f} / {per_model.mean():.3f}"
    assert parsers.loc[("scale", "xception_narrow"), "chance"] == pytest.approx(0.5)
    assert parsers.loc[("scale", "spectral"), "chance"] == pytest.approx(0.5)
    assert parsers.loc[("loss", "xception_narrow"), "RCAN"] == "not run"
    assert "python -m srfp.grid parse --all" in report.read_text("report/report.md")


def test_the_acutance_baseline_matches_an_independent_k_nearest_neighbours(report):
    def acutance(png):
        grey = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64) @ [0.299, 0.587, 0.114]
        return convolve2d(grey, [[0, 1, 0], [1, -4, 1], [0, 1, 0]], mode="valid").var()

    def images(model_ids, split):
        rows = [(acutance(r["png"]), str(r["scale"])) for m in model_ids
                for r in read_shard(report, m, ["png", "scale", "split"]).to_pylist() if r["split"] == split]
        return np.array([[a] for a, _ in rows]), [s for _, s in rows]

    models = [s for s in load_grid("smoke").specs()]
    train_x, train_y = images([s.model_id for s in models if s.loss != "L1"], "train")
    test_x, test_y = images([s.model_id for s in models if s.loss == "L1"], "test")
    knn = KNeighborsClassifier(n_neighbors=20).fit(train_x, train_y)
    expected = np.mean(knn.predict(test_x) == np.array(test_y))
    baseline = table(report, "acutance_baseline").set_index("task")
    assert baseline.loc["parse-scale-holdout-L1", "acutance_1_image"] == pytest.approx(expected)
    assert baseline.loc["parse-scale-holdout-L1", "k"] == 20
    assert 0 <= baseline.loc["parse-scale-holdout-L1", "spectral_1_image"] <= 1


def test_dataset_statistics_count_images_pixels_bits_per_pixel_and_entropy(report):
    def measures(row):
        rgb = np.asarray(Image.open(io.BytesIO(row["png"])).convert("RGB"), dtype=np.float64)
        grey = np.rint(rgb @ [0.299, 0.587, 0.114])
        p = np.unique(grey, return_counts=True)[1] / grey.size
        return rgb.shape[0] * rgb.shape[1], 8 * len(row["png"]) / (rgb.shape[0] * rgb.shape[1]), -(p * np.log2(p)).sum()

    stats = table(report, "dataset_statistics").set_index(["source", "scale"])
    x2 = [s.model_id for s in load_grid("smoke").specs() if s.scale == 2]
    rows = [measures(r) for m in x2 for r in read_shard(report, m, ["png"]).to_pylist()]
    assert stats.loc[("custom", 2), "models"] == 8 and stats.loc[("custom", 2), "images"] == len(rows) == 8 * 7
    for column, expected in zip(("pixels_per_image", "png_bits_per_pixel", "grey_entropy_bits"), np.mean(rows, axis=0)):
        assert stats.loc[("custom", 2), column] == pytest.approx(expected)
    assert stats.loc[("pretrained", 4), "models"] == 1


def test_model_quality_is_the_y_psnr_of_each_model_over_the_photos(report):
    def y_psnr(reference, image, border):  # MATLAB rgb2ycbcr's Y, the scale cropped at every border
        y = [16 + (picture.astype(np.float64) @ [65.481, 128.553, 24.966]) / 255 for picture in (reference, image)]
        return 10 * np.log10(255**2 / np.mean((y[0] - y[1])[border:-border, border:-border] ** 2))

    quality = table(report, "model_quality").set_index("model_id")
    for model_id, scale in (("EDSR-div2k-x2-L1-s1", 2), ("RCAN-flickr2k-x4-VGG_GAN-s1", 4)):
        values = []
        for row in read_shard(report, model_id, ["image_id", "png"]).to_pylist():
            photo = np.asarray(Image.open(report.path(f"photos/{row['image_id']}.png")).convert("RGB"))
            image = np.asarray(Image.open(io.BytesIO(row["png"])).convert("RGB"))
            values.append(y_psnr(photo[:image.shape[0], :image.shape[1]], image, scale))
        assert quality.loc[model_id, "photo_psnr_db"] == pytest.approx(np.mean(values))


def test_published_models_get_a_matrix_of_parser_predictions_and_the_figures_are_images(report):
    matrix = table(report, "published_scale").set_index("model_id")
    rows = predictions(report, "parse-scale-all")
    rows = rows[rows.role == "published"]
    expected = pd.crosstab(rows.model_id, rows.predicted_label)
    for model_id, counts in expected.iterrows():
        for label, count in counts.items():
            assert matrix.loc[model_id, str(label)] == count
    for figure in ("tsne", "published_parsers"):
        image = Image.open(report.path(f"report/figures/{figure}.png"))
        assert image.size[0] > 500 and image.size[1] > 200
    text = report.read_text("report/report.md")
    assert "![t-SNE of the 512-d features" in text and "No seed triplets" in text


def test_a_partial_run_gives_a_partial_report_naming_the_commands_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))
    root = untrained_root(tmp_path / "run", load_grid("smoke"))
    root.write_text("models/psnr.csv", "model_id,arch,dataset,scale,loss,seed,val_psnr,iterations,images_per_second\n"
                                       "EDSR-div2k-x2-L1-s1,EDSR,div2k,2,L1,1,31.25,800,400.0\n")
    assert cli.main(["report", "--root", root.uri]) == 0
    quality = table(root, "model_quality").set_index("model_id")
    assert quality.loc["EDSR-div2k-x2-L1-s1", "validation_psnr_db"] == 31.25
    assert quality["validation_psnr_db"].isna().sum() == 15  # the untrained models have no validation PSNR
    text = root.read_text("report/report.md")
    assert "Not computed yet: the attribution classifier. Run `python -m srfp.grid attribute`." in text
    assert "Not computed yet: published models. Run `python -m srfp.grid ingest FOLDER" in text
    assert "> LPIPS not computed: pretrained weights alexnet-owt-7be5be79.pth are missing" in text
    assert "test_lpips" not in quality
    assert root.is_file("report/tables/acutance_baseline.csv") and root.is_file("report/tables/model_quality.csv")


def test_a_report_of_some_models_leaves_out_the_baselines_that_need_the_others(tmp_path):
    import dataclasses

    grid = load_grid("smoke")
    root = untrained_root(tmp_path / "run", dataclasses.replace(grid, models=dataclasses.replace(grid.models, archs=["EDSR"])))
    assert cli.main(["report", "--root", root.uri]) == 0
    text = root.read_text("report/report.md")
    # Every holdout parser of the smoke grid trains or tests on some RCAN model, whose shards are missing.
    assert ("Not computed yet: the super-resolved photos of every model of parse-scale-holdout-L1, "
            "parse-loss-holdout-RCAN, parse-arch-holdout-flickr2k, parse-dataset-holdout-L1") in text
    assert not root.is_file("report/tables/acutance_baseline.csv") and root.is_file("report/tables/dataset_statistics.csv")


def test_classifiers_of_several_backbones_on_one_root_give_the_backbone_comparison(report, tmp_path):
    import json
    import shutil

    from srfp.storage import Storage

    root = Storage(shutil.copytree(report.uri, tmp_path / "run"))
    result = json.loads(root.read_text("classifiers/xception_narrow/attribution/result.json"))
    other = {**result, "backbone": "resnet18", "summary": {**result["summary"], "accuracy_1_image": 0.75}}
    root.write_text("classifiers/resnet18/attribution/result.json", json.dumps(other))
    assert cli.main(["report", "--root", root.uri]) == 0
    backbones = table(root, "backbones").set_index(["backbone", "task"])
    assert backbones.loc[("resnet18", "attribution"), "accuracy_1_image"] == 0.75
    assert backbones.loc[("xception_narrow", "attribution"), "accuracy_1_image"] == pytest.approx(
        result["summary"]["accuracy_1_image"])


def test_the_published_models_attribution_has_its_accuracy_per_model_and_confusion_matrix(report):
    rows = predictions(report, "attribution-published")
    rows = rows[rows.role == "test"]
    headline = table(report, "attribution_published").set_index("backbone")
    assert headline.loc["xception_narrow", "accuracy_1_image"] == pytest.approx((rows.predicted_label == rows.true_label).mean())
    per_model = table(report, "attribution_published_models_xception_narrow").set_index("model_id")
    for model_id, members in rows.groupby("model_id"):
        assert per_model.loc[model_id, "accuracy"] == pytest.approx((members.predicted_label == members.true_label).mean())
        assert per_model.loc[model_id, "name"] == model_id.split("-")[0] and per_model.loc[model_id, "images"] == len(members)
    matrix = table(report, "attribution_published_confusion_xception_narrow").set_index("true model")
    assert list(matrix.columns) == list(matrix.index) and set(matrix.index) == set(rows.true_label)
    assert matrix.to_numpy().sum() == len(rows)
    assert all(matrix.loc[t, p] == ((rows.true_label == t) & (rows.predicted_label == p)).sum()
               for t in matrix.index for p in matrix.columns)
