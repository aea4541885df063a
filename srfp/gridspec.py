"""The grid file: which SISR models to train, with which settings, and which classifiers to build on them.

A grid file is YAML whose sections map onto the dataclasses below. ``load_grid`` validates the
whole file before anything runs; a :class:`GridError` names the file, the field, the bad value and
the allowed values. ``grids/paper.yaml`` is the study; ``grids/smoke.yaml`` the same shape, tiny.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from srfp.classify.backbones import BACKBONES
from srfp.errors import UserError
from srfp.flickr import REDISTRIBUTABLE, tags_problem
from srfp.images import DEFAULT_MAX_MEGAPIXELS, MAX_MEGAPIXELS_ALLOWED
from srfp.schema import SchemaError, at_least, build, choices, positive, share
from srfp.spec import ARCHS, DATASETS, LOSSES, SCALES, TARGETS, SISRSpec


class GridError(UserError, ValueError):
    """An invalid grid file."""


@dataclass(frozen=True)
class ModelGrid:
    """The hyperparameter grid. ``seeds`` maps each seed to ``all`` datasets or a list of datasets."""

    archs: list[str] = choices(*ARCHS)
    datasets: list[str] = choices(*DATASETS)
    scales: list[int] = choices(*SCALES)
    losses: list[str] = choices(*LOSSES)
    seeds: dict[int, str | list[str]] = field(default_factory=lambda: {1: "all"})

    def __post_init__(self):
        for name in ("archs", "datasets", "scales", "losses"):
            values = getattr(self, name)
            if not values:
                raise SchemaError(f"models.{name}: empty; list at least one value")
            if len(set(values)) != len(values):
                raise SchemaError(f"models.{name}: {values!r} lists a value twice")
        if not self.seeds:
            raise SchemaError("models.seeds: empty; give at least one seed, e.g. {1: all}")
        for seed, datasets in self.seeds.items():
            if seed < 0:
                raise SchemaError(f"models.seeds: seed {seed!r} is not allowed; seeds are non-negative integers")
            if isinstance(datasets, str):
                if datasets != "all":
                    raise SchemaError(f"models.seeds.{seed}: {datasets!r} is not allowed; expected 'all' or a list of datasets")
                continue
            if not datasets:
                raise SchemaError(f"models.seeds.{seed}: [] is not allowed; expected 'all' or a non-empty list of "
                                  f"datasets")
            for i, dataset in enumerate(datasets):
                if dataset not in self.datasets:
                    raise SchemaError(f"models.seeds.{seed}[{i}]: {dataset!r} is not allowed; "
                                      f"allowed values (models.datasets): {', '.join(self.datasets)}")

    def specs(self) -> list[SISRSpec]:
        """Every model of the grid, in a stable order: by seed, then arch, dataset, scale, loss."""
        result = []
        for seed in sorted(self.seeds):
            allowed = self.datasets if self.seeds[seed] == "all" else self.seeds[seed]
            for arch, dataset, scale, loss in itertools.product(self.archs, self.datasets, self.scales, self.losses):
                if dataset in allowed:
                    result.append(SISRSpec(arch=arch, dataset=dataset, scale=scale, loss=loss, seed=seed))
        return result


@dataclass(frozen=True)
class TrainingSource:
    """Where a base training dataset lives. ``layout``: div2k, flickr2k, or folder (any folder of images)."""

    uri: str
    layout: str = choices("div2k", "flickr2k", "folder")


@dataclass(frozen=True)
class DataSettings:
    """The training datasets. Quarter subsets are drawn from their base dataset (see srfp.datasets)."""

    div2k: TrainingSource
    flickr2k: TrainingSource
    validation_images: int = at_least(1, default=10)


@dataclass(frozen=True)
class CollectSettings:
    """A Flickr collection into ``photos.source`` (as ``photos collect``), which ``photos`` and ``run`` do first."""

    tags: list[str]
    per_tag: int = at_least(1, default=200)
    licenses: list[int] = field(default_factory=lambda: list(REDISTRIBUTABLE))

    def __post_init__(self):
        problem = tags_problem(self.tags)
        if problem:
            raise SchemaError(f"photos.collect.tags: {self.tags!r} is not allowed; {problem}")
        if not self.licenses:
            raise SchemaError("photos.collect.licenses: [] is not allowed; list Flickr licence ids, e.g. [4, 5, 9, 10]")


@dataclass(frozen=True)
class PhotoSettings:
    """The photos every model super-resolves (the study's Flickr1K).

    ``source`` is a folder with one subfolder per tag, or ``bundled`` for the CC0 photos shipped with srfp.
    ``split`` gives the share of photos in each of train/val/test (counts or weights). With ``collect``,
    ``source`` is first filled from Flickr. Photos above ``max_megapixels`` are skipped unread (their header
    says their size), and so are symbolic links that lead out of a local ``source`` unless ``follow_symlinks``.
    """

    source: str = "bundled"
    per_tag: int | None = at_least(1, default=None)
    min_megapixels: float = at_least(0, default=2.0)
    max_megapixels: float = positive(default=DEFAULT_MAX_MEGAPIXELS)
    long_side: int = at_least(8, default=960)
    split: dict[str, int] = field(default_factory=lambda: {"train": 800, "val": 100, "test": 100})
    seed: int = 0
    follow_symlinks: bool = False
    collect: CollectSettings | None = None

    def __post_init__(self):
        if self.collect and (self.source == "bundled" or self.source.startswith("bundled:")):
            raise SchemaError(f"photos.source: {self.source!r} is not allowed with photos.collect; expected the folder "
                              "or s3:// prefix to collect into")
        if not self.min_megapixels < self.max_megapixels <= MAX_MEGAPIXELS_ALLOWED:
            raise SchemaError(f"photos.max_megapixels: {self.max_megapixels!r} is not allowed; expected a number above "
                              f"photos.min_megapixels ({self.min_megapixels:g}) and at most {MAX_MEGAPIXELS_ALLOWED:g}")
        if set(self.split) != {"train", "val", "test"}:
            raise SchemaError(f"photos.split: keys {sorted(self.split)} are not allowed; expected exactly train, val, test")
        if any(v < 0 for v in self.split.values()) or sum(self.split.values()) == 0:
            raise SchemaError(f"photos.split: {self.split!r} is not allowed; use non-negative shares with a positive sum")


@dataclass(frozen=True)
class Resources:
    """Resources of one Ray task, actor or trial, and the GPU-hours one is expected to take on a GPU."""

    cpus: float = at_least(0, default=1.0)
    gpus: float = at_least(0, default=0.0)
    gpu_hours: float = at_least(0, default=0.0)


def _require_cpus(resources: Resources, where: str) -> None:
    """A trial or a Ray Train worker runs its own Python process, so it needs some CPU."""
    if resources.cpus <= 0:
        raise SchemaError(f"{where}.cpus: {resources.cpus!r} is not allowed; expected a number above 0")


@dataclass(frozen=True)
class AdversarialSettings:
    """SRGAN/ESRGAN-style training: L1 + perceptual + relativistic adversarial terms.

    The first ``warmup_iterations`` of an adversarial trial train with L1 alone, as an L1 model (the
    study started its GAN models from L1-trained ones). Then, as BasicSR's ESRGAN recipe
    (``options/train/ESRGAN/train_ESRGAN_x4.yml``), the generator keeps its weights and gets a fresh Adam
    (``learning_rate``, ``betas``), the discriminator its own (``discriminator_lr``, ``betas``), both
    halved at each of ``lr_milestones``, counted in iterations of the adversarial phase."""

    warmup_iterations: int = at_least(0, default=0)
    patch_size: int = at_least(32, default=128)
    l1_weight: float = at_least(0, default=0.01)
    perceptual_weight: float = at_least(0, default=1.0)
    adversarial_weight: float = at_least(0, default=0.005)
    learning_rate: float = positive(default=1e-4)
    discriminator_lr: float = positive(default=1e-4)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    lr_milestones: list[int] = field(default_factory=lambda: [50_000, 100_000, 200_000, 300_000])

    def __post_init__(self):
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            raise SchemaError(f"training.adversarial.betas: {self.betas!r} is not allowed; "
                              f"expected two numbers in [0, 1), e.g. [0.9, 0.99]")
        if any(m < 1 for m in self.lr_milestones) or self.lr_milestones != sorted(set(self.lr_milestones)):
            raise SchemaError(f"training.adversarial.lr_milestones: {self.lr_milestones!r} is not allowed; "
                              f"expected increasing positive iteration counts")


@dataclass(frozen=True)
class TrainingSettings:
    """How each SISR model is trained; one Ray Tune trial per model."""

    iterations: int = at_least(1, default=300_000)
    batch_size: int = at_least(1, default=16)
    patch_size: dict[int, int] = at_least(1, default_factory=lambda: {2: 96, 4: 192})
    learning_rate: float = positive(default=1e-4)
    lr_halve_every: int = at_least(1, default=200_000)
    checkpoint_every: int = at_least(1, default=5_000)
    adversarial: AdversarialSettings = field(default_factory=AdversarialSettings)
    #: ImageNet weights for the VGG19 / ResNet-50 perceptual networks; false (random) only by explicit choice.
    pretrained_perceptual: bool = True
    trial: Resources = field(default_factory=lambda: Resources(cpus=8, gpus=1, gpu_hours=24))
    #: Trials of an architecture that share one GPU (its kernels too few to fill it), each with that share
    #: of ``trial`` (CPUs, GPU, GPU-hours); architectures not named take a whole ``trial``.
    trials_per_gpu: dict[str, int] = at_least(1, default_factory=dict)
    #: On CUDA, capture each training step as a CUDA graph (see srfp.sisr.acceleration); false: eager steps.
    cuda_graphs: bool = True
    max_concurrent_trials: int = at_least(0, default=0)
    max_failures: int = at_least(0, default=3)

    def __post_init__(self):
        for arch in self.trials_per_gpu:
            if arch not in ARCHS:
                raise SchemaError(f"training.trials_per_gpu.{arch}: unknown architecture; allowed values: "
                                  f"{', '.join(ARCHS)}")
        _require_cpus(self.trial, "training.trial")

    def trial_of(self, arch: str) -> Resources:
        """The resources of one trial of an architecture: ``trial``, shared by ``trials_per_gpu[arch]``."""
        share = self.trials_per_gpu.get(arch, 1)
        trial = self.trial
        return Resources(cpus=trial.cpus / share, gpus=trial.gpus / share, gpu_hours=trial.gpu_hours / share)


#: The precisions super-resolved images can be made in (see srfp.devices.image_precision).
PRECISIONS = ("float32", "bfloat16")


@dataclass(frozen=True)
class SuperresSettings:
    """How photos are super-resolved on Ray Data."""

    batch_size: int = at_least(1, default=1)
    actor: Resources = field(default_factory=lambda: Resources(cpus=2, gpus=0.5))
    #: Ray Data actors at most; 0: one per batch of photos.
    actors: int = at_least(0, default=0)
    #: Tiles of this many LR pixels a side, each run with the model's receptive radius of context so that the
    #: output is the whole photo's (:func:`srfp.superres.core.tiling`); 0: whole photos.
    tile_size: int = at_least(0, default=0)
    #: Rows in each Parquet part of a shard: part k holds the manifest's photos k * rows_per_file onwards.
    rows_per_file: int = at_least(1, default=100)
    #: float32: no autocast and TF32 off, so images do not depend on a GPU's reduced precisions; bfloat16
    #: only by explicit choice. Each shard's marker records the precision it was made in.
    precision: str = choices(*PRECISIONS, default="float32")


@dataclass(frozen=True)
class ClassifierSettings:
    """How attribution and parser classifiers are trained on Ray Train."""

    backbone: str = choices(*BACKBONES, default="xception")
    #: ImageNet weights through timm; false (random initialisation) only by explicit choice.
    pretrained: bool = True
    #: A local file with the backbone's ImageNet weights, instead of timm's download.
    weights: str = ""
    crop_size: int = at_least(1, default=299)
    #: Random crops taken from each training image per epoch (the study: 1; more for small photo sets).
    crops_per_image: int = at_least(1, default=1)
    batch_size: int = at_least(1, default=16)
    #: Rows mixed in the local shuffle buffer (shards are ordered by model).
    shuffle_buffer: int = at_least(0, default=1000)
    #: Seeds the new final layer's initialisation and, per epoch, the block order, the shuffle and the crops.
    seed: int = 0
    #: Ray Data delivers rows in a fixed order, so that two runs train alike (see README for its cost).
    preserve_order: bool = True
    head_epochs: int = at_least(0, default=3)
    finetune_epochs: int = at_least(0, default=15)
    learning_rate: float = positive(default=5e-4)
    plateau_patience: int = at_least(0, default=3)
    #: Recompute batch-norm statistics from this many of an epoch's last training batches after each
    #: fine-tuning epoch, before validation: for short trainings (a few hundred steps), whose running
    #: averages lag behind the weights. 0: off (the study).
    recalibrate_batch_norm: int = at_least(0, default=0)
    #: Resources of the one Ray Train worker of each task; the batch is the study's whatever the cluster.
    worker: Resources = field(default_factory=lambda: Resources(cpus=8, gpus=1, gpu_hours=6))
    #: Tasks trained side by side (one Ray Tune trial each); 0: as many as the cluster's GPUs (or CPUs) fit.
    max_concurrent_tasks: int = at_least(0, default=0)
    vote_size: int = at_least(1, default=10)
    vote_repeats: int = at_least(1, default=1000)
    max_failures: int = at_least(0, default=2)
    #: `predict --backbone` with this classifier calls an image unknown when its unknown-model score flags no
    #: more than this share of the known models' validation images (as spectral.false_alarm_rate).
    false_alarm_rate: float = share(default=0.05)

    def __post_init__(self):
        _require_cpus(self.worker, "classifier.worker")


@dataclass(frozen=True)
class SpectralSettings:
    """The spectral classifier (srfp.classify.spectral), run beside the backbone's for every task: the
    log-magnitude spectra of high-pass residual crops and a logistic regression, fitted in seconds."""

    enabled: bool = True
    #: Crops of this many pixels a side, on an evenly spaced grid of crops_per_side x crops_per_side.
    crop_size: int = at_least(2, default=64)
    crops_per_side: int = at_least(1, default=4)
    #: Each crop's spectrum is average-pooled to pool x pool values (crop_size must be a multiple of it).
    pool: int = at_least(1, default=16)
    #: The logistic regression's inverse regularisation strength (scikit-learn's C) and iteration limit.
    regularization: float = positive(default=1.0)
    max_iter: int = at_least(1, default=1000)
    #: CPUs of each Ray task computing a model's features or fitting a task.
    cpus: float = positive(default=1.0)
    #: `predict` calls an image unknown when its unknown-model score (1 - the attribution's highest probability)
    #: is above the value that flags no more than this share of the known models' validation images.
    false_alarm_rate: float = share(default=0.05)

    def __post_init__(self):
        if self.crop_size % self.pool:
            raise SchemaError(f"spectral.pool: {self.pool} is not allowed; expected a divisor of spectral.crop_size "
                              f"({self.crop_size})")


@dataclass(frozen=True)
class ParserGroup:
    """Parsers for one target, one per held-out value (see srfp.tasks for the value names)."""

    target: str = choices(*TARGETS)
    holdouts: list[str] = field(default_factory=list)
    exclude_seeds: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class PublishedSettings:
    """The native published models of ``grids/published.yaml``, which ``run`` super-resolves after the grid's."""

    #: The folder of their official weights (``published fetch --dest``); null: ``run`` skips them with a note.
    weights: str | None = None


@dataclass(frozen=True)
class TaskSettings:
    """The classifiers of the study: attribution, holdout parsers, and parsers trained on every model."""

    attribution: bool = True
    parsers: list[ParserGroup] = field(default_factory=list)
    all_model_parsers: list[str] = choices(*TARGETS, default_factory=list)


#: A grid's name: one path component, since it names the run's folder (``srfp-runs/<name>``).
GRID_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class GridSpec:
    """A whole grid file."""

    name: str
    models: ModelGrid
    data: DataSettings
    photos: PhotoSettings = field(default_factory=PhotoSettings)
    archs: dict[str, dict] = field(default_factory=dict)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    superres: SuperresSettings = field(default_factory=SuperresSettings)
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)
    spectral: SpectralSettings = field(default_factory=SpectralSettings)
    tasks: TaskSettings = field(default_factory=TaskSettings)
    published: PublishedSettings = field(default_factory=PublishedSettings)
    description: str = ""
    source: str = ""

    def __post_init__(self):
        if not GRID_NAME.fullmatch(self.name) or self.name in (".", ".."):
            raise SchemaError(f"name: {self.name!r} is not allowed; expected one folder name of letters, digits, "
                              f"-, _ and . (it names the run's folder under srfp-runs/)")
        for arch in self.archs:
            if arch not in ARCHS:
                raise SchemaError(f"archs.{arch}: unknown architecture; allowed values: {', '.join(ARCHS)}")
        if self.classifier.crop_size > self.photos.long_side:
            raise SchemaError(f"classifier.crop_size: {self.classifier.crop_size} is not allowed; expected at most "
                              f"photos.long_side ({self.photos.long_side}), the photos' longest side")
        if self.spectral.enabled and self.spectral.crop_size > self.photos.long_side:
            raise SchemaError(f"spectral.crop_size: {self.spectral.crop_size} is not allowed; expected at most "
                              f"photos.long_side ({self.photos.long_side}), the photos' longest side")
        training = self.training
        for scale in self.models.scales:
            if scale not in training.patch_size:
                raise SchemaError(f"training.patch_size: no patch size for scale {scale}; "
                                  f"give one for each of models.scales {self.models.scales}")
            if training.patch_size[scale] % scale:
                raise SchemaError(f"training.patch_size.{scale}: {training.patch_size[scale]} is not allowed; "
                                  f"expected a multiple of the scale {scale}")
        if training.adversarial.patch_size % 32 or training.adversarial.patch_size % max(self.models.scales):
            raise SchemaError(f"training.adversarial.patch_size: {training.adversarial.patch_size} is not allowed; "
                              f"expected a multiple of 32 and of every scale (the discriminator halves it 5 times)")

    def specs(self) -> list[SISRSpec]:
        return self.models.specs()


BUNDLED_GRIDS = ("smoke", "paper")


def resolve_grid_path(name_or_path: str | Path) -> Path:
    """A grid file path, or the name of a grid shipped with srfp (``smoke``, ``paper``)."""
    path = Path(name_or_path)
    if path.is_file():  # a folder named like a bundled grid (a run's root, say) is not a grid file
        return path
    if str(name_or_path) in BUNDLED_GRIDS:
        return Path(str(resources.files("srfp.grids") / f"{name_or_path}.yaml"))
    raise GridError(f"{name_or_path}: no such grid file; give a path to a YAML file "
                    f"or one of the bundled grids: {', '.join(BUNDLED_GRIDS)}")


#: Fields earlier versions took, with what replaced them.
REMOVED_FIELDS = {
    ("classifier", "workers"): "each classifier trains on one Ray Train worker with the study's batch "
                               "(classifier.batch_size), whatever the number of GPUs; tasks run side by side "
                               "instead (classifier.max_concurrent_tasks). Remove the field",
    ("superres", "tile_overlap"): "tiles overlap by each model's receptive radius, computed from its architecture, "
                                  "so that tiled images equal whole ones (models with attention over the whole image "
                                  "run on whole photos). Remove the field",
}


def _refuse_removed_fields(data) -> None:
    for (section, name), replacement in REMOVED_FIELDS.items():
        if isinstance(data, dict) and isinstance(data.get(section), dict) and name in data[section]:
            raise SchemaError(f"{section}.{name}: no longer a setting: {replacement}")


def load_grid(name_or_path: str | Path) -> GridSpec:
    """Read and validate a grid file; raises :class:`GridError` naming the file and the bad field."""
    path = resolve_grid_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise GridError(f"{path}: not valid YAML: {error}") from None
    try:
        _refuse_removed_fields(data)
        grid = build(GridSpec, data, where="")
    except SchemaError as error:
        raise GridError(f"{path}: {error}") from None
    grid = dataclasses.replace(grid, source=str(path))
    from srfp.sisr.archs import check_options  # imports torch: here, not when gridspec is imported
    from srfp.tasks import tasks_of  # validates every holdout against the grid's own models

    for arch, options in grid.archs.items():
        try:
            check_options(arch, options)
        except ValueError as error:
            raise GridError(f"{path}: archs.{error}") from None
    try:
        tasks_of(grid)
    except ValueError as error:
        raise GridError(f"{path}: {error}") from None
    return grid
