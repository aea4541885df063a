"""`ingest` imports images super-resolved elsewhere, one folder per model, as complete shards."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from srfp.images import crop_to_multiple, decode_image, downscale, encode_png, imresize
from srfp.photos import MANIFEST
from srfp.storage import Storage
from srfp.superres import ingest as ingest_module
from srfp.superres.ingest import IngestError, ingest, read_metadata
from srfp.superres.shards import SCHEMA, read_shard, shard_folder, shard_status

#: image_id -> (tag, split, height, width) of the tiny photo set.
PHOTOS = {"cats-a": ("cats", "train", 30, 41), "cats-b": ("cats", "test", 32, 32), "dogs-a": ("dogs", "val", 33, 27)}
ESRGAN = {"arch": "ESRGAN", "scale": 4, "source": "pretrained"}
ESRGAN_ID = "ESRGAN-NA-x4-ESRGAN-NA-pretrained"
EDSR = {"arch": "EDSR", "dataset": "div2k", "scale": 2, "loss": "L1", "seed": 1, "source": "custom"}


def build_photos(storage: Storage) -> dict[str, np.ndarray]:
    """Three random photos and their manifest under ``storage``, as the photo stage leaves them."""
    rng = np.random.default_rng(0)
    photos = {image_id: rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
              for image_id, (_, _, height, width) in PHOTOS.items()}
    for image_id, photo in photos.items():
        storage.write_bytes(f"photos/{image_id}.png", encode_png(photo))
    manifest = pd.DataFrame([{"image_id": image_id, "tag": tag, "source": f"{tag}/{image_id}.jpg", "height": height,
                              "width": width, "megapixels_original": 1.0, "split": split}
                             for image_id, (tag, split, height, width) in PHOTOS.items()])
    sink = io.BytesIO()
    manifest.to_parquet(sink, index=False)
    storage.write_bytes(MANIFEST, sink.getvalue())
    return photos


@pytest.fixture
def root(tmp_path):
    storage = Storage(tmp_path / "run")
    return storage, build_photos(storage)


def model_folder(parent, name, metadata, images: dict[str, np.ndarray], suffix=".png"):
    """``parent/name`` with a model.yaml and one image per entry of ``images``."""
    folder = parent / name
    folder.mkdir(parents=True)
    (folder / "model.yaml").write_text(yaml.safe_dump(metadata))
    for image_id, image in images.items():
        Image.fromarray(image).save(folder / f"{image_id}{suffix}")
    return folder


def cropped(photos, scale):
    """'Super-resolved' images identical to the photos cropped to the scale (PSNR infinite)."""
    return {image_id: crop_to_multiple(photo, scale) for image_id, photo in photos.items()}


def bicubic(photos, scale):
    """Bicubic upscales of each photo's LR version: the right size, a finite PSNR."""
    return {image_id: imresize(downscale(photo, scale)[1], scale=scale) for image_id, photo in photos.items()}


def test_a_published_model_becomes_a_complete_shard_with_one_row_per_photo(root, tmp_path):
    storage, photos = root
    images = cropped(photos, 4)
    model_folder(tmp_path / "outside", "esrgan-results", ESRGAN, images)

    report = ingest(tmp_path / "outside", storage, log=lambda line: None)

    assert report.ingested == [ESRGAN_ID] and report.already_complete == [] and report.problems == []
    assert shard_status(storage, ESRGAN_ID).state == "complete" and shard_status(storage, ESRGAN_ID).rows == 3
    table = read_shard(storage, ESRGAN_ID)
    assert table.schema.names == SCHEMA.names
    rows = {row["image_id"]: row for row in table.to_pylist()}
    assert set(rows) == set(PHOTOS)
    for image_id, (tag, split, _, _) in PHOTOS.items():
        row = rows[image_id]
        assert (row["model_id"], row["source"], row["arch"], row["dataset"], row["scale"], row["loss"], row["seed"]) == \
            (ESRGAN_ID, "pretrained", "ESRGAN", "NA", 4, "NA", None)
        assert (row["tag"], row["split"]) == (tag, split)
        np.testing.assert_array_equal(decode_image(row["png"]), images[image_id])
        assert (row["height"], row["width"]) == images[image_id].shape[:2]
        assert row["psnr"] == math.inf


def test_a_custom_model_gets_its_grid_id_and_any_image_format_is_read(root, tmp_path):
    storage, photos = root
    images = bicubic(photos, 2)
    model_folder(tmp_path / "outside", "mine", EDSR, images, suffix=".tiff")

    report = ingest(tmp_path / "outside", storage, log=lambda line: None)

    assert report.ingested == ["EDSR-div2k-x2-L1-s1"] and report.problems == []
    rows = read_shard(storage, "EDSR-div2k-x2-L1-s1").to_pylist()
    assert {(r["source"], r["arch"], r["dataset"], r["scale"], r["loss"], r["seed"]) for r in rows} == \
        {("custom", "EDSR", "div2k", 2, "L1", 1)}
    assert all(10 < r["psnr"] < math.inf for r in rows)


def test_missing_mismatched_and_unreadable_images_are_named_and_block_only_their_model(root, tmp_path):
    storage, photos = root
    outside = tmp_path / "outside"
    model_folder(outside, "good", ESRGAN, cropped(photos, 4))
    broken = model_folder(outside, "broken", {**ESRGAN, "arch": "SwinIR"},
                          {"cats-b": photos["cats-b"][:31], "stray": photos["cats-b"]})
    (broken / "dogs-a.jpg").write_bytes(b"not a jpeg")  # cats-a has no image at all
    lines = []

    report = ingest(outside, storage, log=lines.append)

    swinir = "SwinIR-NA-x4-SwinIR-NA-pretrained"
    assert report.ingested == [ESRGAN_ID]
    assert shard_status(storage, swinir).state == "missing"
    problems = dict(report.problems)
    assert problems[str(broken / "cats-a.png")].startswith("missing")
    assert problems[str(broken / "cats-b.png")].startswith("is 32x31, expected 32x32")
    assert problems[str(broken / "dogs-a.jpg")].startswith("unreadable: cannot decode image")
    assert problems[str(broken / "stray.png")] == "ignored: not a photo of the manifest"
    assert problems[str(broken)].startswith("not ingested: 3 of 3 photos") and swinir in problems[str(broken)]
    assert len(report.problems) == 5
    assert f"{swinir}: not ingested, 3 photos, 5 problems" in lines
    assert f"{ESRGAN_ID}: ingested, 3 photos, 0 problems" in lines


def test_a_rerun_skips_complete_models_without_rewriting_them(root, tmp_path, monkeypatch):
    storage, photos = root
    model_folder(tmp_path / "outside", "esrgan", ESRGAN, cropped(photos, 4))
    ingest(tmp_path / "outside", storage, log=lambda line: None)
    files = {path: storage.read_bytes(path) for path in storage.list(shard_folder(ESRGAN_ID))}
    monkeypatch.setattr(ingest_module, "write_shard", lambda *args: pytest.fail("a complete shard was rewritten"))
    lines = []

    report = ingest(tmp_path / "outside", storage, log=lines.append)

    assert report.ingested == [] and report.already_complete == [ESRGAN_ID] and report.problems == []
    assert lines == [f"{ESRGAN_ID}: skipped, its shard is already complete"]
    assert {path: storage.read_bytes(path) for path in storage.list(shard_folder(ESRGAN_ID))} == files


@pytest.mark.parametrize("metadata, field_named, allowed", [
    ({**ESRGAN, "source": "trained"}, "source 'trained'", "custom, pretrained, external"),
    ({**EDSR, "scale": 3}, "scale 3", "allowed values: 2, 4"),
    ({**EDSR, "loss": "L2"}, "loss 'L2'", "L1, VGG_GAN, ResNet_GAN"),
    ({key: value for key, value in ESRGAN.items() if key != "scale"}, "scale is missing", ""),
    ({key: value for key, value in EDSR.items() if key != "dataset"}, "dataset is missing", "div2k, flickr2k"),
    ({**ESRGAN, "sclae": 4}, "field 'sclae'", "arch, dataset, scale, loss, seed, source"),
    ({**ESRGAN, "dataset": "div2k"}, "dataset must be omitted, NA or null", ""),
    ({**ESRGAN, "arch": "Real-ESRGAN"}, "arch 'Real-ESRGAN'", "letters, digits, _ . +"),
])
def test_bad_metadata_is_a_problem_naming_the_file_and_field(root, tmp_path, metadata, field_named, allowed):
    storage, photos = root
    folder = model_folder(tmp_path / "outside", "bad", metadata, cropped(photos, 4))

    with pytest.raises(IngestError) as raised:
        read_metadata(folder / "model.yaml")
    assert str(raised.value).startswith(f"{folder / 'model.yaml'}: {field_named}") and allowed in str(raised.value)

    report = ingest(tmp_path / "outside", storage, log=lambda line: None)
    assert report.ingested == [] and report.problems == [(str(folder / "model.yaml"), raised.value.reason)]
    assert storage.list("sr", recursive=True) == []


def test_published_metadata_may_spell_unknown_hyperparameters_as_na_or_null(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("arch: SwinIR\nscale: 2\nsource: external\ndataset: NA\nloss: null\n")
    model = read_metadata(path)
    assert (model.model_id, model.source, model.dataset, model.loss, model.seed) == \
        ("SwinIR-NA-x2-SwinIR-NA-pretrained", "external", "NA", "NA", None)


def test_a_folder_without_model_subfolders_is_an_error(root, tmp_path):
    storage, _ = root
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="no model subfolders"):
        ingest(tmp_path / "empty", storage)
    with pytest.raises(IngestError, match="not a folder"):
        ingest(tmp_path / "absent", storage)


def test_ingest_onto_s3(s3_bucket, boto3_client, tmp_path):
    storage = Storage(f"s3://{s3_bucket}/run")
    photos = build_photos(storage)
    model_folder(tmp_path / "outside", "esrgan", ESRGAN, cropped(photos, 4))

    report = ingest(tmp_path / "outside", storage, log=lambda line: None)

    assert report.ingested == [ESRGAN_ID]
    listed = boto3_client.list_objects_v2(Bucket=s3_bucket, Prefix=f"run/{shard_folder(ESRGAN_ID)}/")
    keys = sorted(item["Key"] for item in listed["Contents"] if not item["Key"].endswith("/"))  # not folder markers
    assert [key.rsplit("/", 1)[-1] for key in keys] == ["_SUCCESS", "part-00000.parquet"]
    body = boto3_client.get_object(Bucket=s3_bucket, Key=keys[1])["Body"].read()
    table = pq.read_table(io.BytesIO(body))
    assert table.schema.names == SCHEMA.names
    assert sorted(table.column("image_id").to_pylist()) == sorted(PHOTOS)
