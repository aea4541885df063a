"""Images: MATLAB-exact bicubic, Y-channel PSNR, and decoding of every common kind of file."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


def test_corrupt_files_raise_an_error_naming_the_file():
    good = _encode(Image.new("RGB", (64, 64), (5, 5, 5)))
    with pytest.raises(ImageDecodeError, match="holiday.png: cannot decode image"):
        decode_image(good[: len(good) // 2], "holiday.png")
    with pytest.raises(ImageDecodeError, match="notes.txt"):
        decode_image(b"not an image at all", "notes.txt")


def test_png_encoding_is_lossless():
    image = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(encode_png(image)), image)
