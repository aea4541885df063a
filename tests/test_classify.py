"""Attribution and parsers on Ray Train: tasks end to end through the CLI, predictions, resumption."""

import dataclasses
import json
import os
import shutil
import signal

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import kill_group, ray_workers, start_cli, untrained_root, wait_for
from srfp import grid as cli
from srfp.classify.data import read_split, training_crops
from srfp.classify.loop import read_checkpoint, read_progress
from srfp.classify.results import task_folder
from srfp.classify.stage import ClassifyError, classify
from srfp.gridspec import GridError, load_grid
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
    assert predictions.role.value_counts().to_dict() == {"test": 16, "validation": 16, "published": 2}
    probabilities = np.stack(predictions.probabilities)
    assert probabilities.shape == (34, 16) and np.allclose(probabilities.sum(1), 1, atol=1e-5)
    assert np.stack(predictions.features).shape == (34, 512)
    assert (np.array(result["labels"])[probabilities.argmax(1)] == predictions.predicted_label).all()
    assert result["summary"]["accuracy_1_image"] == pytest.approx((tested.true_label == tested.predicted_label).mean())


def test_a_holdout_parser_trains_without_the_held_out_value_and_tests_on_it(classified_root):
    result = json.loads(classified_root.read_text(f"{folder('parse-scale-holdout-L1')}/result.json"))
    assert result["labels"] == ["2", "4"] and len(result["train_models"]) == len(result["test_models"]) == 8
    assert all("-VGG_GAN-" in m for m in result["train_models"]) and all("-L1-" in m for m in result["test_models"])
    predictions = pd.read_parquet(classified_root.path(f"{folder('parse-scale-holdout-L1')}/predictions.parquet"))
    assert set(predictions[predictions.role == "test"].loss) == {"L1"}
    assert set(predictions[predictions.role != "test"].loss) == {"VGG_GAN"}  # known and validation images
    assert (predictions.true_label == predictions.scale.astype(str)).all()
    everything = pd.read_parquet(classified_root.path(f"{folder('parse-scale-all')}/predictions.parquet"))
    assert set(everything[everything.role == "published"].true_label) == {"2", "4"}


def test_a_complete_task_is_reported_against_chance_and_not_retrained(classified_root, capsys):
    weights = classified_root.path(f"{folder('attribution')}/model.safetensors")
    mtime = os.stat(weights).st_mtime_ns
    assert cli.main(["attribute", "--root", classified_root.uri]) == 0
    printed = capsys.readouterr().out
    assert "attribution: test accuracy" in printed and "chance 0.062 (16 classes, 16 test images of 16 models)" in printed
    assert os.stat(weights).st_mtime_ns == mtime


def test_published_models_are_attributed_starting_from_the_custom_attribution_backbone(classified_root):
    """`classify` adds the task once two published models are ingested, and runs it after attribution."""
    result = json.loads(classified_root.read_text(f"{folder('attribution-published')}/result.json"))
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
    grid["classifier"].update(head_epochs=1, finetune_epochs=2, crops_per_image=2)  # three short epochs
    grid["spectral"]["enabled"] = False  # the copied root has no spectral features, and this test is about Ray Train
    (tmp_path / "three-epochs.yaml").write_text(yaml.safe_dump(grid))
    arguments = ["parse", "--holdout", "L1", "--target", "scale", "--root", root.uri, "--grid", str(tmp_path / "three-epochs.yaml")]
    epochs_done = lambda: (read_progress(root, task) or {"epoch": 0})["epoch"]  # noqa: E731
    driver = start_cli(arguments, tmp_path)
    wait_for(lambda: epochs_done() >= 1, timeout=300, what="a first finished epoch")
    at_kill = epochs_done()
    os.kill(ray_workers(driver, "ray::RayTrainWorker")[0], signal.SIGKILL)  # Ray Train restarts the worker group
    wait_for(lambda: epochs_done() > at_kill, timeout=300, what="training to go on after the worker was killed")
    kill_group(driver)
    finished, total = epochs_done(), 3
    assert finished < total, "the run ended before the driver could be interrupted"

    rerun = start_cli(arguments, tmp_path)
    assert rerun.wait(timeout=300) == 0
    log = open(sorted(tmp_path.glob("cli-*.log"))[-1]).read()
    assert f"continuing after epoch {finished}" in log
    assert "parse-scale-holdout-L1: test accuracy" in log and "chance 0.500" in log
    result = json.loads(root.read_text(f"{task}/result.json"))
    assert [h["epoch"] for h in result["history"]] == list(range(1, total + 1))  # each epoch once: none redone, none lost


def _crops_by_image(dataset) -> dict[str, bytes]:
    return {row["image_id"]: row["image"].tobytes() for row in dataset.take_all()}


def _one_model_root(path) -> tuple[Storage, str]:
    """A root with one smoke model's shard (an untrained network's images), and that model's id."""
    one_model = dataclasses.replace(SMOKE, models=dataclasses.replace(
        SMOKE.models, archs=["EDSR"], datasets=["div2k"], scales=[2], losses=["L1"]))
    [model_id] = [spec.model_id for spec in one_model.specs()]
    return untrained_root(path, one_model), model_id


def test_training_crops_change_every_epoch_and_repeat_with_the_seed(ray_local, tmp_path):
    """Through the real Ray Data path: each epoch draws new crops of each image, and a rerun draws the same."""
    root, model_id = _one_model_root(tmp_path / "run")
    settings = dataclasses.replace(SMOKE.classifier, crops_per_image=1)

    def epoch(number, seed=0):
        rows = read_split(root, [model_id], "train")
        return _crops_by_image(training_crops(rows, "model_id", [model_id], dataclasses.replace(settings, seed=seed),
                                              number))

    first, second = epoch(0), epoch(1)
    assert len(first) == 5 and first.keys() == second.keys()
    assert all(first[image] != second[image] for image in first)  # new crops each epoch
    assert len(set(first.values())) == 5  # and each image its own
    assert epoch(0) == first  # the same seed, the same crops (a pipeline run costs seconds: one rerun)
    assert all(crop != first[image] for image, crop in epoch(0, seed=1).items())


def test_predictions_reuse_the_validation_crops_and_read_only_the_test_split(ray_local, tmp_path, monkeypatch):
    """The validation images are cut once, for the epochs, and predicted from those crops: a prediction pass reads
    and decodes only the test split (every Ray Data read starts processes: seconds on a laptop)."""
    from srfp.classify import predict as prediction
    from srfp.classify.data import evaluation_crops
    from srfp.classify.network import Classifier

    root, model_id = _one_model_root(tmp_path / "run")
    validation = evaluation_crops(read_split(root, [model_id], "val"), "model_id", [model_id], SMOKE.classifier)
    validation = validation.materialize()
    splits_read = []
    monkeypatch.setattr(prediction, "read_split", lambda *args: splits_read.append(args[2]) or read_split(*args))
    torch.manual_seed(0)
    rows = prediction.predict(Classifier("xception_narrow", 1, False), root, SMOKE.classifier, "model_id",
                              [model_id], {"test": [model_id], "validation": [model_id]}, validation,
                              torch.device("cpu")).to_pandas()
    assert splits_read == ["test"]
    assert sorted(rows.role) == ["test", "validation"]  # one test and one validation photo per model
    assert (rows.true_label == model_id).all() and (rows.predicted_label == model_id).all()


def test_tasks_train_side_by_side_with_the_studys_batch_and_learning_rate(classified_root):
    """Each task trains on one worker with classifier.batch_size and classifier.learning_rate as given (no
    scaling by a number of workers); the fixture's first tasks ran as two concurrent Tune trials."""
    histories = {name: json.loads(classified_root.read_text(f"{folder(name)}/result.json"))["history"]
                 for name in ("parse-scale-holdout-L1", "parse-scale-all")}
    for history in histories.values():
        assert {epoch["batch_size"] for epoch in history} == {SMOKE.classifier.batch_size}
        assert history[0]["learning_rate"] == SMOKE.classifier.learning_rate
    # Every training crop of an epoch went through the one worker: 5 photos x 1 crop of each training model.
    assert [epoch["train_images"] for epoch in histories["parse-scale-all"]] == [80, 80]
    tune_files = classified_root.list("classifiers/xception_narrow/tune", recursive=True)
    spans = []
    for name in ("attribution", "parse-scale-holdout-L1"):  # the first two of the fixture's tasks
        [progress] = [path for path in tune_files if path.endswith(f"/{name}/progress.csv")]
        record = pd.read_csv(classified_root.path(progress)).iloc[-1]
        spans.append((record["timestamp"] - record["time_total_s"], record["timestamp"]))
    (start_a, end_a), (start_b, end_b) = spans
    assert start_a < end_b and start_b < end_a  # the two trials overlapped in time


def test_the_next_task_runs_in_a_finished_trials_process(classified_root):
    """The fixture's first three tasks ran two at a time as Tune trials: the third in the process of a finished one,
    not in a new process that imports srfp, Ray Train and PyTorch again."""
    tune_files = classified_root.list("classifiers/xception_narrow/tune", recursive=True)
    pids = set()
    for name in ("attribution", "parse-scale-holdout-L1", "parse-scale-all"):
        [result] = [path for path in tune_files if path.endswith(f"/{name}/result.json")]
        pids.add(json.loads(classified_root.read_text(result).splitlines()[0])["pid"])
    assert len(pids) == 2


def test_a_grid_asking_for_several_workers_per_classifier_is_refused_with_the_replacement(tmp_path):
    grid = yaml.safe_load(open(SMOKE.source))
    grid["classifier"]["workers"] = 4
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(grid))
    with pytest.raises(GridError, match=r"classifier.workers: no longer a setting: each classifier trains on one "
                                        r"Ray Train worker with the study's batch .*max_concurrent_tasks"):
        load_grid(tmp_path / "ddp.yaml")


def test_a_checkpoint_written_on_a_gpu_loads_on_a_machine_without_one(tmp_path):
    from conftest import cuda_tagged_bytes
    from srfp.classify.loop import write_checkpoint
    from srfp.plan import Plan
    from srfp.status import render_status

    root = Storage(tmp_path / "run")
    task = folder("attribution")
    state = {"epoch": 1, "phase": "head", "best_epoch": 1, "best_accuracy": 0.5, "history": [{"epoch": 1}],
             "model": {"weight": torch.ones(2)}}
    write_checkpoint(root, task, state)  # its progress record
    root.write_bytes(f"{task}/checkpoint.pt", cuda_tagged_bytes(state))  # tensors that claim cuda:0
    assert torch.equal(read_checkpoint(root, task)["model"]["weight"], torch.ones(2))
    assert read_checkpoint(root, task)["model"]["weight"].device.type == "cpu"
    assert "attribution                          training: epoch 1 of 2" in render_status(Plan.of(SMOKE, None), root)
