"""Images are made in float32 with TF32 off on any device; bfloat16 only by choice, and each shard says which.

This machine has no GPU, but torch is a CUDA build: ``pretend_cuda`` lets the code take its CUDA path
(CUDA autocast really switches on) while the tensors stay on the CPU.
"""

import json

import numpy as np
import pytest
import torch
from test_ingest import ESRGAN, ESRGAN_ID, build_photos, cropped, model_folder
from torch import nn

from srfp.datasets import validation_images
from srfp.devices import image_precision
from srfp.gridspec import load_grid
from srfp.sisr.archs import TINY, create_model
from srfp.sisr.data import PairCache
from srfp.sisr.train import validate
from srfp.storage import Storage
from srfp.superres.core import superresolve
from srfp.superres.ingest import ingest
from srfp.superres.shards import MARKER, shard_folder

CUDA = torch.device("cuda")


@pytest.fixture
def pretend_cuda(monkeypatch):
    """CUDA reports itself available (so ``torch.autocast("cuda")`` is enabled, as on a GPU), tensors sent to
    a CUDA device stay on the CPU, and TF32 starts on, as a library or a worker setting may leave it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *args, **kwargs:
                        self if args and args[0] == CUDA else to(self, *args, **kwargs))
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class PrecisionProbe(nn.Module):
    """Nearest-neighbour x2 upscaling that records, at each call, the precision settings it ran under."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append({"cuda_autocast": torch.is_autocast_enabled("cuda"),
                           "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
                           "cudnn_tf32": torch.backends.cudnn.allow_tf32})
        return nn.functional.interpolate(images, scale_factor=2, mode="nearest")


FLOAT32 = {"cuda_autocast": False, "matmul_tf32": False, "cudnn_tf32": False}
LR = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)


@pytest.mark.parametrize("tile_size", [0, 8], ids=["whole", "tiled"])
def test_super_resolution_on_cuda_runs_in_float32_with_tf32_off(pretend_cuda, tile_size):
    probe = PrecisionProbe()
    superresolve(probe, LR, 2, CUDA, tile_size=tile_size, tile_overlap=4)
    assert probe.calls and all(call == FLOAT32 for call in probe.calls)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32  # restored


def test_validation_on_cuda_runs_in_float32_with_tf32_off(pretend_cuda, tmp_path, monkeypatch):
    monkeypatch.setenv("SRFP_CACHE", str(tmp_path))
    probe = PrecisionProbe()
    validate(probe, PairCache(validation_images(load_grid("smoke").data), 2), CUDA)
    assert probe.calls and all(call == FLOAT32 for call in probe.calls)


def test_float32_holds_inside_an_autocast_region(pretend_cuda):
    with torch.autocast("cuda", dtype=torch.bfloat16), image_precision(CUDA):
        assert not torch.is_autocast_enabled("cuda")
    with image_precision(CUDA, "bfloat16"):
        assert torch.is_autocast_enabled("cuda") and not torch.backends.cuda.matmul.allow_tf32
    with pytest.raises(ValueError, match="float32, bfloat16"):
        image_precision(CUDA, "float16").__enter__()


def test_bfloat16_is_a_choice_that_computes_in_bfloat16_on_the_cpu_too(pretend_cuda):
    probe = PrecisionProbe()
    superresolve(probe, LR, 2, CUDA, precision="bfloat16")
    assert probe.calls == [{**FLOAT32, "cuda_autocast": True}]
    torch.manual_seed(0)
    model = create_model("EDSR", 2, **TINY["EDSR"]).eval()
    cpu = torch.device("cpu")
    assert not np.array_equal(superresolve(model, LR, 2, cpu), superresolve(model, LR, 2, cpu, precision="bfloat16"))


def test_ingested_shards_record_an_unknown_precision(tmp_path):
    storage = Storage(tmp_path / "run")
    model_folder(tmp_path / "outside", "esrgan", ESRGAN, cropped(build_photos(storage), 4))
    assert ingest(tmp_path / "outside", storage, log=lambda line: None).ingested == [ESRGAN_ID]
    assert json.loads(storage.read_text(f"{shard_folder(ESRGAN_ID)}/{MARKER}"))["precision"] == "unknown"
