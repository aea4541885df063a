"""Peak memory and time of one large photo in ``photos``: decoding a JPEG and shrinking it to ``long_side``.

The README's figures for the paper's photo sizes come from this script. Each size runs in a process of its
own, single-threaded, and reports that process's peak resident memory (Linux's ``VmHWM``, the imports
included; not ``ru_maxrss``, which a child inherits from the process that started it):

    flock /tmp/srfp-tests.lock python bench/photo_shrink_memory.py --sizes 6000x4000,8660x5773 --long-side 960

The photos are seeded noise over a gradient, written as quality-90 JPEGs into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SINGLE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def write_photo(path: Path, width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 160, width, dtype=np.float32)[None, :, None]
    pixels = gradient + rng.integers(0, 96, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)


def measure(path: Path, long_side: int) -> dict:
    """Decode and shrink one photo in this process; its peak resident memory and the seconds it took."""
    from srfp.images import decode_image, fit_long_side

    start = time.perf_counter()
    photo = fit_long_side(decode_image(path.read_bytes(), str(path)), long_side)
    seconds = time.perf_counter() - start
    return {"shape": list(photo.shape), "seconds": round(seconds, 2), "peak_rss_gib": round(peak_rss_gib(), 2)}


def peak_rss_gib() -> float:
    status = Path("/proc/self/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return kib / 2**20


def measure_in_child(path: Path, long_side: int) -> dict:
    command = [sys.executable, __file__, "--measure", str(path), "--long-side", str(long_side)]
    result = subprocess.run(command, env={**os.environ, **SINGLE_THREAD}, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="6000x4000,8660x5773", help="WIDTHxHEIGHT[,...]")
    parser.add_argument("--long-side", type=int, default=960)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child's side
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.long_side)))
        return
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes.split(","):
            width, height = (int(side) for side in size.split("x"))
            path = Path(folder) / f"{size}.jpg"
            write_photo(path, width, height)
            print(json.dumps({"size": size, "megapixels": round(width * height / 1e6, 1),
                              **measure_in_child(path, args.long_side)}), flush=True)


if __name__ == "__main__":
    main()
