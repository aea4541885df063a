"""SR training losses: L1, perceptual (VGG-19 / ResNet-50), VGG-style discriminator, relativistic GAN terms.

Networks use random weights (``pretrained=False``): there is no internet here and the tests must not
depend on cached ImageNet weights.
"""

import pytest
import torch
from torch import nn

from srfp.pretrained import WeightsUnavailableError
from srfp.sisr.losses import (
    PerceptualLoss,
    SRLoss,
    VGGDiscriminator,
    discriminator_loss,
    generator_loss,
)


def _images(seed: int, size: int = 32, batch: int = 2) -> torch.Tensor:
    """Smooth random RGB images in [0, 255]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=generator)
    return 255 * nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a small shared machine, oversubscribed threads slow these tests tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["vgg19", "resnet50"])
def perceptual(request) -> PerceptualLoss:
    torch.manual_seed(0)
    return PerceptualLoss(request.param, pretrained=False)


# --- perceptual loss -------------------------------------------------------------------------------

def test_perceptual_loss_is_zero_for_identical_images_and_positive_otherwise(perceptual):
    hr = _images(1)
    assert float(perceptual(hr.clone(), hr)) == 0.0
    assert float(perceptual(_images(2), hr)) > 0.0


def test_perceptual_gradients_reach_the_input_but_not_the_frozen_network(perceptual):
    sr = _images(2).requires_grad_(True)
    perceptual(sr, _images(1)).backward()
    assert sr.grad is not None and float(sr.grad.abs().sum()) > 0
    assert all(not p.requires_grad and p.grad is None for p in perceptual.features.parameters())


def test_perceptual_network_stays_in_eval_mode_when_the_parent_trains(perceptual):
    parent = nn.ModuleDict({"perceptual": perceptual}).train()
    assert parent.training and perceptual.training
    assert not any(m.training for m in perceptual.features.modules())


def test_unknown_perceptual_network_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="vgg19, resnet50"):
        PerceptualLoss("alexnet", pretrained=False)


@pytest.mark.parametrize(("network", "file_name"), [("vgg19", "vgg19-dcbb9e9d.pth"),
                                                     ("resnet50", "resnet50-0676ba61.pth")])
def test_missing_pretrained_weights_name_the_file_and_the_folder(network, file_name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as error:
        PerceptualLoss(network, pretrained=True)
    message = str(error.value)
    assert file_name in message
    assert f"https://download.pytorch.org/models/{file_name}" in message
    assert str(tmp_path / "hub" / "checkpoints") in message


# --- discriminator and relativistic GAN losses -----------------------------------------------------

def test_discriminator_gives_one_logit_per_image():
    discriminator = VGGDiscriminator(patch_size=64)
    assert discriminator(_images(1, size=64)).shape == (2, 1)


@pytest.mark.parametrize("patch_size", [48, 100, 0])
def test_discriminator_patch_size_must_be_a_multiple_of_32(patch_size):
    with pytest.raises(ValueError, match="multiple of 32"):
        VGGDiscriminator(patch_size=patch_size)


def test_relativistic_losses_when_the_discriminator_is_right():
    real, fake = torch.full((4, 1), 10.0), torch.full((4, 1), -10.0)
    assert float(discriminator_loss(real, fake)) < 1e-6
    assert float(generator_loss(real, fake)) == pytest.approx(20.0, abs=1e-3)


def test_relativistic_losses_when_real_and_fake_are_indistinguishable():
    logits = torch.zeros(4, 1)
    assert float(discriminator_loss(logits, logits)) == pytest.approx(float(torch.log(torch.tensor(2.0))))
    assert float(generator_loss(logits, logits)) == pytest.approx(float(torch.log(torch.tensor(2.0))))


# --- the training objective ------------------------------------------------------------------------

def test_unknown_loss_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="L1, VGG_GAN, ResNet_GAN"):
        SRLoss("MSE", pretrained=False)


def test_l1_loss_is_the_plain_mean_absolute_error_on_the_255_scale():
    loss = SRLoss("L1", pretrained=False)
    sr, hr = _images(2), _images(1)
    terms = loss.l1_terms(sr, hr)
    assert set(terms) == {"l1", "total"} and not loss.adversarial and loss.discriminator is None
    assert float(terms["total"]) == pytest.approx(float((sr - hr).abs().mean()))
    with pytest.raises(RuntimeError, match="no adversarial phase"):
        loss.adversarial_terms(sr, hr)


def test_the_warm_up_of_an_adversarial_loss_is_the_l1_models_objective():
    sr, hr = _images(2), _images(1)
    warm_up = SRLoss("VGG_GAN", patch_size=32, pretrained=False).l1_terms(sr, hr)
    assert {name: float(value) for name, value in warm_up.items()} == \
        {name: float(value) for name, value in SRLoss("L1", pretrained=False).l1_terms(sr, hr).items()}


def test_l1_loss_decreases_when_training_a_tiny_network():
    torch.manual_seed(0)
    loss = SRLoss("L1", pretrained=False)
    lr, hr = _images(1, size=16), _images(1)
    model = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(3, 3, 3, padding=1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(30):
        total = loss.l1_terms(model(lr), hr)["total"]
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(float(total.detach()))
    assert history[-1] < 0.5 * history[0]


def test_adversarial_terms_are_weighted_and_compare_pixels_in_0_1():
    loss = SRLoss("ResNet_GAN", l1_weight=0.5, perceptual_weight=2.0, adversarial_weight=0.25,
                  patch_size=32, pretrained=False)
    sr, hr = _images(2), _images(1)
    terms = loss.adversarial_terms(sr, hr)
    assert float(terms["l1"]) == pytest.approx(0.5 * float((sr - hr).abs().mean()) / 255)
    assert float(terms["perceptual"]) == pytest.approx(2.0 * float(loss.perceptual(sr, hr)))
    assert float(terms["total"]) == pytest.approx(float(terms["l1"] + terms["perceptual"] + terms["adversarial"]))


@pytest.mark.parametrize("name", ["VGG_GAN", "ResNet_GAN"])
def test_adversarial_loss_decreases_with_alternating_discriminator_steps(name):
    torch.manual_seed(0)
    loss = SRLoss(name, patch_size=32, pretrained=False).train()
    assert loss.adversarial and isinstance(loss.discriminator, VGGDiscriminator)
    hr = _images(1)
    sr = nn.Parameter(torch.full_like(hr, 128.0))
    g_optimizer = torch.optim.Adam([sr], lr=4.0)
    d_optimizer = torch.optim.Adam(loss.discriminator.parameters(), lr=1e-4)
    content = []
    for _ in range(12):
        terms = loss.adversarial_terms(sr, hr)
        g_optimizer.zero_grad()
        terms["total"].backward()
        g_optimizer.step()
        d_loss = loss.discriminator_step_loss(sr, hr)
        d_optimizer.zero_grad()
        d_loss.backward()
        d_optimizer.step()
        content.append(float((terms["l1"] + terms["perceptual"]).detach()))
    assert set(terms) == {"l1", "perceptual", "adversarial", "total"}
    assert content[-1] < 0.7 * content[0]


def test_adversarial_terms_leave_the_discriminator_alone_and_its_step_leaves_sr_alone():
    loss = SRLoss("ResNet_GAN", patch_size=32, pretrained=False)
    sr, hr = _images(2).requires_grad_(True), _images(1)
    loss.adversarial_terms(sr, hr)["adversarial"].backward()
    assert sr.grad is not None and all(p.grad is None for p in loss.discriminator.parameters())
    sr.grad = None
    loss.discriminator_step_loss(sr, hr).backward()
    assert sr.grad is None and all(p.grad is not None for p in loss.discriminator.parameters())
    assert all(p.requires_grad for p in loss.discriminator.parameters())
