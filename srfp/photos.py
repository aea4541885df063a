"""Build the photo set every model super-resolves (the study's Flickr1K) from a folder of tagged photos.

The source has one subfolder per tag. For each tag, photos are taken in a seeded, deterministic order,
skipping unreadable files, those under ``min_megapixels`` or (from their header, undecoded) over
``max_megapixels``, and symbolic links out of a local source (unless ``follow_symlinks``), until ``per_tag``
are kept (all, when unset). Each kept photo is shrunk to ``long_side`` pixels on its longer side with the
MATLAB bicubic and stored as ``<root>/photos/<image_id>.png``. Photos are split train/val/test by photo,
stratified by tag so every split gets its share of each tag. ``<root>/photos/manifest.parquet`` is written
last; a rerun reuses the photos already stored. Their settings are recorded first, in
``<root>/photos/settings.json``: a rerun with other settings stops before any work (see srfp.provenance).
When the source is a Flickr collection (``photos collect``), the manifest carries each photo's owner,
licence and page from its ``sources.csv``.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from srfp.collect import read_sources
from srfp.datasets import DatasetError, image_files, resolve_source
from srfp.gridspec import PhotoSettings
from srfp.images import ImageDecodeError, decode_image, encode_png, fit_long_side
from srfp.provenance import check_unchanged, digest
from srfp.storage import Storage

SPLITS = ("train", "val", "test")
#: Each photo's credit, from a collected source's sources.csv; null for the photos it does not list.
CREDIT_COLUMNS = ("owner_name", "license", "license_url", "page_url")
MANIFEST = "photos/manifest.parquet"
#: The photo settings the stored photos were made with, written before the first photo.
SETTINGS = "photos/settings.json"


@dataclass
class PhotoReport:
    """What a build kept and what it skipped, with reasons."""

    kept: int = 0
    reused: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def skip(self, uri: str, reason: str, log) -> None:
        self.skipped.append((uri, reason))
        log(f"skipped {uri}: {reason}")


def split_counts(total: int, shares: dict[str, int]) -> dict[str, int]:
    """Distribute ``total`` photos over the splits in proportion to ``shares`` (largest remainder)."""
    weight = sum(shares.values())
    exact = {s: total * shares[s] / weight for s in SPLITS}
    counts = {s: int(exact[s]) for s in SPLITS}
    for s in sorted(SPLITS, key=lambda s: (-(exact[s] - counts[s]), SPLITS.index(s)))[: total - sum(counts.values())]:
        counts[s] += 1
    return counts


def image_id_of(tag: str, path: str) -> str:
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{tag}-{stem}")


def _ordered(files: list[str], tag: str, seed: int) -> list[str]:
    rng = np.random.default_rng([seed, zlib.crc32(tag.encode())])
    return [files[i] for i in rng.permutation(len(files))]


def stratified_counts(tag_sizes: dict[str, int], shares: dict[str, int]) -> dict[str, dict[str, int]]:
    """Photos of each tag in each split: split totals as :func:`split_counts`, each tag in proportion."""
    totals = split_counts(sum(tag_sizes.values()), shares)
    weight = sum(shares.values())
    exact = {(t, s): n * shares[s] / weight for t, n in tag_sizes.items() for s in SPLITS}
    cells = {key: int(value) for key, value in exact.items()}
    order = sorted(exact, key=lambda key: -(exact[key] - cells[key]))
    while sum(cells.values()) < sum(tag_sizes.values()):
        for tag, split in order:
            tag_left = tag_sizes[tag] - sum(cells[tag, s] for s in SPLITS)
            split_left = totals[split] - sum(cells[t, split] for t in tag_sizes)
            if tag_left > 0 and split_left > 0:
                cells[tag, split] += 1
    return {t: {s: cells[t, s] for s in SPLITS} for t in tag_sizes}


def photo_credits(source: Storage) -> dict[str, dict]:
    """The credit columns of each photo file a source's sources.csv lists (none without one)."""
    return {row["file"]: {"owner_name": row["owner_name"], "license": row["license_name"],
                          "license_url": row["license_url"], "page_url": row["page_url"]}
            for row in read_sources(source).values()}


def link_out_of(source: Storage, path: str) -> str | None:
    """Where a photo of a local source really is, when symbolic links (of the file or of a folder above it) lead
    out of the source; None when it is inside (and on S3, which has no links)."""
    if source.remote:
        return None
    real = Path(source.path(path)).resolve()
    return None if real.is_relative_to(source.base) else real.as_posix()


def prepare_photos(settings: PhotoSettings, root: Storage, force: bool = False) -> None:
    """Before any photo is made: with ``force``, delete the stored photos; remove the temporaries of killed
    writes; stop with :class:`~srfp.provenance.StaleWork` when the stored photos were made with other settings
    (or by an srfp that did not record them); then record the settings, before the first photo."""
    if force:
        root.delete("photos")
    root.remove_stale_temporaries("photos")
    stored = json.loads(root.read_text(SETTINGS)) if root.is_file(SETTINGS) else {}
    if stored or root.list("photos"):
        check_unchanged(f"the photo set {root.uri_of('photos')}", stored, asdict(settings), "photos")
    root.write_text(SETTINGS, json.dumps(asdict(settings), sort_keys=True))


def photos_digest(root: Storage) -> str:
    """The digest of the stored photo set: its recorded settings (which fix every photo's pixels) and the
    manifest's photos, tags, splits and sizes, in order. Equal whenever a shard made from it still holds."""
    manifest = read_manifest(root)[["image_id", "tag", "split", "height", "width"]]
    settings = json.loads(root.read_text(SETTINGS)) if root.is_file(SETTINGS) else None
    return digest({"settings": settings, "photos": manifest.to_dict("split")})


def build_photos(settings: PhotoSettings, root: Storage, log=print, force: bool = False) -> PhotoReport:
    """Build ``<root>/photos`` from ``settings.source`` (``force``: afresh); returns what was kept and skipped."""
    prepare_photos(settings, root, force)
    source = resolve_source(settings.source)
    credits = photo_credits(source)
    tags = [d.rsplit("/", 1)[-1] for d in source.list_dirs()]
    if not tags:
        raise DatasetError(f"{settings.source}: no tag subfolders; the photo source needs one subfolder per tag")
    report, kept, seen = PhotoReport(), {}, set()
    for tag in tags:
        rows = []
        for path in _ordered(image_files(source, tag), tag, settings.seed):
            if settings.per_tag is not None and len(rows) >= settings.per_tag:
                break
            image_id = image_id_of(tag, path)
            if image_id in seen:
                report.skip(source.uri_of(path), f"another photo already has the id {image_id}", log)
                continue
            target = photo_path(image_id)
            outside = None if settings.follow_symlinks else link_out_of(source, path)
            if outside:
                report.skip(source.uri_of(path), f"a symbolic link to {outside}, outside the photo source (not followed "
                            "unless photos.follow_symlinks is true)", log)
                continue
            try:  # only the source photo can be bad: errors of the root stop the build
                original = decode_image(source.read_bytes(path), source.uri_of(path), settings.max_megapixels)
            except (ImageDecodeError, OSError) as error:
                report.skip(source.uri_of(path), str(error), log)
                continue
            megapixels = original.shape[0] * original.shape[1] / 1e6
            if megapixels < settings.min_megapixels:
                report.skip(source.uri_of(path), f"{megapixels:.2f} MP < {settings.min_megapixels} MP", log)
                continue
            if root.is_file(target):
                height, width = decode_image(root.read_bytes(target), root.uri_of(target)).shape[:2]
                report.reused += 1
            else:
                photo = fit_long_side(original, settings.long_side)
                root.write_bytes(target, encode_png(photo))
                height, width = photo.shape[:2]
                report.kept += 1
            seen.add(image_id)
            rows.append({"image_id": image_id, "tag": tag, "source": path, "height": height, "width": width,
                         "megapixels_original": round(megapixels, 3), **credits.get(path, dict.fromkeys(CREDIT_COLUMNS))})
            log(f"photo {sum(map(len, kept.values())) + len(rows)}: {image_id} ({height}x{width})")
        if settings.per_tag is not None and len(rows) < settings.per_tag:
            log(f"warning: tag {tag} has only {len(rows)} usable photos of the {settings.per_tag} asked for")
        kept[tag] = rows
    cells = stratified_counts({tag: len(rows) for tag, rows in kept.items()}, settings.split)
    for tag, rows in kept.items():
        splits = [s for s in SPLITS for _ in range(cells[tag][s])]
        for row, split in zip(rows, splits):
            row["split"] = split
    manifest = pd.DataFrame([row for rows in kept.values() for row in rows],
                            columns=["image_id", "tag", "source", "height", "width", "megapixels_original", "split",
                                     *CREDIT_COLUMNS])
    counts = manifest["split"].value_counts().reindex(list(SPLITS), fill_value=0)
    table = pa.Table.from_pandas(manifest, preserve_index=False).replace_schema_metadata(
        {"srfp.photo_settings": json.dumps(asdict(settings))})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    root.write_bytes(MANIFEST, sink.getvalue().to_pybytes())
    log(f"photos: {len(manifest)} in {root.uri_of('photos')} ({', '.join(f'{s} {counts[s]}' for s in SPLITS)}); "
        f"{len(report.skipped)} skipped")
    return report


def photo_path(image_id: str) -> str:
    """Where a photo is stored in the root."""
    return f"photos/{image_id}.png"


def read_photo(root: Storage, image_id: str) -> np.ndarray:
    """A stored photo as an RGB uint8 array."""
    path = photo_path(image_id)
    return decode_image(root.read_bytes(path), root.uri_of(path))


def read_manifest(root: Storage) -> pd.DataFrame:
    """The photo manifest of a run; a clear error when the photos have not been built yet."""
    if not root.is_file(MANIFEST):
        raise DatasetError(f"{root.uri_of(MANIFEST)} does not exist; build the photo set first with "
                           f"`python -m srfp.grid photos --root {root.uri}`")
    return pq.read_table(BytesIO(root.read_bytes(MANIFEST))).to_pandas()
