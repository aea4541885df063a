"""Super-resolution throughput of the Ray Data pipeline against a plain single-process loop, same run.

Both super-resolve the same photos with the same trained model (weights written once, here) and make
the same rows (PNG, PSNR) into a Parquet shard; the baseline is a ``for`` loop in the driver with as
many torch threads as the pipeline's actors use cores in all (equal cores). Prints photos per second
of both, their ratio (target: >= 0.9), and the peak resident memory of the pipeline's Ray workers
(sampled from /proc) and of the baseline.

    python bench/superres_throughput.py                       # the bundled photos, 512 px
    python bench/superres_throughput.py --photos ../shared/data/cbsd68 --long-side 480
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import resource
import tempfile
import threading
import time
from pathlib import Path

import torch

from srfp.cluster import connect
from srfp.devices import choose_device
from srfp.gridspec import load_grid
from srfp.images import decode_image
from srfp.photos import build_photos, read_manifest
from srfp.sisr.train import load_trained, train_model
from srfp.spec import SISRSpec
from srfp.storage import Storage
from srfp.superres.core import superresolve_photo
from srfp.superres.pipeline import actor_pool_size, superresolve_model
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
    with tempfile.TemporaryDirectory() as folder:
        grid = dataclasses.replace(grid, photos=dataclasses.replace(
            grid.photos, source=tagged_source(Path(folder), args.photos), long_side=args.long_side))
        storage = Storage(Path(folder) / "run")
        build_photos(grid.photos, storage, log=lambda *_: None)
        train_model(spec, grid, storage)  # one iteration: real weights for a model of this size
        photos = read_manifest(storage)[["image_id", "tag", "split"]].to_dict("records")
        connect()
        actors = min(actor_pool_size(grid), len(photos))
        cores = actors * max(1, math.ceil(grid.superres.actor.cpus))

        torch.set_num_threads(cores)
        device = choose_device(grid.superres.actor.gpus > 0)
        start = time.perf_counter()
        model = load_trained(storage, spec.model_id).to(device)
        info = ModelInfo.of_spec(spec)
        rows = []
        for photo in photos:
            image = decode_image(storage.read_bytes(f"photos/{photo['image_id']}.png"))
            rows.append(make_row(info, photo, *superresolve_photo(model, image, spec.scale, device)))
        write_shard(storage, info, rows, grid.superres.precision)
        baseline = len(photos) / (time.perf_counter() - start)
        baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        with PeakSampler(ray_worker_rss_mb) as memory:
            start = time.perf_counter()
            superresolve_model(spec, grid, storage, photos)
            pipeline = len(photos) / (time.perf_counter() - start)
    print(f"{len(photos)} photos of {args.long_side} px (long side), model {spec.model_id} {options}, "
          f"{actors} actors = {cores} cores; baseline {cores} torch threads")
    print(f"plain loop          : {baseline:8.2f} photos/s   peak RSS {baseline_rss:7.0f} MB (driver)")
    print(f"Ray Data pipeline   : {pipeline:8.2f} photos/s   peak RSS {memory.peak:7.0f} MB (all Ray workers)")
    print(f"ratio pipeline/plain: {pipeline / baseline:8.3f}   (target >= 0.9; both include model loading "
          "and writing Parquet, the pipeline also its actors' start-up)")


if __name__ == "__main__":
    main()
