"""Faults during training: a killed trial worker and a killed driver both end with every model trained once."""

import json
import os
import signal
from pathlib import Path

import yaml

from conftest import kill_group, ray_workers, start_cli, wait_for
from srfp.gridspec import resolve_grid_path
from srfp.sisr.train import checkpoint_path, record_path, weights_path
from srfp.storage import Storage

SELECTION = "arch=EDSR,dataset=div2k,loss=L1"


def _grid_file(tmp_path: Path) -> Path:
    """The smoke grid, trained long enough to be interrupted, one trial at a time."""
    grid = yaml.safe_load(resolve_grid_path("smoke").read_text())
    grid["training"].update(iterations=400, checkpoint_every=50, batch_size=4, patch_size={2: 32, 4: 64},
                            max_concurrent_trials=1, max_failures=2)
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def _train(grid: Path, root: Path, only: str, tmp_path: Path):
    return start_cli(["train", "--grid", str(grid), "--root", str(root), "--only", only], tmp_path)


def _record(root: Path, model_id: str) -> dict:
    return json.loads(Storage(root).read_text(record_path(model_id)))


def test_a_killed_trial_worker_is_retried_and_continues_from_its_checkpoint(tmp_path):
    root, model_id = tmp_path / "run", "EDSR-div2k-x2-L1-s1"
    driver = _train(_grid_file(tmp_path), root, SELECTION + ",scale=2", tmp_path)
    storage = Storage(root)
    wait_for(lambda: storage.is_file(checkpoint_path(model_id)), what="a first checkpoint")
    workers = ray_workers(driver, "ray::ImplicitFunc")
    assert len(workers) == 1
    os.kill(workers[0], signal.SIGKILL)
    assert driver.wait(timeout=300) == 0
    record = _record(root, model_id)
    assert record["iterations"] == 400 and record["resumed_from_iteration"] > 0


def test_a_killed_driver_is_rerun_without_retraining_finished_models(tmp_path):
    grid, root = _grid_file(tmp_path), tmp_path / "run"
    first, second = "EDSR-div2k-x2-L1-s1", "EDSR-div2k-x4-L1-s1"
    storage = Storage(root)
    driver = _train(grid, root, SELECTION, tmp_path)
    wait_for(lambda: storage.is_file(record_path(first)) and storage.is_file(checkpoint_path(second)),
              what="one finished model and a checkpoint of the other")
    kill_group(driver)
    finished = {path: (storage.read_bytes(path), os.stat(root / path).st_mtime_ns)
                for path in (weights_path(first), record_path(first))}
    rerun = _train(grid, root, SELECTION, tmp_path)
    assert rerun.wait(timeout=300) == 0
    assert finished == {path: (storage.read_bytes(path), os.stat(root / path).st_mtime_ns) for path in finished}
    assert _record(root, second)["resumed_from_iteration"] > 0
    assert _record(root, second)["iterations"] == 400
