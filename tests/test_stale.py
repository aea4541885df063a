"""Stale work is never reused silently: a rerun with other settings stops before any work, saying what differs
and how to start afresh; ``--force`` redoes a stage; temporaries of killed writes are removed by the next run."""

import json
import os
import time

import pytest
import yaml

from conftest import smoke_grid
from srfp.grid import main
from srfp.gridspec import load_grid, resolve_grid_path
from srfp.images import crop_to_multiple
from srfp.photos import SETTINGS, read_manifest, read_photo
from srfp.plan import Plan
from srfp.provenance import StaleWork
from srfp.sisr.train import forget_model, prepare_training, progress_path, record_path, train_model
from srfp.storage import Storage
from srfp.superres.shards import MARKER, ModelInfo, make_row, prepare_shards, shard_folder, write_shard

EDSR_L1 = "arch=EDSR,dataset=div2k,scale=2,loss=L1"


@pytest.fixture(autouse=True)
def pair_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SRFP_CACHE", str(tmp_path / "cache"))


def grid_file(tmp_path, name: str, **sections) -> str:
    """The smoke grid with some settings of its sections replaced, as a grid file."""
    grid = yaml.safe_load(resolve_grid_path("smoke").read_text())
    for section, values in sections.items():
        grid[section].update(values)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid))
    return str(path)


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def photo_sizes(root: Storage) -> set[int]:
    return {max(read_photo(root, image_id).shape[:2]) for image_id in read_manifest(root)["image_id"]}


def test_photos_rerun_with_another_long_side_stops_and_force_redoes_them(tmp_path, capsys):
    root = Storage(tmp_path / "run")
    assert main(["photos", "--grid", "smoke", "--root", root.uri]) == 0
    smaller = grid_file(tmp_path, "smaller", photos={"long_side": 128})
    assert main(["photos", "--grid", smaller, "--root", root.uri]) == 2
    error = error_line(capsys)
    assert f"the photo set {root.uri_of('photos')} was made with other settings (long_side: 256, now 128)" in error
    assert "use a new --root" in error and "`python -m srfp.grid photos --force`" in error
    assert photo_sizes(root) == {256} and json.loads(root.read_text(SETTINGS))["long_side"] == 256
    assert main(["photos", "--grid", smaller, "--root", root.uri, "--force"]) == 0
    assert photo_sizes(root) == {128} and json.loads(root.read_text(SETTINGS))["long_side"] == 128


def test_photos_made_without_a_record_of_their_settings_are_not_reused(tmp_path, capsys):
    root = Storage(tmp_path / "run")
    assert main(["photos", "--grid", "smoke", "--root", root.uri]) == 0
    root.delete(SETTINGS)  # as an earlier srfp left them
    assert main(["photos", "--grid", "smoke", "--root", root.uri]) == 2
    assert "; long_side: not recorded, now 256;" in error_line(capsys)


def test_photos_remove_temporaries_of_killed_writes_but_not_of_running_ones(tmp_path):
    root = Storage(tmp_path / "run")
    killed, running = root.path("photos/a.png.tmp-killed"), root.path("photos/b.png.tmp-running")
    os.makedirs(root.path("photos"))
    for path in (killed, running):
        with open(path, "wb") as handle:
            handle.write(b"part")
    two_hours_ago = time.time() - 7200
    os.utime(killed, (two_hours_ago, two_hours_ago))
    assert main(["photos", "--grid", "smoke", "--root", root.uri]) == 0
    assert not os.path.exists(killed) and os.path.exists(running)


def identity_shard(root: Storage, spec) -> None:
    """A complete shard of ``spec`` whose images are the photos themselves: rows in milliseconds."""
    model = ModelInfo.of_spec(spec)
    rows = []
    for photo in read_manifest(root).to_dict("records"):
        hr = crop_to_multiple(read_photo(root, photo["image_id"]), spec.scale)
        rows.append(make_row(model, photo, hr, hr))
    write_shard(root, model, rows, "float32")


def _no_ray(monkeypatch) -> list:
    """The calls a command makes to connect to Ray (none, when it stops before any work); a session's Ray may
    already run in this process, started by other tests."""
    connects = []
    monkeypatch.setattr("srfp.cluster.connect", lambda *args, **kwargs: connects.append(args))
    return connects


def test_superresolve_stops_before_ray_on_shards_of_other_photos_or_precision(tmp_path, capsys, monkeypatch):
    connects = _no_ray(monkeypatch)
    root = Storage(tmp_path / "run")
    assert main(["photos", "--grid", "smoke", "--root", root.uri]) == 0
    spec = Plan.of(load_grid("smoke"), EDSR_L1).models[0]
    identity_shard(root, spec)
    shard = root.uri_of(shard_folder(spec.model_id))
    bfloat16 = grid_file(tmp_path, "bfloat16", superres={"precision": "bfloat16"})
    assert main(["superresolve", "--grid", bfloat16, "--root", root.uri, "--only", EDSR_L1]) == 2
    assert f"the shard {shard} was made with other settings (precision: \"float32\", now \"bfloat16\")" in \
        error_line(capsys)
    smaller = grid_file(tmp_path, "smaller", photos={"long_side": 128})
    assert main(["photos", "--grid", smaller, "--root", root.uri, "--force"]) == 0
    capsys.readouterr()
    assert main(["superresolve", "--grid", smaller, "--root", root.uri, "--only", EDSR_L1]) == 2
    error = error_line(capsys)
    assert f"the shard {shard} was made with other settings (photos_digest: " in error
    assert "`python -m srfp.grid superresolve --force`" in error and not connects
    prepare_shards(root, [spec], "float32", force=True)
    assert not root.exists(f"{shard_folder(spec.model_id)}/{MARKER}")


def test_shards_of_a_model_trained_again_are_stale(tmp_path):
    grid = smoke_grid(iterations=2, checkpoint_every=2)
    spec = Plan.of(grid, EDSR_L1).models[0]
    root = Storage(tmp_path / "run")
    assert main(["photos", "--grid", "smoke", "--root", root.uri]) == 0
    train_model(spec, grid, root)
    identity_shard(root, spec)
    prepare_shards(root, [spec], "float32")  # made from this training: reused
    forget_model(root, spec.model_id)
    train_model(spec, grid, root)
    with pytest.raises(StaleWork, match="trained_model_digest: "):
        prepare_shards(root, [spec], "float32")


class Killed(Exception):
    """Stands for a trial killed after its first checkpoint."""


def killed_at_first_checkpoint(metrics: dict) -> None:
    raise Killed


def test_train_stops_before_ray_on_models_and_checkpoints_of_other_training_settings(tmp_path, capsys, monkeypatch):
    connects = _no_ray(monkeypatch)
    grid = smoke_grid(iterations=4, checkpoint_every=2)
    finished, interrupted = Plan.of(grid, "arch=EDSR,dataset=div2k,loss=L1").models
    root = Storage(tmp_path / "run")
    train_model(finished, grid, root)
    with pytest.raises(Killed):
        train_model(interrupted, grid, root, report=killed_at_first_checkpoint)
    assert root.is_file(record_path(finished.model_id)) and root.is_file(progress_path(interrupted.model_id))
    prepare_training(root, [finished, interrupted], grid)  # the same settings: both reused
    same_weights = smoke_grid(iterations=4, checkpoint_every=1, cuda_graphs=False, max_failures=0)
    prepare_training(root, [finished, interrupted], same_weights)  # how it runs changes no weight

    larger_lr = grid_file(tmp_path, "lr", training={"iterations": 4, "checkpoint_every": 2, "learning_rate": 0.01})
    assert main(["train", "--grid", larger_lr, "--root", root.uri, "--only", EDSR_L1]) == 2
    assert (f"the trained model {root.uri_of(record_path(finished.model_id))} was made with other settings "
            "(learning_rate: 0.001, now 0.01)") in error_line(capsys)
    bigger_patches = grid_file(tmp_path, "patch", training={"iterations": 4, "checkpoint_every": 2,
                                                             "patch_size": {2: 48, 4: 64}})
    assert main(["train", "--grid", bigger_patches, "--root", root.uri,
                 "--only", "arch=EDSR,dataset=div2k,scale=4,loss=L1"]) == 2
    assert (f"the checkpoint {root.uri_of(progress_path(interrupted.model_id))} was made with other settings "
            "(patch_size: 96, now 64)") in error_line(capsys)
    assert not connects
    prepare_training(root, [finished], smoke_grid(iterations=6), force=True)
    assert not root.exists(record_path(finished.model_id))
