"""The spectral classifier: a fingerprint in the spectrum of an image's high-pass residual, fitted in seconds.

Upsampling leaves periodic traces that show as peaks in the spectrum of what a median filter removes
(Frank et al. 2020, Durall et al. 2020). For each image: the greyscale (BT.601) minus its 3x3 median
filter, ``crops_per_side`` x ``crops_per_side`` crops of ``crop_size`` pixels on an evenly spaced grid,
the log-magnitude of each crop's 2-D FFT (centred), average-pooled to ``pool`` x ``pool``: one feature
vector per crop. A standardised multinomial logistic regression learns the task's labels from the crops of
its training images; an image's probabilities are the mean of its crops'. The fitted model is stored as
plain arrays (``model.safetensors``: the scaler's mean and scale, the coefficients, the intercepts and the
class indices), never pickled, and :func:`crop_probabilities` applies it.

Features depend only on the image and these settings, so they are computed once per model, in parallel
with Ray Data (one model per task), and cached under ``classifiers/spectral/features-<settings>/``. Each
task then writes the same ``predictions.parquet`` and ``result.json`` as a Ray Train classifier (see
:mod:`srfp.classify.results`), under ``classifiers/spectral/<task>/``, so the report compares them.
"""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from srfp.analysis.measures import greyscale
from srfp.classify.results import METADATA, prediction_table, role_of_split
from srfp.gridspec import SpectralSettings
from srfp.images import decode_image
from srfp.storage import Storage
from srfp.superres.shards import ModelInfo, read_shard

BACKBONE = "spectral"


def high_pass(grey: np.ndarray) -> np.ndarray:
    """The image minus its 3x3 median filter (edges reflected)."""
    from scipy.ndimage import median_filter

    return grey - median_filter(grey, size=3, mode="reflect")


def crop_corners(height: int, width: int, size: int, per_side: int) -> list[tuple[int, int]]:
    """Top-left corners of ``size`` px crops on an evenly spaced ``per_side`` x ``per_side`` grid over the image."""
    if min(height, width) < size:
        raise ValueError(f"a {width}x{height} image is smaller than the {size} px crop")
    rows = np.linspace(0, height - size, per_side).round().astype(int)
    columns = np.linspace(0, width - size, per_side).round().astype(int)
    return [(int(y), int(x)) for y in rows for x in columns]


def spectral_features(image: np.ndarray, settings: SpectralSettings) -> np.ndarray:
    """One row per crop: the pooled, centred log-magnitude spectrum of the crop's high-pass residual."""
    residual = high_pass(greyscale(image))
    size, pool = settings.crop_size, settings.pool
    rows = []
    for y, x in crop_corners(*residual.shape, size, settings.crops_per_side):
        spectrum = np.fft.fftshift(np.log(np.abs(np.fft.fft2(residual[y:y + size, x:x + size])) + 1e-6))
        rows.append(spectrum.reshape(pool, size // pool, pool, size // pool).mean(axis=(1, 3)).ravel())
    return np.asarray(rows, dtype=np.float32)


def features_folder(settings: SpectralSettings) -> str:
    """Where the features are cached: one folder per feature setting, so a change never reuses old ones."""
    return f"classifiers/{BACKBONE}/features-c{settings.crop_size}-n{settings.crops_per_side}-p{settings.pool}"


def features_file(settings: SpectralSettings, model_id: str) -> str:
    return f"{features_folder(settings)}/{model_id}.parquet"


def model_features(storage: Storage, model: ModelInfo, settings: SpectralSettings) -> pa.Table:
    """Every image's crop features of one model: one row per image (``features``: crops x pool² values)."""
    shard = read_shard(storage, model.model_id, columns=["image_id", "split", "png"]).to_pylist()
    features = [spectral_features(decode_image(row["png"], f"{model.model_id}/{row['image_id']}"), settings)
                for row in shard]
    width = settings.crops_per_side ** 2 * settings.pool ** 2
    return pa.table({"model_id": [model.model_id] * len(shard), "image_id": [row["image_id"] for row in shard],
                     "split": [row["split"] for row in shard],
                     "features": pa.FixedSizeListArray.from_arrays(
                         pa.array(np.concatenate([f.ravel() for f in features]) if features else [], pa.float32()),
                         width)})


def _cache_model(batch: dict, root: str, settings: SpectralSettings) -> dict:
    """A Ray Data task: compute and store the features of the batch's models."""
    storage = Storage(root)
    models = [ModelInfo(**json.loads(model)) for model in batch["model"]]
    for model in models:
        sink = io.BytesIO()
        pq.write_table(model_features(storage, model, settings), sink)
        storage.write_bytes(features_file(settings, model.model_id), sink.getvalue())
    return {"model_id": np.array([model.model_id for model in models])}


def cache_features(storage: Storage, models: list[ModelInfo], settings: SpectralSettings, log=print) -> None:
    """Compute the features of every model not cached yet, one model per Ray Data task."""
    import ray

    missing = [model for model in models if not storage.is_file(features_file(settings, model.model_id))]
    if not missing:
        return
    log(f"spectral: features of {len(missing)} models")
    done = (ray.data.from_items([{"model": json.dumps(dataclasses.asdict(model))} for model in missing],
                                override_num_blocks=len(missing))
            .map_batches(_cache_model, fn_kwargs={"root": storage.uri, "settings": settings}, batch_size=1,
                         num_cpus=settings.cpus)
            .take_all())
    assert len(done) == len(missing)


def read_features(storage: Storage, models: list[ModelInfo], settings: SpectralSettings) -> pd.DataFrame:
    """The cached features of these models with each model's hyperparameters, one row per image."""
    frames = []
    for model in models:
        table = pq.read_table(io.BytesIO(storage.read_bytes(features_file(settings, model.model_id)))).to_pandas()
        frames.append(table.assign(**{name: getattr(model, name) for name in METADATA if name not in table}))
    return pd.concat(frames, ignore_index=True)


def _crops(rows: pd.DataFrame, settings: SpectralSettings) -> np.ndarray:
    per_image = settings.crops_per_side ** 2
    return np.stack(rows["features"].to_numpy()).reshape(len(rows) * per_image, -1)


MODEL = "model.safetensors"


@dataclasses.dataclass
class Fit:
    """A task's fitted spectral classifier: its predictions, validation accuracy and arrays."""

    predictions: pa.Table
    val_accuracy: float
    arrays: dict[str, np.ndarray]


def model_arrays(model) -> dict[str, np.ndarray]:
    """A fitted scaler + logistic regression pipeline as plain arrays."""
    scaler, regression = model[0], model[-1]
    return {"mean": scaler.mean_, "scale": scaler.scale_, "coef": regression.coef_,
            "intercept": regression.intercept_, "classes": regression.classes_.astype(np.int64)}


def crop_probabilities(arrays: dict[str, np.ndarray], crops: np.ndarray, classes: int) -> np.ndarray:
    """Each crop's probability of each of the task's ``classes`` labels (0 for labels the model never saw)."""
    logits = ((crops - arrays["mean"]) / arrays["scale"]) @ arrays["coef"].T + arrays["intercept"]
    if arrays["coef"].shape[0] == 1:  # two classes: one logistic unit
        logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
    seen = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = np.zeros((len(crops), classes))
    probabilities[:, arrays["classes"]] = seen / seen.sum(axis=1, keepdims=True)
    return probabilities


def write_model(storage: Storage, folder: str, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save

    storage.write_bytes(f"{folder}/{MODEL}", save({name: np.ascontiguousarray(a) for name, a in arrays.items()}))


def read_model(storage: Storage, folder: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    return load(storage.read_bytes(f"{folder}/{MODEL}"))


def fit_and_predict(rows: pd.DataFrame, target: str, labels: list[str], train_ids: list[str],
                    model_ids_by_role: dict[str, list[str]],
                    settings: SpectralSettings) -> Fit:
    """Fit on the training images of ``train_ids``, check on their validation images and predict the images
    of each role's models, of the role's split (rows of :func:`srfp.classify.results.prediction_table`)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    per_image = settings.crops_per_side ** 2
    index = {label: position for position, label in enumerate(labels)}
    train = rows[rows.model_id.isin(train_ids) & (rows.split == "train")]
    targets = np.repeat(train[target].astype(str).map(index).to_numpy(), per_image)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=settings.regularization, max_iter=settings.max_iter))
    arrays = model_arrays(model.fit(_crops(train, settings), targets))

    def image_probabilities(images: pd.DataFrame) -> np.ndarray:
        crops = crop_probabilities(arrays, _crops(images, settings), len(labels))
        return crops.reshape(len(images), per_image, -1).mean(axis=1)

    validation = rows[rows.model_id.isin(train_ids) & (rows.split == "val")]
    val_probabilities = image_probabilities(validation)
    val_accuracy = float((val_probabilities.argmax(1)
                          == validation[target].astype(str).map(index).to_numpy()).mean()) if len(validation) else 0.0
    role_of = role_of_split(model_ids_by_role)
    roles = pd.Series([role_of.get(key) for key in zip(rows.split, rows.model_id)], index=rows.index)
    predicted = rows[roles.notna()].assign(role=roles).sort_values(["model_id", "image_id"])
    pooled = np.stack(predicted["features"].to_numpy()).reshape(len(predicted), per_image, -1).mean(axis=1)
    predictions = prediction_table({name: predicted[name].tolist() for name in METADATA}, predicted.role.tolist(),
                                   predicted[target].astype(str).tolist(), labels, image_probabilities(predicted),
                                   pooled)
    return Fit(predictions, val_accuracy, arrays)
