"""Training one classifier: plain epoch functions and the loop each Ray Train worker runs.

State lives in the storage root, like the SISR models': ``classifiers/<task>/checkpoint.pt`` after every
epoch (a restarted worker group or a new driver continues from it), then ``progress.json`` (the finished
epochs and their metrics, for the driver and ``status``), and ``model.safetensors``, the weights of the best
epoch by validation accuracy. The first ``head_epochs`` train the new final layer
only, the next ``finetune_epochs`` every layer (Adamax, ReduceLROnPlateau on validation accuracy).
"""

from __future__ import annotations

import io
import json
import time
from collections import deque
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F

from srfp.classify.network import Classifier, init_backbone_from, load_weights, weights_bytes
from srfp.devices import autocast
from srfp.storage import Storage


def checkpoint_path(folder: str) -> str:
    return f"{folder}/checkpoint.pt"


def progress_path(folder: str) -> str:
    return f"{folder}/progress.json"


def weights_path(folder: str) -> str:
    return f"{folder}/model.safetensors"


def read_checkpoint(storage: Storage, folder: str) -> dict | None:
    """The state after the last finished epoch, on the CPU whatever device wrote it (a GPU worker's
    checkpoint is read by a restarted worker anywhere)."""
    if not storage.is_file(checkpoint_path(folder)):
        return None
    return torch.load(io.BytesIO(storage.read_bytes(checkpoint_path(folder))), weights_only=True, map_location="cpu")


def read_progress(storage: Storage, folder: str) -> dict | None:
    """The small record of finished epochs (``epoch``, ``best_epoch``, ``best_accuracy``, ``history``) that the
    driver and ``status`` read instead of the checkpoint's tensors."""
    return json.loads(storage.read_text(progress_path(folder))) if storage.is_file(progress_path(folder)) else None


def write_checkpoint(storage: Storage, folder: str, state: dict) -> None:
    """The checkpoint, then its progress record (written last: it never names an epoch the checkpoint lacks)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    storage.write_bytes(checkpoint_path(folder), buffer.getvalue())
    progress = {key: state[key] for key in ("epoch", "phase", "best_epoch", "best_accuracy", "history")}
    storage.write_text(progress_path(folder), json.dumps(progress, indent=1))


def phase_of(epoch: int, head_epochs: int) -> str:
    return "head" if epoch < head_epochs else "all"


def train_epoch(classifier: Classifier, phase: str, batches: Iterable[dict], optimizer, device) -> dict:
    """One pass over the training batches. Returns the mean loss, the images seen, the largest batch, the wait
    for the first batch (the data pipeline starting) and images per second from the first batch on (steady
    state). The loss is read once, at the end (reading it every step would wait for the GPU each step)."""
    classifier.train_mode(phase)
    total_loss, seen, largest, requested = torch.zeros((), device=device), 0, 0, time.perf_counter()
    started = None
    for batch in batches:
        started = started or time.perf_counter()
        images, labels = batch["image"].to(device), batch["label"].to(device)
        with autocast(device):
            loss = F.cross_entropy(classifier(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.detach() * len(labels)
        seen, largest = seen + len(labels), max(largest, len(labels))
    ended = time.perf_counter()
    started = started or ended
    return {"train_loss": float(total_loss) / max(seen, 1), "train_images": seen, "batch_size": largest,
            "first_batch_seconds": started - requested, "epoch_seconds": ended - requested,
            "images_per_second": seen / (ended - started) if ended > started else 0.0}


@torch.no_grad()
def count_correct(classifier: Classifier, batches: Iterable[dict], device) -> tuple[int, int]:
    """Correct top-1 predictions and images, on centre crops (NumPy batches), in evaluation mode."""
    classifier.eval()
    correct = total = 0
    for batch in batches:
        images, labels = torch.tensor(batch["image"], device=device), torch.tensor(batch["label"], device=device)
        with autocast(device):
            correct += int((classifier(images).argmax(1) == labels).sum())
        total += len(labels)
    return correct, total


@torch.no_grad()
def recalibrate_batch_norm(classifier: Classifier, batches: Iterable[dict], device) -> None:
    """Recompute the batch-norm running statistics as plain averages over these (training) batches.

    After few optimiser steps the running averages lag far behind the weights, and evaluation, which uses
    them, sees a different network than training did (``classifier.recalibrate_batch_norm``: the number
    of the epoch's last training batches to use)."""
    norms = [m for m in classifier.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average
    classifier.train()
    for batch in batches:
        with autocast(device):
            classifier(batch["image"].to(device))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def _remembering(batches: Iterable[dict], kept: deque) -> Iterator[dict]:
    """Pass the batches through, keeping the last ``kept.maxlen`` of them."""
    for batch in batches:
        if kept.maxlen:
            kept.append(batch)
        yield batch


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train loop of one classifier (one worker: the study's batch on one device): resume from the
    storage root's checkpoint, train the remaining epochs, report each, then predict the test images with the
    best epoch's weights (see :mod:`srfp.classify.predict`), in this process, where the network already is.

    Every random choice comes from ``classifier.seed``: the new final layer's initialisation, and for each
    epoch the block order, the local shuffle and the crops (see :func:`srfp.classify.data.training_crops`)."""
    import ray.data
    import ray.train
    import ray.train.torch

    from srfp.classify.data import epoch_seed, evaluation_crops, read_split, training_crops
    from srfp.classify.predict import predict
    from srfp.classify.results import write_predictions

    settings, folder, labels, target = config["settings"], config["folder"], config["labels"], config["target"]
    storage = Storage(config["root"])
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(settings.worker.cpus)))
    ray.data.DataContext.get_current().execution_options.preserve_order = settings.preserve_order
    state = read_checkpoint(storage, folder)
    init_from = config.get("init_from")
    torch.manual_seed(settings.seed)
    classifier = Classifier(settings.backbone, len(labels), settings.pretrained and not init_from and not state,
                            settings.weights)
    if state:
        classifier.load_state_dict(state["model"])
    elif init_from:
        init_backbone_from(classifier, storage.read_bytes(weights_path(init_from)), storage.uri_of(init_from))
    classifier.to(device)
    state = state or {"epoch": 0, "phase": None, "best_accuracy": -1.0, "best_epoch": 0, "history": []}
    total_epochs = settings.head_epochs + settings.finetune_epochs
    train_rows = read_split(storage, config["train_ids"], "train")
    # the same centre crops every epoch, then for the predictions of the validation images
    validation = evaluation_crops(read_split(storage, config["train_ids"], "val"), target, labels, settings)
    validation = validation.materialize()
    phase = optimizer = scheduler = None
    for epoch in range(state["epoch"], total_epochs):
        if phase_of(epoch, settings.head_epochs) != phase:
            phase = phase_of(epoch, settings.head_epochs)
            optimizer = torch.optim.Adamax(classifier.set_phase(phase), lr=settings.learning_rate)
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max",
                                                                   patience=settings.plateau_patience)
            if state["phase"] == phase:  # resuming inside this phase: its optimizer state continues
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
        crops = training_crops(train_rows, target, labels, settings, epoch).select_columns(["image", "label"])
        last_batches = deque(maxlen=settings.recalibrate_batch_norm)
        batches = crops.iter_torch_batches(batch_size=settings.batch_size, local_shuffle_seed=epoch_seed(settings, epoch),
                                           local_shuffle_buffer_size=settings.shuffle_buffer)
        metrics = train_epoch(classifier, phase, _remembering(batches, last_batches), optimizer, device)
        if last_batches and phase == "all":
            recalibrate_batch_norm(classifier, last_batches, device)
        correct, total = count_correct(classifier, validation.iter_batches(batch_size=settings.batch_size,
                                                                          batch_format="numpy"), device)
        accuracy = correct / max(total, 1)
        scheduler.step(accuracy)
        improved = accuracy >= state["best_accuracy"]  # a tie goes to the later, longer-trained epoch
        metrics.update(epoch=epoch + 1, phase=phase, val_accuracy=accuracy, val_images=total,
                       learning_rate=optimizer.param_groups[0]["lr"])
        state.update(epoch=epoch + 1, phase=phase, model=classifier.state_dict(), optimizer=optimizer.state_dict(),
                     scheduler=scheduler.state_dict(), history=state["history"] + [metrics])
        if improved:
            state.update(best_accuracy=accuracy, best_epoch=epoch + 1)
            storage.write_bytes(weights_path(folder), weights_bytes(classifier))
        write_checkpoint(storage, folder, state)
        print(f"{folder}: epoch {epoch + 1}/{total_epochs} ({phase}) loss {metrics['train_loss']:.4f} "
              f"val accuracy {accuracy:.3f} ({metrics['images_per_second']:.1f} images/s)")
        ray.train.report(metrics)
    load_weights(classifier, storage.read_bytes(weights_path(folder)))
    write_predictions(storage, folder, predict(classifier, storage, settings, target, labels,
                                               config["test_ids_by_role"], validation, device))
