"""Model ids name the five hyperparameters and parse back to them."""

import pytest

from srfp.spec import ModelIdError, PublishedModel, SISRSpec, parse_model_id


def test_model_id_follows_the_study_naming():
    spec = SISRSpec(arch="EDSR", dataset="div2k", scale=2, loss="L1", seed=1)
    assert spec.model_id == "EDSR-div2k-x2-L1-s1"
    assert SISRSpec("RCAN", "quarter_flickr2k", 4, "ResNet_GAN", 1).model_id == "RCAN-quarter_flickr2k-x4-ResNet_GAN-s1"


@pytest.mark.parametrize("model_id", ["EDSR-div2k-x2-L1-s1", "RDN-quarter_div2k-x4-VGG_GAN-s3",
                                      "RCAN-flickr2k-x2-ResNet_GAN-s2"])
def test_model_ids_parse_back_to_their_hyperparameters(model_id):
    spec = parse_model_id(model_id)
    assert isinstance(spec, SISRSpec)
    assert spec.model_id == model_id


def test_parsed_fields_are_typed():
    spec = parse_model_id("RDN-quarter_div2k-x4-VGG_GAN-s3")
    assert (spec.arch, spec.dataset, spec.scale, spec.loss, spec.seed) == ("RDN", "quarter_div2k", 4, "VGG_GAN", 3)
    assert spec.base_dataset == "div2k" and spec.is_quarter and spec.is_adversarial


def test_published_model_ids_round_trip():
    model = parse_model_id("ESRGAN-NA-x4-ESRGAN-NA-pretrained")
    assert model == PublishedModel(name="ESRGAN", scale=4)
    assert model.model_id == "ESRGAN-NA-x4-ESRGAN-NA-pretrained"


def test_models_made_elsewhere_have_ids_that_say_external_and_round_trip():
    model = PublishedModel("CARN_M", 4, source="external")
    assert model.model_id == "CARN_M-NA-x4-CARN_M-NA-external"
    assert parse_model_id(model.model_id) == model
    with pytest.raises(ModelIdError, match="source 'custom' is not allowed"):
        PublishedModel("CARN_M", 4, source="custom")


@pytest.mark.parametrize("bad, says", [("EDSR-div2k-x3-L1-s1", "scale 3 is not allowed; allowed values: 2, 4"),
                                       ("VDSR-div2k-x2-L1-s1", "arch 'VDSR' is not allowed; allowed values: EDSR, RDN, RCAN"),
                                       ("EDSR-div2k-x2-L2-s1", "loss 'L2'"),
                                       ("EDSR_div2k_x2", "expected {ARCH}-{dataset}-x{scale}-{loss}-s{seed}")])
def test_bad_model_ids_say_what_is_wrong(bad, says):
    with pytest.raises(ModelIdError, match=None) as error:
        parse_model_id(bad)
    assert says in str(error.value)
