"""Import images super-resolved elsewhere (published models we cannot run) as complete shards.

The folder holds one subfolder per model (any name), each with a ``model.yaml`` and one image per
photo of the manifest, named ``<image_id>.<png|jpg|jpeg|bmp|tif|tiff|webp>``::

    arch: ESRGAN        # a grid arch for custom models; any name of letters, digits, _ . + otherwise
    scale: 4
    source: pretrained  # custom | pretrained | external
    dataset: NA         # dataset, loss, seed: grid values for custom models; omitted, NA or null otherwise
    loss: NA
    seed: null

A custom model is named by its grid id (``EDSR-div2k-x2-L1-s1``); others by their published id
(``ESRGAN-NA-x4-ESRGAN-NA-pretrained``), which records only the name and scale. Each super-resolved
image must be exactly the size of its photo cropped to a multiple of the scale. A model is written only
when every photo has a readable image of the right size, so no shard is ever incomplete; models whose
shard is already complete are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from srfp.datasets import IMAGE_SUFFIXES
from srfp.errors import UserError
from srfp.images import ImageDecodeError, crop_to_multiple, decode_image
from srfp.photos import read_manifest, read_photo
from srfp.spec import ARCHS, DATASETS, LOSSES, SCALES, SOURCES, PublishedModel, SISRSpec
from srfp.storage import Storage
from srfp.superres.shards import UNKNOWN_PRECISION, ModelInfo, make_row, shard_status, write_shard

METADATA = "model.yaml"
FIELDS = ("arch", "dataset", "scale", "loss", "seed", "source")
_PUBLISHED_NAME = re.compile(r"^[A-Za-z0-9_.+]+$")


class IngestError(UserError, ValueError):
    """A folder or ``model.yaml`` that cannot be ingested; the message names the file and the field."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


@dataclass
class IngestReport:
    """Models written, models skipped as already complete, and every problem as (path, reason)."""

    ingested: list[str] = field(default_factory=list)
    already_complete: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def _allowed(path: Path, name: str, value, allowed) -> None:
    if value not in allowed:
        problem = f"{name} is missing" if value is None else f"{name} {value!r} is not allowed"
        raise IngestError(path, f"{problem}; allowed values: {', '.join(map(str, allowed))}")


def _integer(path: Path, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise IngestError(path, f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def read_metadata(path: Path) -> ModelInfo:
    """The model a ``model.yaml`` describes; :class:`IngestError` naming the file and field when invalid."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise IngestError(path, f"missing; every model folder needs a {METADATA} "
                          f"with {', '.join(FIELDS)}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise IngestError(path, f"not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise IngestError(path, f"expected a mapping with the fields {', '.join(FIELDS)}")
    for name in data:
        _allowed(path, "field", name, FIELDS)
    for name in ("arch", "scale", "source"):
        if data.get(name) is None:
            raise IngestError(path, f"{name} is missing")
    arch, source = str(data["arch"]), data["source"]
    scale = _integer(path, "scale", data["scale"], 1)
    _allowed(path, "source", source, SOURCES)
    if source == "custom":
        _allowed(path, "arch", arch, ARCHS)
        _allowed(path, "dataset", data.get("dataset"), DATASETS)
        _allowed(path, "scale", scale, SCALES)
        _allowed(path, "loss", data.get("loss"), LOSSES)
        spec = SISRSpec(arch, data["dataset"], scale, data["loss"], _integer(path, "seed", data.get("seed"), 0))
        return ModelInfo.of_spec(spec)
    if not _PUBLISHED_NAME.match(arch):
        raise IngestError(path, f"arch {arch!r} must be letters, digits, _ . + only (it is part of the model id)")
    for name in ("dataset", "loss", "seed"):
        if data.get(name) not in (None, "NA"):
            raise IngestError(path, f"{name} must be omitted, NA or null for source {source} "
                              f"(the model id records only arch and scale); got {data[name]!r}")
    return ModelInfo(PublishedModel(arch, scale).model_id, source, arch, "NA", scale, "NA", None)


def _images(folder: Path, image_ids: set[str], report: IngestReport) -> dict[str, Path]:
    """The image file of each photo id in a model folder; other files are reported, not fatal."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name == METADATA or path.name.startswith("."):
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            report.problems.append((str(path), f"ignored: not an image file ({', '.join(IMAGE_SUFFIXES)})"))
        elif path.stem not in image_ids:
            report.problems.append((str(path), "ignored: not a photo of the manifest"))
        elif path.stem in found:
            report.problems.append((str(path), f"ignored: {found[path.stem].name} is already the image of {path.stem}"))
        else:
            found[path.stem] = path
    return found


def _ingest_model(folder: Path, model: ModelInfo, photos: list[dict], storage: Storage,
                  report: IngestReport) -> bool:
    """Check one model folder against every photo and write its shard when all are good; returns whether written."""
    images = _images(folder, {photo["image_id"] for photo in photos}, report)
    bad, rows = 0, []
    for photo in photos:
        image_id = photo["image_id"]
        if image_id not in images:
            bad += 1
            reason = f"missing: no image of this photo (any of {', '.join(IMAGE_SUFFIXES)})"
            report.problems.append((str(folder / f"{image_id}.png"), reason))
            continue
        path = images[image_id]
        hr = crop_to_multiple(read_photo(storage, image_id), model.scale)
        try:
            sr = decode_image(path.read_bytes(), str(path))
        except ImageDecodeError as error:
            bad += 1
            report.problems.append((str(path), f"unreadable: {str(error).removeprefix(f'{path}: ')}"))
            continue
        if sr.shape != hr.shape:
            bad += 1
            reason = (f"is {sr.shape[1]}x{sr.shape[0]}, expected {hr.shape[1]}x{hr.shape[0]} "
                      f"(the photo cropped to a multiple of x{model.scale})")
            report.problems.append((str(path), reason))
        elif not bad:
            rows.append(make_row(model, photo, hr, sr))
    if bad:
        reason = (f"not ingested: {bad} of {len(photos)} photos missing, unreadable or of the wrong size; "
                  f"{model.model_id} has no shard")
        report.problems.append((str(folder), reason))
    else:
        write_shard(storage, model, rows, UNKNOWN_PRECISION)
        report.ingested.append(model.model_id)
    return not bad


def ingest(folder: str | Path, storage: Storage, log=print) -> IngestReport:
    """Ingest every model subfolder of a local ``folder`` into ``storage``; one bad model never stops the others."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise IngestError(folder, f"not a folder; expected one subfolder per model, each with a {METADATA}")
    model_folders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not model_folders:
        raise IngestError(folder, f"no model subfolders; expected {folder}/<model>/{METADATA} and its images")
    photos = read_manifest(storage).to_dict("records")
    report, seen = IngestReport(), {}
    for model_folder in model_folders:
        try:
            model = read_metadata(model_folder / METADATA)
        except IngestError as error:
            report.problems.append((error.path, error.reason))
            log(f"{model_folder.name}: not ingested, bad {METADATA}: {error.reason}")
            continue
        if model.model_id in seen:
            reason = f"not ingested: {model.model_id} is already the model of {seen[model.model_id]}"
            report.problems.append((str(model_folder), reason))
            log(f"{model_folder.name}: {reason}")
            continue
        seen[model.model_id] = model_folder
        if shard_status(storage, model.model_id).state == "complete":
            report.already_complete.append(model.model_id)
            log(f"{model.model_id}: skipped, its shard is already complete")
            continue
        before = len(report.problems)
        written = _ingest_model(model_folder, model, photos, storage, report)
        log(f"{model.model_id}: {'ingested' if written else 'not ingested'}, {len(photos)} photos, "
            f"{len(report.problems) - before} problems")
    return report
