"""Published models super-resolved like the custom ones: exact tiles for every architecture, weights loaded from
the official files' layouts, the shards of ``published superresolve`` and Table 6's published rows."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from srfp.analysis.report import TABLE6_PUBLISHED, Section, published_beside_custom
from srfp.grid import main
from srfp.gridspec import load_grid
from srfp.images import decode_image
from srfp.photos import build_photos, read_photo
from srfp.published import PublishedEntry, load_catalogue
from srfp.sisr.archs import PUBLISHED, TINY, create_model
from srfp.storage import Storage
from srfp.superres.core import superresolve, superresolve_photo, tiling
from srfp.superres.published import PublishedNetwork
from srfp.superres.shards import MARKER, ModelInfo, read_shard, shard_folder

TILE = 8
#: Each architecture with a scale it takes: tiny random instances.
FINITE = [("EDSR", 2), ("RDN", 3), ("ESRGAN", 4), ("SRFBN", 4), ("SRFBN", 2), ("SPSR", 2)]
GLOBAL = [("RCAN", 2), ("SAN", 4), ("DRN", 4)]


@pytest.mark.parametrize(("arch", "scale"), FINITE, ids=[f"{a}-x{s}" for a, s in FINITE])
def test_tiles_overlapping_by_the_receptive_radius_give_the_whole_image_exactly(arch, scale):
    torch.manual_seed(0)
    model = create_model(arch, scale, **TINY[arch]).eval()
    tile_size, overlap = tiling(model, TILE)
    assert tile_size == TILE and overlap > 0
    # Wider than a tile and its overlap on both sides: the middle tiles' context is cut on both sides.
    lr = np.random.default_rng(0).integers(0, 256, (3, 3 * TILE + 2 * overlap, 3), dtype=np.uint8)
    whole = superresolve(model, lr, scale, torch.device("cpu"))
    tiled = superresolve(model, lr, scale, torch.device("cpu"), tile_size, overlap)
    assert np.array_equal(tiled, whole)


@pytest.mark.parametrize(("arch", "scale"), GLOBAL, ids=[a for a, _ in GLOBAL])
def test_models_with_attention_over_the_whole_image_are_never_tiled(arch, scale):
    assert tiling(create_model(arch, scale, **TINY[arch]), TILE) == (0, 0)


@pytest.fixture(scope="module")
def photos_root(tmp_path_factory):
    storage = Storage(tmp_path_factory.mktemp("published") / "run")
    build_photos(load_grid("smoke").photos, storage, log=lambda *_: None)
    return storage


def _entry(model_id: str) -> PublishedEntry:
    return next(entry for entry in load_catalogue().models if entry.model_id == model_id)


def test_a_unit_range_model_gets_the_image_over_255_and_its_output_times_255(tmp_path):
    entry = _entry("ESRGAN-NA-x4-ESRGAN-NA-pretrained")
    torch.manual_seed(0)
    network = create_model("ESRGAN", 4, **TINY["ESRGAN"]).eval()
    path = tmp_path / "RRDB_ESRGAN_x4.pth"
    torch.save(network.state_dict(), path)  # xinntao/ESRGAN's file: the bare state_dict
    loaded = dataclasses.replace(PublishedNetwork.of_entry(entry, path), options=TINY["ESRGAN"]).load()
    image = torch.rand(1, 3, 6, 5) * 255
    with torch.no_grad():
        assert torch.equal(loaded(image), network(image / 255) * 255)


def test_published_superresolve_writes_the_shards_of_the_models_with_weights_and_skips_finished_ones(
        ray_local, photos_root, tmp_path, monkeypatch, capsys):
    entry = _entry("SRFBN-NA-x4-SRFBN-NA-pretrained")
    monkeypatch.setitem(PUBLISHED, "SRFBN", TINY["SRFBN"])  # a tiny network in the official layout
    torch.manual_seed(0)
    network = create_model("SRFBN", 4, **TINY["SRFBN"]).eval()
    weights = tmp_path / "weights"
    path = entry.weights_path(weights, entry.weights[0])
    path.parent.mkdir(parents=True)
    # SRFBN_CVPR19's checkpoint: the DataParallel network's state_dict under state_dict, beside the solver's records
    torch.save({"epoch": 1000, "state_dict": {f"module.{key}": value for key, value in network.state_dict().items()},
                "best_pred": 32.5}, path)

    assert main(["published", "superresolve", "--weights", str(weights), "--root", photos_root.uri]) == 0
    out = capsys.readouterr().out
    assert (f"SRFBN-NA-x2-SRFBN-NA-pretrained: skipped: no weights; get SRFBN_x2_BI.pth from "
            f"https://drive.google.com/file/d/1Dsb_-OH0CeSJVjvP9A4bh2_IBQh9R-ja/view (python -m srfp.grid published "
            f"fetch --dest {weights}) and put it at {weights}/SRFBN-NA-x2-SRFBN-NA-pretrained/SRFBN_x2_BI.pth") in out
    assert "RDN-NA-x4-RDN-NA-pretrained: skipped: no official PyTorch weight file is known" in out
    assert f"{entry.model_id}: 7 images" in out and "1 of 12 shards complete" in out and "11 models without weights" in out
    marker = json.loads(photos_root.read_text(f"{shard_folder(entry.model_id)}/{MARKER}"))
    assert marker["precision"] == "float32"
    assert {key: marker["model"][key] for key in ("model_id", "source", "arch", "dataset", "scale", "loss", "seed")} == \
        {"model_id": entry.model_id, "source": "pretrained", "arch": "SRFBN", "dataset": "DIV2K", "scale": 4, "loss": "L1",
         "seed": None}
    for row in read_shard(photos_root, entry.model_id).to_pylist():  # the plain whole-image output, bit for bit
        _, sr = superresolve_photo(network, read_photo(photos_root, row["image_id"]), 4, torch.device("cpu"))
        assert np.array_equal(decode_image(row["png"]), sr)

    grid_file = tmp_path / "grid.yaml"  # the grid's published.weights, as run reads it
    grid_file.write_text(Path(load_grid("smoke").source).read_text() + f"\npublished:\n  weights: {weights}\n")
    assert main(["published", "superresolve", "--grid", str(grid_file), "--root", photos_root.uri]) == 0
    out = capsys.readouterr().out
    assert "images" not in out and "1 of 12 shards complete" in out
    assert json.loads(photos_root.read_text(f"{shard_folder(entry.model_id)}/{MARKER}")) == marker


def test_without_a_weights_folder_published_superresolve_says_how_to_give_one(tmp_path, capsys):
    assert main(["published", "superresolve", "--root", str(tmp_path / "run")]) == 0
    assert "published superresolve: skipped; no weights folder: give --weights DIR or set published.weights" in \
        capsys.readouterr().out


def test_table_6_puts_the_published_x4_models_beside_the_custom_averages_and_shows_the_missing_ones():
    models = [ModelInfo("EDSR-div2k-x4-L1-s1", "custom", "EDSR", "div2k", 4, "L1", 1),
              ModelInfo("EDSR-flickr2k-x4-L1-s1", "custom", "EDSR", "flickr2k", 4, "L1", 1),
              ModelInfo("EDSR-div2k-x2-L1-s1", "custom", "EDSR", "div2k", 2, "L1", 1),
              ModelInfo("ESRGAN-NA-x4-ESRGAN-NA-pretrained", "pretrained", "ESRGAN", "DIV2K+Flickr2K+OST", 4,
                        "adversarial", None)]
    quality = pd.DataFrame({"model_id": [model.model_id for model in models], "photo_psnr_db": [20.0, 22.0, 30.0, 25.0],
                            "test_lpips": [0.3, 0.5, 0.1, 0.2]})
    section = Section("Model quality (Table 6)")
    published_beside_custom(section, quality, models)
    rows = section.tables["model_quality_published"].set_index("model")
    assert list(rows.index) == ["custom EDSR L1"] + [f"{name} x4 (published)" for name in TABLE6_PUBLISHED]
    assert rows.loc["custom EDSR L1", ["models", "photo_psnr_db", "test_lpips"]].tolist() == pytest.approx([2, 21.0, 0.4])
    assert rows.loc["ESRGAN x4 (published)", ["state", "photo_psnr_db", "test_lpips"]].tolist() == ["complete", 25.0, 0.2]
    missing = rows[rows.state == "missing"]
    assert list(missing.index) == [f"{name} x4 (published)" for name in ("EDSR", "RDN", "RCAN", "EnhanceNet")]
    assert missing.photo_psnr_db.isna().all()
    assert ("> Not computed yet: the x4 shards of EDSR, RDN, RCAN, EnhanceNet (EnhanceNet's images are ingested, as "
            "grids/published.yaml says). Run `python -m srfp.grid published superresolve --weights DIR`.") in section.lines
