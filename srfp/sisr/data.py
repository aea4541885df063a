"""Training batches for one SISR model: random aligned (LR, HR) patches, flipped and rotated.

Each training image is paired once with its MATLAB-bicubic downscale (the whole image, as the SR
literature's LR files are made) and the pair is kept in a node-local cache of ``.npy`` files, so later
batches read only their patches (memory-mapped). Batch ``i`` of a model depends only on its seed and
``i``: a resumed trial draws exactly the batches the uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from srfp.datasets import ImageSet
from srfp.images import downscale
from srfp.storage import node_cache


def cache_folder() -> Path:
    """Where LR/HR pairs are cached on this node: ``$SRFP_CACHE`` or ``~/.cache/srfp``."""
    return node_cache("pairs")


class PairCache:
    """(HR, LR) uint8 arrays of every image of a set at one scale, computed once per node."""

    def __init__(self, images: ImageSet, scale: int, folder: Path | None = None):
        self.images, self.scale = images, scale
        key = hashlib.sha256(f"{images.storage.uri}|{scale}".encode()).hexdigest()[:16]
        self.folder = (folder or cache_folder()) / key

    def __len__(self) -> int:
        return len(self.images)

    def _paths(self, index: int) -> tuple[Path, Path]:
        stem = hashlib.sha256(self.images.files[index].encode()).hexdigest()[:24]
        return self.folder / f"{stem}-hr.npy", self.folder / f"{stem}-lr.npy"

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        hr_path, lr_path = self._paths(index)
        if not lr_path.exists():  # the LR file is written last: its presence means the pair is whole
            hr, lr = downscale(self.images.read(index), self.scale)
            self.folder.mkdir(parents=True, exist_ok=True)
            for path, array in ((hr_path, hr), (lr_path, lr)):
                temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp.npy")
                np.save(temporary, array)
                os.replace(temporary, path)
        return np.load(hr_path, mmap_mode="r"), np.load(lr_path, mmap_mode="r")


def _augment(hr: np.ndarray, lr: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random horizontal flip, vertical flip and transposition (the 8 symmetries of the square)."""
    if rng.random() < 0.5:
        hr, lr = hr[:, ::-1], lr[:, ::-1]
    if rng.random() < 0.5:
        hr, lr = hr[::-1], lr[::-1]
    if rng.random() < 0.5:
        hr, lr = hr.transpose(1, 0, 2), lr.transpose(1, 0, 2)
    return hr, lr


class PatchSampler:
    """Batches of aligned patches: HR ``patch_size`` square, LR ``patch_size / scale``, values in [0, 255]."""

    def __init__(self, pairs: PairCache, patch_size: int, batch_size: int, seed: int):
        if patch_size % pairs.scale:
            raise ValueError(f"patch size {patch_size} is not a multiple of the scale {pairs.scale}")
        self.pairs, self.patch_size, self.batch_size, self.seed = pairs, patch_size, batch_size, seed

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The (LR, HR) float batch of an iteration, N x 3 x h x w, reproducible from (seed, iteration)."""
        rng = np.random.default_rng([self.seed, iteration])
        scale, lr_size = self.pairs.scale, self.patch_size // self.pairs.scale
        lows, highs = [], []
        for _ in range(self.batch_size):
            hr, lr = self.pairs.pair(int(rng.integers(len(self.pairs))))
            if lr.shape[0] < lr_size or lr.shape[1] < lr_size:
                raise ValueError(f"{self.pairs.images.name}: an image of {hr.shape[1]}x{hr.shape[0]} pixels is "
                                 f"smaller than the {self.patch_size}-pixel training patch")
            top, left = int(rng.integers(lr.shape[0] - lr_size + 1)), int(rng.integers(lr.shape[1] - lr_size + 1))
            lr_patch = lr[top:top + lr_size, left:left + lr_size]
            hr_patch = hr[top * scale:(top + lr_size) * scale, left * scale:(left + lr_size) * scale]
            hr_patch, lr_patch = _augment(hr_patch, lr_patch, rng)
            lows.append(np.ascontiguousarray(lr_patch))
            highs.append(np.ascontiguousarray(hr_patch))
        return _to_tensor(np.stack(lows)), _to_tensor(np.stack(highs))


class BatchPrefetcher:
    """The sampler's batches of iterations ``start`` to ``stop - 1``, made ``depth`` ahead in a background
    thread while the training step runs, in page-locked memory when ``pin`` (so that the copy to a GPU runs
    asynchronously). The batches are the sampler's, in order: only when they are made changes.

    Use it as a context manager; leaving it (or an error in the thread, raised here) stops the thread."""

    def __init__(self, sampler: PatchSampler, start: int, stop: int, pin: bool = False, depth: int = 2):
        self.sampler, self.start, self.stop, self.pin = sampler, start, stop, pin
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="srfp-batches", daemon=True)

    def _produce(self) -> None:
        try:
            for iteration in range(self.start, self.stop):
                lr, hr = self.sampler.batch(iteration)
                if self.pin:
                    lr, hr = lr.pin_memory(), hr.pin_memory()
                if not self._put((iteration, lr, hr)):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            self._put(error)

    def _put(self, item) -> bool:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __enter__(self) -> "BatchPrefetcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._thread.join()

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        for _ in range(self.start, self.stop):
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item


def _to_tensor(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float()


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """An RGB uint8 H x W x 3 array as a 1 x 3 x H x W float tensor in [0, 255]."""
    return _to_tensor(np.array(image)[None])  # a writable copy: cached pairs are read-only memory maps


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """A 1 x 3 x H x W tensor in [0, 255] as an RGB uint8 array: clamped, then rounded."""
    return tensor[0].detach().float().clamp(0, 255).round().byte().permute(1, 2, 0).cpu().numpy()
