"""Classifier building blocks without Ray: crops, backbones, training phases, weights, accuracy measures."""

import numpy as np
import pandas as pd
import pytest
import torch

from srfp.analysis.accuracy import grouped_accuracy, image_accuracy, seed_triplet_accuracy, vote_accuracy
from srfp.classify.backbones import BACKBONES, BackboneWeightsError, create_backbone
from srfp.classify.data import CropError, CropRows, crop
from srfp.classify.network import Classifier, ClassifierInitError, init_backbone_from, weights_bytes
from srfp.images import encode_png

FEATURES = {"xception": 2048, "xception_short": 2048, "xception_narrow": 512, "mobilenet": 1280,
            "resnet18": 512, "resnet50": 2048}


def test_crops_are_cut_never_resized_random_for_training_and_centred_for_evaluation():
    image = np.arange(10 * 12 * 3, dtype=np.uint16).reshape(10, 12, 3)
    centre = crop(image, 4)
    assert np.array_equal(centre, image[3:7, 4:8])
    rng = np.random.default_rng(0)
    corners = {(int(c[0, 0, 0]) // 36, int(c[0, 0, 0]) % 36 // 3) for c in (crop(image, 4, rng) for _ in range(200))}
    assert len(corners) > 20 and all(0 <= top <= 6 and 0 <= left <= 8 for top, left in corners)


def test_an_image_smaller_than_the_crop_is_an_error_naming_it():
    with pytest.raises(CropError, match=r"EDSR-x/photo-1 is 12x10, smaller than the 16x16 crop"):
        crop(np.zeros((10, 12, 3), np.uint8), 16, name="EDSR-x/photo-1")


def test_crop_rows_decode_crop_and_label_with_minus_one_for_values_without_a_class():
    png = encode_png(np.full((20, 30, 3), 7, np.uint8))
    batch = {"png": np.array([png, png], dtype=object), "model_id": np.array(["a", "b"]),
             "image_id": np.array(["p1", "p2"]), "scale": np.array([4, 3])}
    rows = CropRows("scale", ["2", "4"], 16)(batch)
    assert rows["image"].shape == (2, 16, 16, 3) and rows["image"].dtype == np.uint8
    assert rows["label"].tolist() == [1, -1]
    assert "png" not in rows and rows["image_id"].tolist() == ["p1", "p2"]


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_backbone_gives_logits_and_features_of_its_width_on_uint8_crops(name):
    classifier = Classifier(name, num_classes=3, pretrained=False).eval()
    logits, features = classifier.forward_with_features(torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8))
    assert logits.shape == (2, 3) and features.shape == (2, FEATURES[name])


def test_normalisation_comes_from_the_backbones_own_pretrained_configuration():
    xception, resnet = Classifier("xception_narrow", 2, False), Classifier("resnet18", 2, False)
    assert torch.allclose(xception.mean.flatten(), torch.full((3,), 127.5))
    assert torch.allclose(resnet.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]) * 255)


def test_missing_imagenet_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BackboneWeightsError, match=r"xception-43020ad28\.pth into \$TORCH_HOME/hub/checkpoints/.*"
                                                   r"classifier\.weights.*classifier\.pretrained: false"):
        create_backbone("xception", 5, pretrained=True)
    with pytest.raises(BackboneWeightsError, match=r"the file .*nowhere\.pth \(classifier\.weights\) could not be loaded"):
        create_backbone("resnet18", 5, pretrained=True, weights_file=str(tmp_path / "nowhere.pth"))
    with pytest.raises(BackboneWeightsError, match="has no ImageNet weights"):
        create_backbone("xception_narrow", 5, pretrained=True)


def test_the_head_phase_trains_only_the_new_final_layer_and_keeps_batch_norm_statistics():
    classifier = Classifier("xception_narrow", 4, False)
    trainable = classifier.set_phase("head")
    assert {id(p) for p in trainable} == {id(p) for p in classifier.network.get_classifier().parameters()}
    classifier.train_mode("head")
    assert not classifier.network.training
    assert len(classifier.set_phase("all")) == len(list(classifier.parameters()))


def test_a_classifier_can_start_from_another_ones_backbone_with_a_new_final_layer():
    torch.manual_seed(0)
    source = Classifier("xception_narrow", 16, False)
    target = Classifier("xception_narrow", 3, False)
    head_before = target.network.get_classifier().weight.clone()
    init_backbone_from(target, weights_bytes(source), "classifiers/attribution")
    assert torch.equal(target.network.stem[0].conv.weight, source.network.stem[0].conv.weight)
    assert torch.equal(target.network.get_classifier().weight, head_before)
    with pytest.raises(ClassifierInitError, match="classifiers/r18 has another backbone"):
        init_backbone_from(target, weights_bytes(Classifier("resnet18", 16, False)), "classifiers/r18")


def _predictions(rows):
    frame = pd.DataFrame(rows, columns=["model_id", "true_label", "predicted_label", "probabilities"])
    frame["probabilities"] = frame["probabilities"].map(np.asarray)
    return frame


def test_one_image_accuracy_and_the_vote_over_images_of_one_model():
    labels = ["2", "4"]
    rows = [("m1", "2", "2", [.9, .1]), ("m1", "2", "2", [.8, .2]), ("m1", "2", "4", [.1, .9]),
            ("m2", "4", "2", [.6, .4]), ("m2", "4", "2", [.55, .45]), ("m2", "4", "4", [.01, .99])]
    predictions = _predictions(rows)
    assert image_accuracy(predictions) == pytest.approx(3 / 6)
    # All three images vote: m1's majority is right; m2's is wrong, but its mean probability is right.
    assert vote_accuracy(predictions, labels, vote_size=3, repeats=5, method="majority") == 0.5
    assert vote_accuracy(predictions, labels, vote_size=3, repeats=5, method="mean") == 1.0
    # One image at a time, the vote is the 1-image accuracy of each model, averaged over random draws.
    assert vote_accuracy(predictions, labels, vote_size=1, repeats=3000) == pytest.approx(0.5, abs=0.03)


def test_a_tied_vote_goes_to_the_label_with_more_probability():
    predictions = _predictions([("m", "4", "2", [.51, .49]), ("m", "4", "4", [.01, .99])])
    assert vote_accuracy(predictions, ["2", "4"], vote_size=2, repeats=3) == 1.0


def test_accuracy_grouped_by_a_hyperparameter_and_seed_triplets():
    labels = ["E-s1", "E-s2", "E-s3", "R-s1"]
    frame = _predictions([("E-s1", "E-s1", "E-s1", [.7, .1, .1, .1]), ("E-s2", "E-s2", "R-s1", [.1, .2, .3, .4]),
                          ("E-s3", "E-s3", "E-s3", [.1, .1, .7, .1]), ("R-s1", "R-s1", "R-s1", [.1, .1, .1, .7])])
    frame = frame.assign(arch=["EDSR", "EDSR", "EDSR", "RCAN"], dataset="div2k", scale=2, loss="L1")
    by_arch = grouped_accuracy(frame, "arch").set_index("value")
    assert by_arch.loc["EDSR", "accuracy"] == pytest.approx(2 / 3) and by_arch.loc["RCAN", "images"] == 1
    triplets = seed_triplet_accuracy(frame, labels)
    # E-s2's image: wrong overall (R-s1) but, among its seed-mates, E-s3 scores highest: still wrong.
    assert triplets["correct"].tolist() == [True, False, True]


def test_several_random_crops_of_each_training_image_for_small_photo_sets():
    png = encode_png(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    batch = {"png": np.array([png], dtype=object), "model_id": np.array(["a"]), "image_id": np.array(["p1"]),
             "scale": np.array([2])}
    rows = CropRows("scale", ["2", "4"], 16, epoch=0, crops_per_image=4)(batch)
    assert rows["image"].shape == (4, 16, 16, 3) and rows["label"].tolist() == [0] * 4
    assert len({crop.tobytes() for crop in rows["image"]}) == 4 and rows["model_id"].tolist() == ["a"] * 4
    assert CropRows("scale", ["2", "4"], 16, crops_per_image=4)(batch)["image"].shape[0] == 1


def test_batch_norm_recalibration_makes_evaluation_see_the_network_as_trained():
    from srfp.classify.loop import recalibrate_batch_norm

    torch.manual_seed(0)
    classifier = Classifier("resnet18", 2, False)
    batch = {"image": torch.randint(0, 256, (16, 64, 64, 3), dtype=torch.uint8)}
    with torch.no_grad():
        classifier.train()
        as_trained = classifier(batch["image"])
        classifier.eval()
        before = classifier(batch["image"])
        recalibrate_batch_norm(classifier, [batch], torch.device("cpu"))
        classifier.eval()
        after = classifier(batch["image"])
    error = lambda outputs: ((outputs - as_trained).norm() / as_trained.norm()).item()  # noqa: E731
    assert error(before) > 0.1 and error(after) < 0.01
    assert classifier.network.bn1.momentum == 0.1  # the usual running average afterwards


def test_imagenet_weights_can_come_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    imagenet_like = create_backbone("resnet18", 1000, pretrained=False)
    torch.save(imagenet_like.state_dict(), tmp_path / "resnet18.pth")
    model = create_backbone("resnet18", 5, pretrained=True, weights_file=str(tmp_path / "resnet18.pth"))
    assert torch.equal(model.conv1.weight, imagenet_like.conv1.weight)  # the backbone from the file
    assert model.get_classifier().out_features == 5  # a new final layer
