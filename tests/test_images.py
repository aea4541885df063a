"""Images: MATLAB-exact bicubic, Y-channel PSNR, and decoding of every common kind of file."""

import io
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srfp import images
from srfp.images import (
    ImageDecodeError,
    crop_to_multiple,
    decode_image,
    downscale,
    encode_png,
    fit_long_side,
    imresize,
    psnr_y,
    read_image,
)

FIXTURES = Path(__file__).parent / "fixtures"
SET5 = ("baby", "bird", "butterfly", "head", "woman")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_matches_matlab_on_set5(shared_data, scale):
    differing = total = 0
    for name in SET5:
        hr = crop_to_multiple(read_image(shared_data / "set5" / "HR" / f"{name}.png"), scale)
        matlab = read_image(shared_data / "set5" / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png")
        ours = imresize(hr, scale=1 / scale)
        difference = np.abs(ours.astype(int) - matlab.astype(int))
        assert difference.max() <= 1
        differing += int((difference > 0).sum())
        total += difference.size
    assert differing / total < 0.01


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_reproduces_the_golden_fixture(scale):
    hr = read_image(FIXTURES / "chelsea_hr.png")
    np.testing.assert_array_equal(imresize(hr, scale=1 / scale), read_image(FIXTURES / f"chelsea_x{scale}.png"))


def whole_gather_imresize(image, scales, output_shape):
    """srfp's imresize before it worked in blocks: each pass one einsum over the whole image's gather."""
    out = image
    for axis in sorted((0, 1), key=lambda a: scales[a]):
        weights, indices = images._contributions(out.shape[axis], output_shape[axis], scales[axis])
        moved = np.moveaxis(out, axis, 0).astype(np.float64)
        out = np.moveaxis(np.einsum("ok,ok...->o...", weights, moved[indices]), 0, axis)
        if image.dtype == np.uint8:
            out = np.clip(images._round_half_away(out), 0, 255)
    return out.astype(np.uint8) if image.dtype == np.uint8 else out


@pytest.mark.parametrize("block_values", [images.BLOCK_VALUES, 64, 1])
def test_bicubic_in_blocks_is_bit_identical_to_whole_image_gathers(monkeypatch, block_values):
    monkeypatch.setattr(images, "BLOCK_VALUES", block_values)
    rng = np.random.default_rng(block_values)
    for case in range(24):
        height, width = (int(side) for side in rng.integers(1, 70, 2))
        image = (rng.integers(0, 256, (height, width, 3), dtype=np.uint8), rng.random((height, width, 3)) * 300 - 20,
                 rng.random((height, width)))[case % 3]
        if case % 2:
            scale = float(rng.choice([1 / 4, 1 / 3, 0.37, 0.5, 1.7, 3]))
            ours = imresize(image, scale=scale)
            theirs = whole_gather_imresize(image, (scale, scale), (math.ceil(height * scale), math.ceil(width * scale)))
        else:
            shape = (int(rng.integers(1, 90)), int(rng.integers(1, 90)))
            ours = imresize(image, output_shape=shape)
            theirs = whole_gather_imresize(image, (shape[0] / height, shape[1] / width), shape)
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_array_equal(np.signbit(ours), np.signbit(theirs))


@pytest.mark.parametrize(("size", "shrunk_size"), [((4000, 3000), (960, 720)),  # rows first
                                                   ((3000, 4001), (720, 960))])  # columns first
def test_shrinking_a_large_photo_takes_the_memory_of_blocks_not_of_the_photo(size, shrunk_size):
    photo = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)  # 34 MiB
    tracemalloc.start()
    try:
        shrunk = fit_long_side(photo, 960)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert shrunk.shape == (*shrunk_size, 3) and shrunk.dtype == np.uint8
    # The first pass's uint8 output (8 MiB) and a few float64 blocks of 8 MiB; whole gathers took 1.4 GiB.
    assert peak < 64 * 2**20


def test_bicubic_upsampling_of_set5_gives_the_literatures_psnr(shared_data):
    for scale, expected in ((2, 33.66), (4, 28.42)):
        values = []
        for name in SET5:
            hr = crop_to_multiple(read_image(shared_data / "set5" / "HR" / f"{name}.png"), scale)
            lr = read_image(shared_data / "set5" / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png")
            values.append(psnr_y(hr, imresize(lr, scale=scale), border=scale))
        assert np.mean(values) == pytest.approx(expected, abs=0.03)


def test_output_size_is_ceil_and_hr_is_cropped_to_a_multiple_of_the_scale():
    image = np.zeros((51, 37, 3), np.uint8)
    assert imresize(image, scale=1 / 4).shape == (13, 10, 3)
    hr, lr = downscale(image, 4)
    assert hr.shape == (48, 36, 3) and lr.shape == (12, 9, 3)


def test_float_images_stay_float_and_constant_images_stay_constant():
    image = np.full((20, 30, 3), 0.25)
    out = imresize(image, scale=0.5)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, 0.25)


def test_fit_long_side_shrinks_but_never_enlarges():
    image = np.zeros((300, 200, 3), np.uint8)
    assert fit_long_side(image, 96).shape == (96, 64, 3)
    assert fit_long_side(image, 960) is image


def test_psnr_y_uses_matlab_luma_and_crops_the_border():
    reference = np.full((10, 10, 3), 100, np.uint8)
    test = reference.copy()
    test[0, :, :] = 0  # only the border row differs
    assert psnr_y(reference, test, border=1) == float("inf")
    assert psnr_y(reference, test, border=0) < 30


def _encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_decode_handles_greyscale_palette_rgba_and_16_bit():
    grey = decode_image(_encode(Image.new("L", (4, 3), 77)))
    assert grey.shape == (3, 4, 3) and (grey == 77).all()
    palette = Image.new("P", (4, 3))
    palette.putpalette([10, 20, 30] * 256)
    assert (decode_image(_encode(palette)) == [10, 20, 30]).all()
    rgba = decode_image(_encode(Image.new("RGBA", (4, 3), (1, 2, 3, 0))))
    assert rgba.shape == (3, 4, 3) and (rgba == [1, 2, 3]).all()
    deep = Image.fromarray(np.full((3, 4), 65535, np.uint16))
    assert (decode_image(_encode(deep)) == 255).all()
    half = Image.fromarray(np.full((3, 4), 32896, np.uint16))  # 128 * 257
    assert (decode_image(_encode(half)) == 128).all()


def test_decode_applies_exif_orientation():
    image = Image.new("RGB", (6, 2), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = decode_image(_encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert decoded.shape == (6, 2, 3)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decoding_an_upright_rgb_photo_makes_no_copy_of_it_in_pillow(fmt):
    data = _encode(Image.new("RGB", (300, 200), (1, 2, 3)), fmt)
    before = Image.core.get_stats()["new_count"]
    decoded = decode_image(data)
    assert Image.core.get_stats()["new_count"] - before == 1  # the decoded image; no transposed or converted copy
    np.testing.assert_array_equal(decoded, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_corrupt_files_raise_an_error_naming_the_file():
    good = _encode(Image.new("RGB", (64, 64), (5, 5, 5)))
    with pytest.raises(ImageDecodeError, match="holiday.png: cannot decode image"):
        decode_image(good[: len(good) // 2], "holiday.png")
    with pytest.raises(ImageDecodeError, match="notes.txt"):
        decode_image(b"not an image at all", "notes.txt")


def test_png_encoding_is_lossless():
    image = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(encode_png(image)), image)
