"""Super-resolving the photo set: rows per the data contract, tiles equal to whole images, exact resumption."""

import dataclasses
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import torch

from conftest import smoke_grid, trained_root
from srfp.gridspec import Resources, SuperresSettings
from srfp.images import decode_image, downscale, encode_png, imresize, psnr_y
from srfp.photos import read_manifest, read_photo
from srfp.plan import Plan
from srfp.sisr.archs import TINY, create_model
from srfp.sisr.train import load_trained, train_model
from srfp.spec import SISRSpec
from srfp.status import render_status
from srfp.storage import Storage
from srfp.superres.core import superresolve, superresolve_photo
from srfp.superres.pipeline import (
    SuperresolveFailed,
    SuperResolver,
    TrainedNetwork,
    actor_pool,
    cpu_task_cpus,
    pack_shard,
    superresolve_grid,
    superresolve_model,
)
from srfp.superres.shards import (
    MARKER,
    PNG_LEVEL,
    SCHEMA,
    ModelInfo,
    make_row,
    part_file,
    read_shard,
    shard_folder,
    shard_status,
    stage_row,
)
from srfp.superres.stages import encode_rows, read_pairs

MODELS = [SISRSpec("EDSR", "div2k", 2, "L1", 1), SISRSpec("EDSR", "div2k", 4, "L1", 1)]


@pytest.mark.parametrize("arch", ["EDSR", "RDN", "RCAN"])
def test_tiled_super_resolution_equals_the_whole_image_within_one_grey_level(arch):
    torch.manual_seed(0)
    model = create_model(arch, 2, **TINY[arch]).eval()
    lr = np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    whole = superresolve(model, lr, 2, torch.device("cpu"))
    tiled = superresolve(model, lr, 2, torch.device("cpu"), tile_size=16, tile_overlap=12)
    assert whole.shape == tiled.shape == (74, 90, 3)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


@pytest.fixture(scope="module")
def grid():
    return smoke_grid(iterations=600, checkpoint_every=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, grid):
    """Both models trained once for the module: x2 long enough to pass bicubic (at 400 iterations it passes by
    0.06 dB), x4 briefly, as no test here measures its quality (600 iterations of it took 50 s)."""
    storage = trained_root(tmp_path_factory.mktemp("trained"), grid, MODELS[:1])
    train_model(MODELS[1], smoke_grid(iterations=20, checkpoint_every=20), storage)
    return storage


@pytest.fixture
def root(trained, tmp_path):
    """A private copy of the trained root for each test."""
    shutil.copytree(trained.uri, tmp_path / "run")
    return Storage(tmp_path / "run")


def test_every_trained_model_gets_one_row_per_photo_following_the_contract(ray_local, root, grid):
    states = superresolve_grid(grid, MODELS + [SISRSpec("EDSR", "flickr2k", 2, "L1", 1)], root, log=lambda *_: None)
    assert states == {"EDSR-div2k-x2-L1-s1": "complete", "EDSR-div2k-x4-L1-s1": "complete",
                      "EDSR-flickr2k-x2-L1-s1": "not trained"}
    manifest = pd.read_parquet(io.BytesIO(root.read_bytes("photos/manifest.parquet")))
    for spec in MODELS:
        assert json.loads(root.read_text(f"{shard_folder(spec.model_id)}/{MARKER}"))["precision"] == "float32"
        table = read_shard(root, spec.model_id)
        assert table.schema.equals(SCHEMA, check_metadata=False)
        assert table.column("image_id").to_pylist() == list(manifest.image_id)  # in the manifest's order
        rows = table.to_pandas().set_index("image_id").sort_index()
        assert (rows.model_id == spec.model_id).all() and (rows.source == "custom").all()
        assert (rows.split == manifest.set_index("image_id").split.sort_index()).all()
        for image_id, row in rows.iterrows():
            photo = decode_image(root.read_bytes(f"photos/{image_id}.png"))
            hr, _ = downscale(photo, spec.scale)
            sr = decode_image(row.png)
            assert sr.shape == hr.shape == (row.height, row.width, 3)
            assert row.psnr == pytest.approx(psnr_y(hr, sr, spec.scale))
    # A trained L1 model beats bicubic upsampling on the photos (x2; tiny x4 models only just reach it).
    rows = read_shard(root, "EDSR-div2k-x2-L1-s1").to_pandas()
    bicubic = [psnr_y(*_bicubic_pair(decode_image(root.read_bytes(f"photos/{i}.png")), 2), 2) for i in rows.image_id]
    assert rows.psnr.mean() > np.mean(bicubic)


def _bicubic_pair(photo, scale):
    hr, lr = downscale(photo, scale)
    return hr, imresize(lr, scale=scale)


def _photos(storage):
    return read_manifest(storage)[["image_id", "tag", "split"]].to_dict("records")


def _plain_rows(storage, spec, photos):
    """The reference: the rows the plain functions make, one photo after the other in this process."""
    model = load_trained(storage, spec.model_id)
    return [make_row(ModelInfo.of_spec(spec), photo,
                     *superresolve_photo(model, read_photo(storage, photo["image_id"]), spec.scale, torch.device("cpu")))
            for photo in photos]


def test_the_actor_stage_only_turns_lr_images_into_sr_and_the_three_stages_make_the_plain_rows(trained, grid):
    spec, photos = MODELS[1], _photos(trained)[:2]
    rows = [{"model_id": spec.model_id, "scale": spec.scale, **photo} for photo in photos]
    pairs = read_pairs(pa.Table.from_pylist(rows), trained.uri)
    made = SuperResolver(trained.uri, grid, {spec.model_id: TrainedNetwork(spec.model_id)})(pairs)
    assert made.column_names == ["model_id", "scale", "image_id", "tag", "split", "hr", "sr", "error"]
    assert made.column("hr") == pairs.column("hr") and made.column("error").null_count == 2
    assert encode_rows(made, {spec.model_id: ModelInfo.of_spec(spec)}).to_pylist() == _plain_rows(trained, spec, photos)


def test_the_cpu_stages_import_no_torch_so_their_workers_start_quickly():
    imported = subprocess.run([sys.executable, "-c", "import sys, srfp.superres.stages; print('torch' in sys.modules)"],
                              capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "False"


def test_a_shard_is_made_in_three_stages_a_batch_at_a_time_with_the_plain_rows_byte_for_byte(ray_local, root, grid):
    spec, photos = MODELS[0], _photos(root)
    pairs_of_photos = dataclasses.replace(grid, superres=dataclasses.replace(grid.superres, batch_size=2))
    summary = superresolve_model(spec, pairs_of_photos, root, photos).get_stats_summary()
    operators = {op.operator_name: op for op in _operators(summary)}
    stages = ["MapBatches(read_pairs)", "MapBatches(SuperResolver)", "MapBatches(stage_rows)"]
    assert list(operators) == ["FromItems", *stages]  # no stage fused into its neighbour
    for stage in stages:
        assert (operators[stage].output_num_rows.max, operators[stage].output_num_rows.sum) == (2, 7)
    marker = json.loads(root.read_text(f"{shard_folder(spec.model_id)}/{MARKER}"))
    assert (marker["rows"], marker["png_level"]) == (7, PNG_LEVEL)
    made = sorted(read_shard(root, spec.model_id).to_pylist(), key=lambda row: row["image_id"])
    plain = sorted(_plain_rows(root, spec, photos), key=lambda row: row["image_id"])
    for made_row, plain_row in zip(made, plain, strict=True):
        for column in SCHEMA.names:
            assert made_row[column] == plain_row[column], (plain_row["image_id"], column)
        assert made_row["png"] == encode_png(decode_image(made_row["png"]), PNG_LEVEL)


def _operators(summary):
    """Every operator's stats of an executed dataset, upstream first."""
    return [op for parent in summary.parents for op in _operators(parent)] + list(summary.operators_stats)


@pytest.mark.parametrize("cluster, actor, actors, batches, sizes", [
    ({"CPU": 24, "GPU": 3}, Resources(cpus=2, gpus=0.5), 0, 50, (6, 50)),  # the GPU shares there, then one per batch
    ({"CPU": 24, "GPU": 3}, Resources(cpus=2, gpus=0.5), 4, 50, (4, 4)),   # superres.actors caps the pool
    ({"CPU": 24, "GPU": 3}, Resources(cpus=2, gpus=0.5), 0, 3, (3, 3)),    # never more actors than batches
    ({"CPU": 8, "GPU": 4}, Resources(cpus=2, gpus=0.5), 0, 50, (3, 50)),   # CPUs limit too, one kept for the stages
    ({"CPU": 0}, Resources(cpus=2, gpus=0.5), 0, 50, (1, 50)),             # no GPU node yet: the autoscaler adds them
    ({"CPU": 2}, Resources(cpus=0.5, gpus=0), 0, 50, (2, 50)),             # CPU actors beside one CPU for the stages
])
def test_the_actor_pool_starts_with_what_the_cluster_fits_and_grows_to_its_limit(monkeypatch, cluster, actor, actors,
                                                                                 batches, sizes):
    monkeypatch.setattr(ray, "cluster_resources", lambda: cluster)
    pool = actor_pool(SuperresSettings(actor=actor, actors=actors), batches)
    assert (pool.min_size, pool.max_size) == sizes


def test_a_shard_is_packed_in_the_manifests_order_whatever_order_its_rows_were_staged_in(ray_local, tmp_path):
    model = ModelInfo("EDSR-div2k-x2-L1-s1", "custom", "EDSR", "div2k", 2, "L1", 1)
    photos = [{"image_id": f"photo-{n}", "tag": "t", "split": "test"} for n in range(5)]
    image = np.zeros((4, 4, 3), np.uint8)
    shards = []
    for order in ([0, 1, 2, 3, 4], [3, 0, 4, 2, 1]):  # as the workers happened to finish
        storage = Storage(tmp_path / "-".join(map(str, order)))
        for position in order:
            stage_row(storage, model.model_id, position, make_row(model, photos[position], image, image))
        pack_shard(storage, model.model_id, len(photos), rows_per_file=2, cpus=0.25)
        assert storage.list(shard_folder(model.model_id), recursive=True) == [
            part_file(model.model_id, part) for part in range(3)]  # the staged rows are gone
        assert read_shard(storage, model.model_id).column("image_id").to_pylist() == [p["image_id"] for p in photos]
        shards.append([storage.read_bytes(part_file(model.model_id, part)) for part in range(3)])
    assert shards[0] == shards[1]


@pytest.mark.parametrize("actor, task_cpus", [
    (Resources(cpus=0.5, gpus=0), 0.25),  # two such actors on two 1-CPU nodes leave half a CPU on each
    (Resources(cpus=1, gpus=0), 0.5),     # the same as the actor's, and the read stage fuses into the actors
    (Resources(cpus=2, gpus=0.5), 1.0),
    (Resources(cpus=8, gpus=1), 1.0),
])
def test_a_cpu_stage_task_fits_wherever_another_actor_would(actor, task_cpus):
    assert cpu_task_cpus(SuperresSettings(actor=actor)) == task_cpus


def test_a_rerun_rewrites_nothing_and_a_partial_shard_is_redone_exactly(ray_local, root, grid):
    superresolve_grid(grid, MODELS, root, log=lambda *_: None)
    complete = {p: root.read_bytes(p) for p in root.list(shard_folder(MODELS[0].model_id))}
    # Interrupt the second model's shard: its marker is gone and a stray part remains.
    partial = shard_folder(MODELS[1].model_id)
    root.delete(f"{partial}/_SUCCESS")
    root.write_bytes(f"{partial}/stray.parquet", root.read_bytes(root.list(partial)[0]))
    assert shard_status(root, MODELS[1].model_id).state == "partial"
    messages = []
    superresolve_grid(grid, MODELS, root, log=messages.append)
    assert f"superresolve: {MODELS[1].model_id}: removing a partial shard" in messages
    assert complete == {p: root.read_bytes(p) for p in root.list(shard_folder(MODELS[0].model_id))}
    ids = read_shard(root, MODELS[1].model_id, columns=["image_id"]).column("image_id").to_pylist()
    assert len(ids) == len(set(ids)) == 7


def test_a_model_that_fails_in_the_shared_pipeline_gets_no_shard_and_the_others_complete(ray_local, root, grid):
    root.write_bytes(f"models/{MODELS[0].model_id}.safetensors", b"not weights")  # its actor cannot load it
    messages = []
    with pytest.raises(SuperresolveFailed, match=f"1 models failed: {MODELS[0].model_id}; rerun `superresolve`"):
        superresolve_grid(grid, MODELS, root, log=messages.append)
    assert shard_status(root, MODELS[0].model_id).state == "missing"  # nothing staged for it
    assert shard_status(root, MODELS[1].model_id).state == "complete"
    assert any(m.startswith(f"superresolve: model 1/2 {MODELS[0].model_id}: failed: SafetensorError") for m in messages)


def test_bfloat16_super_resolution_is_recorded_in_the_marker_and_changes_the_images(ray_local, root, grid):
    bfloat16_grid = dataclasses.replace(grid, superres=dataclasses.replace(grid.superres, precision="bfloat16"))
    superresolve_grid(bfloat16_grid, MODELS[:1], root, log=lambda *_: None)
    marker = json.loads(root.read_text(f"{shard_folder(MODELS[0].model_id)}/{MARKER}"))
    assert marker["precision"] == "bfloat16"
    bfloat16 = {row["image_id"]: row["png"] for row in read_shard(root, MODELS[0].model_id).to_pylist()}
    float32 = {row["image_id"]: row["png"] for row in _plain_rows(root, MODELS[0], _photos(root))}
    assert bfloat16.keys() == float32.keys() and bfloat16 != float32


def test_status_reports_every_stage_from_storage(ray_local, root, grid):
    plan = Plan.of(grid, "arch=EDSR|RCAN,dataset=div2k,loss=L1,scale=2")
    superresolve_grid(grid, MODELS[:1], root, log=lambda *_: None)
    text = render_status(plan, root)
    assert "photos        built" in text and "train         1 of 2 models trained" in text
    assert f"{'EDSR-div2k-x2-L1-s1':<36} {'trained':<36} superres: complete (7 images)" in text
    assert f"{'RCAN-div2k-x2-L1-s1':<36} {'not trained':<36} superres: missing" in text


def test_shards_on_s3_read_with_pyarrow_and_list_with_boto3(ray_local, trained, grid, s3_bucket, boto3_client):
    storage = Storage(f"s3://{s3_bucket}/run")
    for path in trained.list(recursive=True):
        storage.write_bytes(path, trained.read_bytes(path))
    superresolve_grid(grid, MODELS[:1], storage, log=lambda *_: None)
    keys = [o["Key"] for o in boto3_client.list_objects_v2(Bucket=s3_bucket, Prefix="run/sr/")["Contents"]]
    parts = [k for k in keys if k.endswith(".parquet")]
    assert f"run/sr/model_id={MODELS[0].model_id}/_SUCCESS" in keys and parts
    table = pq.read_table(f"{s3_bucket}/run/sr/model_id={MODELS[0].model_id}", filesystem=storage.fs)
    assert table.num_rows == 7
