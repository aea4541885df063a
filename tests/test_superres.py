"""Super-resolving the photo set: rows per the data contract, tiles equal to whole images, exact resumption."""

import dataclasses
import io
import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from conftest import smoke_grid, trained_root
from srfp.images import decode_image, downscale, imresize, psnr_y
from srfp.plan import Plan
from srfp.sisr.archs import TINY, create_model
from srfp.spec import SISRSpec
from srfp.status import render_status
from srfp.storage import Storage
from srfp.superres.core import superresolve
from srfp.superres.pipeline import superresolve_grid
from srfp.superres.shards import MARKER, SCHEMA, read_shard, shard_folder, shard_status

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
    """Both models trained once for the module (long enough for x2 to pass bicubic)."""
    return trained_root(tmp_path_factory.mktemp("trained"), grid, MODELS)


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
        rows = table.to_pandas().set_index("image_id").sort_index()
        assert list(rows.index) == sorted(manifest.image_id)
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


def test_bfloat16_super_resolution_is_recorded_in_the_marker_and_changes_the_images(ray_local, root, grid):
    superresolve_grid(grid, MODELS[:1], root, log=lambda *_: None)
    float32 = read_shard(root, MODELS[0].model_id).to_pandas().set_index("image_id").sort_index()
    bfloat16_grid = dataclasses.replace(grid, superres=dataclasses.replace(grid.superres, precision="bfloat16"))
    root.delete(shard_folder(MODELS[0].model_id))
    superresolve_grid(bfloat16_grid, MODELS[:1], root, log=lambda *_: None)
    marker = json.loads(root.read_text(f"{shard_folder(MODELS[0].model_id)}/{MARKER}"))
    assert marker["precision"] == "bfloat16"
    bfloat16 = read_shard(root, MODELS[0].model_id).to_pandas().set_index("image_id").sort_index()
    assert list(bfloat16.index) == list(float32.index) and (bfloat16.png != float32.png).any()


def test_status_reports_every_stage_from_storage(ray_local, root, grid):
    plan = Plan.of(grid, "arch=EDSR|RCAN,dataset=div2k,loss=L1,scale=2")
    superresolve_grid(grid, MODELS[:1], root, log=lambda *_: None)
    text = render_status(plan, root)
    assert "photos        built" in text and "train         1 of 2 models trained" in text
    assert f"{'EDSR-div2k-x2-L1-s1':<36} {'trained':<36} superres: complete (7 images)" in text
    assert f"{'RCAN-div2k-x2-L1-s1':<36} {'not trained':<36} superres: missing" in text


def test_shards_on_s3_read_with_pyarrow_and_list_with_boto3(ray_local, tmp_path, grid, s3_bucket, boto3_client):
    storage = Storage(f"s3://{s3_bucket}/run")
    local = trained_root(tmp_path, grid, MODELS[:1])
    for path in local.list(recursive=True):
        storage.write_bytes(path, local.read_bytes(path))
    superresolve_grid(grid, MODELS[:1], storage, log=lambda *_: None)
    keys = [o["Key"] for o in boto3_client.list_objects_v2(Bucket=s3_bucket, Prefix="run/sr/")["Contents"]]
    parts = [k for k in keys if k.endswith(".parquet")]
    assert f"run/sr/model_id={MODELS[0].model_id}/_SUCCESS" in keys and parts
    table = pq.read_table(f"{s3_bucket}/run/sr/model_id={MODELS[0].model_id}", filesystem=storage.fs)
    assert table.num_rows == 7
