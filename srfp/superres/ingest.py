"""Import images super-resolved elsewhere (published models we cannot run) as complete shards.

The folder holds one subfolder per model (any name), each with a ``model.yaml`` and one image per
photo of the manifest, named by the photo's image id (``<tag>-<stem>``, as in ``photos/manifest.parquet``)
or by its original file name's stem, with any of the suffixes png, jpg, jpeg, bmp, tif, tiff, webp::

    arch: CARN_M        # a grid arch for custom models; letters, digits, _ . + otherwise (part of the id)
    name: CARN-M        # optional display name of a pretrained or external model (any text)
    scale: 4
    source: external    # custom | pretrained (a model of grids/published.yaml) | external (any other)
    dataset: DIV2K      # dataset, loss, seed: grid values for custom models; for the others dataset and
    loss: L1            #   loss are what is known (any text), omitted, NA or null when unknown
    seed: null          #   and seed is omitted or null

A custom model is named by its grid id (``EDSR-div2k-x2-L1-s1``), a published one by its catalogue id
(``ESRGAN-NA-x4-ESRGAN-NA-pretrained``), any other by ``CARN_M-NA-x4-CARN_M-NA-external``; the id records
only the name and scale, the shard's rows and marker the rest. Each super-resolved image must be exactly
the size of its photo cropped to a multiple of the scale. A model is written only when every photo has a
readable image of the right size, so no shard is ever incomplete; models whose shard is already complete
(also under the ``-pretrained`` id an earlier srfp gave external models) are skipped. :func:`write_templates`
prepares such a folder for a list of model names: ``lr-inputs/x<scale>/<image_id>.png``, the photos'
low-resolution inputs as srfp's models get them, and each model's folder with a ``model.yaml`` template.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from srfp.datasets import IMAGE_SUFFIXES
from srfp.errors import UserError
from srfp.images import ImageDecodeError, crop_to_multiple, decode_image, downscale, encode_png
from srfp.photos import read_manifest, read_photo
from srfp.spec import ARCHS, DATASETS, LOSSES, SCALES, SOURCES, PublishedModel, SISRSpec
from srfp.storage import Storage
from srfp.superres.shards import MARKER, UNKNOWN_PRECISION, ModelInfo, make_row, shard_folder, shard_status, write_shard

METADATA = "model.yaml"
FIELDS = ("arch", "name", "dataset", "scale", "loss", "seed", "source")
_PUBLISHED_NAME = re.compile(r"^[A-Za-z0-9_.+]+$")
#: How many of the photos or files a problem is about it names.
EXAMPLES = 3
#: The folder beside the model folders where :func:`write_inputs` puts the photos' low-resolution inputs.
INPUTS = "lr-inputs"


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
        if data.get("name") is not None:
            raise IngestError(path, "name is for pretrained and external models; a custom model is named by its grid id")
        return ModelInfo.of_spec(spec)
    if not _PUBLISHED_NAME.match(arch):
        raise IngestError(path, f"arch {arch!r} must be letters, digits, _ . + only (it is part of the model id); "
                          f"write arch: {id_safe(arch)} and name: {arch}")
    if data.get("seed") is not None:
        raise IngestError(path, f"seed must be omitted or null for source {source}; got {data['seed']!r}")
    model_id = PublishedModel(arch, scale, source).model_id
    if source == "pretrained" and model_id not in published_ids():
        raise IngestError(path, f"{model_id} is not a model of the catalogue grids/published.yaml (`python -m "
                          "srfp.grid plan` lists them); use source: external for any other model")
    return ModelInfo(model_id, source, arch, _known(path, "dataset", data), scale, _known(path, "loss", data), None,
                     _known(path, "name", data, unknown=None))


def id_safe(name: str) -> str:
    """A model name as an id-safe arch: each character other than letters, digits, _ . + becomes _."""
    return re.sub(r"[^A-Za-z0-9_.+]", "_", name)


def _known(path: Path, name: str, data: dict, unknown: str | None = "NA") -> str | None:
    """A known value of a pretrained or external model (one line of text), or ``unknown`` when omitted, NA or null."""
    value = data.get(name)
    if value in (None, "NA"):
        return unknown
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        raise IngestError(path, f"{name} must be one line of text, or NA or null when unknown; got {value!r}")
    return value.strip()


def published_ids() -> set[str]:
    """The model ids of the catalogue's published models."""
    from srfp.published import load_catalogue  # checks the native archs, which imports torch: only when asked

    return {entry.model_id for entry in load_catalogue().models}


def original_stem(photo: dict) -> str:
    """The stem of a photo's original file name (``IMG_0042`` of ``cats/IMG_0042.jpg``), as the manifest records it."""
    return PurePosixPath(photo["source"]).stem


def photo_names(photos: list[dict]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The file stems that name a photo: its image id, and its original file name's stem unless that is another
    photo's image id; and the original stems that several photos share, with their image ids (ambiguous)."""
    names = {photo["image_id"]: photo["image_id"] for photo in photos}
    shared = Counter(original_stem(photo) for photo in photos)
    ambiguous: dict[str, list[str]] = {}
    for photo in photos:
        stem = original_stem(photo)
        if shared[stem] > 1:
            ambiguous.setdefault(stem, []).append(photo["image_id"])
        else:
            names.setdefault(stem, photo["image_id"])
    return names, ambiguous


def _examples(items: list[str]) -> str:
    shown = ", ".join(items[:EXAMPLES])
    return shown + (f" and {len(items) - EXAMPLES} more" if len(items) > EXAMPLES else "")


def _images(folder: Path, photos: list[dict], report: IngestReport) -> dict[str, Path]:
    """The image file of each photo in a model folder, named by image id or original file name; other files are
    reported (those that name no photo in one problem, with a few examples), not fatal."""
    names, ambiguous = photo_names(photos)
    found: dict[str, Path] = {}
    unmatched = []
    for path in sorted(folder.iterdir()):
        if path.name == METADATA or path.name.startswith("."):
            continue
        image_id = names.get(path.stem)
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            report.problems.append((str(path), f"ignored: not an image file ({', '.join(IMAGE_SUFFIXES)})"))
        elif path.stem in ambiguous:
            report.problems.append((str(path), f"ignored: {path.stem} is the original file name of "
                                    f"{len(ambiguous[path.stem])} photos ({_examples(ambiguous[path.stem])}); "
                                    "name it by the photo's image id"))
        elif image_id is None:
            unmatched.append(path.name)
        elif image_id in found:
            report.problems.append((str(path), f"ignored: {found[image_id].name} is already the image of {image_id}"))
        else:
            found[image_id] = path
    if unmatched:
        report.problems.append((str(folder), f"ignored: {len(unmatched)} image files name no photo of the manifest "
                                f"(neither an image id nor an original file name): {_examples(unmatched)}"))
    return found


def _missing_photos(folder: Path, missing: list[dict], total: int) -> tuple[str, str]:
    """One problem for every photo without an image: what was looked for, with a few examples."""
    looked_for = [f"{photo['image_id']}.png or {original_stem(photo)}.png" if original_stem(photo) != photo["image_id"]
                  else f"{photo['image_id']}.png" for photo in missing]
    return (str(folder), f"missing: {len(missing)} of {total} photos have no image, looked for by image id or "
            f"original file name (any of {', '.join(IMAGE_SUFFIXES)}): {_examples(looked_for)}; the photos are "
            "listed in photos/manifest.parquet (image_id, source)")


def _ingest_model(folder: Path, model: ModelInfo, photos: list[dict], storage: Storage,
                  report: IngestReport) -> bool:
    """Check one model folder against every photo and write its shard when all are good; returns whether written."""
    images = _images(folder, photos, report)
    missing = [photo for photo in photos if photo["image_id"] not in images]
    if missing:
        report.problems.append(_missing_photos(folder, missing, len(photos)))
    bad, rows = len(missing), []
    for photo in photos:
        image_id = photo["image_id"]
        if image_id not in images:
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


def complete_under(storage: Storage, model: ModelInfo) -> str | None:
    """The id of a complete shard of this model: its own, or the ``-pretrained`` id an earlier srfp gave an
    external model (kept under that id); None when there is none."""
    if shard_status(storage, model.model_id).state == "complete":
        return model.model_id
    former = PublishedModel(model.arch, model.scale).model_id
    marker = f"{shard_folder(former)}/{MARKER}"
    if model.source == "external" and storage.is_file(marker) and \
            json.loads(storage.read_text(marker))["model"]["source"] == "external":
        return former
    return None


def write_inputs(folder: Path, scale: int, storage: Storage) -> Path:
    """``folder/lr-inputs/x<scale>/<image_id>.png``: each photo's low-resolution input, exactly as srfp's models
    get it (the photo cropped to a multiple of the scale, MATLAB bicubic down); inputs already there are kept.
    Each is written whole or not at all, so an interrupted run leaves no part of one to be kept."""
    inputs = folder / INPUTS / f"x{scale}"
    inputs.mkdir(parents=True, exist_ok=True)
    written = Storage(str(inputs))
    for image_id in read_manifest(storage)["image_id"]:
        if not written.is_file(f"{image_id}.png"):
            written.write_bytes(f"{image_id}.png", encode_png(downscale(read_photo(storage, image_id), scale)[1]))
    return inputs


def template(name: str, scale: int) -> str:
    """The ``model.yaml`` of a model made elsewhere, by its display name, for the user to complete."""
    arch = id_safe(name)
    source = "pretrained" if PublishedModel(arch, scale).model_id in published_ids() else "external"
    return (f"# {name}: one image per photo, its output for ../{INPUTS}/x{scale}/<image_id>.png saved as <image_id>.png\n"
            f"arch: {arch}  # id-safe: the model id is {PublishedModel(arch, scale, source).model_id}\n"
            f"name: {json.dumps(name)}\n"
            f"scale: {scale}\n"
            f"source: {source}  # pretrained: a model of grids/published.yaml; external: any other\n"
            "dataset: NA  # its training set, when known (e.g. DIV2K)\n"
            "loss: NA  # its loss, when known (e.g. L1, adversarial)\n")


def write_templates(folder: str | Path, names: list[str], scale: int, storage: Storage, log=print) -> None:
    """Prepare a folder to ingest: the photos' low-resolution inputs (:func:`write_inputs`) and, per model name, a
    folder ``<id-safe name>`` with a ``model.yaml`` template (one already there is kept)."""
    folder = Path(folder).expanduser()
    inputs = write_inputs(folder, scale, storage)
    for name in names:
        metadata = folder / id_safe(name) / METADATA
        metadata.parent.mkdir(parents=True, exist_ok=True)
        if not metadata.exists():
            metadata.write_text(template(name, scale))
        log(f"{name}: {metadata}")
    log(f"inputs: {inputs} ({len(list(inputs.iterdir()))} photos, x{scale}); run each model on them, save each "
        f"output under the input's name in the model's folder, complete its {METADATA}, then ingest {folder}")


def ingest(folder: str | Path, storage: Storage, log=print) -> IngestReport:
    """Ingest every model subfolder of a local ``folder`` into ``storage``; one bad model never stops the others."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise IngestError(folder, f"not a folder; expected one subfolder per model, each with a {METADATA}")
    model_folders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != INPUTS)
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
        complete = complete_under(storage, model)
        if complete:
            report.already_complete.append(complete)
            log(f"{model.model_id}: skipped, its shard is already complete" + ("" if complete == model.model_id else
                f" under the id {complete} an earlier srfp gave it (delete {storage.uri_of(shard_folder(complete))} "
                "and ingest again to give it its new id)"))
            continue
        before = len(report.problems)
        written = _ingest_model(model_folder, model, photos, storage, report)
        log(f"{model.model_id}: {'ingested' if written else 'not ingested'}, {len(photos)} photos, "
            f"{len(report.problems) - before} problems")
    return report
