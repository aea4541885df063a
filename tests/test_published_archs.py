"""The published models' native architectures: the official state_dict layouts and sizes, strict loading of a
checkpoint written with the official keys, output sizes and the official inference scripts' value ranges.

Each ``official_*_shapes`` builds the official key -> shape list from the official code's layout, written
out here independently of srfp's modules.
"""

import pytest
import torch
from torch.nn import functional

from srfp.sisr.archs import PUBLISHED, TINY, create_model
from srfp.sisr.archs.common import RGB_MEAN

MEAN_SHIFTS = {"sub_mean.weight": (3, 3, 1, 1), "sub_mean.bias": (3,), "add_mean.weight": (3, 3, 1, 1),
               "add_mean.bias": (3,)}


# Maclory/SPSR SPSRNet: HR_conv0_new is also model.8 (one module, two keys) and get_g_nopadding's fixed kernels
# are frozen parameters; neither is counted twice or as trained.
SPSR_ALIASES = {"HR_conv0_new.0.weight": "model.8.weight", "HR_conv0_new.0.bias": "model.8.bias"}
SPSR_UNTRAINED = set(SPSR_ALIASES) | {"get_g_nopadding.weight_h", "get_g_nopadding.weight_v"}


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def shape_count(shapes: dict[str, tuple]) -> int:
    """The number of values of every entry but the frozen mean shifts and SPSR's aliases and fixed kernels."""
    return sum(torch.Size(shape).numel() for key, shape in shapes.items()
               if key not in MEAN_SHIFTS and key not in SPSR_UNTRAINED)


def conv_entries(name: str, out_channels: int, in_channels: int, kernel_size: int) -> dict[str, tuple]:
    return {f"{name}.weight": (out_channels, in_channels, kernel_size, kernel_size), f"{name}.bias": (out_channels,)}


# Paper99/SRFBN_CVPR19 networks/srfbn_arch.py and blocks.py: ConvBlock / DeconvBlock are Sequential(conv, PReLU)
# (keys .0 and .1, one PReLU weight) but conv_out, which has no activation (Sequential(conv): key .0 only);
# ConvTranspose2d weights are in x out x k x k (square here). Projection kernels: 6 (x2), 7 (x3), 8 (x4).
def official_srfbn_shapes(scale: int, num_features: int = 64, num_groups: int = 6) -> dict[str, tuple]:
    kernel = {2: 6, 3: 7, 4: 8}[scale]
    f = num_features
    blocks = {"conv_in": (4 * f, 3, 3), "feat_in": (f, 4 * f, 1), "block.compress_in": (f, 2 * f, 1),
              "block.compress_out": (f, num_groups * f, 1), "out": (f, f, kernel)}
    for group in range(num_groups):
        blocks |= {f"block.upBlocks.{group}": (f, f, kernel), f"block.downBlocks.{group}": (f, f, kernel)}
    for group in range(1, num_groups):
        blocks |= {f"block.uptranBlocks.{group - 1}": (f, f * (group + 1), 1),
                   f"block.downtranBlocks.{group - 1}": (f, f * (group + 1), 1)}
    shapes = dict(MEAN_SHIFTS) | conv_entries("conv_out.0", 3, f, 3)
    for name, (out_channels, in_channels, kernel_size) in blocks.items():
        shapes |= conv_entries(f"{name}.0", out_channels, in_channels, kernel_size) | {f"{name}.1.weight": (1,)}
    return shapes


# guoyongcs/DRN model/drn.py and common.py for x4 (two phases; f = n_feats): the head, two bias-free down blocks,
# two up blocks of RCABs on 4f channels (channel attention down by 16) each ending in a sub-pixel doubling and a
# 1x1 conv (to 2f, then f), and three tails (from 4f, 4f and 2f channels).
def official_drn_x4_shapes(n_blocks: int = 30, n_feats: int = 16) -> dict[str, tuple]:
    f = n_feats
    shapes = dict(MEAN_SHIFTS) | conv_entries("head", f, 3, 3)
    for phase, channels in enumerate((f, 2 * f)):
        shapes[f"down.{phase}.dual_module.0.0.weight"] = (channels, channels, 3, 3)
        shapes[f"down.{phase}.dual_module.1.weight"] = (2 * channels, channels, 3, 3)
    for index, out_channels in enumerate((2 * f, f)):
        for block in range(n_blocks):
            name = f"up_blocks.{index}.{block}.body"
            shapes |= conv_entries(f"{name}.0", 4 * f, 4 * f, 3) | conv_entries(f"{name}.2", 4 * f, 4 * f, 3)
            shapes |= conv_entries(f"{name}.3.conv_du.0", 4 * f // 16, 4 * f, 1)
            shapes |= conv_entries(f"{name}.3.conv_du.2", 4 * f, 4 * f // 16, 1)
        shapes |= conv_entries(f"up_blocks.{index}.{n_blocks}.0", 16 * f, 4 * f, 3)
        shapes |= conv_entries(f"up_blocks.{index}.{n_blocks + 1}", out_channels, 4 * f, 1)
    for index, in_channels in enumerate((4 * f, 4 * f, 2 * f)):
        shapes |= conv_entries(f"tail.{index}", 3, in_channels, 3)
    return shapes


# daitao/SAN TestCode/code/model/san.py (read from a copy of the file: the index does not hold daitao/SAN's own)
# with the README's options (20 groups of 10 blocks, 64 features, reduction 16) and EDSR's x4 upsampler.
def official_san_shapes(n_resgroups: int = 20, n_resblocks: int = 10, n_feats: int = 64) -> dict[str, tuple]:
    f = n_feats
    shapes = dict(MEAN_SHIFTS) | conv_entries("head.0", f, 3, 3) | conv_entries("conv_last", f, f, 3)
    shapes |= {"gamma": (1,)} | conv_entries("tail.0.0", 4 * f, f, 3) | conv_entries("tail.0.2", 4 * f, f, 3)
    shapes |= conv_entries("tail.1", 3, f, 3)
    # Nonlocal_CA: an unused SOCA (reduction 8) and the non-local block (f // 8 channels; g and phi pooled).
    shapes |= conv_entries("non_local.soca.conv_du.0", f // 8, f, 1)
    shapes |= conv_entries("non_local.soca.conv_du.2", f, f // 8, 1)
    for name in ("g.0", "theta", "phi.0"):
        shapes |= conv_entries(f"non_local.non_local.{name}", f // 8, f, 1)
    shapes |= conv_entries("non_local.non_local.W", f, f // 8, 1)
    for group in range(n_resgroups):
        name = f"RG.{group}"
        shapes |= {f"{name}.gamma": (1,)} | conv_entries(f"{name}.conv_last", f, f, 3)
        shapes |= conv_entries(f"{name}.soca.conv_du.0", f // 16, f, 1)
        shapes |= conv_entries(f"{name}.soca.conv_du.2", f, f // 16, 1)
        for block in range(n_resblocks):
            for conv in (0, 2):
                shapes |= conv_entries(f"{name}.rcab.{block}.conv_first.{conv}", f, f, 3)
    return shapes


# Maclory/SPSR architecture.py SPSRNet(3, 3, nf=64, nb=23, gc=32, upscale=4) with block.py: every conv_block is
# Sequential(conv[, LeakyReLU]) and block.sequential flattens nested Sequentials, so model = [fea_conv, trunk
# shortcut, Upsample, conv, LReLU, Upsample, conv, LReLU, HR_conv0 conv, LReLU] and b_module = [Upsample, conv,
# LReLU, Upsample, conv, LReLU, b_HR_conv0 conv, LReLU, b_HR_conv1 conv].
def official_spsr_x4_shapes(nf: int = 64, nb: int = 23, gc: int = 32) -> dict[str, tuple]:
    def rrdb(prefix: str, channels: int) -> dict[str, tuple]:
        entries = {}
        for rdb in (1, 2, 3):
            for number in range(1, 5):
                entries |= conv_entries(f"{prefix}.RDB{rdb}.conv{number}.0", gc, channels + (number - 1) * gc, 3)
            entries |= conv_entries(f"{prefix}.RDB{rdb}.conv5.0", channels, channels + 4 * gc, 3)
        return entries

    shapes = conv_entries("model.0", nf, 3, 3) | conv_entries(f"model.1.sub.{nb}", nf, nf, 3)
    for block in range(nb):
        shapes |= rrdb(f"model.1.sub.{block}", nf)
    for name in ("model.3", "model.6", "model.8", "HR_conv0_new.0", "HR_conv1_new.0", "b_LR_conv.0", "b_module.1",
                 "b_module.4", "b_module.6", "b_module.8", "f_HR_conv0.0"):
        shapes |= conv_entries(name, nf, nf, 3)
    shapes |= {"get_g_nopadding.weight_h": (1, 1, 3, 3), "get_g_nopadding.weight_v": (1, 1, 3, 3)}
    shapes |= conv_entries("b_fea_conv.0", nf, 3, 3) | conv_entries("conv_w.0", 3, nf, 1)
    for branch in (1, 2, 3, 4):
        shapes |= conv_entries(f"b_concat_{branch}.0", nf, 2 * nf, 3) | rrdb(f"b_block_{branch}", 2 * nf)
    shapes |= conv_entries("f_concat.0", nf, 2 * nf, 3) | rrdb("f_block", 2 * nf)
    return shapes | conv_entries("f_HR_conv1.0", 3, nf, 3)


# DRN's common.MeanShift leaves its 24 values trainable (it sets an attribute, not the parameters'
# requires_grad), so the official count adds 24 to the figures below: DRN-S x4 4,804,065 and DRN-L x4
# 9,825,893, the README's 4.8M and 9.8M.
DRN_MEAN_SHIFT_VALUES = 24
DRN_L = {"n_blocks": 40, "n_feats": 20}

# (arch, scale) -> the official key -> shape list of the published configuration, and its trainable parameter
# count (frozen mean shifts excluded), computed from that layout: SRFBN x4 = conv_in 7,169 + feat_in 16,449 +
# compress_in 8,257 + 12 projections x 262,209 + 10 transitions (2 x 82,245) + compress_out 24,641 + out 262,209 +
# conv_out 1,731 = 3,631,454 (no published figure was checked against it here).
OFFICIAL = {
    ("SRFBN", 4): (official_srfbn_shapes(4), 3_631_454),
    ("SRFBN", 2): (official_srfbn_shapes(2), 2_140_510),
    ("DRN", 4): (official_drn_x4_shapes(), 4_804_065 - DRN_MEAN_SHIFT_VALUES),
    # SAN x4: 15,860,488 = head 1,792 + 20 groups x (10 x 73,856 + SOCA 580 + conv_last 36,928 + gamma 1) +
    # conv_last 36,928 + gamma 1 + non-local module 3,232 + upsampler 295,424 + tail.1 1,731.
    ("SAN", 4): (official_san_shapes(), 15_860_488),
    # SPSR x4: 24,796,230, and 24,796,248 with the 18 fixed gradient kernel values, as the official
    # get_network_description counts it (network.parameters(), the shared HR_conv0_new once).
    ("SPSR", 4): (official_spsr_x4_shapes(), 24_796_230),
}


@pytest.mark.parametrize(("arch", "scale"), list(OFFICIAL))
def test_the_published_configuration_has_the_official_layout_and_size(arch, scale):
    shapes, parameters = OFFICIAL[arch, scale]
    with torch.device("meta"):
        model = create_model(arch, scale, **PUBLISHED[arch])
    assert {key: tuple(value.shape) for key, value in model.state_dict().items()} == shapes
    assert trainable(model) == shape_count(shapes) == parameters


@pytest.mark.parametrize(("arch", "scale"), list(OFFICIAL))
def test_a_checkpoint_with_the_official_keys_loads_strictly(arch, scale, tmp_path):
    shapes, _ = OFFICIAL[arch, scale]
    official = {key: torch.full(shape, float(number)) for number, (key, shape) in enumerate(shapes.items())}
    official |= {alias: official[key] for alias, key in SPSR_ALIASES.items() if alias in official}  # one module
    torch.save(official, tmp_path / "official.pth")
    with torch.device("meta"):  # no initialisation: every value comes from the file
        model = create_model(arch, scale, **PUBLISHED[arch])
    model.to_empty(device="cpu")
    model.load_state_dict(torch.load(tmp_path / "official.pth", weights_only=True, map_location="cpu"), strict=True)
    assert all(torch.equal(value, official[key]) for key, value in model.state_dict().items())


def test_drn_l_has_the_official_layout_and_size():
    with torch.device("meta"):
        model = create_model("DRN", 4, **DRN_L)
    shapes = official_drn_x4_shapes(**DRN_L)
    assert {key: tuple(value.shape) for key, value in model.state_dict().items()} == shapes
    assert trainable(model) + DRN_MEAN_SHIFT_VALUES == shape_count(shapes) + DRN_MEAN_SHIFT_VALUES == 9_825_893


UPSCALES = [("SRFBN", (2, 3, 4)), ("DRN", (2, 4)), ("SAN", (2, 3, 4)), ("SPSR", (4,))]


@pytest.mark.parametrize(("arch", "scales"), UPSCALES)
def test_a_published_architecture_upscales_by_its_scale(arch, scales):
    for scale in scales:
        model = create_model(arch, scale, **TINY[arch]).eval()
        with torch.no_grad():
            out = model(torch.rand(2, 3, 6, 5) * 255)
        assert out.shape == (2, 3, 6 * scale, 5 * scale)


def zero_trainable(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.zero_()
    return model.eval()


def test_srfbn_works_on_0_255_images_around_their_bilinear_upscaling():
    # The official options set rgb_range 255 and blocks.MeanShift shifts by 255 x DIV2K's mean; the network
    # adds its reconstruction to the bilinear upscaling of its input, so with no reconstruction it is that.
    model = zero_trainable(create_model("SRFBN", 4, **TINY["SRFBN"]))
    assert torch.allclose(model.sub_mean.bias, -255 * torch.tensor(RGB_MEAN))
    assert torch.allclose(model.add_mean.bias, 255 * torch.tensor(RGB_MEAN))
    image = torch.rand(1, 3, 6, 5) * 255
    with torch.no_grad():
        out = model(image)
    bilinear = functional.interpolate(image, scale_factor=4, mode="bilinear", align_corners=False)
    assert torch.allclose(out, bilinear, atol=1e-4)


def test_drn_works_on_0_255_images():
    # The official --rgb_range is 255 and common.MeanShift shifts by rgb_range x DIV2K's mean: with no
    # reconstruction the network gives that mean colour on the 0-255 scale.
    model = zero_trainable(create_model("DRN", 4, **TINY["DRN"]))
    assert torch.allclose(model.sub_mean.bias, -255 * torch.tensor(RGB_MEAN))
    with torch.no_grad():
        out = model(torch.rand(1, 3, 6, 5) * 255)
    assert torch.allclose(out, 255 * torch.tensor(RGB_MEAN).view(1, 3, 1, 1).expand(1, 3, 24, 20))


def test_drn_refuses_scale_3():
    with pytest.raises(ValueError, match="DRN: scale 3 is not allowed; allowed values: 2, 4"):
        create_model("DRN", 3, **TINY["DRN"])


def mpncov_sqrtm(x: torch.Tensor, iterations: int) -> torch.Tensor:
    """MPNCOV.Sqrtm.forward (daitao/SAN TestCode/code/model/MPNCOV/python/MPNCOV.py), step by step with its
    stacks of Y and Z, as the reference of srfp's square root."""
    batch, dim = x.shape[:2]
    i3 = 3.0 * torch.eye(dim).view(1, dim, dim).repeat(batch, 1, 1)
    norm = (1.0 / 3.0) * x.mul(i3).sum(dim=1).sum(dim=1)
    a = x.div(norm.view(batch, 1, 1).expand_as(x))
    y = torch.zeros(batch, iterations, dim, dim)
    z = torch.eye(dim).view(1, dim, dim).repeat(batch, iterations, 1, 1)
    zy = 0.5 * (i3 - a)
    y[:, 0], z[:, 0] = a.bmm(zy), zy
    for i in range(1, iterations - 1):
        zy = 0.5 * (i3 - z[:, i - 1].bmm(y[:, i - 1]))
        y[:, i], z[:, i] = y[:, i - 1].bmm(zy), zy.bmm(z[:, i - 1])
    zy = 0.5 * y[:, iterations - 2].bmm(i3 - z[:, iterations - 2].bmm(y[:, iterations - 2]))
    return zy * torch.sqrt(norm).view(batch, 1, 1).expand_as(x)


def test_san_second_order_pooling_is_mpncov_s():
    from srfp.sisr.archs.san import covariance, newton_schulz_sqrt

    torch.manual_seed(0)
    features = torch.randn(2, 8, 5, 6)
    flat = features.flatten(2)
    m = flat.shape[2]
    i_hat = torch.full((m, m), -1.0 / m / m) + torch.eye(m) / m  # MPNCOV.Covpool
    expected = flat @ i_hat @ flat.transpose(1, 2)
    assert torch.allclose(covariance(features), expected, atol=1e-5)
    assert torch.allclose(newton_schulz_sqrt(expected), mpncov_sqrtm(expected, 5), atol=1e-6)


@pytest.mark.parametrize(("size", "rows", "columns"), [
    ((999, 20), (0, 999), (0, 20)), ((20, 1300), (0, 20), (150, 1150)), ((1301, 20), (150, 1150), (0, 20)),
    ((1200, 1400), (100, 1100), (200, 1200)),
    ((1000, 20), (0, 1000), (20 - 490, 20)),  # a side of exactly 1000: the official slice x[..., -490:510]
])
def test_san_pools_the_covariance_of_the_official_region(size, rows, columns):
    from srfp.sisr.archs.san import covariance_region

    features = torch.arange(size[0] * size[1], dtype=torch.float32).view(1, 1, *size)
    expected = features[:, :, rows[0]:rows[1], columns[0]:columns[1]]
    assert torch.equal(covariance_region(features), expected)


def test_san_works_on_0_255_images():
    # The official --rgb_range is 255 and EDSR's MeanShift shifts by 255 x DIV2K's mean: with a zero output
    # conv the network gives that mean colour on the 0-255 scale. (All weights zero would make every covariance
    # zero, and its trace normalisation divide by zero, as in MPNCOV.)
    model = create_model("SAN", 4, **TINY["SAN"]).eval()
    zero_trainable(model.tail[1])
    assert torch.allclose(model.sub_mean.bias, -255 * torch.tensor(RGB_MEAN))
    with torch.no_grad():
        out = model(torch.rand(1, 3, 6, 5) * 255)
    assert torch.allclose(out, 255 * torch.tensor(RGB_MEAN).view(1, 3, 1, 1).expand(1, 3, 24, 20))


def test_spsr_gradient_branch_starts_from_the_official_gradient_magnitude():
    # architecture.py Get_gradient_nopadding on a [0, 1] image: per channel sqrt(dv^2 + dh^2 + 1e-6), with
    # dv = x[i + 1, j] - x[i - 1, j] and dh = x[i, j + 1] - x[i, j - 1] over a zero border.
    from srfp.sisr.archs.spsr import GradientMagnitude

    image = torch.rand(1, 3, 5, 6)
    padded = functional.pad(image, (1, 1, 1, 1))
    dv = padded[:, :, 2:, 1:-1] - padded[:, :, :-2, 1:-1]
    dh = padded[:, :, 1:-1, 2:] - padded[:, :, 1:-1, :-2]
    assert torch.allclose(GradientMagnitude()(image), torch.sqrt(dv**2 + dh**2 + 1e-6))


def test_spsr_has_no_mean_shift_and_needs_the_tapped_blocks():
    model = create_model("SPSR", 4, **TINY["SPSR"])
    assert not any("mean" in key for key in model.state_dict())
    with pytest.raises(ValueError, match="SPSR: nb=19 is not allowed; the gradient branch taps RRDBs 5, 10, 15, 20"):
        create_model("SPSR", 4, nf=4, nb=19, gc=2)
