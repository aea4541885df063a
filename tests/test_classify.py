"""Attribution and parsers on Ray Train: tasks end to end through the CLI, predictions, resumption."""

import dataclasses
import json
import os
import shutil
import signal

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import kill_group, ray_workers, start_cli, untrained_root, wait_for
from srfp import grid as cli
from srfp.classify.loop import read_checkpoint
from srfp.classify.stage import ClassifyError, classify, task_folder
from srfp.gridspec import load_grid
from srfp.storage import Storage
from srfp.tasks import attribution_task, parser_tasks

SMOKE = load_grid("smoke")
PUBLISHED = {"ESRGAN-NA-x4-ESRGAN-NA-pretrained", "SwinIR-NA-x2-SwinIR-NA-pretrained"}


def folder(task):
    return task_folder("xception_narrow", task)


def test_attribution_predicts_every_test_image_with_probabilities_and_features(classified_root):
    result = json.loads(classified_root.read_text(f"{folder('attribution')}/result.json"))
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert [h["phase"] for h in result["history"]] == ["head", "all"]
    predictions = pd.read_parquet(classified_root.path(f"{folder('attribution')}/predictions.parquet"))
    tested = predictions[predictions.role == "test"]
    assert len(tested) == 16 and tested.model_id.nunique() == 16 and tested.image_id.nunique() == 1
    assert (tested.true_label == tested.model_id).all()
    assert set(predictions[predictions.role == "published"].model_id) == PUBLISHED
    probabilities = np.stack(predictions.probabilities)
    assert probabilities.shape == (18, 16) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    assert np.stack(predictions.features).shape == (18, 512)
    assert (np.array(result["labels"])[probabilities.argmax(1)] == predictions.predicted_label).all()
    assert result["summary"]["accuracy_1_image"] == pytest.approx((tested.true_label == tested.predicted_label).mean())


def test_a_holdout_parser_trains_without_the_held_out_value_and_tests_on_it(classified_root):
    result = json.loads(classified_root.read_text(f"{folder('parse-scale-holdout-L1')}/result.json"))
    assert result["labels"] == ["2", "4"] and len(result["train_models"]) == len(result["test_models"]) == 8
    assert all("-VGG_GAN-" in m for m in result["train_models"]) and all("-L1-" in m for m in result["test_models"])
    predictions = pd.read_parquet(classified_root.path(f"{folder('parse-scale-holdout-L1')}/predictions.parquet"))
    assert set(predictions.loss) == {"L1"} and predictions.role.eq("test").all()
    assert (predictions.true_label == predictions.scale.astype(str)).all()
    everything = pd.read_parquet(classified_root.path(f"{folder('parse-scale-all')}/predictions.parquet"))
    assert set(everything[everything.role == "published"].true_label) == {"2", "4"}


def test_a_classifier_trains_with_several_ddp_workers(classified_root):
    result = json.loads(classified_root.read_text(f"{folder('parse-scale-all')}/result.json"))
    assert {epoch["workers"] for epoch in result["history"]} == {2}
    # Rank 0 reports its share of the 80 training crops of an epoch (16 models x 5 photos x 1 crop).
    assert all(0 < epoch["train_images"] < 80 for epoch in result["history"])


def test_a_complete_task_is_reported_against_chance_and_not_retrained(classified_root, capsys):
    weights = classified_root.path(f"{folder('attribution')}/model.safetensors")
    mtime = os.stat(weights).st_mtime_ns
    assert cli.main(["attribute", "--root", classified_root.uri]) == 0
    printed = capsys.readouterr().out
    assert "attribution: test accuracy" in printed and "chance 0.062 (16 classes, 16 test images of 16 models)" in printed
    assert os.stat(weights).st_mtime_ns == mtime


def test_published_models_are_attributed_starting_from_the_custom_attribution_backbone(classified_root, tmp_path):
    root = Storage(shutil.copytree(classified_root.uri, tmp_path / "run"))
    grid = load_grid("smoke")
    quick = dataclasses.replace(grid, classifier=dataclasses.replace(grid.classifier, finetune_epochs=0))
    [result] = classify(quick, root, [attribution_task("published", init_from="attribution")], log=lambda *_: None)
    assert result["task"] == "attribution-published" and result["init_from"] == "attribution"
    assert result["labels"] == sorted(PUBLISHED) and result["summary"]["images"] == 2


def test_a_task_without_its_shards_or_starting_weights_says_what_to_run(ray_local, tmp_path):
    grid = load_grid("smoke")
    partial = untrained_root(tmp_path / "partial", dataclasses.replace(
        grid, models=dataclasses.replace(grid.models, archs=["EDSR"])))
    [task] = parser_tasks(grid, "L1", "scale")
    with pytest.raises(ClassifyError, match=r"8 models have no complete shard yet .*run `python -m srfp.grid superresolve`"):
        classify(grid, partial, [task])
    with pytest.raises(ClassifyError, match=r"0 published models have complete shards; ingest"):
        classify(grid, partial, [attribution_task("published")])
    edsr_only = dataclasses.replace(grid, models=dataclasses.replace(grid.models, archs=["EDSR"]))
    with pytest.raises(ClassifyError, match=r"starts from attribution, but .*model.safetensors does not exist"):
        classify(edsr_only, partial, [attribution_task(init_from="attribution")])


def test_a_parser_survives_a_killed_train_worker_and_a_killed_driver_training_each_epoch_once(classified_root, tmp_path):
    root = Storage(shutil.copytree(classified_root.uri, tmp_path / "run", ignore=shutil.ignore_patterns("classifiers")))
    task = folder("parse-scale-holdout-L1")
    grid = yaml.safe_load(open(SMOKE.source))
    grid["classifier"].update(head_epochs=1, finetune_epochs=3, crops_per_image=2)  # four short epochs
    (tmp_path / "four-epochs.yaml").write_text(yaml.safe_dump(grid))
    arguments = ["parse", "--holdout", "L1", "--target", "scale", "--root", root.uri, "--grid", str(tmp_path / "four-epochs.yaml")]
    epochs_done = lambda: read_checkpoint(root, task)["epoch"] if root.is_file(f"{task}/checkpoint.pt") else 0  # noqa: E731
    driver = start_cli(arguments, tmp_path)
    wait_for(lambda: epochs_done() >= 1, timeout=300, what="a first finished epoch")
    at_kill = epochs_done()
    os.kill(ray_workers(driver, "ray::RayTrainWorker")[0], signal.SIGKILL)  # Ray Train restarts the worker group
    wait_for(lambda: epochs_done() > at_kill, timeout=300, what="training to go on after the worker was killed")
    kill_group(driver)
    finished, total = epochs_done(), 4
    assert finished < total, "the run ended before the driver could be interrupted"

    rerun = start_cli(arguments, tmp_path)
    assert rerun.wait(timeout=300) == 0
    log = open(sorted(tmp_path.glob("cli-*.log"))[-1]).read()
    assert f"continuing after epoch {finished}" in log
    assert "parse-scale-holdout-L1: test accuracy" in log and "chance 0.500" in log
    result = json.loads(root.read_text(f"{task}/result.json"))
    assert [h["epoch"] for h in result["history"]] == list(range(1, total + 1))  # each epoch once: none redone, none lost
