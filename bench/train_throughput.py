"""Training throughput of one Ray Tune trial against a plain PyTorch loop, measured in the same run.

Both train the same model with the same batches (srfp's patch sampler) and the same optimiser; the
trial's figure is its pure training time (srfp records it, excluding validation and checkpoints), the
baseline's a bare ``for`` loop in the driver. Ray is started first, so both run beside the same Ray
processes, and the two alternate ``--repeats`` times. Prints images per second (median) of both and
their ratio (target: >= 0.9).

    python bench/train_throughput.py --grid smoke --model-id EDSR-div2k-x2-L1-s1 --iterations 300
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from srfp.cluster import connect
from srfp.datasets import training_images
from srfp.devices import choose_device
from srfp.gridspec import load_grid
from srfp.sisr.data import PairCache, PatchSampler
from srfp.sisr.train import build_model, record_path
from srfp.sisr.tuning import train_grid
from srfp.spec import SISRSpec
from srfp.storage import Storage


def plain_loop(spec: SISRSpec, grid, iterations: int, device: torch.device) -> float:
    """Images per second of a bare PyTorch L1 training loop on the same batches."""
    settings = grid.training
    model = build_model(spec, grid).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    sampler = PatchSampler(PairCache(training_images(grid.data, spec.dataset), spec.scale),
                           settings.patch_size[spec.scale], settings.batch_size, spec.seed)
    sampler.batch(0)  # fill the pair cache, as the trial's first batches do
    start = time.perf_counter()
    for iteration in range(iterations):
        lr, hr = (t.to(device) for t in sampler.batch(iteration))
        loss = F.l1_loss(model(lr), hr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return iterations * settings.batch_size / (time.perf_counter() - start)


def tune_trial(spec: SISRSpec, grid) -> float:
    """Images per second of the same training run as a Ray Tune trial, from its recorded training time."""
    with tempfile.TemporaryDirectory() as folder:
        storage = Storage(folder)
        train_grid(grid, [spec], storage, log=lambda *_: None)
        record = json.loads(storage.read_text(record_path(spec.model_id)))
    return record["iterations"] * grid.training.batch_size / record["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default="smoke")
    parser.add_argument("--model-id", default="EDSR-div2k-x2-L1-s1")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    grid = load_grid(args.grid)
    spec = SISRSpec.from_id(args.model_id)
    if spec.is_adversarial:
        parser.error("the baseline is an L1 loop: give an L1 model id")
    grid = dataclasses.replace(grid, training=dataclasses.replace(
        grid.training, iterations=args.iterations, checkpoint_every=args.iterations, max_concurrent_trials=1))
    device = choose_device(grid.training.trial.gpus > 0)
    torch.set_num_threads(max(1, int(grid.training.trial.cpus)))
    connect()
    baselines, trials = [], []
    for _ in range(args.repeats):
        baselines.append(plain_loop(spec, grid, args.iterations, device))
        trials.append(tune_trial(spec, grid))
    baseline, trial = statistics.median(baselines), statistics.median(trials)
    print(f"model {spec.model_id}, batch {grid.training.batch_size}, {args.iterations} iterations, device {device}, "
          f"{torch.get_num_threads()} threads")
    print(f"plain PyTorch loop : {baseline:10.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in baselines)})")
    print(f"Ray Tune trial     : {trial:10.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in trials)})")
    print(f"ratio trial/plain  : {trial / baseline:10.3f}   (target >= 0.9)")


if __name__ == "__main__":
    main()
