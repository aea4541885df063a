"""Measured training speed: the calibration file ``bench/train_throughput.py --json FILE`` writes, and what a
model costs by it.

A row measures one architecture, scale and loss in one phase of training (``l1``: an L1 model, or an adversarial
model's L1 warm-up at ``training.adversarial.patch_size``; ``adversarial``: the GAN phase) at a batch and patch
size. A trial holding ``gpu_share`` of one GPU pays ``seconds_per_iteration * gpu_share`` GPU-seconds per
iteration; a model pays that for each iteration of each of its phases.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from srfp.errors import UserError
from srfp.gridspec import TrainingSettings
from srfp.schema import SchemaError, build, choices
from srfp.spec import ARCHS, LOSSES, SCALES, SISRSpec

PHASES = ("l1", "adversarial")


class CalibrationError(UserError, ValueError):
    """A calibration file that cannot be read or does not match the format; names the file and the field."""


@dataclass(frozen=True)
class TrainingPhase:
    """A stretch of one model's training that a single calibration row measures, and its length."""

    arch: str
    scale: int
    loss: str
    phase: str
    batch_size: int
    patch_size: int
    iterations: int

    @property
    def key(self) -> tuple:
        return self.arch, self.scale, self.loss, self.phase, self.batch_size, self.patch_size

    def describe(self) -> str:
        return f"{self.arch} x{self.scale} {self.loss} phase {self.phase} at batch {self.batch_size}, patch {self.patch_size}"


def training_phases(spec: SISRSpec, training: TrainingSettings) -> list[TrainingPhase]:
    """The phases ``spec`` trains through under ``training``: L1 alone, or an L1 warm-up then the GAN phase."""
    if not spec.is_adversarial:
        lengths = {"l1": training.iterations}
        patch = training.patch_size[spec.scale]
    else:
        warmup = min(training.adversarial.warmup_iterations, training.iterations)
        lengths = {"l1": warmup, "adversarial": training.iterations - warmup}
        patch = training.adversarial.patch_size
    return [TrainingPhase(spec.arch, spec.scale, spec.loss, phase, training.batch_size, patch, iterations)
            for phase, iterations in lengths.items() if iterations > 0]


@dataclass(frozen=True)
class MeasuredRow:
    """The measured speed of one phase of one architecture, scale and loss, at one batch and patch size."""

    arch: str = choices(*ARCHS)
    scale: int = choices(*SCALES)
    loss: str = choices(*LOSSES)
    phase: str = choices(*PHASES)
    batch_size: int
    patch_size: int
    #: The fraction of one GPU the measured trial held (several trials sharing a GPU hold less than 1).
    gpu_share: float
    seconds_per_iteration: float
    images_per_second: float
    #: The share of the device's peak FLOP rate; null where no peak is known (a CPU).
    flop_utilisation: float | None

    def __post_init__(self):
        positive = ("batch_size", "patch_size", "seconds_per_iteration", "images_per_second")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: {getattr(self, name)!r} is not allowed; expected a positive number")
        if not 0 < self.gpu_share <= 1:
            raise ValueError(f"gpu_share: {self.gpu_share!r} is not allowed; expected a fraction of one GPU in (0, 1]")
        if self.flop_utilisation is not None and self.flop_utilisation < 0:
            raise ValueError(f"flop_utilisation: {self.flop_utilisation!r} is not allowed; "
                             f"expected a non-negative share or null")

    @property
    def key(self) -> tuple:
        return self.arch, self.scale, self.loss, self.phase, self.batch_size, self.patch_size

    @property
    def gpu_seconds_per_iteration(self) -> float:
        return self.seconds_per_iteration * self.gpu_share


@dataclass(frozen=True)
class Calibration:
    """A whole calibration file: where and with what it was measured, and its rows."""

    device: str
    torch: str
    commit: str
    #: The device's peak FLOP rate the utilisations are shares of; null where unknown (a CPU).
    peak_tflops: float | None
    measured: str
    rows: list[MeasuredRow]
    #: Free text: where the figures come from, which rows stand in for others.
    note: str = ""
    source: str = ""

    def __post_init__(self):
        if not self.rows:
            raise SchemaError("rows: [] is not allowed; expected at least one measured row")
        first_of: dict[tuple, int] = {}
        for index, row in enumerate(self.rows):
            if row.key in first_of:
                raise SchemaError(f"rows[{index}]: measures the same arch, scale, loss, phase, batch_size and "
                                  f"patch_size as rows[{first_of[row.key]}]; keep one of them")
            first_of[row.key] = index

    def row(self, phase: TrainingPhase) -> MeasuredRow | None:
        return next((row for row in self.rows if row.key == phase.key), None)

    def missing(self, spec: SISRSpec, training: TrainingSettings) -> list[TrainingPhase]:
        """The phases of ``spec`` that no row measures."""
        return [phase for phase in training_phases(spec, training) if self.row(phase) is None]

    def gpu_hours(self, spec: SISRSpec, training: TrainingSettings) -> float | None:
        """GPU-hours of training ``spec`` by the measured rows; None when a phase has no row."""
        if self.missing(spec, training):
            return None
        seconds = sum(phase.iterations * self.row(phase).gpu_seconds_per_iteration
                      for phase in training_phases(spec, training))
        return seconds / 3600


def load_calibration(path: str | Path) -> Calibration:
    """Read and validate a calibration file; raises :class:`CalibrationError` naming the file and the bad field."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as error:
        raise CalibrationError(f"{path}: cannot read the calibration file: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise CalibrationError(f"{path}: not valid JSON: {error}") from None
    try:
        calibration = build(Calibration, data, where="")
    except SchemaError as error:
        raise CalibrationError(f"{path}: {error}") from None
    return dataclasses.replace(calibration, source=str(path))
