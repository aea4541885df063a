"""Training one SISR model in plain PyTorch: outputs, determinism, exact resumption, learning."""

import io
import json

import pytest
import torch
from safetensors.torch import load as load_safetensors

from conftest import cuda_tagged_bytes, smoke_grid
from srfp.sisr.train import (
    checkpoint_path,
    is_trained,
    load_trained,
    progress_path,
    record_path,
    train_model,
    training_progress,
    weights_path,
)
from srfp.spec import SISRSpec
from srfp.status import model_training_state
from srfp.storage import Storage

EDSR_L1 = SISRSpec("EDSR", "div2k", 2, "L1", 1)


@pytest.fixture(autouse=True)
def pair_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SRFP_CACHE", str(tmp_path / "cache"))


def test_a_finished_model_has_weights_a_record_and_no_checkpoint(tmp_path):
    storage = Storage(tmp_path / "run")
    reports = []
    record = train_model(EDSR_L1, smoke_grid(iterations=6, checkpoint_every=3), storage, report=reports.append)
    assert [r["iteration"] for r in reports] == [3, 6]
    assert {"loss_l1", "val_psnr", "images_per_second", "learning_rate"} <= set(reports[0])
    assert is_trained(storage, EDSR_L1.model_id) and not storage.exists(checkpoint_path(EDSR_L1.model_id))
    assert json.loads(storage.read_text(record_path(EDSR_L1.model_id))) == record
    assert record["iterations"] == 6 and record["resumed_from_iteration"] == 0 and record["val_psnr"] > 10
    weights = load_safetensors(storage.read_bytes(weights_path(EDSR_L1.model_id)))
    loaded = load_trained(storage, EDSR_L1.model_id).state_dict()
    assert set(weights) == set(loaded) and all(torch.equal(weights[k], loaded[k]) for k in weights)


def test_same_spec_and_seed_give_the_same_weights_on_cpu(tmp_path):
    grid = smoke_grid(iterations=4, checkpoint_every=4)
    one, two = Storage(tmp_path / "one"), Storage(tmp_path / "two")
    train_model(EDSR_L1, grid, one)
    train_model(EDSR_L1, grid, two)
    assert one.read_bytes(weights_path(EDSR_L1.model_id)) == two.read_bytes(weights_path(EDSR_L1.model_id))
    other_seed = SISRSpec("EDSR", "div2k", 2, "L1", 2)
    train_model(other_seed, grid, one)
    assert one.read_bytes(weights_path(other_seed.model_id)) != one.read_bytes(weights_path(EDSR_L1.model_id))


class Interrupted(Exception):
    pass


def _interrupt_after_first_checkpoint(metrics):
    raise Interrupted(metrics["iteration"])


@pytest.mark.parametrize("spec", [EDSR_L1, SISRSpec("RCAN", "flickr2k", 4, "VGG_GAN", 1)], ids=lambda s: s.model_id)
def test_a_resumed_model_ends_exactly_where_an_uninterrupted_one_does(tmp_path, spec):
    grid = smoke_grid(iterations=6, checkpoint_every=3)
    straight, resumed = Storage(tmp_path / "straight"), Storage(tmp_path / "resumed")
    train_model(spec, grid, straight)
    with pytest.raises(Interrupted):
        train_model(spec, grid, resumed, report=_interrupt_after_first_checkpoint)
    assert resumed.is_file(checkpoint_path(spec.model_id)) and not is_trained(resumed, spec.model_id)
    record = train_model(spec, grid, resumed)
    assert record["resumed_from_iteration"] == 3
    a = load_safetensors(straight.read_bytes(weights_path(spec.model_id)))
    b = load_safetensors(resumed.read_bytes(weights_path(spec.model_id)))
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_status_shows_the_progress_written_beside_the_checkpoint_without_reading_it(tmp_path, monkeypatch):
    storage = Storage(tmp_path)
    grid = smoke_grid(iterations=6, checkpoint_every=3)
    with pytest.raises(Interrupted):
        train_model(EDSR_L1, grid, storage, report=_interrupt_after_first_checkpoint)
    progress = training_progress(storage, EDSR_L1.model_id)
    assert {key: progress[key] for key in ("iteration", "iterations")} == {"iteration": 3, "iterations": 6}
    assert progress["val_psnr"] > 10 and progress["train_seconds"] > 0 and progress["time"].endswith("Z")
    read_bytes = Storage.read_bytes
    monkeypatch.setattr(Storage, "read_bytes", lambda self, path: pytest.fail(f"status read {path}")
                        if path.endswith(".pt") else read_bytes(self, path))
    assert model_training_state(storage, EDSR_L1.model_id) == "training: iteration 3 of 6"
    monkeypatch.undo()
    train_model(EDSR_L1, grid, storage)
    assert not storage.exists(progress_path(EDSR_L1.model_id)) and training_progress(storage, EDSR_L1.model_id) is None
    assert model_training_state(storage, EDSR_L1.model_id) == "trained"


def test_a_checkpoint_written_on_a_gpu_resumes_training_on_the_cpu(tmp_path):
    grid = smoke_grid(iterations=6, checkpoint_every=3)
    straight, resumed = Storage(tmp_path / "straight"), Storage(tmp_path / "resumed")
    train_model(EDSR_L1, grid, straight)
    with pytest.raises(Interrupted):
        train_model(EDSR_L1, grid, resumed, report=_interrupt_after_first_checkpoint)
    path = checkpoint_path(EDSR_L1.model_id)
    checkpoint = torch.load(io.BytesIO(resumed.read_bytes(path)), map_location="cpu", weights_only=True)
    resumed.write_bytes(path, cuda_tagged_bytes(checkpoint))
    with pytest.raises(RuntimeError, match="Attempting to deserialize object on a CUDA device"):
        torch.load(io.BytesIO(resumed.read_bytes(path)), weights_only=True)
    assert train_model(EDSR_L1, grid, resumed)["resumed_from_iteration"] == 3
    a = load_safetensors(straight.read_bytes(weights_path(EDSR_L1.model_id)))
    b = load_safetensors(resumed.read_bytes(weights_path(EDSR_L1.model_id)))
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_l1_training_improves_validation_psnr(tmp_path):
    reports = []
    train_model(EDSR_L1, smoke_grid(iterations=60, checkpoint_every=20, learning_rate=2e-3), Storage(tmp_path),
                report=reports.append)
    assert reports[-1]["val_psnr"] > reports[0]["val_psnr"]


@pytest.mark.parametrize("loss", ["L1", "VGG_GAN", "ResNet_GAN"])
def test_each_loss_decreases_on_a_tiny_model(tmp_path, loss):
    spec = SISRSpec("EDSR", "div2k", 2, loss, 1)
    reports = []
    grid = smoke_grid(iterations=16, checkpoint_every=2, learning_rate=2e-3,
                      adversarial={"warmup_iterations": 0, "patch_size": 32})
    train_model(spec, grid, Storage(tmp_path), report=reports.append)
    content = [r["loss_l1"] + r.get("loss_perceptual", 0.0) for r in reports]
    assert sum(content[-3:]) < sum(content[:3])
