"""Training one SISR model in plain PyTorch: outputs, determinism, exact resumption, learning."""

import io
import json
import re

import pytest
import torch
import yaml
from safetensors.torch import load as load_safetensors

from conftest import cuda_tagged_bytes, smoke_grid
from srfp.gridspec import GridError, load_grid
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
    for group in checkpoint["optimizer"]["param_groups"]:  # as a CUDA trial's fused, capturable Adam saves it
        group.update(fused=True, capturable=True)
    resumed.write_bytes(path, cuda_tagged_bytes(checkpoint))
    with pytest.raises(RuntimeError, match="Attempting to deserialize object on a CUDA device"):
        torch.load(io.BytesIO(resumed.read_bytes(path)), weights_only=True)
    assert train_model(EDSR_L1, grid, resumed)["resumed_from_iteration"] == 3
    a = load_safetensors(straight.read_bytes(weights_path(EDSR_L1.model_id)))
    b = load_safetensors(resumed.read_bytes(weights_path(EDSR_L1.model_id)))
    assert all(torch.equal(a[name], b[name]) for name in a)


EDSR_GAN = SISRSpec("EDSR", "div2k", 2, "ResNet_GAN", 1)
#: Adversarial from iteration 3, a checkpoint every 2 iterations: 2 is before the switch, 4 after; the
#: adversarial phase's learning rate (5e-4, halved after 2 of its iterations) differs from the L1 phase's (1e-3).
GAN_SWITCH = {"warmup_iterations": 3, "patch_size": 32, "learning_rate": 5e-4, "discriminator_lr": 2e-4,
              "lr_milestones": [2]}


def _interrupt_after(iteration: int):
    def report(metrics):
        if metrics["iteration"] == iteration:
            raise Interrupted(iteration)
    return report


@pytest.fixture(scope="module")
def uninterrupted_gan(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The weights of EDSR_GAN trained 6 iterations in one go, across the switch."""
    folder = tmp_path_factory.mktemp("uninterrupted-gan")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SRFP_CACHE", str(folder / "cache"))
        storage = Storage(folder / "run")
        train_model(EDSR_GAN, smoke_grid(iterations=6, checkpoint_every=2, adversarial=GAN_SWITCH), storage)
    return load_safetensors(storage.read_bytes(weights_path(EDSR_GAN.model_id)))


def test_the_adversarial_phase_starts_with_fresh_optimizers_of_its_own(tmp_path):
    storage = Storage(tmp_path)
    grid = smoke_grid(iterations=6, checkpoint_every=2, adversarial=GAN_SWITCH)
    with pytest.raises(Interrupted):
        train_model(EDSR_GAN, grid, storage, report=_interrupt_after(4))
    checkpoint = torch.load(io.BytesIO(storage.read_bytes(checkpoint_path(EDSR_GAN.model_id))), map_location="cpu",
                            weights_only=True)
    assert checkpoint["phase"] == "adversarial"
    for optimizer, scheduler, lr in (("optimizer", "scheduler", 5e-4), ("d_optimizer", "d_scheduler", 2e-4)):
        (group,) = checkpoint[optimizer]["param_groups"]
        assert group["lr"] == lr and group["betas"] == (0.9, 0.99)
        assert checkpoint[scheduler]["last_epoch"] == 1
        moments = checkpoint[optimizer]["state"].values()
        assert moments and all(float(m["step"]) == 1 for m in moments)
        # One step from zero moments: m = 0.1 g and v = 0.01 g^2, so v = m^2 (Adam's state did not carry over).
        assert all(torch.allclose(m["exp_avg_sq"], m["exp_avg"] ** 2, rtol=1e-4, atol=1e-30) for m in moments)


@pytest.mark.parametrize("interrupted_after", [2, 4], ids=["before-the-switch", "after-the-switch"])
def test_an_adversarial_model_resumed_on_either_side_of_the_switch_ends_exactly_where_an_uninterrupted_one_does(
        tmp_path, uninterrupted_gan, interrupted_after):
    storage = Storage(tmp_path)
    grid = smoke_grid(iterations=6, checkpoint_every=2, adversarial=GAN_SWITCH)
    with pytest.raises(Interrupted):
        train_model(EDSR_GAN, grid, storage, report=_interrupt_after(interrupted_after))
    assert train_model(EDSR_GAN, grid, storage)["resumed_from_iteration"] == interrupted_after
    resumed = load_safetensors(storage.read_bytes(weights_path(EDSR_GAN.model_id)))
    assert all(torch.equal(uninterrupted_gan[name], resumed[name]) for name in uninterrupted_gan)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("betas", [0.9], "training.adversarial.betas: [0.9] is not allowed; expected two numbers in [0, 1)"),
    ("lr_milestones", [100, 50], "training.adversarial.lr_milestones: [100, 50] is not allowed; expected increasing"),
    ("learning_rate", 0, "training.adversarial.learning_rate: 0.0 is not allowed; expected a number above 0"),
])
def test_a_bad_adversarial_recipe_setting_names_the_field(tmp_path, name, value, message):
    data = yaml.safe_load(open(load_grid("smoke").source))
    data["training"]["adversarial"][name] = value
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(GridError, match=re.escape(message)):
        load_grid(tmp_path / "grid.yaml")


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
                      adversarial={"warmup_iterations": 0, "patch_size": 32, "learning_rate": 2e-3, "lr_milestones": [100]})
    train_model(spec, grid, Storage(tmp_path), report=reports.append)
    content = [r["loss_l1"] + r.get("loss_perceptual", 0.0) for r in reports]
    assert sum(content[-3:]) < sum(content[:3])
