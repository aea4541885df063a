"""Super-resolution throughput of the Ray Data pipeline against a plain single-process loop, same run.

Both super-resolve the same photos with the same trained model (weights written once, here) and make
the same rows (PNG, PSNR) into a Parquet shard; the baseline is a ``for`` loop in the driver with as
many torch threads as the pipeline's actors use cores in all (equal cores). Prints photos per second
of both, their ratio (target on the CPU: >= 0.9), the share of each step of the plain loop and of each
stage of the pipeline in their summed time (Ray Data's remote wall time per operator), the pipeline's
rate after its start-up (once the model's first batch began: the actors' processes, imports and model
loading are done), and the peak resident memory of the pipeline's Ray workers (sampled from /proc) and
of the baseline. Where CUDA is present, the actors take the paper grid's resources (a GPU share each,
as many as fit) and the bench also prints photos per second per GPU and the GPU's busy share: the
model stage's time over the actors' wall time (pipeline time x actors).

    python bench/superres_throughput.py                       # the bundled photos, 512 px
    python bench/superres_throughput.py --photos ../shared/data/cbsd68 --long-side 480
    python bench/superres_throughput.py --long-side 960 --arch-options n_resblocks=32,n_feats=256,res_scale=0.1
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import math
import resource
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from srfp.cluster import connect
from srfp.devices import choose_device
from srfp.gridspec import GridSpec, SuperresSettings, load_grid
from srfp.images import downscale
from srfp.photos import build_photos, read_manifest, read_photo
from srfp.sisr.train import load_trained, train_model
from srfp.spec import SISRSpec
from srfp.storage import Storage
from srfp.superres.core import superresolve, tiling
from srfp.superres.pipeline import actors_that_fit, superresolve_model
from srfp.superres.shards import ModelInfo, make_row, write_shard


def ray_worker_rss_mb() -> float:
    """Total resident memory of the Ray workers doing the pipeline's work (not Ray's agents), from /proc."""
    total = 0
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
            if title.startswith(b"ray::") and not title.startswith((b"ray::DashboardAgent", b"ray::RuntimeEnvAgent")):
                fields = (entry / "status").read_text().split("VmRSS:")[1].split()
                total += int(fields[0])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1024


class PeakSampler:
    """Samples a figure every 50 ms in a thread and keeps its maximum."""

    def __init__(self, measure):
        self.measure, self.peak, self._stop = measure, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.measure())
            time.sleep(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def tagged_source(folder: Path, photos: str | None) -> str:
    """The photo source: ``bundled``, or a flat folder of images presented as one tag."""
    if photos is None:
        return "bundled"
    (folder / "source").mkdir()
    (folder / "source" / "photos").symlink_to(Path(photos).resolve())
    return str(folder / "source")


class StepClock:
    """Seconds spent in each named step, summed over the times it ran."""

    def __init__(self):
        self.seconds: dict[str, float] = collections.defaultdict(float)

    @contextmanager
    def step(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - start


def plain_loop(spec: SISRSpec, grid: GridSpec, storage: Storage, photos: list[dict], device: torch.device,
               clock: StepClock) -> None:
    """The baseline: the plain functions one photo after the other in this process, then one shard."""
    settings, info = grid.superres, ModelInfo.of_spec(spec)
    with clock.step("load model"):
        model = load_trained(storage, spec.model_id).to(device)
    rows = []
    for photo in photos:
        with clock.step("read + downscale"):
            hr, lr = downscale(read_photo(storage, photo["image_id"]), spec.scale)
        with clock.step("model"):
            sr = superresolve(model, lr, spec.scale, device, *tiling(model, settings.tile_size), settings.precision)
        with clock.step("PNG + PSNR + row"):
            rows.append(make_row(info, photo, hr, sr))
    with clock.step("write"):
        write_shard(storage, info, rows, settings.precision)


def operators(summary) -> list:
    """Every operator's stats of an executed dataset, upstream operators first."""
    return [op for parent in summary.parents for op in operators(parent)] + list(summary.operators_stats)


def shares(seconds: dict[str, float]) -> str:
    total = sum(seconds.values()) or 1.0
    return ", ".join(f"{name} {100 * value / total:.0f}%" for name, value in seconds.items())


def bench_superres(grid: GridSpec, on_cuda: bool) -> SuperresSettings:
    """The smoke grid's super-resolution settings, or where CUDA is present the paper grid's (a GPU share
    per actor), with the pool fixed at the actors the cluster fits, so that figures per actor are exact."""
    settings = load_grid("paper").superres if on_cuda else grid.superres
    fits = actors_that_fit(settings)
    return dataclasses.replace(settings, actors=min(settings.actors, fits) if settings.actors else fits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", default=None, help="a folder of images (default: the bundled photos)")
    parser.add_argument("--long-side", type=int, default=512)
    parser.add_argument("--model-id", default="EDSR-div2k-x2-L1-s1")
    parser.add_argument("--arch-options", default="n_resblocks=8,n_feats=64")
    args = parser.parse_args()
    spec = SISRSpec.from_id(args.model_id)
    grid = load_grid("smoke")
    options = {k: float(v) if "." in v else int(v) for k, v in (kv.split("=") for kv in args.arch_options.split(","))}
    grid = dataclasses.replace(grid, archs={**grid.archs, spec.arch: options},
                               training=dataclasses.replace(grid.training, iterations=1, checkpoint_every=1))
    on_cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as folder:
        grid = dataclasses.replace(grid, photos=dataclasses.replace(
            grid.photos, source=tagged_source(Path(folder), args.photos), long_side=args.long_side))
        storage = Storage(Path(folder) / "run")
        build_photos(grid.photos, storage, log=lambda *_: None)
        train_model(spec, grid, storage)  # one iteration: real weights for a model of this size
        photos = read_manifest(storage)[["image_id", "tag", "split"]].to_dict("records")
        connect()
        grid = dataclasses.replace(grid, superres=bench_superres(grid, on_cuda))
        actors = min(grid.superres.actors, len(photos))
        cores = actors * max(1, math.ceil(grid.superres.actor.cpus))

        torch.set_num_threads(cores)
        device = choose_device(grid.superres.actor.gpus > 0)
        clock = StepClock()
        start = time.perf_counter()
        plain_loop(spec, grid, storage, photos, device, clock)
        baseline = len(photos) / (time.perf_counter() - start)
        baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        with PeakSampler(ray_worker_rss_mb) as memory:
            start = time.perf_counter()  # CLOCK_MONOTONIC, as the workers' stats on this node
            rows = superresolve_model(spec, grid, storage, photos)
            wall = time.perf_counter() - start
        stages = operators(rows.get_stats_summary())
    pipeline = len(photos) / wall
    model = next(op for op in stages if "SuperResolver" in op.operator_name)
    start_up = model.earliest_start_time - start
    after_start_up = len(photos) / (wall - start_up)
    resources = f"{grid.superres.actor.cpus:g} CPU" + (f" + {grid.superres.actor.gpus:g} GPU" if on_cuda else "")
    print(f"{len(photos)} photos of {args.long_side} px (long side), model {spec.model_id} {options} on {device}, "
          f"{actors} actors of {resources} ({cores} cores); baseline {cores} torch threads")
    print(f"plain loop          : {baseline:8.2f} photos/s   peak RSS {baseline_rss:7.0f} MB (driver)")
    print(f"Ray Data pipeline   : {pipeline:8.2f} photos/s   peak RSS {memory.peak:7.0f} MB (all Ray workers)")
    print(f"ratio pipeline/plain: {pipeline / baseline:8.3f}   (target on the CPU >= 0.9; both include model loading "
          "and writing Parquet, the pipeline also its actors' start-up)")
    print(f"after start-up      : {after_start_up:8.2f} photos/s, ratio {after_start_up / baseline:.3f} "
          f"(the model's first batch began {start_up:.1f} s after the pipeline started)")
    print(f"plain loop, time by step : {shares(clock.seconds)}")
    print(f"pipeline, time by stage  : {shares({op.operator_name: op.wall_time.sum for op in stages if op.wall_time})}")
    if on_cuda:
        gpus = actors * grid.superres.actor.gpus
        print(f"per GPU             : {pipeline / gpus:8.2f} photos/s on {gpus:g} GPU(s) "
              f"({torch.cuda.get_device_name()}), {after_start_up / gpus:.2f} after start-up")
        print(f"GPU busy share      : {model.wall_time.sum / (actors * wall):8.3f}   (the model stage's time / "
              f"(pipeline time x {actors} actors)), {model.wall_time.sum / (actors * (wall - start_up)):.3f} "
              "after start-up")


if __name__ == "__main__":
    main()
