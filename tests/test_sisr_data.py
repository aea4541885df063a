"""Training batches: aligned LR/HR patches, reproducible per iteration, from a node-local pair cache."""

import numpy as np
import pytest
import torch

from srfp.datasets import ImageSet
from srfp.images import encode_png, imresize
from srfp.sisr.data import PairCache, PatchSampler, image_to_tensor, tensor_to_image
from srfp.storage import Storage


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "hr"
    folder.mkdir()
    for i in range(3):
        smooth = imresize(rng.integers(0, 256, (12, 14, 3), dtype=np.uint8), output_shape=(48, 56))
        (folder / f"{i}.png").write_bytes(encode_png(smooth))
    return ImageSet("toy", Storage(folder), tuple(f"{i}.png" for i in range(3)))


def test_batches_have_aligned_patch_sizes_and_pixel_range(images, tmp_path):
    sampler = PatchSampler(PairCache(images, 4, tmp_path / "cache"), patch_size=16, batch_size=5, seed=1)
    lr, hr = sampler.batch(0)
    assert lr.shape == (5, 3, 4, 4) and hr.shape == (5, 3, 16, 16)
    assert lr.dtype == torch.float32 and 0 <= float(hr.min()) and float(hr.max()) <= 255


def test_lr_patches_are_the_bicubic_downscale_of_their_hr_patches(images, tmp_path):
    sampler = PatchSampler(PairCache(images, 2, tmp_path / "cache"), patch_size=24, batch_size=8, seed=2)
    lr, hr = sampler.batch(3)
    for low, high in zip(lr, hr):
        expected = imresize(tensor_to_image(high[None]), scale=0.5).astype(int)
        inner = np.abs(expected - tensor_to_image(low[None]).astype(int))[3:-3, 3:-3]
        assert inner.max() <= 2  # equal away from the patch border, where whole-image context differs


def test_a_batch_depends_only_on_seed_and_iteration(images, tmp_path):
    one = PatchSampler(PairCache(images, 2, tmp_path / "a"), 16, 4, seed=7)
    two = PatchSampler(PairCache(images, 2, tmp_path / "b"), 16, 4, seed=7)
    assert all(torch.equal(x, y) for x, y in zip(one.batch(5), two.batch(5)))
    assert not torch.equal(one.batch(5)[1], one.batch(6)[1])
    assert not torch.equal(one.batch(5)[1], PatchSampler(one.pairs, 16, 4, seed=8).batch(5)[1])


def test_pairs_are_computed_once_per_node(images, tmp_path, monkeypatch):
    PatchSampler(PairCache(images, 2, tmp_path / "cache"), 16, 16, seed=0).batch(0)

    def no_decoding(self, index):
        raise AssertionError("decoded again")

    monkeypatch.setattr(ImageSet, "read", no_decoding)
    PatchSampler(PairCache(images, 2, tmp_path / "cache"), 16, 16, seed=0).batch(1)


def test_images_smaller_than_the_patch_are_reported(images, tmp_path):
    with pytest.raises(ValueError, match="smaller than the 96-pixel training patch"):
        PatchSampler(PairCache(images, 2, tmp_path / "cache"), 96, 1, seed=0).batch(0)
    with pytest.raises(ValueError, match="not a multiple of the scale"):
        PatchSampler(PairCache(images, 4, tmp_path / "cache"), 18, 1, seed=0)


def test_tensor_image_round_trip_clamps_and_rounds():
    image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert np.array_equal(tensor_to_image(image_to_tensor(image)), image)
    assert tensor_to_image(torch.full((1, 3, 2, 2), 300.4)).max() == 255
    assert tensor_to_image(torch.full((1, 3, 2, 2), 99.6)).min() == 100
