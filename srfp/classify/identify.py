"""``predict``: which of a trained root's models made a user's images, and whether one of them did at all.

For each image file: the attribution classifier's three most likely models, each all-model parser's answer
(scale, loss, arch, dataset), and an *unknown-model score*: one minus the attribution's highest probability
(the maximum softmax probability, a standard open-set score). The image is called ``unknown`` when its
highest probability is below the threshold that flags ``false_alarm_rate`` of the known models' validation
images, calibrated when the classifier was fitted (see :func:`srfp.classify.spectral.unknown_threshold`).
Today the spectral classifiers answer (:mod:`srfp.classify.spectral`); they read any image of at least
``spectral.crop_size`` pixels a side, with the votes of all its crops averaged.
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


def classifiers(storage: Storage) -> tuple[dict, list[dict]]:
    """The root's spectral attribution result and its all-model parsers' results."""
    results = all_results(storage).get(spectral.BACKBONE, {})
    attribution = results.get("attribution")
    if attribution is None:
        raise PredictError(f"{storage.uri} has no spectral attribution classifier; train it with "
                           f"`python -m srfp.grid attribute --root {storage.uri}` (spectral.enabled: true)")
    parsers = [r for r in results.values() if r["kind"] == "parser" and r["holdout"] is None
               and r["population"] == "custom"]
    return attribution, sorted(parsers, key=lambda r: r["target"])


def _probabilities(storage: Storage, result: dict, crops: np.ndarray) -> np.ndarray:
    model = spectral.read_model(storage, result["folder"])
    return spectral.crop_probabilities(model, crops, len(result["labels"])).mean(axis=0)


def identify(storage: Storage, paths: list[str]) -> list[dict]:
    """One answer per image file (see the module's docstring)."""
    files = image_files(paths)
    attribution, parsers = classifiers(storage)
    settings = SpectralSettings(**attribution["settings"])
    images = {}
    for path in files:
        try:
            images[path] = read_image(path)
        except Exception as error:  # any decoder's failure: the user's file, named
            raise PredictError(f"{path}: cannot be read as an image ({error})") from error
    small = [f"{p} ({i.shape[1]}x{i.shape[0]})" for p, i in images.items() if min(i.shape[:2]) < settings.crop_size]
    if small:
        raise PredictError(f"images smaller than spectral.crop_size {settings.crop_size} px a side: {', '.join(small)}")
    unknown = attribution["unknown"]
    answers = []
    for path, image in images.items():
        crops = spectral.spectral_features(image, settings)
        probabilities = _probabilities(storage, attribution, crops)
        top = np.argsort(-probabilities, kind="stable")[:3]
        answer = {"image": str(path), **{f"model_{n}": attribution["labels"][i] for n, i in enumerate(top, 1)},
                  **{f"probability_{n}": float(probabilities[i]) for n, i in enumerate(top, 1)}}
        for parser in parsers:
            parsed = _probabilities(storage, parser, crops)
            answer[parser["target"]] = parser["labels"][int(parsed.argmax())]
            answer[f"{parser['target']}_probability"] = float(parsed.max())
        answer["unknown_score"] = 1 - float(probabilities.max())
        answer["verdict"] = "unknown" if probabilities.max() < unknown["threshold"] else "known"
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
