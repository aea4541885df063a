"""Lossless PNG at each zlib level: encode time, decode time and size of 960 px images, one CPU core.

The super-resolved images are stored as PNG (``srfp.superres.shards.PNG_LEVEL``) and decoded again by
the classifiers and the report. Each image of a folder is first brought to ``--long-side`` pixels on
its longer side with the MATLAB-compatible bicubic (CBSD68's 481 x 321 photos become 962 x 642: the
bicubic super-resolution x2 of a real photo), then encoded at every level and decoded back; the pixels
are checked equal. Prints, per level, the mean encode and decode time per image, the bits per pixel and
the size against level 6 (zlib's and Pillow's default).

    python bench/png_levels.py                                   # the bundled photos
    python bench/png_levels.py --photos ../shared/data/cbsd68
"""

from __future__ import annotations

import argparse
import time
from importlib import resources
from pathlib import Path

import numpy as np

from srfp.images import decode_image, encode_png, imresize, read_image

LEVELS = range(10)


def images_at(folder: Path, long_side: int) -> list[np.ndarray]:
    """Every image under ``folder`` (recursively), resized to ``long_side`` pixels on its longer side."""
    images = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")):
        image = read_image(path)
        factor = long_side / max(image.shape[:2])
        images.append(imresize(image, output_shape=(round(image.shape[0] * factor), round(image.shape[1] * factor))))
    return images


def measure_level(images: list[np.ndarray], level: int) -> tuple[float, float, float]:
    """(mean encode seconds, mean decode seconds, bits per pixel) of the images at one level."""
    encode = decode = 0.0
    size = 0
    for image in images:
        start = time.perf_counter()
        png = encode_png(image, level)
        encode += time.perf_counter() - start
        start = time.perf_counter()
        decoded = decode_image(png)
        decode += time.perf_counter() - start
        if not np.array_equal(decoded, image):
            raise AssertionError(f"level {level}: decoded pixels differ")
        size += len(png)
    pixels = sum(image.shape[0] * image.shape[1] for image in images)
    return encode / len(images), decode / len(images), 8 * size / pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", default=None, help="a folder of images (default: the bundled photos)")
    parser.add_argument("--long-side", type=int, default=960)
    args = parser.parse_args()
    folder = Path(args.photos) if args.photos else Path(str(resources.files("srfp") / "data" / "photos"))
    images = images_at(folder, args.long_side)
    figures = {level: measure_level(images, level) for level in LEVELS}
    shapes = sorted({f"{image.shape[1]}x{image.shape[0]}" for image in images})
    print(f"{len(images)} images from {folder} at {args.long_side} px ({', '.join(shapes[:4])}"
          f"{', ...' if len(shapes) > 4 else ''}), one core")
    print("level  encode ms  decode ms  bits/pixel  size vs level 6")
    for level, (encode, decode, bits) in figures.items():
        print(f"{level:5d}  {encode * 1000:9.1f}  {decode * 1000:9.1f}  {bits:10.3f}  {bits / figures[6][2]:14.3f}")


if __name__ == "__main__":
    main()
