"""One GPU session's checks of srfp's plain-PyTorch parts, for a GPU machine with torch but no Ray.

Adapted from the shared ``gpu_check.py`` that measured issue 13's figures. Run it from the project root; where
srfp is not installed (the grid files are the package ``srfp.grids`` only once installed), link them first:

    ln -sfn ../grids srfp/grids
    PYTHONPATH=. python tools/gpu_check.py OUTDIR --images DIR [--dry]

The figures in the README's "What the paper grid costs" and "Training speed" were measured with it on an H200:
``--budget 370`` (train, psnr, superres, classifier parts), then ``--parts shared,psnr --psnr-iterations 600
--psnr-runs graphs-bf16,graphs-float32``. The device had torchvision installed from a wheel matching its torch.

``DIR`` is a folder of training images (any photos of at least 192 px a side); ``--dry`` uses the smoke
grid's tiny sizes, to try the script on a CPU first. It writes, as it goes, ``OUTDIR/gpu_check.jsonl`` (one
line per measurement) and ``OUTDIR/calibration.json`` (``plan --calibration``'s format). Each part is skipped
once ``GPU_CHECK_BUDGET`` seconds (default 420) are spent, so the script ends inside a device lease:

1. train: ``bench/train_throughput.py``'s rows, from ``train_model`` itself (prefetch thread, the CUDA graph
   step): every arch x scale with L1, each arch's x4 VGG_GAN adversarial phase, two rows eager beside them,
   and two RCAN trials sharing the GPU;
2. psnr: a short run of each arch, x2 L1, from the same seed: CUDA graphs against eager steps, and bfloat16
   autocast against float32 (PyTorch's default on CUDA: TF32 convolutions), validation PSNR after each;
3. superres: a 960x720 photo with each paper-size model in srfp's image precision (float32, TF32 off),
   seconds per photo and peak memory, and the PNG encode beside it;
4. classifier: the study's Xception (timm legacy_xception, 299 px, bf16 autocast): training and prediction
   images/s at batch 16 and 64.
The perceptual networks are randomly initialised (the device has no internet): the FLOPs are the same.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import train_throughput as bench  # noqa: E402

from srfp.devices import choose_device  # noqa: E402
from srfp.gridspec import GridSpec, load_grid  # noqa: E402
from srfp.sisr import train as training  # noqa: E402
from srfp.spec import SISRSpec  # noqa: E402
from srfp.storage import Storage  # noqa: E402

START = time.time()


class Session:
    """Where the measurements go, and the time budget every part checks before it starts."""

    def __init__(self, out: Path, budget: float):
        self.out, self.budget, self.rows = out, budget, []
        out.mkdir(parents=True, exist_ok=True)

    def emit(self, **row) -> None:
        row["t"] = round(time.time() - START, 1)
        line = json.dumps(row)
        print(line, flush=True)
        with open(self.out / "gpu_check.jsonl", "a") as file:
            file.write(line + "\n")

    def guarded(self, part: str, function, *args, **kwargs):
        if time.time() - START > self.budget:
            self.emit(part=part, skipped="budget", args=[str(a) for a in args if isinstance(a, (str, int))])
            return None
        try:
            return function(*args, **kwargs)
        except Exception as error:  # a part's failure is a finding: record it and go on
            self.emit(part=part, args=[str(a) for a in args if isinstance(a, (str, int, bool))],
                      error=f"{type(error).__name__}: {error}", trace=traceback.format_exc()[-2000:])
            return None
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def with_graphs(grid: GridSpec, on: bool) -> GridSpec:
    return dataclasses.replace(grid, training=dataclasses.replace(grid.training, cuda_graphs=on))


@contextlib.contextmanager
def float32_training():
    """Training steps without bfloat16 autocast (PyTorch's float32 defaults on CUDA)."""
    saved = training.autocast
    training.autocast = lambda device, cache=True: contextlib.nullcontext()
    try:
        yield
    finally:
        training.autocast = saved


def train_row(session: Session, grid: GridSpec, arch: str, scale: int, loss: str, phase: str, iterations: int,
              device: torch.device, peak: float | None, label: str) -> None:
    spec = SISRSpec(arch, "div2k", scale, loss, 1)
    bench.fill_pair_cache(grid, spec)
    row = bench.measure(grid, spec, phase, iterations, 1, device, peak)
    if label == "graphs":
        session.rows.append(row)
    session.emit(part="train", label=label, **row)


def shared_row(session: Session, grid: GridSpec, arch: str, trials: int, iterations: int, device: torch.device,
               peak: float | None) -> None:
    spec = SISRSpec(arch, "div2k", 2, "L1", 1)
    bench.fill_pair_cache(grid, spec)
    session.emit(part="shared", label=f"{trials} trials sharing the GPU, no MPS",
                 **bench.measure(grid, spec, "l1", iterations, trials, device, peak))


def psnr_run(session: Session, grid: GridSpec, arch: str, iterations: int, device: torch.device, graphs: bool,
             bf16: bool) -> None:
    spec = SISRSpec(arch, "div2k", 2, "L1", 1)
    short = dataclasses.replace(grid.training, iterations=iterations, checkpoint_every=iterations, cuda_graphs=graphs)
    grid = dataclasses.replace(grid, training=short)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, (contextlib.nullcontext() if bf16 else float32_training()):
        record = training.train_model(spec, grid, Storage(folder), device=device)
    session.emit(part="psnr", arch=arch, scale=2, iterations=iterations, cuda_graphs=graphs,
                 precision="bf16 autocast" if bf16 else "float32 (TF32 convolutions)", val_psnr=record["val_psnr"],
                 images_per_second=record["images_per_second"], seconds=round(time.perf_counter() - started, 1))


def superres_row(session: Session, grid: GridSpec, arch: str, scale: int, device: torch.device, dry: bool) -> None:
    from PIL import Image

    from srfp.images import downscale
    from srfp.sisr.archs import create_model
    from srfp.superres.core import superresolve

    height, width = (72, 96) if dry else (720, 960)
    rng = np.random.default_rng(0)
    photo = (rng.random((height // 8, width // 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    torch.manual_seed(0)
    model = create_model(arch, scale, **grid.archs[arch]).to(device).eval()
    _, lr = downscale(photo, scale)
    with torch.inference_mode():
        superresolve(model, lr, scale, device)
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started, repeats = time.perf_counter(), 3
        for _ in range(repeats):
            sr = superresolve(model, lr, scale, device)
        sync(device)
    seconds = (time.perf_counter() - started) / repeats
    encode = {}
    for level in (1, 6):
        started = time.perf_counter()
        Image.fromarray(sr).save(io.BytesIO(), format="PNG", compress_level=level)
        encode[f"png_level_{level}_s"] = round(time.perf_counter() - started, 3)
    row = dict(part="superres", arch=arch, scale=scale, lr=list(lr.shape[:2]), sr=list(sr.shape[:2]),
               precision="float32, TF32 off", s_per_photo=round(seconds, 4), photos_per_s=round(1 / seconds, 2), **encode)
    if device.type == "cuda":
        row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    session.emit(**row)


def classifier_row(session: Session, batch: int, device: torch.device, dry: bool, classes: int = 108) -> None:
    import torch.nn.functional as F

    from srfp.classify.network import Classifier
    from srfp.devices import autocast

    model = Classifier("xception", classes, pretrained=False).to(device)
    model.set_phase("all")
    model.train_mode("all")
    optimizer = torch.optim.Adamax([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    size, iterations = (96, 2) if dry else (299, 20)
    images = torch.randint(0, 255, (batch, size, size, 3), dtype=torch.uint8, device=device)
    labels = torch.randint(0, classes, (batch,), device=device)

    def step():
        with autocast(device):
            loss = F.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(3):
        step()
    sync(device)
    started = time.perf_counter()
    for _ in range(iterations):
        step()
    sync(device)
    train_rate = batch * iterations / (time.perf_counter() - started)
    model.eval()
    with torch.no_grad(), autocast(device):
        model(images)
        sync(device)
        started = time.perf_counter()
        for _ in range(iterations):
            model(images)
        sync(device)
    session.emit(part="classifier", backbone="xception", batch=batch, crop=size, train_images_per_s=round(train_rate, 1),
                 predict_images_per_s=round(batch * iterations / (time.perf_counter() - started), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", required=True)
    parser.add_argument("--dry", action="store_true", help="the smoke grid's sizes, to try the script on a CPU")
    parser.add_argument("--budget", type=float, default=420.0)
    parser.add_argument("--parts", default="train,psnr,superres,classifier", help="also: shared")
    parser.add_argument("--psnr-iterations", type=int, default=150)
    parser.add_argument("--psnr-runs", type=lambda text: [(graphs == "graphs", precision == "bf16") for graphs, precision in
                                                          (run.split("-") for run in text.split(","))],
                        default="graphs-bf16,eager-bf16,graphs-float32", help="which runs of the psnr part")
    args = parser.parse_args()
    session, device = Session(args.out, args.budget), choose_device()
    grid = bench.with_images(load_grid("smoke" if args.dry else "paper"), args.images)
    grid = dataclasses.replace(grid, training=dataclasses.replace(grid.training, pretrained_perceptual=False))
    peak = bench.known_peak(bench.device_name(device)) if device.type == "cuda" else None
    session.emit(part="env", torch=torch.__version__, device=bench.device_name(device), peak_tflops=peak,
                 commit=bench.commit(), grid=grid.name)
    parts, iterations = args.parts.split(","), 3 if args.dry else 20
    if "train" in parts:
        for arch in ("EDSR", "RDN", "RCAN"):
            for scale in (2, 4):
                session.guarded("train", train_row, session, grid, arch, scale, "L1", "l1", iterations, device, peak,
                                "graphs")
        for arch in ("RCAN", "EDSR"):
            session.guarded("train", train_row, session, with_graphs(grid, False), arch, 2, "L1", "l1", iterations,
                            device, peak, "eager")
        for arch in ("EDSR", "RDN", "RCAN"):
            session.guarded("train", train_row, session, grid, arch, 4, "VGG_GAN", "adversarial", iterations, device,
                            peak, "graphs")
        (args.out / "calibration.json").write_text(json.dumps({
            "device": bench.device_name(device), "torch": torch.__version__, "commit": bench.commit(),
            "peak_tflops": peak, "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "note": f"tools/gpu_check.py (bench/train_throughput.py's rows), {iterations} timed iterations per row, "
                    "one trial on the GPU, random perceptual networks", "rows": session.rows}, indent=1))
    if "shared" in parts:  # trials time-sharing the GPU (no MPS on this machine)
        for arch, trials in (("EDSR", 2), ("RDN", 2), ("RCAN", 4), ("RDN", 4), ("RCAN", 8)):
            session.guarded("shared", shared_row, session, grid, arch, trials, iterations, device, peak)
    if "psnr" in parts:
        short = 6 if args.dry else args.psnr_iterations
        for arch in ("EDSR", "RDN", "RCAN"):
            for graphs, bf16 in args.psnr_runs:
                session.guarded("psnr", psnr_run, session, grid, arch, short, device, graphs, bf16)
    if "superres" in parts:
        for arch in ("EDSR", "RDN", "RCAN"):
            for scale in (2, 4):
                session.guarded("superres", superres_row, session, grid, arch, scale, device, args.dry)
    if "classifier" in parts:
        for batch in (16, 64):
            session.guarded("classifier", classifier_row, session, batch, device, args.dry)
    session.emit(part="done")


if __name__ == "__main__":
    main()
