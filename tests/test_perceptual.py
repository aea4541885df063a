"""LPIPS (Table 6): the lpips package's learned weights on torchvision's AlexNet, loaded through the torch hub
cache, checked against a distance written out by hand. The AlexNet weights are random (saved by the tests
under the file name torchvision looks for): there is no internet here."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torchvision import models

from conftest import untrained_root
from srfp import grid as cli
from srfp.analysis.perceptual import LINEAR_WEIGHTS, lpips_distance, lpips_network
from srfp.gridspec import load_grid
from srfp.images import crop_to_multiple, decode_image
from srfp.photos import read_photo
from srfp.pretrained import WeightsUnavailableError
from srfp.superres.shards import read_shard

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


@pytest.fixture
def alexnet(tmp_path, monkeypatch) -> torch.nn.Sequential:
    """A randomly initialised AlexNet stored where torchvision's weights API finds ImageNet's; its features."""
    torch.manual_seed(7)
    network = models.alexnet(weights=None)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(network.state_dict(), folder / ALEXNET_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return network.features.eval()


def hand_lpips(trunk: torch.nn.Sequential, reference: np.ndarray, image: np.ndarray) -> float:
    """LPIPS v0.1 as the paper defines it: inputs in [-1, 1] shifted and scaled per channel, the five
    AlexNet ReLU outputs unit-normalised over channels, squared differences weighted by the learned 1x1
    layers, averaged over space and summed over layers."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    weights = torch.load(LINEAR_WEIGHTS, map_location="cpu", weights_only=True)
    features = []
    for picture in (reference, image):
        x = (torch.tensor(picture).permute(2, 0, 1)[None].double() / 127.5 - 1 - shift) / scale
        taps = []
        for number, layer in enumerate(trunk.double()):
            x = layer(x)
            if number in (1, 4, 7, 9, 11):
                taps.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        features.append(taps)
    with torch.no_grad():
        return sum(F.conv2d((a - b) ** 2, weights[f"lin{k}.model.1.weight"].double()).mean().item()
                   for k, (a, b) in enumerate(zip(*features)))


def _pictures() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    noisy = np.clip(reference + rng.normal(0, 20, reference.shape), 0, 255).astype(np.uint8)
    return reference, noisy


def test_lpips_matches_the_distance_written_out_by_hand(alexnet):
    network = lpips_network()
    reference, noisy = _pictures()
    assert lpips_distance(network, reference, reference) == 0.0
    assert lpips_distance(network, reference, noisy) == pytest.approx(hand_lpips(alexnet, reference, noisy), rel=1e-4)


def test_missing_alexnet_weights_name_the_file_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as error:
        lpips_network()
    assert f"put {ALEXNET_FILE} in {tmp_path / 'hub' / 'checkpoints'}" in str(error.value)


def test_the_report_gives_each_model_its_mean_lpips_over_the_test_photos_and_keeps_them(alexnet, tmp_path):
    root = untrained_root(tmp_path / "run", load_grid("smoke"))
    assert cli.main(["report", "--root", root.uri]) == 0
    quality = pd.read_csv(root.path("report/tables/model_quality.csv")).set_index("model_id")
    for model_id, scale in (("EDSR-div2k-x2-L1-s1", 2), ("RCAN-flickr2k-x4-VGG_GAN-s1", 4)):
        rows = [r for r in read_shard(root, model_id, ["image_id", "split", "png"]).to_pylist() if r["split"] == "test"]
        expected = np.mean([hand_lpips(alexnet, crop_to_multiple(read_photo(root, r["image_id"]), scale),
                                       decode_image(r["png"])) for r in rows])
        assert quality.loc[model_id, "test_lpips"] == pytest.approx(expected, rel=1e-4)
    assert "LPIPS (v0.1, AlexNet" in root.read_text("report/report.md")
    # The distances are kept in the root: a later report needs no weights.
    (tmp_path / "torch" / "hub" / "checkpoints" / ALEXNET_FILE).unlink()
    assert cli.main(["report", "--root", root.uri]) == 0
    again = pd.read_csv(root.path("report/tables/model_quality.csv")).set_index("model_id")
    pd.testing.assert_series_equal(again["test_lpips"], quality["test_lpips"])
