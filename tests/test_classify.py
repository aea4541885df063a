"""Attribution and parsers on Ray Train: tasks end to end through the CLI, predictions, resumption."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import kill_group, start_cli, untrained_root, wait_for
from srfp import grid as cli
from srfp.classify.loop import read_checkpoint
from srfp.classify.stage import ClassifyError, classify, task_folder
from srfp.gridspec import load_grid
from srfp.storage import Storage
from srfp.tasks import attribution_task, parser_tasks


@pytest.fixture(scope="module")
def sr_root(tmp_path_factory):
    """The smoke grid's 16 models and two published ones, super-resolved by untrained networks."""
    return untrained_root(tmp_path_factory.mktemp("sr"), load_grid("smoke"), published={"ESRGAN": 4, "SwinIR": 2})


def test_attribution_through_the_cli_writes_predictions_and_prints_accuracy_against_chance(
        ray_local, sr_root, capsys):
    assert cli.main(["attribute", "--root", sr_root.uri]) == 0
    printed = capsys.readouterr().out
    assert "attribution: test accuracy" in printed and "chance 0.062 (16 classes, 16 test images of 16 models)" in printed
    folder = task_folder("xception_narrow", "attribution")
    result = json.loads(sr_root.read_text(f"{folder}/result.json"))
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3, 4, 5]
    assert [h["phase"] for h in result["history"]] == ["head", "all", "all", "all", "all"]
    predictions = pq.read_table(sr_root.path(f"{folder}/predictions.parquet")).to_pandas()
    tested = predictions[predictions.role == "test"]
    assert len(tested) == 16 and tested.model_id.nunique() == 16 and set(tested.image_id) == {tested.image_id.iloc[0]}
    assert (tested.true_label == tested.model_id).all()
    assert set(predictions[predictions.role == "published"].model_id) == {
        "ESRGAN-NA-x4-ESRGAN-NA-pretrained", "SwinIR-NA-x2-SwinIR-NA-pretrained"}
    probabilities = np.stack(predictions.probabilities)
    assert probabilities.shape == (18, 16) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    assert np.stack(predictions.features).shape == (18, 512)
    assert (np.array(result["labels"])[probabilities.argmax(1)] == predictions.predicted_label).all()
    assert result["summary"]["accuracy_1_image"] == pytest.approx((tested.true_label == tested.predicted_label).mean())

    weights = sr_root.path(f"{folder}/model.safetensors")
    mtime = __import__("os").stat(weights).st_mtime_ns
    assert cli.main(["attribute", "--root", sr_root.uri]) == 0  # complete: reported, not retrained
    assert __import__("os").stat(weights).st_mtime_ns == mtime


def test_published_models_are_attributed_starting_from_the_custom_attribution_backbone(ray_local, sr_root, capsys):
    grid = load_grid("smoke")
    published = attribution_task("published", init_from="attribution")
    if not sr_root.is_file(task_folder("xception_narrow", "attribution") + "/model.safetensors"):
        pytest.skip("needs the attribution classifier of the test above")
    [result] = classify(dataclasses.replace(grid, classifier=dataclasses.replace(grid.classifier, finetune_epochs=1)),
                        sr_root, [published], log=lambda *_: None)
    assert result["task"] == "attribution-published" and result["init_from"] == "attribution"
    assert result["labels"] == ["ESRGAN-NA-x4-ESRGAN-NA-pretrained", "SwinIR-NA-x2-SwinIR-NA-pretrained"]
    assert result["summary"]["images"] == 2


def test_a_parser_without_its_shards_or_starting_weights_says_what_to_run(ray_local, tmp_path):
    grid = load_grid("smoke")
    partial = untrained_root(tmp_path / "partial", dataclasses.replace(
        grid, models=dataclasses.replace(grid.models, archs=["EDSR"])))
    [task] = parser_tasks(grid, "L1", "scale")
    with pytest.raises(ClassifyError, match=r"8 models have no complete shard yet .*run `python -m srfp.grid superresolve`"):
        classify(grid, partial, [task])
    with pytest.raises(ClassifyError, match=r"0 published models have complete shards; ingest"):
        classify(grid, partial, [attribution_task("published")])


def test_an_interrupted_parser_continues_from_its_last_finished_epoch(ray_local, sr_root, tmp_path):
    import shutil

    root = Storage(shutil.copytree(sr_root.uri, tmp_path / "run", ignore=shutil.ignore_patterns("classifiers")))
    folder = task_folder("xception_narrow", "parse-scale-holdout-L1")
    arguments = ["parse", "--holdout", "L1", "--target", "scale", "--root", root.uri]
    process = start_cli(arguments, tmp_path)
    wait_for(lambda: root.is_file(f"{folder}/checkpoint.pt") and read_checkpoint(root, folder)["epoch"] >= 2,
             timeout=300, what="two finished epochs")
    kill_group(process)
    finished = read_checkpoint(root, folder)["epoch"]
    assert finished < 5, "the run ended before it could be interrupted"

    rerun = start_cli(arguments, tmp_path)
    assert rerun.wait(timeout=300) == 0
    log = open(sorted(tmp_path.glob("cli-*.log"))[-1]).read()
    assert f"continuing after epoch {finished}" in log
    assert "parse-scale-holdout-L1: test accuracy" in log and "chance 0.500" in log
    result = json.loads(root.read_text(f"{folder}/result.json"))
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3, 4, 5]  # each epoch once: none redone, none lost
    predictions = pd.read_parquet(root.path(f"{folder}/predictions.parquet"))
    assert set(predictions.loss) == {"L1"} and len(predictions) == 8 and predictions.role.eq("test").all()
