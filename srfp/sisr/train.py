"""Train one SISR model, in plain PyTorch: the function a Ray Tune trial runs (see srfp.sisr.tuning).

Outputs in the storage root: ``checkpoints/<model_id>.pt`` every ``checkpoint_every`` iterations (a
restarted trial continues from it, on any device) and after it ``checkpoints/<model_id>.json``, the
progress ``status`` shows; then ``models/<model_id>.safetensors`` and, last, the completion record
``models/<model_id>.json`` (the spec, settings, validation PSNR, throughput). A model whose record exists
is finished and never trained again; its checkpoint and progress are removed. Both the record and the
progress keep the settings the model is trained with: :func:`prepare_training` stops a rerun whose grid
changes its weights otherwise.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from srfp.datasets import training_images, validation_images
from srfp.devices import autocast, choose_device, image_precision
from srfp.gridspec import AdversarialSettings, GridSpec
from srfp.images import psnr_y
from srfp.provenance import check_unchanged, normalised
from srfp.sisr.acceleration import CapturedStep, StepOptions, adam, learning_rates, load_optimizer, memory_format, step_options
from srfp.sisr.archs import create_model
from srfp.sisr.data import BatchPrefetcher, PairCache, PatchSampler, image_to_tensor, tensor_to_image
from srfp.sisr.losses import SRLoss
from srfp.spec import SISRSpec
from srfp.storage import Storage


def weights_path(model_id: str) -> str:
    return f"models/{model_id}.safetensors"


def record_path(model_id: str) -> str:
    return f"models/{model_id}.json"


def checkpoint_path(model_id: str) -> str:
    return f"checkpoints/{model_id}.pt"


def progress_path(model_id: str) -> str:
    return f"checkpoints/{model_id}.json"


def is_trained(storage: Storage, model_id: str) -> bool:
    return storage.is_file(record_path(model_id))


def training_progress(storage: Storage, model_id: str) -> dict | None:
    """What a model in training wrote with its last checkpoint (``iteration``, ``iterations``, ``val_psnr``,
    ``train_seconds``, ``time``), or None; reads a few bytes, never the checkpoint."""
    path = progress_path(model_id)
    return json.loads(storage.read_text(path)) if storage.is_file(path) else None


def made_with(spec: SISRSpec, grid: GridSpec) -> dict:
    """The settings a model is trained with, as its record and its checkpoint's progress keep them."""
    return {"arch_options": grid.archs.get(spec.arch, {}), "training": dataclasses.asdict(grid.training)}


def weight_settings(spec: SISRSpec, record: dict) -> dict:
    """The settings of a record holding :func:`made_with` that change the model's weights; how it runs (devices,
    trials, CUDA graphs, checkpoints) does not. Values missing from an older record are None."""
    record = normalised(record)
    training = record.get("training", {})
    adversarial = training.get("adversarial", {})
    settings = {"arch_options": record.get("arch_options"),
                **{name: training.get(name) for name in ("iterations", "batch_size", "learning_rate",
                                                         "lr_halve_every")},
                "patch_size": adversarial.get("patch_size") if spec.is_adversarial
                else training.get("patch_size", {}).get(str(spec.scale))}
    if spec.is_adversarial:
        settings.update(adversarial=adversarial, pretrained_perceptual=training.get("pretrained_perceptual"))
    return settings


def forget_model(storage: Storage, model_id: str) -> None:
    """Delete a model's record, weights, checkpoint and progress: it is trained afresh."""
    for path in (record_path(model_id), weights_path(model_id), checkpoint_path(model_id), progress_path(model_id)):
        storage.delete(path)


def prepare_training(storage: Storage, specs: list[SISRSpec], grid: GridSpec, force: bool = False) -> None:
    """Before any training: with ``force``, forget the models; remove the temporaries of killed writes; stop with
    :class:`~srfp.provenance.StaleWork` when a finished model or a checkpoint was trained with other settings
    that change its weights."""
    for folder in ("models", "checkpoints"):
        storage.remove_stale_temporaries(folder)
    for spec in specs:
        if force:
            forget_model(storage, spec.model_id)
        current = weight_settings(spec, made_with(spec, grid))
        for path, what in ((record_path(spec.model_id), "the trained model"),
                           (progress_path(spec.model_id), "the checkpoint")):
            if storage.is_file(path):
                stored = weight_settings(spec, json.loads(storage.read_text(path)))
                check_unchanged(f"{what} {storage.uri_of(path)}", stored, current, "train")


def build_model(spec: SISRSpec, grid: GridSpec) -> torch.nn.Module:
    """The spec's architecture with the grid's constructor arguments, initialised from the spec's seed."""
    torch.manual_seed(spec.seed)
    return create_model(spec.arch, spec.scale, **grid.archs.get(spec.arch, {}))


def load_trained(storage: Storage, model_id: str) -> torch.nn.Module:
    """A finished model, rebuilt with the options its record holds and loaded from its weights (strict)."""
    spec, record = SISRSpec.from_id(model_id), json.loads(storage.read_text(record_path(model_id)))
    model = create_model(spec.arch, spec.scale, **record["arch_options"])
    model.load_state_dict(load_safetensors(storage.read_bytes(weights_path(model_id))), strict=True)
    return model.eval()


@torch.no_grad()
def validate(model: torch.nn.Module, pairs: PairCache, device: torch.device) -> float:
    """Mean Y-PSNR (border = scale) of the model's 8-bit output on the validation images, made in float32
    (TF32 off) whatever the device, as super-resolved photos are by default."""
    model.eval()
    values = []
    for index in range(len(pairs)):
        hr, lr = pairs.pair(index)
        with image_precision(device):
            sr = model(image_to_tensor(lr).to(device))
        values.append(psnr_y(np.asarray(hr), tensor_to_image(sr.float()), border=pairs.scale))
    model.train()
    return float(np.mean(values))


@dataclasses.dataclass
class _State:
    """Everything a checkpoint holds; optimizers and schedulers are rebuilt, then loaded.

    ``optimizer`` and ``scheduler`` are the generator's in the current phase: the L1 phase's (every L1
    model, and the warm-up of an adversarial one), then, from :meth:`start_adversarial_phase` on, fresh
    ones; the discriminator's ``d_optimizer`` and ``d_scheduler`` exist in the adversarial phase only.
    ``options``: how the device runs the steps (see srfp.sisr.acceleration).
    """

    model: torch.nn.Module
    loss: SRLoss
    adversarial: AdversarialSettings
    options: StepOptions
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    d_optimizer: torch.optim.Optimizer | None = None
    d_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    iteration: int = 0
    seconds: float = 0.0

    @property
    def in_adversarial_phase(self) -> bool:
        return self.d_optimizer is not None

    def start_adversarial_phase(self) -> None:
        """ESRGAN's switch (BasicSR ``train_ESRGAN_x4.yml``): the generator keeps its L1-trained weights and gets
        a fresh Adam and schedule, counted from here; the discriminator gets its own. No state carries over."""
        settings, options = self.adversarial, self.options
        self.optimizer, self.scheduler = _adversarial_adam(self.model, settings.learning_rate, settings, options)
        self.d_optimizer, self.d_scheduler = _adversarial_adam(self.loss.discriminator, settings.discriminator_lr,
                                                               settings, options)

    def state_dict(self) -> dict:
        state = {"iteration": self.iteration, "seconds": self.seconds, "model": self.model.state_dict(),
                 "phase": "adversarial" if self.in_adversarial_phase else "l1",
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.loss.adversarial:
            state["discriminator"] = self.loss.discriminator.state_dict()
        if self.in_adversarial_phase:
            state.update(d_optimizer=self.d_optimizer.state_dict(), d_scheduler=self.d_scheduler.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        self.iteration, self.seconds = int(state["iteration"]), float(state["seconds"])
        self.model.load_state_dict(state["model"])
        if self.loss.adversarial:
            self.loss.discriminator.load_state_dict(state["discriminator"])
        if state["phase"] == "adversarial":
            self.start_adversarial_phase()
            load_optimizer(self.d_optimizer, state["d_optimizer"])
            self.d_scheduler.load_state_dict(state["d_scheduler"])
        load_optimizer(self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def _adversarial_adam(module: torch.nn.Module, learning_rate: float, settings: AdversarialSettings,
                      options: StepOptions):
    """A fresh Adam for the adversarial phase and its schedule: halved at each of ``settings.lr_milestones``."""
    optimizer = adam(module.parameters(), learning_rate, tuple(settings.betas), options)
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=settings.lr_milestones, gamma=0.5)


def _new_state(spec: SISRSpec, grid: GridSpec, device: torch.device, pretrained_perceptual: bool,
               options: StepOptions | None = None) -> _State:
    """The model, its loss and the L1 phase's optimizer (Adam, halved every ``lr_halve_every`` iterations),
    on the device, run as ``options`` say (by default :func:`step_options` of the device and grid)."""
    settings, adversarial = grid.training, grid.training.adversarial
    options = options or step_options(device, settings.cuda_graphs)
    model = build_model(spec, grid).to(device)
    torch.manual_seed(spec.seed)
    loss = SRLoss(spec.loss, l1_weight=adversarial.l1_weight, perceptual_weight=adversarial.perceptual_weight,
                  adversarial_weight=adversarial.adversarial_weight, patch_size=adversarial.patch_size,
                  pretrained=pretrained_perceptual).to(device)
    if options.channels_last:
        model, loss = model.to(memory_format=torch.channels_last), loss.to(memory_format=torch.channels_last)
    optimizer = adam(model.parameters(), settings.learning_rate, (0.9, 0.999), options)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.lr_halve_every, gamma=0.5)
    return _State(model, loss, adversarial, options, optimizer, scheduler)


def _optimise(state: _State, lr: torch.Tensor, hr: torch.Tensor, device) -> dict[str, torch.Tensor]:
    """The current phase's forward, backward and optimizer updates for one batch, with no CPU synchronisation
    (a CUDA graph can capture it); returns the loss terms as tensors (read them only when reporting)."""
    adversarial_phase = state.in_adversarial_phase
    cache = not state.options.cuda_graphs  # autocast's weight cache cannot live across graph replays
    with autocast(device, cache):
        sr = state.model(lr)
        terms = state.loss.adversarial_terms(sr, hr) if adversarial_phase else state.loss.l1_terms(sr, hr)
    state.optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    state.optimizer.step()
    if adversarial_phase:
        with autocast(device, cache):
            terms["discriminator"] = state.loss.discriminator_step_loss(sr, hr)
        state.d_optimizer.zero_grad(set_to_none=True)
        terms["discriminator"].backward()
        state.d_optimizer.step()
    return terms


def _step_schedulers(state: _State) -> None:
    state.scheduler.step()
    if state.in_adversarial_phase:
        state.d_scheduler.step()


def _step_function(state: _State, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], dict]:
    """The optimisation step as this device runs it: one CUDA graph replayed (see CapturedStep) where the
    options say so, else eager; either way :func:`_optimise`, then the schedulers."""
    def optimise(lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        return _optimise(state, lr, hr, device)

    run = (CapturedStep(optimise, lambda: (state.in_adversarial_phase,
                                           learning_rates((state.optimizer, state.d_optimizer))))
           if state.options.cuda_graphs else optimise)

    def step(lr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = run(lr, hr)
        _step_schedulers(state)
        return terms
    return step


def _synchronise(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock reads the work done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_model(spec: SISRSpec, grid: GridSpec, storage: Storage, report: Callable[[dict], None] = lambda m: None,
                device: torch.device | None = None, pretrained_perceptual: bool | None = None, node: str = "") -> dict:
    """Train one model to ``grid.training.iterations``, resuming from its checkpoint; returns its record
    (``node``: where it ran, e.g. a Ray node id, kept in the record)."""
    settings = grid.training
    device = device or choose_device()
    pretrained = settings.pretrained_perceptual if pretrained_perceptual is None else pretrained_perceptual
    state = _new_state(spec, grid, device, pretrained)
    if storage.is_file(checkpoint_path(spec.model_id)):  # its tensors go to the CPU, then to the model's device
        state.load_state_dict(torch.load(io.BytesIO(storage.read_bytes(checkpoint_path(spec.model_id))),
                                         map_location="cpu", weights_only=True))
    resumed_from = state.iteration
    patch = settings.adversarial.patch_size if spec.is_adversarial else settings.patch_size[spec.scale]
    sampler = PatchSampler(PairCache(training_images(grid.data, spec.dataset), spec.scale), patch,
                           settings.batch_size, spec.seed)
    validation = PairCache(validation_images(grid.data), spec.scale)
    metrics: dict = {}
    step, layout = _step_function(state, device), memory_format(state.options)
    window_start, window_iterations = time.perf_counter(), 0
    state.model.train()
    batches = BatchPrefetcher(sampler, state.iteration, settings.iterations, pin=device.type == "cuda")
    with batches:
        for iteration, lr, hr in batches:
            if spec.is_adversarial and iteration >= settings.adversarial.warmup_iterations \
                    and not state.in_adversarial_phase:
                state.start_adversarial_phase()
            losses = step(lr.to(device, non_blocking=True, memory_format=layout),
                          hr.to(device, non_blocking=True, memory_format=layout))
            state.iteration += 1
            window_iterations += 1
            if state.iteration % settings.checkpoint_every == 0 or state.iteration == settings.iterations:
                _synchronise(device)
                metrics = _checkpoint_window(spec, grid, storage, state, losses, validation, device,
                                             window_iterations, time.perf_counter() - window_start)
                report(metrics)
                window_start, window_iterations = time.perf_counter(), 0
    if not metrics:  # the checkpoint was already at the last iteration
        metrics = {"iteration": state.iteration, "val_psnr": validate(state.model, validation, device)}
    return _finish(spec, grid, storage, state, metrics, resumed_from, device, node)


def _checkpoint_window(spec, grid, storage, state: _State, losses, validation, device,
                       window_iterations: int, elapsed: float) -> dict:
    """At a checkpoint: count the window's training time, validate, write the checkpoint; returns the metrics."""
    state.seconds += elapsed
    metrics = {"iteration": state.iteration,
               **{f"loss_{name}": float(value.detach()) for name, value in losses.items()},
               "val_psnr": validate(state.model, validation, device),
               "images_per_second": window_iterations * grid.training.batch_size / elapsed,
               "learning_rate": state.scheduler.get_last_lr()[0]}
    _write_checkpoint(storage, spec, grid, state, metrics["val_psnr"])
    return metrics


def _write_checkpoint(storage: Storage, spec: SISRSpec, grid: GridSpec, state: _State, val_psnr: float) -> None:
    """The checkpoint, then the progress written beside it (with the settings it is trained with)."""
    buffer = io.BytesIO()
    torch.save(state.state_dict(), buffer)
    storage.write_bytes(checkpoint_path(spec.model_id), buffer.getvalue())
    progress = {"iteration": state.iteration, "iterations": grid.training.iterations, "val_psnr": val_psnr,
                "train_seconds": round(state.seconds, 3), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **made_with(spec, grid)}
    storage.write_text(progress_path(spec.model_id), json.dumps(progress))


def _finish(spec, grid, storage, state: _State, metrics: dict, resumed_from: int, device, node: str) -> dict:
    weights = {name: tensor.detach().cpu().contiguous() for name, tensor in state.model.state_dict().items()}
    storage.write_bytes(weights_path(spec.model_id), save_safetensors(weights, metadata={"model_id": spec.model_id}))
    record = {**spec.as_dict(), **made_with(spec, grid), "grid": grid.name,
              "iterations": state.iteration, "val_psnr": metrics.get("val_psnr"),
              "images_per_second": metrics.get("images_per_second"), "train_seconds": round(state.seconds, 3),
              "resumed_from_iteration": resumed_from, "device": device.type, "node": node}
    text = json.dumps(record, indent=2)
    storage.write_text(record_path(spec.model_id), text)
    storage.delete(checkpoint_path(spec.model_id))
    storage.delete(progress_path(spec.model_id))
    return json.loads(text)
