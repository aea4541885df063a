"""Hostile photo sources, through `photos` as a user runs it: a small file that declares a huge image is
skipped from its header, naming the limit, without its pixels ever being allocated; a symbolic link that leads
out of the source is skipped unless the grid allows it."""

import struct
import tracemalloc
import zlib

import pandas as pd
import pytest
import yaml
from PIL import Image

from srfp.grid import main
from srfp.gridspec import GridError, load_grid
from srfp.photos import MANIFEST


def grey_png(width: int, height: int) -> bytes:
    """A constant 8-bit grey PNG of any size, compressed row by row (a few hundred KB for 12000x11000) without
    the image ever being in memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), b"\0" + b"\x80" * width  # filter byte "none", then the pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def photo_grid(tmp_path, source, **photos) -> str:
    grid = yaml.safe_load(open(load_grid("smoke").source))
    grid["photos"].update(source=str(source), min_megapixels=0, long_side=128, **photos)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return str(path)


def small_photo(path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (200, 100, 50)).save(path)


def test_a_photo_above_the_pixel_limit_is_skipped_from_its_header_without_decoding(tmp_path, capsys):
    source = tmp_path / "source"
    small_photo(source / "city" / "small.png")
    (source / "city" / "bomb.png").write_bytes(grey_png(12000, 11000))
    assert (source / "city" / "bomb.png").stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        assert main(["photos", "--grid", photo_grid(tmp_path, source), "--root", str(tmp_path / "run")]) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    out = capsys.readouterr().out
    assert (f"skipped {source}/city/bomb.png: {source}/city/bomb.png: 12000x11000 pixels (132.0 MP) is above the "
            "limit of 50 MP; not decoded") in out
    assert peak < 12000 * 11000  # less than its grey pixels alone (the command's imports included); decoded,
    # it would take 396 MB as RGB, then 3 GB as float64 to resize
    assert list(pd.read_parquet(tmp_path / "run" / MANIFEST).image_id) == ["city-small"]


def test_the_pixel_limit_is_a_grid_setting_checked_at_load(tmp_path, capsys):
    source = tmp_path / "source"
    small_photo(source / "city" / "small.png")  # 1200 pixels
    assert main(["photos", "--grid", photo_grid(tmp_path, source, max_megapixels=0.001),
                 "--root", str(tmp_path / "run")]) == 0
    assert "40x30 pixels (0.0 MP) is above the limit of 0.001 MP; not decoded" in capsys.readouterr().out
    with pytest.raises(GridError, match=r"photos.max_megapixels: 500.0 is not allowed; expected a number above "
                                        r"photos.min_megapixels \(0\) and at most 200"):
        load_grid(photo_grid(tmp_path, source, max_megapixels=500))


def test_a_symbolic_link_out_of_the_photo_source_is_skipped_unless_the_grid_allows_it(tmp_path, capsys):
    source, elsewhere = tmp_path / "source", tmp_path / "elsewhere"
    small_photo(source / "city" / "inside.png")
    small_photo(elsewhere / "secret.png")
    (source / "city" / "link.png").symlink_to(elsewhere / "secret.png")
    (source / "linked").symlink_to(elsewhere)  # a whole tag folder outside
    assert main(["photos", "--grid", photo_grid(tmp_path, source), "--root", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    for link in ("city/link.png", "linked/secret.png"):
        assert (f"skipped {source}/{link}: a symbolic link to {elsewhere}/secret.png, outside the photo source "
                "(not followed unless photos.follow_symlinks is true)") in out
    assert list(pd.read_parquet(tmp_path / "run" / MANIFEST).image_id) == ["city-inside"]

    assert main(["photos", "--grid", photo_grid(tmp_path, source, follow_symlinks=True),
                 "--root", str(tmp_path / "followed")]) == 0
    assert "symbolic link" not in capsys.readouterr().out
    assert sorted(pd.read_parquet(tmp_path / "followed" / MANIFEST).image_id) == ["city-inside", "city-link",
                                                                                   "linked-secret"]
