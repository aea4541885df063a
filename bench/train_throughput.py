"""SISR training throughput of srfp's real training loop, per architecture, scale, loss and phase.

Each measurement is :func:`srfp.sisr.train.train_model` itself (the patch sampler and its prefetch thread,
the step as the device runs it: a CUDA graph on a GPU, PyTorch's default on the CPU) for twice
``--iterations`` iterations with a checkpoint after each half: the first half warms up (CUDA graph capture,
allocator), the second is timed by the loop's own clock, which leaves out validation and checkpoints. The
training images are cached as LR/HR pairs before timing, as a long run has them. FLOPs of one step are
counted with ``torch.utils.flop_counter.FlopCounterMode`` on an eager copy of the step; on a GPU their rate
is shown as a share of the device's peak (``--peak-tflops``, known for a few GPUs).

Prints s per iteration, images/s and the FLOP utilisation of each row, and writes them with ``--json FILE``
in the format ``python -m srfp.grid plan --calibration FILE`` reads. ``--concurrent N`` runs N trials side by
side on one GPU (``training.trials_per_gpu``; start CUDA MPS first, as cluster.yaml does), each holding 1/N of
it; by default a GPU runs each architecture's trials as the grid shares them. On the CPU, each L1 row is
also measured as a plain PyTorch loop on the same batches, and the ratio of the two printed (target: >= 0.9).

    python bench/train_throughput.py                                       # CPU: smoke sizes, every row
    python bench/train_throughput.py --grid paper --json calibration.json  # a GPU node with the training data
    python bench/train_throughput.py --grid paper --images DIR --archs RCAN --concurrent 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from srfp.datasets import training_images
from srfp.devices import choose_device
from srfp.gridspec import DataSettings, GridSpec, TrainingSource, load_grid
from srfp.sisr.acceleration import step_options
from srfp.sisr.data import PairCache, PatchSampler
from srfp.sisr.train import _new_state, _optimise, build_model, train_model
from srfp.spec import SISRSpec
from srfp.storage import Storage

#: Dense bfloat16 tensor-core peaks, TFLOP/s, by device name.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}


def phase_grid(grid: GridSpec, spec: SISRSpec, phase: str, iterations: int) -> GridSpec:
    """The grid trained for 2 x ``iterations`` with a checkpoint after each half, wholly in ``phase``."""
    training = grid.training
    warmup = 2 * iterations if phase == "l1" else 0
    training = dataclasses.replace(training, iterations=2 * iterations, checkpoint_every=iterations,
                                   adversarial=dataclasses.replace(training.adversarial, warmup_iterations=warmup))
    return dataclasses.replace(grid, training=training, data=dataclasses.replace(grid.data, validation_images=1))


def patch_size(grid: GridSpec, spec: SISRSpec) -> int:
    return grid.training.adversarial.patch_size if spec.is_adversarial else grid.training.patch_size[spec.scale]


def sampler_of(grid: GridSpec, spec: SISRSpec) -> PatchSampler:
    pairs = PairCache(training_images(grid.data, spec.dataset), spec.scale)
    return PatchSampler(pairs, patch_size(grid, spec), grid.training.batch_size, spec.seed)


def fill_pair_cache(grid: GridSpec, spec: SISRSpec) -> None:
    pairs = sampler_of(grid, spec).pairs
    for index in range(len(pairs)):
        pairs.pair(index)


def timed_seconds_per_iteration(grid: GridSpec, spec: SISRSpec, device: str) -> float:
    """train_model for two windows; the second window's seconds per iteration."""
    torch.set_num_threads(max(1, int(grid.training.trial_of(spec.arch).cpus)))
    windows = []
    with tempfile.TemporaryDirectory() as folder:
        train_model(spec, grid, Storage(folder), report=windows.append, device=torch.device(device))
    return grid.training.batch_size / windows[-1]["images_per_second"]


def concurrent_seconds_per_iteration(grid: GridSpec, spec: SISRSpec, device: str, trials: int) -> float:
    """The mean seconds per iteration of ``trials`` trainings running at once on the device."""
    if trials == 1:
        return timed_seconds_per_iteration(grid, spec, device)
    with multiprocessing.get_context("spawn").Pool(trials) as pool:
        return sum(pool.starmap(timed_seconds_per_iteration, [(grid, spec, device)] * trials)) / trials


def step_flops(grid: GridSpec, spec: SISRSpec, phase: str, device: torch.device) -> int:
    """FLOPs of one optimisation step (forward, backward) of the phase, counted on an eager copy."""
    state = _new_state(spec, grid, device, pretrained_perceptual=False, options=step_options(device, cuda_graphs=False))
    if phase == "adversarial":
        state.start_adversarial_phase()
    lr, hr = (t.to(device) for t in sampler_of(grid, spec).batch(0))
    with FlopCounterMode(display=False) as counter:
        _optimise(state, lr, hr, device)
    return counter.get_total_flops()


def plain_loop_seconds_per_iteration(grid: GridSpec, spec: SISRSpec, iterations: int, device: torch.device) -> float:
    """A bare PyTorch L1 loop on the same batches (made in the loop, no prefetch), timed after a warm-up."""
    torch.set_num_threads(max(1, int(grid.training.trial_of(spec.arch).cpus)))
    model = build_model(spec, grid).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=grid.training.learning_rate)
    sampler = sampler_of(grid, spec)
    start = 0.0
    for iteration in range(2 * iterations):
        if iteration == iterations:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        lr, hr = (t.to(device) for t in sampler.batch(iteration))
        loss = F.l1_loss(model(lr), hr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iterations


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def known_peak(name: str) -> float | None:
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def with_images(grid: GridSpec, folder: str | None) -> GridSpec:
    """The grid reading every training set from one folder of images (``--images``), or as it is."""
    if not folder:
        return grid
    source = TrainingSource(uri=folder, layout="folder")
    return dataclasses.replace(grid, data=DataSettings(div2k=source, flickr2k=source, validation_images=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default="smoke")
    parser.add_argument("--images", help="a folder of training images to use instead of the grid's data")
    parser.add_argument("--archs", help="comma-separated; default: the grid's")
    parser.add_argument("--scales", help="comma-separated; default: the grid's")
    parser.add_argument("--losses", help="comma-separated; default: the grid's")
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations per row (as many warm up)")
    parser.add_argument("--concurrent", type=int, help="trials sharing the GPU, each holding 1/N of it; default: "
                                                        "training.trials_per_gpu on a GPU, 1 on the CPU")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak; default: known GPUs' bf16 peak")
    parser.add_argument("--json", help="write the rows here, for `plan --calibration`")
    args = parser.parse_args()
    grid = with_images(load_grid(args.grid), args.images)
    models = grid.models
    archs = args.archs.split(",") if args.archs else models.archs
    scales = [int(s) for s in args.scales.split(",")] if args.scales else models.scales
    losses = args.losses.split(",") if args.losses else models.losses
    device = choose_device()
    if (args.concurrent or 1) > 1 and device.type != "cuda":
        parser.error("--concurrent shares a GPU: it needs CUDA")
    peak = args.peak_tflops or (known_peak(device_name(device)) if device.type == "cuda" else None)
    print(f"device {device_name(device)}, peak {peak or 'unknown'} TFLOP/s, grid {grid.name}, batch "
          f"{grid.training.batch_size}, {args.iterations} timed iterations per row")
    print(f"{'arch':<5} {'scale':>5} {'loss':<10} {'phase':<11} {'patch':>5} {'trials':>6} {'s/iteration':>12} {'images/s':>9} "
          f"{'utilisation':>11}  plain loop")
    rows = []
    for arch in archs:
        for scale in scales:
            for loss in losses:
                spec = SISRSpec(arch, models.datasets[0], scale, loss, 1)
                fill_pair_cache(grid, spec)
                for phase in (["l1", "adversarial"] if spec.is_adversarial else ["l1"]):
                    trials = args.concurrent or (grid.training.trials_per_gpu.get(arch, 1) if device.type == "cuda" else 1)
                    rows.append(measure(grid, spec, phase, args.iterations, trials, device, peak))
    if args.json:
        calibration = {"device": device_name(device), "torch": torch.__version__, "commit": commit(),
                       "peak_tflops": peak, "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "note": f"bench/train_throughput.py --grid {args.grid}, {args.iterations} timed iterations "
                               f"per row; gpu_share: 1 / the trials sharing the device", "rows": rows}
        Path(args.json).write_text(json.dumps(calibration, indent=1))
        print(f"wrote {args.json}")


def measure(grid: GridSpec, spec: SISRSpec, phase: str, iterations: int, trials: int, device: torch.device,
            peak: float | None) -> dict:
    """One row: the real loop's seconds per iteration with ``trials`` sharing the device, and on the CPU the
    plain loop's beside it."""
    measured = phase_grid(grid, spec, phase, iterations)
    seconds = concurrent_seconds_per_iteration(measured, spec, str(device), trials)
    batch = grid.training.batch_size
    flops = step_flops(measured, spec, phase, device)
    utilisation = trials * flops / seconds / (peak * 1e12) if peak else None
    row = {"arch": spec.arch, "scale": spec.scale, "loss": spec.loss, "phase": phase, "batch_size": batch,
           "patch_size": patch_size(grid, spec), "gpu_share": 1 / trials, "seconds_per_iteration": seconds,
           "images_per_second": batch / seconds, "flop_utilisation": utilisation}
    plain = ""
    if device.type == "cpu" and phase == "l1" and not spec.is_adversarial:
        baseline = plain_loop_seconds_per_iteration(measured, spec, iterations, device)
        plain = f"{batch / baseline:9.1f} images/s, ratio srfp/plain {baseline / seconds:.3f} (target >= 0.9)"
    shown = f"{utilisation:11.1%}" if utilisation is not None else f"{flops / seconds / 1e9:6.1f} GF/s"
    print(f"{spec.arch:<5} {spec.scale:>5} {spec.loss:<10} {phase:<11} {row['patch_size']:>5} {trials:>6} {seconds:12.4f} "
          f"{batch / seconds:9.1f} {shown:>11}  {plain}", flush=True)
    return row


if __name__ == "__main__":
    main()
