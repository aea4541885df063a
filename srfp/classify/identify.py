"""``predict``: which of a trained root's models made a user's images, and whether one of them did at all.

For each image file: the attribution classifier's three most likely models, each all-model parser's answer
(scale, loss, arch, dataset), and an *unknown-model score*: one minus the attribution's highest probability
(the maximum softmax probability, a standard open-set score). The image is called ``unknown`` when its score
is above the threshold that flags ``false_alarm_rate`` of the known models' validation images, calibrated
when the classifier was fitted (see :func:`srfp.analysis.openset.calibrate`). Either backbone answers:
the spectral classifiers (:mod:`srfp.classify.spectral`, with ``spectral.crops_per_side`` squared crops) or
the Ray Train ones (``classifier.backbone``, their weights run here on the CPU, on a grid of
:data:`NETWORK_CROPS_PER_SIDE` squared crops); an image needs at least the classifier's crop size a side,
and its crops' probabilities are averaged.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from srfp.classify import spectral
from srfp.classify.results import all_results
from srfp.errors import UserError
from srfp.gridspec import SpectralSettings
from srfp.images import read_image
from srfp.storage import Storage

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
FORMATS = ("table", "csv", "json")
#: A Ray Train classifier sees each image through this many crops a side (evenly spaced; fewer when they
#: coincide on a small image).
NETWORK_CROPS_PER_SIDE = 3


class PredictError(UserError):
    """Images that cannot be read, or a root without the classifiers that answer."""


def image_files(paths: list[str]) -> list[Path]:
    """The image files named, and those directly inside the folders named, in name order."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise PredictError(f"{path}: no such file or folder")
    if not files:
        raise PredictError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(paths)}")
    return files


def classifiers(storage: Storage, backbone: str) -> tuple[dict, list[dict]]:
    """The root's attribution result of ``backbone`` and its all-model parsers' results."""
    found = all_results(storage)
    results = found.get(backbone, {})
    attribution = results.get("attribution")
    if attribution is None:
        setting = "spectral.enabled: true" if backbone == spectral.BACKBONE else f"classifier.backbone: {backbone}"
        others = f"; it has those of {', '.join(sorted(found))} (--backbone)" if found else ""
        raise PredictError(f"{storage.uri} has no {backbone} attribution classifier{others}; train it with "
                           f"`python -m srfp.grid attribute --root {storage.uri}` ({setting})")
    if "score_threshold" not in attribution.get("unknown", {}):
        raise PredictError(f"{storage.uri_of(attribution['folder'])} was trained by an older srfp, without the unknown "
                           "score's threshold; delete that folder and run `python -m srfp.grid attribute` again")
    parsers = [r for r in results.values() if r["kind"] == "parser" and r["holdout"] is None
               and r["population"] == "custom"]
    return attribution, sorted(parsers, key=lambda r: r["target"])


class SpectralReader:
    """A spectral classifier's probabilities for a whole image: the mean of its crops'."""

    def __init__(self, storage: Storage, result: dict):
        self.settings = SpectralSettings(**result["settings"])
        self.crop_size, self.classes = self.settings.crop_size, len(result["labels"])
        self.arrays = spectral.read_model(storage, result["folder"])

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        crops = spectral.spectral_features(image, self.settings)
        return spectral.crop_probabilities(self.arrays, crops, self.classes).mean(axis=0)


class NetworkReader:
    """A Ray Train classifier's probabilities for a whole image: the mean of its crops', on the CPU in float32."""

    def __init__(self, storage: Storage, result: dict):
        from srfp.classify.loop import weights_path
        from srfp.classify.network import Classifier, load_weights

        self.crop_size = result["settings"]["crop_size"]
        self.network = Classifier(result["settings"]["backbone"], len(result["labels"]), pretrained=False)
        load_weights(self.network, storage.read_bytes(weights_path(result["folder"])))
        self.network.eval()

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        import torch

        size = self.crop_size
        corners = dict.fromkeys(spectral.crop_corners(*image.shape[:2], size, NETWORK_CROPS_PER_SIDE))
        crops = np.stack([image[y:y + size, x:x + size] for y, x in corners])
        with torch.no_grad():
            return self.network(torch.from_numpy(crops)).softmax(1).mean(0).numpy().astype(np.float64)


def reader(storage: Storage, result: dict):
    return (SpectralReader if result["backbone"] == spectral.BACKBONE else NetworkReader)(storage, result)


def read_images(files: list[Path], crop_size: int) -> dict[Path, np.ndarray]:
    """The images as HxWx3 uint8 arrays; unreadable files and images smaller than the crop are named."""
    images = {}
    for path in files:
        try:
            images[path] = read_image(path)
        except Exception as error:  # any decoder's failure: the user's file, named
            raise PredictError(f"{path}: cannot be read as an image ({error})") from error
    small = [f"{p} ({i.shape[1]}x{i.shape[0]})" for p, i in images.items() if min(i.shape[:2]) < crop_size]
    if small:
        raise PredictError(f"images smaller than the classifier's {crop_size} px crop a side: {', '.join(small)}")
    return images


def identify(storage: Storage, paths: list[str], backbone: str = spectral.BACKBONE) -> list[dict]:
    """One answer per image file (see the module's docstring)."""
    files = image_files(paths)
    attribution, parsers = classifiers(storage, backbone)
    attributor, parser_readers = reader(storage, attribution), [(p, reader(storage, p)) for p in parsers]
    threshold = attribution["unknown"]["score_threshold"]
    crop_size = max(r.crop_size for r in [attributor, *(r for _, r in parser_readers)])
    answers = []
    for path, image in read_images(files, crop_size).items():
        probabilities = attributor.probabilities(image)
        top = np.argsort(-probabilities, kind="stable")[:3]
        answer = {"image": str(path), **{f"model_{n}": attribution["labels"][i] for n, i in enumerate(top, 1)},
                  **{f"probability_{n}": float(probabilities[i]) for n, i in enumerate(top, 1)}}
        for parser, parser_reader in parser_readers:
            parsed = parser_reader.probabilities(image)
            answer[parser["target"]] = parser["labels"][int(parsed.argmax())]
            answer[f"{parser['target']}_probability"] = float(parsed.max())
        answer["unknown_score"] = 1 - float(probabilities.max())
        answer["verdict"] = "unknown" if answer["unknown_score"] > threshold else "known"
        answers.append(answer)
    return answers


def render(answers: list[dict], fmt: str) -> str:
    """The answers as an aligned text table, CSV or JSON."""
    if fmt == "json":
        return json.dumps(answers, indent=1)
    columns = list(answers[0])
    cells = [[f"{a[c]:.3f}" if isinstance(a[c], float) else str(a[c]) for c in columns] for a in answers]
    if fmt == "csv":
        sink = io.StringIO()
        csv.writer(sink, lineterminator="\n").writerows([columns, *cells])
        return sink.getvalue()
    widths = [max(len(column), *(len(row[i]) for row in cells)) for i, column in enumerate(columns)]
    return "\n".join("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip()
                     for row in [columns, *cells])
