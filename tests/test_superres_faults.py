"""A driver killed while super-resolving: the rerun keeps finished shards and completes the rest exactly."""

import os
import signal

from conftest import kill_group, ray_workers, smoke_grid, start_cli, trained_root, wait_for
from srfp.spec import SISRSpec
from srfp.superres.shards import MARKER, read_shard, shard_folder, shard_status

MODELS = [SISRSpec("EDSR", "div2k", 2, "L1", 1), SISRSpec("EDSR", "div2k", 4, "L1", 1)]
SELECTION = "arch=EDSR,loss=L1,dataset=div2k"


def _assert_every_shard_complete_with_one_row_per_photo(storage, models):
    for model in models:
        ids = read_shard(storage, model.model_id, columns=["image_id"]).column("image_id").to_pylist()
        assert shard_status(storage, model.model_id).state == "complete"
        assert len(ids) == len(set(ids)) == 7


def test_a_killed_super_resolution_actor_is_replaced_and_every_shard_completes_exactly(tmp_path):
    storage = trained_root(tmp_path, smoke_grid(iterations=1, checkpoint_every=1), MODELS)
    driver = start_cli(["superresolve", "--root", storage.uri, "--only", SELECTION], tmp_path)
    wait_for(lambda: ray_workers(driver, "ray::MapWorker(MapBatches(SuperResolver))"), what="a super-resolution actor")
    os.kill(ray_workers(driver, "ray::MapWorker(MapBatches(SuperResolver))")[0], signal.SIGKILL)
    assert driver.wait(timeout=300) == 0
    _assert_every_shard_complete_with_one_row_per_photo(storage, MODELS)


def test_a_killed_superresolve_is_rerun_without_redoing_finished_shards(tmp_path):
    storage = trained_root(tmp_path, smoke_grid(iterations=1, checkpoint_every=1), MODELS)
    arguments = ["superresolve", "--root", storage.uri, "--only", SELECTION]
    first = start_cli(arguments, tmp_path)
    wait_for(lambda: storage.is_file(f"{shard_folder(MODELS[0].model_id)}/{MARKER}"), what="a first complete shard")
    kill_group(first)
    finished = [m.model_id for m in MODELS if shard_status(storage, m.model_id).state == "complete"]
    assert 0 < len(finished) < len(MODELS)
    before = {p: (storage.read_bytes(p), os.stat(os.path.join(storage.uri, p)).st_mtime_ns)
              for model_id in finished for p in storage.list(shard_folder(model_id))}
    rerun = start_cli(arguments, tmp_path)
    assert rerun.wait(timeout=300) == 0
    assert before == {p: (storage.read_bytes(p), os.stat(os.path.join(storage.uri, p)).st_mtime_ns) for p in before}
    _assert_every_shard_complete_with_one_row_per_photo(storage, MODELS)
