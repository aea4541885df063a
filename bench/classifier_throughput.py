"""Classifier training throughput through Ray Train + Ray Data against a plain PyTorch loop, same run.

Both train the same backbone (``--backbone``, random initialisation) with the same batch size, crop and
optimiser on the training images of a storage root's shards (a finished ``superresolve``, e.g. the
Quickstart's ``srfp-runs/smoke``). The Ray path streams the Parquet shards, decodes and crops on Ray Data
and trains in a ``TorchTrainer`` worker; the baseline loops over crops already decoded into memory, with
as many torch threads as the worker has CPUs. Prints images per second of both (epochs after the first),
their ratio (target: >= 0.85), and the decode-and-crop rate of the data path on one core. Images per
second count from each epoch's first batch on (steady state); the wait for the first batch (Ray Data
starting its pipeline, once per epoch) and whole-epoch rates are printed beside them.

    python bench/classifier_throughput.py --root srfp-runs/smoke
    python bench/classifier_throughput.py --root srfp-runs/smoke --backbone xception --crop 96 --epochs 4
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from srfp.classify.data import CropRows, shard_files
from srfp.classify.loop import read_progress, train_epoch
from srfp.classify.network import Classifier
from srfp.classify.trainer import fit
from srfp.cluster import connect
from srfp.gridspec import load_grid
from srfp.storage import Storage
from srfp.superres.shards import complete_models


def training_rows(storage: Storage, model_ids: list[str]) -> dict[str, np.ndarray]:
    table = pq.read_table(shard_files(storage, model_ids), filesystem=storage.fs, partitioning=None)
    table = table.filter(pc.equal(table["split"], "train"))
    return {name: table[name].to_numpy(zero_copy_only=False) for name in ("png", "model_id", "image_id")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="a storage root with complete shards")
    parser.add_argument("--grid", default="smoke")
    parser.add_argument("--backbone", default=None, help="default: the grid's classifier.backbone")
    parser.add_argument("--crop", type=int, default=None, help="default: the grid's classifier.crop_size")
    parser.add_argument("--batch", type=int, default=None, help="default: the grid's classifier.batch_size")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()

    grid = load_grid(args.grid)
    settings = dataclasses.replace(
        grid.classifier, backbone=args.backbone or grid.classifier.backbone, crop_size=args.crop or grid.classifier.crop_size,
        batch_size=args.batch or grid.classifier.batch_size, head_epochs=0, finetune_epochs=args.epochs, pretrained=False)
    storage = Storage(args.root)
    model_ids = [m.model_id for m in complete_models(storage) if m.source == "custom"]
    labels = sorted(model_ids)
    rows = training_rows(storage, model_ids)
    threads = max(1, int(settings.worker.cpus))
    torch.set_num_threads(1)

    start = time.perf_counter()
    crops = CropRows("model_id", labels, settings.crop_size, epoch=0)(rows)
    decode_rate = len(crops["image"]) / (time.perf_counter() - start)

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    classifier = Classifier(settings.backbone, len(labels), pretrained=False)
    optimizer = torch.optim.Adamax(classifier.set_phase("all"), lr=settings.learning_rate)
    images, targets = torch.from_numpy(crops["image"]), torch.from_numpy(crops["label"])
    plain = []
    for _ in range(args.epochs):
        order = torch.randperm(len(images))
        batches = ({"image": images[order[i:i + settings.batch_size]], "label": targets[order[i:i + settings.batch_size]]}
                   for i in range(0, len(images), settings.batch_size))
        plain.append(train_epoch(classifier, "all", batches, optimizer, torch.device("cpu")))

    connect(num_cpus=None)
    folder = f"bench/classifier-{time.time_ns()}"
    try:
        fit(storage, folder, "model_id", labels, model_ids, settings)
        ray_epochs = read_progress(storage, folder)["history"]
    finally:
        storage.delete(folder)

    def summary(epochs: list[dict]) -> tuple[float, float, float]:
        later = epochs[1:]
        return (statistics.median(e["images_per_second"] for e in later),
                statistics.median(e["train_images"] / e["epoch_seconds"] for e in later),
                statistics.median(e["first_batch_seconds"] for e in later))

    print(f"backbone {settings.backbone}, crop {settings.crop_size}, batch {settings.batch_size}, "
          f"{len(images)} training images of {len(model_ids)} models, {threads} torch thread(s), {args.epochs} epochs")
    (plain_rate, plain_epoch, plain_wait), (ray_rate, ray_epoch, ray_wait) = summary(plain), summary(ray_epochs)
    print(f"plain PyTorch loop on in-memory tensors: {plain_rate:.1f} images/s "
          f"(whole epochs {plain_epoch:.1f}; first batch after {plain_wait:.2f} s)")
    print(f"Ray Train + Ray Data (Parquet, decode, crop): {ray_rate:.1f} images/s "
          f"(whole epochs {ray_epoch:.1f}; first batch after {ray_wait:.2f} s)")
    print(f"ratio Ray / plain: {ray_rate / plain_rate:.2f} steady state (target >= 0.85), "
          f"{ray_epoch / plain_epoch:.2f} whole epochs")
    print(f"data path: decode + crop {decode_rate:.1f} images/s on one core")


if __name__ == "__main__":
    main()
