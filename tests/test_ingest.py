"""`ingest` imports images super-resolved elsewhere, one folder per model, as complete shards."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from srfp.grid import main
from srfp.gridspec import load_grid
from srfp.images import crop_to_multiple, decode_image, downscale, encode_png, imresize
from srfp.photos import MANIFEST
from srfp.plan import Plan
from srfp.status import render_status
from srfp.storage import Storage
from srfp.superres import ingest as ingest_module
from srfp.superres.ingest import IngestError, ingest, read_metadata
from srfp.superres.shards import SCHEMA, UNKNOWN_PRECISION, ModelInfo, complete_models, read_shard, shard_folder, shard_status, write_shard

#: image_id -> (tag, split, height, width) of the tiny photo set.
PHOTOS = {"cats-a": ("cats", "train", 30, 41), "cats-b": ("cats", "test", 32, 32), "dogs-a": ("dogs", "val", 33, 27)}
#: Each photo's original file in the photo source (two share the name IMG_1).
ORIGINALS = {"cats-a": "cats/IMG_1.jpg", "cats-b": "cats/2019/cat b.jpeg", "dogs-a": "dogs/IMG_1.jpg"}
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
    manifest = pd.DataFrame([{"image_id": image_id, "tag": tag, "source": ORIGINALS[image_id], "height": height,
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
    broken = model_folder(outside, "broken", {**ESRGAN, "arch": "SwinIR", "source": "external"},
                          {"cats-b": photos["cats-b"][:31], "stray": photos["cats-b"]})
    (broken / "dogs-a.jpg").write_bytes(b"not a jpeg")  # cats-a has no image at all
    lines = []

    report = ingest(outside, storage, log=lines.append)

    swinir = "SwinIR-NA-x4-SwinIR-NA-external"
    assert report.ingested == [ESRGAN_ID]
    assert shard_status(storage, swinir).state == "missing"
    problems = dict(report.problems)
    assert problems[str(broken / "cats-b.png")].startswith("is 32x31, expected 32x32")
    assert problems[str(broken / "dogs-a.jpg")].startswith("unreadable: cannot decode image")
    folder_problems = [reason for path, reason in report.problems if path == str(broken)]
    assert folder_problems[0] == ("ignored: 1 image files name no photo of the manifest (neither an image id nor an "
                                  "original file name): stray.png")
    assert folder_problems[1].startswith("missing: 1 of 3 photos have no image, looked for by image id or original "
                                         "file name") and folder_problems[1].count("cats-a.png") == 1
    assert folder_problems[2].startswith("not ingested: 3 of 3 photos") and swinir in folder_problems[2]
    assert len(report.problems) == 5
    assert f"{swinir}: not ingested, 3 photos, 5 problems" in lines
    assert f"{ESRGAN_ID}: ingested, 3 photos, 0 problems" in lines


def test_images_named_by_the_photos_original_file_names_are_matched_unless_two_photos_share_it(root, tmp_path):
    storage, photos = root
    images = cropped(photos, 4)
    folder = model_folder(tmp_path / "outside", "esrgan", ESRGAN, {"cat b": images["cats-b"]})
    for image_id in ("cats-a", "dogs-a"):  # IMG_1 is the original name of both: only their ids name them
        Image.fromarray(images[image_id]).save(folder / f"{image_id}.png")

    report = ingest(tmp_path / "outside", storage, log=lambda line: None)

    assert report.ingested == [ESRGAN_ID] and report.problems == []
    rows = {row["image_id"]: row["png"] for row in read_shard(storage, ESRGAN_ID).to_pylist()}
    np.testing.assert_array_equal(decode_image(rows["cats-b"]), images["cats-b"])

    ambiguous = model_folder(tmp_path / "again", "swinir", {**ESRGAN, "arch": "SwinIR", "source": "external"},
                             {"IMG_1": images["cats-a"]})
    report = ingest(tmp_path / "again", storage, log=lambda line: None)
    assert (str(ambiguous / "IMG_1.png"), "ignored: IMG_1 is the original file name of 2 photos (cats-a, dogs-a); "
            "name it by the photo's image id") in report.problems
    missing = next(reason for path, reason in report.problems if reason.startswith("missing"))
    assert "missing: 3 of 3 photos" in missing and "cats-b.png or cat b.png" in missing


def test_an_external_model_records_its_known_hyperparameters_and_display_name(root, tmp_path):
    storage, photos = root
    carn = {"arch": "CARN_M", "name": "CARN-M", "scale": 4, "source": "external", "dataset": "DIV2K", "loss": "L1"}
    model_folder(tmp_path / "outside", "carn-m", carn, cropped(photos, 4))

    report = ingest(tmp_path / "outside", storage, log=lambda line: None)

    carn_id = "CARN_M-NA-x4-CARN_M-NA-external"
    assert report.ingested == [carn_id] and report.problems == []
    rows = read_shard(storage, carn_id).to_pylist()
    assert {(r["source"], r["arch"], r["dataset"], r["scale"], r["loss"], r["seed"]) for r in rows} == \
        {("external", "CARN_M", "DIV2K", 4, "L1", None)}
    [model] = complete_models(storage)
    assert (model.model_id, model.name, model.display_name, model.dataset) == (carn_id, "CARN-M", "CARN-M", "DIV2K")


def test_an_external_model_an_earlier_srfp_ingested_as_pretrained_is_kept_under_that_id(root, tmp_path):
    storage, photos = root
    former = "SwinIR-NA-x4-SwinIR-NA-pretrained"  # what srfp named external models before they said so
    write_shard(storage, ModelInfo(former, "external", "SwinIR", "NA", 4, "NA", None), [], UNKNOWN_PRECISION)
    model_folder(tmp_path / "outside", "swinir", {**ESRGAN, "arch": "SwinIR", "source": "external"}, cropped(photos, 4))
    lines = []

    report = ingest(tmp_path / "outside", storage, log=lines.append)

    assert report.ingested == [] and report.already_complete == [former] and report.problems == []
    assert lines[0].startswith(f"SwinIR-NA-x4-SwinIR-NA-external: skipped, its shard is already complete under the "
                               f"id {former} an earlier srfp gave it (delete ")
    assert [model.model_id for model in complete_models(storage)] == [former]


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
    ({**ESRGAN, "sclae": 4}, "field 'sclae'", "arch, name, dataset, scale, loss, seed, source"),
    ({**ESRGAN, "dataset": ["div2k"]}, "dataset must be one line of text, or NA or null", ""),
    ({**ESRGAN, "seed": 1}, "seed must be omitted or null for source pretrained", ""),
    ({**EDSR, "name": "My EDSR"}, "name is for pretrained and external models", ""),
    ({**ESRGAN, "arch": "Real-ESRGAN", "source": "external"}, "arch 'Real-ESRGAN'",
     "write arch: Real_ESRGAN and name: Real-ESRGAN"),
    ({**ESRGAN, "arch": "SwinIR"}, "SwinIR-NA-x4-SwinIR-NA-pretrained is not a model of the catalogue",
     "use source: external"),
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
    assert (model.model_id, model.source, model.dataset, model.loss, model.seed, model.name) == \
        ("SwinIR-NA-x2-SwinIR-NA-external", "external", "NA", "NA", None, None)


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


def test_a_template_folder_holds_the_inputs_and_model_yamls_and_ingests_once_filled(root, tmp_path):
    storage, photos = root
    outside = tmp_path / "outside"

    assert main(["ingest", str(outside), "--template", "CARN-M,EnhanceNet", "--scale", "4",
                 "--root", str(storage.base)]) == 0

    assert sorted(p.name for p in outside.iterdir()) == ["CARN_M", "EnhanceNet", "lr-inputs"]
    for image_id, photo in photos.items():
        np.testing.assert_array_equal(decode_image((outside / "lr-inputs" / "x4" / f"{image_id}.png").read_bytes()),
                                      downscale(photo, 4)[1])
    carn = read_metadata(outside / "CARN_M" / "model.yaml")
    assert (carn.model_id, carn.name, carn.dataset, carn.loss) == ("CARN_M-NA-x4-CARN_M-NA-external", "CARN-M", "NA", "NA")
    assert read_metadata(outside / "EnhanceNet" / "model.yaml").model_id == "EnhanceNet-NA-x4-EnhanceNet-NA-pretrained"
    for image_id, image in cropped(photos, 4).items():  # the outside model's outputs, named as its inputs
        Image.fromarray(image).save(outside / "CARN_M" / f"{image_id}.png")

    report = ingest(outside, storage, log=lambda line: None)

    assert report.ingested == ["CARN_M-NA-x4-CARN_M-NA-external"]
    assert [path for path, _ in report.problems] == [str(outside / "EnhanceNet")] * 2  # its images are not made yet


def test_status_lists_the_ingested_models_their_classifier_and_the_catalogues_models(root, tmp_path):
    storage, photos = root
    carn = {"arch": "CARN_M", "name": "CARN-M", "scale": 4, "source": "external", "dataset": "DIV2K"}
    model_folder(tmp_path / "outside", "carn", carn, cropped(photos, 4))
    model_folder(tmp_path / "outside", "esrgan", ESRGAN, cropped(photos, 4))
    ingest(tmp_path / "outside", storage, log=lambda line: None)

    weights = tmp_path / "weights"
    esrgan_weights = weights / ESRGAN_ID / "RRDB_ESRGAN_x4.pth"
    esrgan_weights.parent.mkdir(parents=True)
    esrgan_weights.write_bytes(b"weights")
    grid = load_grid("smoke")
    grid = dataclasses.replace(grid, published=dataclasses.replace(grid.published, weights=str(weights)))

    lines = render_status(Plan.of(grid, None), storage).splitlines()

    start = lines.index("published and external models with complete shards: 2")
    assert lines[start + 1].split() == ["CARN_M-NA-x4-CARN_M-NA-external", "external", "CARN-M:", "dataset", "DIV2K,",
                                        "loss", "NA", "(3", "images)"]
    assert lines[start + 2].split()[:2] == [ESRGAN_ID, "pretrained"]
    assert lines[start + 3].split() == ["attribution-published", "not", "started"]
    assert lines[start + 5].startswith("published models (published.yaml): ")
    catalogue = {line.split()[0]: line.split()[1:] for line in lines[start + 6:]}
    assert catalogue[ESRGAN_ID][:6] == ["native", "ESRGAN", "weights", "present", "shard", "complete"]
    assert catalogue["EDSR-NA-x2-EDSR-NA-pretrained"][2:6] == ["weights", "missing", "shard", "missing"]
