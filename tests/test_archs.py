"""The SISR architectures: shapes, the official EDSR-PyTorch parameter layout, option checking, seeding."""

import pytest
import torch

from srfp.published import load_catalogue
from srfp.sisr.archs import ARCHITECTURES, PUBLISHED, TINY, create_model
from srfp.spec import ARCHS

# A few state_dict entries of the official EDSR-PyTorch models (src/model/{edsr,rdn,rcan}.py, common.py),
# with their shapes (None: absent), for the published configurations.
OFFICIAL_X4 = {
    "EDSR": {
        "sub_mean.weight": (3, 3, 1, 1), "add_mean.bias": (3,), "head.0.weight": (256, 3, 3, 3),
        "body.0.body.0.weight": (256, 256, 3, 3), "body.31.body.2.bias": (256,),
        "body.32.weight": (256, 256, 3, 3), "tail.0.0.weight": (1024, 256, 3, 3),
        "tail.0.2.weight": (1024, 256, 3, 3), "tail.1.weight": (3, 256, 3, 3),
    },
    "RDN": {
        "SFENet1.weight": (64, 3, 3, 3), "SFENet2.weight": (64, 64, 3, 3),
        "RDBs.0.convs.0.conv.0.weight": (64, 64, 3, 3), "RDBs.15.convs.7.conv.0.weight": (64, 512, 3, 3),
        "RDBs.0.LFF.weight": (64, 576, 1, 1), "GFF.0.weight": (64, 1024, 1, 1), "GFF.1.weight": (64, 64, 3, 3),
        "UPNet.0.weight": (256, 64, 3, 3), "UPNet.2.weight": (256, 64, 3, 3), "UPNet.4.weight": (3, 64, 3, 3),
    },
    "RCAN": {
        "sub_mean.bias": (3,), "head.0.weight": (64, 3, 3, 3), "body.0.body.0.body.0.weight": (64, 64, 3, 3),
        "body.9.body.19.body.2.weight": (64, 64, 3, 3), "body.9.body.19.body.3.conv_du.0.weight": (4, 64, 1, 1),
        "body.9.body.19.body.3.conv_du.2.weight": (64, 4, 1, 1), "body.9.body.20.weight": (64, 64, 3, 3),
        "body.10.weight": (64, 64, 3, 3), "tail.0.2.weight": (256, 64, 3, 3), "tail.1.weight": (3, 64, 3, 3),
    },
}
OFFICIAL_X2 = {
    "EDSR": {"tail.0.0.weight": (1024, 256, 3, 3), "tail.0.2.weight": None, "tail.1.weight": (3, 256, 3, 3)},
    "RDN": {"UPNet.0.weight": (256, 64, 3, 3), "UPNet.2.weight": (3, 64, 3, 3), "UPNet.4.weight": None},
}

# Trainable parameters (the frozen 24-value mean shifts excluded), summed layer by layer over the
# official layouts, e.g. EDSR x4: head 7,168 + 32 blocks x 1,180,160 + 590,080 + upsampler 4,720,640
# + 6,915 = 43,089,923. The figures quoted for the x4 models are 43.1M, 22.3M and 15.6M.
TRAINABLE = {("EDSR", 4): 43_089_923, ("EDSR", 2): 40_729_603, ("RDN", 4): 22_271_107,
             ("RDN", 2): 22_123_395, ("RCAN", 4): 15_592_355}
QUOTED_FIGURES = {"EDSR": 43.1e6, "RDN": 22.3e6, "RCAN": 15.6e6}


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_the_registry_covers_the_study_architectures_and_the_native_published_ones():
    assert tuple(ARCHITECTURES)[:len(ARCHS)] == ARCHS
    assert set(ARCHITECTURES) == set(ARCHS) | load_catalogue().native_archs() \
        == {"EDSR", "RDN", "RCAN", "ESRGAN", "SRFBN", "DRN", "SAN", "SPSR"}
    assert set(PUBLISHED) == set(TINY) == set(ARCHITECTURES)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("arch", ARCHS)
def test_a_model_upscales_by_its_scale(arch, scale):
    model = create_model(arch, scale, **TINY[arch]).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 12, 10) * 255)
    assert out.shape == (1, 3, 12 * scale, 10 * scale)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("arch", "scale", "expected"),
                         [(arch, 4, keys) for arch, keys in OFFICIAL_X4.items()]
                         + [(arch, 2, keys) for arch, keys in OFFICIAL_X2.items()])
def test_published_configurations_have_the_official_layout(arch, scale, expected):
    with torch.device("meta"):
        model = create_model(arch, scale, **PUBLISHED[arch])
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert {key: shapes.get(key) for key in expected} == expected
    assert trainable(model) == TRAINABLE[arch, scale]
    if scale == 4:
        assert trainable(model) == pytest.approx(QUOTED_FIGURES[arch], rel=0.01)


def test_the_mean_shifts_are_frozen_and_only_in_edsr_and_rcan():
    for arch in ARCHS:
        model = create_model(arch, 2, **TINY[arch])
        frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        shifts = {f"{module}.{kind}" for module in ("sub_mean", "add_mean") for kind in ("weight", "bias")}
        expected = set() if arch == "RDN" else shifts
        assert frozen == expected
    edsr = create_model("EDSR", 2, rgb_range=1, **TINY["EDSR"])
    assert edsr.sub_mean(torch.zeros(1, 3, 1, 1)).flatten().tolist() == pytest.approx([-0.4488, -0.4371, -0.4040])


@pytest.mark.parametrize("arch", ARCHS)
def test_a_published_model_round_trips_through_a_strict_checkpoint(arch, tmp_path):
    model = create_model(arch, 4, **PUBLISHED[arch])
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    restored = create_model(arch, 4, **PUBLISHED[arch])
    restored.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True), strict=True)
    saved, loaded = model.state_dict(), restored.state_dict()
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_restored_model_computes_the_same_image(arch, tmp_path):
    model = create_model(arch, 4, **TINY[arch]).eval()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    restored = create_model(arch, 4, **TINY[arch]).eval()
    restored.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True), strict=True)
    image = torch.rand(1, 3, 12, 10) * 255
    with torch.no_grad():
        assert torch.equal(restored(image), model(image))


def test_an_unknown_architecture_is_refused_with_the_allowed_names():
    with pytest.raises(ValueError, match="'VDSR'.*allowed values: EDSR, RDN, RCAN"):
        create_model("VDSR", 2)


def test_an_unsupported_scale_is_refused():
    with pytest.raises(ValueError, match="EDSR: scale 8 .*allowed values: 2, 3, 4"):
        create_model("EDSR", 8)


@pytest.mark.parametrize(("arch", "options", "message"), [
    ("EDSR", {"n_resgroups": 2}, "EDSR: unknown option 'n_resgroups'; allowed options: n_resblocks, n_feats, "
                                 "res_scale, rgb_range, n_colors"),
    ("RDN", {"n_feats": 16}, "RDN: unknown option 'n_feats'; allowed options: G0, D, C, G, kernel_size, "
                             "rgb_range, n_colors"),
    ("RCAN", {"n_feats": 0}, "RCAN: option n_feats=0 is invalid; expected a positive int"),
    ("EDSR", {"n_feats": 16.5}, "EDSR: option n_feats=16.5 is invalid"),
    ("EDSR", {"res_scale": -1}, "EDSR: option res_scale=-1 is invalid; expected a positive float"),
    ("RCAN", {"n_feats": 8, "reduction": 16}, "RCAN: reduction=16 is not allowed"),
    ("RDN", {"kernel_size": 4}, "RDN: kernel_size=4 is not allowed"),
    ("EDSR", {"n_colors": 1}, "EDSR: n_colors=1 is not allowed"),
])
def test_invalid_options_are_refused_with_the_allowed_ones(arch, options, message):
    with pytest.raises(ValueError) as error:
        create_model(arch, 2, **options)
    assert message in str(error.value)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_seed_fixes_the_initial_weights(arch):
    def weights(seed):
        torch.manual_seed(seed)
        return create_model(arch, 2, **TINY[arch]).state_dict()

    first, again, other = weights(1), weights(1), weights(2)
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert any(not torch.equal(first[key], other[key]) for key in first)


# xinntao/ESRGAN RRDBNet_arch.py, as its test.py builds it for RRDB_ESRGAN_x4.pth: RRDBNet(3, 3, 64, 23, gc=32).
RDB_CONVS = {"conv1": (32, 64), "conv2": (32, 96), "conv3": (32, 128), "conv4": (32, 160), "conv5": (64, 192)}
ESRGAN_TOP_CONVS = {"conv_first": (64, 3), "trunk_conv": (64, 64), "upconv1": (64, 64), "upconv2": (64, 64),
                    "HRconv": (64, 64), "conv_last": (3, 64)}


def official_esrgan_shapes(blocks: int = 23) -> dict[str, tuple]:
    """Every state_dict entry of the official RRDBNet x4, with its shape (all convs 3x3 with a bias)."""
    convs = dict(ESRGAN_TOP_CONVS)
    convs |= {f"RRDB_trunk.{i}.RDB{r}.{name}": shape
              for i in range(blocks) for r in (1, 2, 3) for name, shape in RDB_CONVS.items()}
    shapes = {}
    for name, (out_channels, in_channels) in convs.items():
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (out_channels, in_channels, 3, 3), (out_channels,)
    return shapes


def test_esrgan_has_the_official_rrdbnet_layout_and_size():
    # 16,697,987 parameters, summed over the official layout: conv_first 1,792 + 23 RRDBs x 3 RDBs x
    # (18,464 + 27,680 + 36,896 + 46,112 + 110,656) + 4 x 36,928 (trunk_conv, upconv1/2, HRconv) + conv_last 1,731.
    with torch.device("meta"):
        model = create_model("ESRGAN", 4, **PUBLISHED["ESRGAN"])
    assert {key: tuple(value.shape) for key, value in model.state_dict().items()} == official_esrgan_shapes()
    assert trainable(model) == 16_697_987


def test_esrgan_loads_a_checkpoint_with_the_official_keys_strictly(tmp_path):
    official = {key: torch.randn(shape) for key, shape in official_esrgan_shapes().items()}
    torch.save(official, tmp_path / "RRDB_ESRGAN_x4.pth")
    model = create_model("ESRGAN", 4, **PUBLISHED["ESRGAN"])
    model.load_state_dict(torch.load(tmp_path / "RRDB_ESRGAN_x4.pth", weights_only=True, map_location="cpu"),
                          strict=True)
    assert torch.equal(model.state_dict()["RRDB_trunk.22.RDB3.conv5.weight"], official["RRDB_trunk.22.RDB3.conv5.weight"])


def test_esrgan_upscales_by_4_only():
    model = create_model("ESRGAN", 4, **TINY["ESRGAN"]).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 12, 10))
    assert out.shape == (2, 3, 48, 40)
    with pytest.raises(ValueError, match="ESRGAN: scale 2 is not allowed; allowed values: 4"):
        create_model("ESRGAN", 2, **TINY["ESRGAN"])
