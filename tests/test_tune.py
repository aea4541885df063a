"""Ray Tune trains the grid: one trial per model, finished models never retrained, local or S3 roots."""

import json

from conftest import smoke_grid
from srfp.plan import Plan
from srfp.sisr.train import record_path, weights_path
from srfp.sisr.tuning import train_grid
from srfp.storage import Storage

SELECTION = "arch=EDSR,dataset=div2k,loss=L1"


def test_every_pending_model_is_trained_once_and_finished_ones_are_skipped(ray_local, tmp_path):
    grid = smoke_grid(iterations=4, checkpoint_every=2)
    specs = Plan.of(grid, SELECTION).models
    storage, messages = Storage(tmp_path), []
    table = train_grid(grid, specs, storage, log=messages.append)
    assert sorted(table.model_id) == sorted(s.model_id for s in specs) and table.val_psnr.notna().all()
    assert messages[0] == "train: 0 of 2 models already trained, 2 to train"
    before = {s.model_id: storage.read_bytes(weights_path(s.model_id)) for s in specs}
    records = {s.model_id: storage.read_text(record_path(s.model_id)) for s in specs}
    train_grid(grid, specs, storage, log=messages.append)
    assert messages[-1] == "train: 2 of 2 models already trained, 0 to train"
    assert before == {s.model_id: storage.read_bytes(weights_path(s.model_id)) for s in specs}
    assert records == {s.model_id: storage.read_text(record_path(s.model_id)) for s in specs}
    assert storage.read_text("models/psnr.csv").splitlines()[0].startswith("model_id,arch,dataset,scale,loss,seed,val_psnr")


def test_trials_report_their_metrics_to_tune(ray_local, tmp_path):
    grid = smoke_grid(iterations=4, checkpoint_every=2)
    spec = Plan.of(grid, SELECTION + ",scale=2").models[0]
    storage = Storage(tmp_path)
    train_grid(grid, [spec], storage, log=lambda *_: None)
    results = [p for p in storage.list("tune", recursive=True) if p.endswith(f"{spec.model_id}/result.json")]
    rows = [json.loads(line) for line in storage.read_text(results[0]).splitlines()]
    assert [r["iteration"] for r in rows] == [2, 4]
    assert all({"loss_l1", "val_psnr", "images_per_second"} <= set(r) for r in rows)


def test_training_onto_an_s3_root(ray_local, s3_bucket, boto3_client):
    grid = smoke_grid(iterations=2, checkpoint_every=2)
    spec = Plan.of(grid, SELECTION + ",scale=4").models[0]
    train_grid(grid, [spec], Storage(f"s3://{s3_bucket}/run"), log=lambda *_: None)
    keys = {o["Key"] for o in boto3_client.list_objects_v2(Bucket=s3_bucket, MaxKeys=1000)["Contents"]}
    assert {f"run/models/{spec.model_id}.safetensors", f"run/models/{spec.model_id}.json", "run/models/psnr.csv"} <= keys
    assert any(key.startswith("run/tune/") for key in keys)
    assert not any(key.endswith(".pt") for key in keys)  # the checkpoint is removed once the model is done


def test_a_trials_process_trains_the_next_model_bit_identically_to_a_new_process(ray_local, tmp_path):
    """Tune hands a finished trial's process to the next trial; a model trained there equals the same model
    trained alone in a process of its own."""
    grid = smoke_grid(iterations=4, checkpoint_every=2, max_concurrent_trials=1)
    first, second = Plan.of(grid, SELECTION).models
    together, alone = Storage(tmp_path / "together"), Storage(tmp_path / "alone")
    train_grid(grid, [first, second], together, log=lambda *_: None)
    train_grid(grid, [second], alone, log=lambda *_: None)

    def pid(storage, spec):
        [path] = [p for p in storage.list("tune", recursive=True) if p.endswith(f"{spec.model_id}/result.json")]
        return json.loads(storage.read_text(path).splitlines()[-1])["pid"]

    assert pid(together, first) == pid(together, second)  # one process trained both
    assert together.read_bytes(weights_path(second.model_id)) == alone.read_bytes(weights_path(second.model_id))
