"""Training datasets in their official layouts, quarter subsets, and the Flickr1K photo builder."""

import numpy as np
import pandas as pd
import pytest

from srfp.datasets import DatasetError, training_images, validation_images
from srfp.gridspec import DataSettings, PhotoSettings, TrainingSource
from srfp.images import encode_png, read_image
from srfp.photos import build_photos, read_manifest, split_counts, stratified_counts
from srfp.storage import Storage


def _png(path, height=8, width=8, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(np.full((height, width, 3), value, np.uint8)))


def _data(tmp_path) -> DataSettings:
    for i in range(1, 9):
        _png(tmp_path / "DIV2K" / "DIV2K_train_HR" / f"{i:04d}.png", value=i)
    for i in range(801, 804):
        _png(tmp_path / "DIV2K" / "DIV2K_valid_HR" / f"{i:04d}.png")
    for i in range(1, 7):
        _png(tmp_path / "Flickr2K" / "Flickr2K_HR" / f"{i:06d}.png")
    return DataSettings(div2k=TrainingSource(str(tmp_path / "DIV2K"), "div2k"),
                        flickr2k=TrainingSource(str(tmp_path / "Flickr2K"), "flickr2k"), validation_images=2)


def test_official_layouts_and_quarters_in_file_name_order(tmp_path):
    data = _data(tmp_path)
    div2k = training_images(data, "div2k")
    assert [f.rsplit("/", 1)[-1] for f in div2k.files] == [f"{i:04d}.png" for i in range(1, 9)]
    assert training_images(data, "quarter_div2k").files == div2k.files[:2]
    assert len(training_images(data, "flickr2k")) == 6
    assert len(training_images(data, "quarter_flickr2k")) == 2  # ceil(6 / 4)
    assert [f.rsplit("/", 1)[-1] for f in validation_images(data).files] == ["0801.png", "0802.png"]
    assert read_image(tmp_path / "DIV2K" / "DIV2K_train_HR" / "0003.png")[0, 0, 0] == div2k.read(2)[0, 0, 0] == 3


def test_flat_flickr2k_folder_from_the_hr_only_zip(tmp_path):
    for i in range(1, 5):
        _png(tmp_path / "Flickr2K" / f"{i:06d}.png")
    data = DataSettings(div2k=TrainingSource("bundled:everyday", "folder"),
                        flickr2k=TrainingSource(str(tmp_path / "Flickr2K"), "flickr2k"))
    assert len(training_images(data, "flickr2k")) == 4


def test_a_missing_dataset_says_how_to_download_it(tmp_path):
    data = DataSettings(div2k=TrainingSource(str(tmp_path / "nowhere"), "div2k"),
                        flickr2k=TrainingSource(str(tmp_path / "nowhere"), "flickr2k"))
    with pytest.raises(DatasetError, match="python -m srfp.grid data download --dest DIR --only div2k"):
        training_images(data, "quarter_div2k")


def test_training_data_can_live_on_s3(s3_bucket, tmp_path):
    storage = Storage(f"s3://{s3_bucket}/data/DIV2K")
    for i in range(1, 5):
        storage.write_bytes(f"DIV2K_train_HR/{i:04d}.png", encode_png(np.full((4, 4, 3), i, np.uint8)))
    data = DataSettings(div2k=TrainingSource(f"s3://{s3_bucket}/data/DIV2K", "div2k"),
                        flickr2k=TrainingSource(str(tmp_path), "flickr2k"))
    images = training_images(data, "div2k")
    assert len(images) == 4 and images.read(3)[0, 0, 0] == 4


def test_split_counts_are_exact_for_the_paper_and_sensible_when_small():
    assert split_counts(1000, {"train": 800, "val": 100, "test": 100}) == {"train": 800, "val": 100, "test": 100}
    assert split_counts(7, {"train": 5, "val": 1, "test": 1}) == {"train": 5, "val": 1, "test": 1}
    cells = stratified_counts({t: 200 for t in "abcde"}, {"train": 800, "val": 100, "test": 100})
    assert all(c == {"train": 160, "val": 20, "test": 20} for c in cells.values())
    small = stratified_counts({"a": 4, "b": 3}, {"train": 5, "val": 1, "test": 1})
    assert sum(c["val"] for c in small.values()) == 1 and sum(c["test"] for c in small.values()) == 1
    assert all(sum(small[t].values()) == n for t, n in {"a": 4, "b": 3}.items())


def _photo_source(tmp_path):
    rng = np.random.default_rng(1)
    for tag in ("cats", "cities"):
        for i in range(6):
            image = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
            (tmp_path / "src" / tag).mkdir(parents=True, exist_ok=True)
            (tmp_path / "src" / tag / f"p{i}.png").write_bytes(encode_png(image))
    _png(tmp_path / "src" / "cats" / "tiny.png", 10, 10)
    (tmp_path / "src" / "cities" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return PhotoSettings(source=str(tmp_path / "src"), per_tag=5, min_megapixels=0.005, long_side=45,
                         split={"train": 8, "val": 1, "test": 1}, seed=3)


def test_photo_builder_resizes_splits_by_photo_and_reports_what_it_skipped(tmp_path):
    settings = _photo_source(tmp_path)
    root = Storage(tmp_path / "run")
    report = build_photos(settings, root, log=lambda *_: None)
    manifest = read_manifest(root)
    assert len(manifest) == 10 and manifest["image_id"].is_unique
    assert manifest.groupby("tag").size().to_dict() == {"cats": 5, "cities": 5}
    assert manifest["split"].value_counts().to_dict() == {"train": 8, "val": 1, "test": 1}
    assert set(manifest[["height", "width"]].itertuples(index=False, name=None)) == {(30, 45)}
    assert read_image(tmp_path / "run" / "photos" / f"{manifest.image_id[0]}.png").shape == (30, 45, 3)
    assert report.kept == 10


def test_photo_builder_is_deterministic_and_a_rerun_reuses_stored_photos(tmp_path):
    settings = _photo_source(tmp_path)
    first = Storage(tmp_path / "one")
    build_photos(settings, first, log=lambda *_: None)
    report = build_photos(settings, first, log=lambda *_: None)
    assert report.kept == 0 and report.reused == 10
    build_photos(settings, Storage(tmp_path / "two"), log=lambda *_: None)
    pd.testing.assert_frame_equal(read_manifest(first), read_manifest(Storage(tmp_path / "two")))


def test_unreadable_and_small_photos_are_reported_not_fatal(tmp_path):
    settings = _photo_source(tmp_path)
    settings = PhotoSettings(**{**settings.__dict__, "per_tag": None})
    report = build_photos(settings, Storage(tmp_path / "run"), log=lambda *_: None)
    reasons = {path.rsplit("/", 1)[-1]: why for path, why in report.skipped}
    assert set(reasons) == {"tiny.png", "broken.jpg"}
    assert "MP <" in reasons["tiny.png"] and "broken.jpg: cannot decode image" in reasons["broken.jpg"]
    assert len(read_manifest(Storage(tmp_path / "run"))) == 12


def test_bundled_photos_build_the_smoke_photo_set(tmp_path):
    from srfp.gridspec import load_grid

    build_photos(load_grid("smoke").photos, Storage(tmp_path), log=lambda *_: None)
    manifest = read_manifest(Storage(tmp_path))
    assert len(manifest) == 7 and set(manifest.tag) == {"everyday", "science"}
    assert manifest["split"].value_counts().to_dict() == {"train": 5, "val": 1, "test": 1}
    assert (manifest[["height", "width"]].max(axis=1) == 256).all()


def test_reading_the_manifest_before_building_says_which_command_builds_it(tmp_path):
    with pytest.raises(DatasetError, match="python -m srfp.grid photos --root"):
        read_manifest(Storage(tmp_path))
