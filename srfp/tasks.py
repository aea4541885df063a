"""Classification tasks: attribution over models, and parsers that infer one hyperparameter.

A parser with a holdout is trained on the models without the held-out value and tested on the
models with it (the study's Table 3); an all-model parser is trained on every model and used on
published ones. Holdout values are named by short case-insensitive tokens: ``L1``, ``rcan``,
``resnet_gan``, ``flickr2k``, ``s3``...
"""

from __future__ import annotations

from dataclasses import dataclass

from srfp.errors import UserError
from srfp.spec import ARCHS, DATASETS, LOSSES, SCALES, TARGETS, VALUE_PREFIXES, SISRSpec

#: Other spellings users (and the paper) use for loss values.
LOSS_ALIASES = {"vgg+adv": "VGG_GAN", "resnet+adv": "ResNet_GAN"}


class HoldoutError(UserError, ValueError):
    """An unknown holdout value, or a holdout that does not fit a task."""


@dataclass(frozen=True)
class Holdout:
    """One held-out hyperparameter value, e.g. ``Holdout("arch", "RCAN")``."""

    attribute: str
    value: str | int

    @property
    def token(self) -> str:
        return f"{VALUE_PREFIXES.get(self.attribute, '')}{self.value}"

    def matches(self, spec: SISRSpec) -> bool:
        return spec.value(self.attribute) == self.value


def holdout_vocabulary(seeds=(1, 2, 3)) -> dict[str, Holdout]:
    """Every holdout token, lower-cased, mapped to its hyperparameter value."""
    vocabulary = {}
    for attribute, values in (("arch", ARCHS), ("dataset", DATASETS), ("loss", LOSSES)):
        for value in values:
            vocabulary[value.lower()] = Holdout(attribute, value)
    for alias, loss in LOSS_ALIASES.items():
        vocabulary[alias] = Holdout("loss", loss)
    for scale in SCALES:
        vocabulary[f"x{scale}"] = Holdout("scale", scale)
    for seed in seeds:
        vocabulary[f"s{seed}"] = Holdout("seed", seed)
    return vocabulary


def parse_holdout(token: str, seeds=(1, 2, 3)) -> Holdout:
    """Resolve a holdout token; unknown tokens raise an error listing every valid one."""
    vocabulary = holdout_vocabulary(seeds)
    holdout = vocabulary.get(str(token).lower())
    if holdout is None:
        valid = sorted({h.token for h in vocabulary.values()}, key=str.lower)
        raise HoldoutError(f"unknown holdout value {token!r}; valid values: {', '.join(valid)}")
    return holdout


#: Which models a task is about: the grid's own (custom) or published and external ones.
POPULATIONS = ("custom", "published")


@dataclass(frozen=True)
class Task:
    """A classifier to train: its label (``model_id`` for attribution) and which models it sees.

    ``holdout`` None with target != model_id means an all-model parser. Models are grid specs or the
    ``ModelInfo`` of super-resolved shards; a task over the ``published`` population (attribution of
    published models) uses only models whose source is not ``custom``.
    """

    target: str
    holdout: Holdout | None = None
    exclude_seeds: tuple[int, ...] = ()
    population: str = "custom"
    #: Another task whose classifier's backbone this one starts from (the study's published-model
    #: attribution starts from the custom-model attribution's weights).
    init_from: str | None = None

    @property
    def kind(self) -> str:
        return "attribution" if self.target == "model_id" else "parser"

    @property
    def name(self) -> str:
        if self.kind == "attribution":
            return "attribution" + ("-published" if self.population == "published" else "")
        return f"parse-{self.target}-" + (f"holdout-{self.holdout.token}" if self.holdout else "all")

    def eligible(self, specs: list) -> list:
        custom = self.population == "custom"
        return [s for s in specs if (getattr(s, "source", "custom") == "custom") == custom
                and s.seed not in self.exclude_seeds]

    def train_models(self, specs: list[SISRSpec]) -> list[SISRSpec]:
        """Models whose images train the classifier (their train and val photos)."""
        eligible = self.eligible(specs)
        if self.holdout is None:
            return eligible
        return [s for s in eligible if not self.holdout.matches(s)]

    def test_models(self, specs: list[SISRSpec]) -> list[SISRSpec]:
        """Models whose test photos evaluate it: the held-out ones for a holdout parser, else all."""
        eligible = self.eligible(specs)
        if self.holdout is None:
            return eligible
        return [s for s in eligible if self.holdout.matches(s)]

    def labels(self, specs: list[SISRSpec]) -> list:
        """The classes, in a stable order, from the training models."""
        return sorted({s.value(self.target) for s in self.train_models(specs)}, key=str)

    def validate(self, specs: list[SISRSpec]) -> None:
        """Check the task makes sense on these models; raise :class:`HoldoutError` saying why not."""
        if self.holdout and self.holdout.attribute == self.target:
            raise HoldoutError(f"{self.name}: cannot hold out a value of the target ({self.target}) itself")
        train, test = self.train_models(specs), self.test_models(specs)
        if not test:
            raise HoldoutError(f"{self.name}: no model of the grid has {self.holdout.attribute} = {self.holdout.value!r}")
        if not train:
            raise HoldoutError(f"{self.name}: no model is left to train on")
        if self.kind == "parser":
            labels = set(self.labels(specs))
            if len(labels) < 2:
                raise HoldoutError(f"{self.name}: the training models have only one {self.target} ({labels.pop()!r})")
            unseen = sorted({s.value(self.target) for s in test} - labels, key=str)
            if unseen:
                raise HoldoutError(f"{self.name}: test models have {self.target} {unseen} that no training model has")


def attribution_task(population: str = "custom", init_from: str | None = None) -> Task:
    return Task(target="model_id", population=population, init_from=init_from)


def parser_task(target: str, holdout: str | None, exclude_seeds=(), seeds=(1, 2, 3)) -> Task:
    return Task(target=target, holdout=parse_holdout(holdout, seeds) if holdout else None,
                exclude_seeds=tuple(exclude_seeds))


def tasks_of(grid) -> list[Task]:
    """Every classifier task a grid file asks for, validated against its models."""
    specs = grid.specs()
    seeds = tuple(grid.models.seeds)
    tasks = [attribution_task()] if grid.tasks.attribution else []
    for index, group in enumerate(grid.tasks.parsers):
        for position, token in enumerate(group.holdouts):
            try:
                tasks.append(parser_task(group.target, token, group.exclude_seeds, seeds))
            except HoldoutError as error:
                raise HoldoutError(f"tasks.parsers[{index}].holdouts[{position}]: {error}") from None
    tasks += [parser_task(target, None) for target in grid.tasks.all_model_parsers]
    for task in tasks:
        task.validate(specs)
    return tasks


def grid_exclude_seeds(grid, target: str) -> tuple[int, ...]:
    """The seeds the grid's parsers for ``target`` leave out (the study's dataset parsers: 2 and 3)."""
    return tuple(sorted({seed for group in grid.tasks.parsers if group.target == target for seed in group.exclude_seeds}))


def parser_tasks(grid, holdout: str | None = None, target: str | None = None, every: bool = False) -> list[Task]:
    """The parsers ``parse`` runs: every one of the grid (``every``), one target's all-model parser, or a
    holdout's parsers (for ``target``, or for every target that the holdout leaves something to learn)."""
    if every:
        return [task for task in tasks_of(grid) if task.kind == "parser"]
    if holdout is None:
        if target is None:
            raise HoldoutError("say which parser: --holdout VALUE, --target TARGET (trained on every model), or --all")
        tasks = [parser_task(target, None)]
    else:
        seeds = tuple(grid.models.seeds)
        attribute = parse_holdout(holdout, seeds).attribute
        targets = [target] if target else [t for t in TARGETS if t != attribute]
        tasks = [parser_task(t, holdout, grid_exclude_seeds(grid, t), seeds) for t in targets]
    specs = grid.specs()
    if target is None and holdout is not None:
        valid = []
        for task in tasks:
            try:
                task.validate(specs)
                valid.append(task)
            except HoldoutError:
                continue
        if not valid:
            raise HoldoutError(f"holdout {holdout}: no target can be parsed with it on the models of grid {grid.name}")
        return valid
    for task in tasks:
        task.validate(specs)
    return tasks
