"""The plan: every model and classifier a grid asks for, and what it will cost. Every stage takes its work from here."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from srfp.calibration import Calibration, TrainingPhase
from srfp.errors import UserError
from srfp.gridspec import GridSpec
from srfp.spec import ARCHS, ATTRIBUTES, LOSSES, VALUE_PREFIXES, SISRSpec
from srfp.tasks import Task, parse_holdout, tasks_of


class SelectionError(UserError, ValueError):
    """An ``--only`` selection that names an unknown attribute or value."""


def parse_selection(text: str | None) -> dict[str, set[str]]:
    """``"arch=RCAN,scale=4"`` -> ``{"arch": {"RCAN"}, "scale": {"4"}}``; ``arch=EDSR|RCAN`` selects either."""
    selection: dict[str, set[str]] = {}
    if text is None:
        return selection
    for item in (part.strip() for part in text.split(",")):
        attribute, _, values = item.partition("=")
        if attribute not in ATTRIBUTES or not values:
            raise SelectionError(f"--only: {item!r} is not allowed; expected ATTRIBUTE=VALUE with ATTRIBUTE one of "
                                 f"{', '.join(ATTRIBUTES)}, e.g. arch=RCAN,scale=4")
        selection.setdefault(attribute, set()).update(values.split("|"))
    return selection


def _normalise(attribute: str, value) -> str:
    """Compare selection values case-insensitively, accepting ``x4`` for scale 4 and ``s2`` for seed 2."""
    text = str(value).lower()
    prefix = VALUE_PREFIXES.get(attribute)
    return text.removeprefix(prefix) if prefix else text


def select(specs: list[SISRSpec], text: str | None) -> list[SISRSpec]:
    """The models matching every ``attribute=value`` of the selection."""
    selection = parse_selection(text)
    for attribute, values in selection.items():
        present = {_normalise(attribute, s.value(attribute)) for s in specs}
        unknown = sorted(v for v in values if _normalise(attribute, v) not in present)
        if unknown:
            in_grid = ", ".join(sorted({str(s.value(attribute)) for s in specs}))
            raise SelectionError(f"--only: {attribute}={unknown[0]} matches no model of the grid; "
                                 f"values in the grid: {in_grid}")
    wanted = {a: {_normalise(a, v) for v in values} for a, values in selection.items()}
    return [s for s in specs if all(_normalise(a, s.value(a)) in values for a, values in wanted.items())]


#: The cluster sizes, in GPUs, the plan gives the measured training's wall-clock for.
WALL_CLOCK_GPUS = (1, 8, 16)


@dataclass(frozen=True)
class KindCost:
    """What training the models of one architecture, scale and loss costs; they cost alike whatever their
    dataset and seed. ``missing`` are the phases the calibration has no row for: then the grid's estimate
    (``training.trial.gpu_hours``) stands in."""

    arch: str
    scale: int
    loss: str
    trials: int
    gpu_hours_per_trial: float
    missing: list[TrainingPhase]


@dataclass(frozen=True)
class Plan:
    grid: GridSpec
    models: list[SISRSpec]
    tasks: list[Task]

    @classmethod
    def of(cls, grid: GridSpec, only: str | None = None) -> "Plan":
        return cls(grid=grid, models=select(grid.specs(), only), tasks=tasks_of(grid))

    def counts(self) -> dict[str, Counter]:
        return {a: Counter(s.value(a) for s in self.models) for a in ATTRIBUTES}

    def task(self, target: str, holdout: str | None) -> Task:
        """The grid's task for a target and holdout token (None: the all-model parser)."""
        wanted = parse_holdout(holdout, tuple(self.grid.models.seeds)) if holdout else None
        for task in self.tasks:
            if task.target == target and task.holdout == wanted:
                return task
        names = ", ".join(t.name for t in self.tasks)
        raise SelectionError(f"the grid has no task {target} with holdout {holdout}; its tasks: {names}")

    def training_gpu_hours(self) -> float:
        return sum(self.grid.training.trial_of(spec.arch).gpu_hours for spec in self.models)

    def classifier_gpu_hours(self) -> float:
        worker = self.grid.classifier.worker
        return len(self.tasks) * worker.gpu_hours * max(worker.gpus, 1)

    def training_costs(self, calibration: Calibration) -> list[KindCost]:
        """The training cost of each kind of model in the plan, by the calibration's measured rows."""
        training, kinds = self.grid.training, {}
        for spec in sorted(self.models, key=_kind_order):
            kinds.setdefault((spec.arch, spec.scale, spec.loss), []).append(spec)
        costs = []
        for (arch, scale, loss), (spec, *others) in kinds.items():
            measured = calibration.gpu_hours(spec, training)
            costs.append(KindCost(arch, scale, loss, 1 + len(others),
                                  training.trial_of(arch).gpu_hours if measured is None else measured,
                                  calibration.missing(spec, training)))
        return costs

    def render(self, calibration: Calibration | None = None) -> str:
        grid, lines = self.grid, []
        lines.append(f"grid {grid.name} ({grid.source}): {len(self.models)} models, {len(self.tasks)} classifier tasks")
        lines.append("")
        lines.append("models:")
        lines += [f"  {s.model_id}" for s in self.models]
        lines.append("")
        lines.append("models by hyperparameter:")
        for attribute, counter in self.counts().items():
            parts = ", ".join(f"{value}: {n}" for value, n in sorted(counter.items(), key=lambda kv: str(kv[0])))
            lines.append(f"  {attribute:<8} {parts}")
        lines.append("")
        lines.append("classifier tasks (training models / test models):")
        for task in self.tasks:
            train, test = task.train_models(self.models), task.test_models(self.models)
            note = "" if task.holdout else ("  (test: held-out photos of every model)")
            lines.append(f"  {task.name:<32} {len(train):>4} / {len(test):<4} classes: {len(task.labels(self.models))}{note}")
        lines.append("")
        lines += self._measured_training_lines(calibration) if calibration else self._estimated_training_lines()
        shares = " / ".join(f"{split} {share}" for split, share in grid.photos.split.items())
        lines.append(f"  superresolve  {len(self.models)} models x every photo of the manifest (split {shares})")
        lines.append(f"  classifiers   {len(self.tasks)} tasks x {grid.classifier.worker.gpu_hours:g} GPU-h = "
                     f"{self.classifier_gpu_hours():g} GPU-hours ({grid.classifier.worker.gpus:g} GPU per task)")
        return "\n".join(lines)

    def _estimated_training_lines(self) -> list[str]:
        training, lines = self.grid.training, ["rough cost (from the grid's per-trial estimates):"]
        archs = Counter(spec.arch for spec in self.models)
        trials = {arch: training.trial_of(arch) for arch in archs}
        if len(set(trials.values())) <= 1:
            trial = next(iter(trials.values()), training.trial)
            lines.append(f"  training      {len(self.models)} trials x {trial.gpu_hours:g} GPU-h = "
                         f"{self.training_gpu_hours():g} GPU-hours ({trial.gpus:g} GPU, {trial.cpus:g} CPU per trial)")
            return lines
        lines.append(f"  training      {len(self.models)} trials = {self.training_gpu_hours():g} GPU-hours")
        for arch, trial in trials.items():
            lines.append(f"                {arch:<5} {archs[arch]:>4} trials x {trial.gpu_hours:g} GPU-h ({trial.gpus:g} GPU, "
                         f"{trial.cpus:g} CPU per trial: {training.trials_per_gpu.get(arch, 1)} per GPU)")
        return lines

    def _measured_training_lines(self, calibration: Calibration) -> list[str]:
        training, costs = self.grid.training, self.training_costs(calibration)
        lines = [f"cost (training measured, from {calibration.source}; superresolve and classifiers from the grid's "
                 f"estimates):",
                 f"  measured on   {calibration.device}, torch {calibration.torch}, commit {calibration.commit}, "
                 f"{calibration.measured}",
                 "  training      kind of model        GPU-s per model-iteration   GPU-h per trial   trials     GPU-h"]
        for cost in costs:
            kind = f"{cost.arch} x{cost.scale} {cost.loss}"
            per_iteration = cost.gpu_hours_per_trial * 3600 / training.iterations
            note = "  estimate" if cost.missing else ""
            lines.append(f"                {kind:<20} {per_iteration:>25.4g} {cost.gpu_hours_per_trial:>17.4g} "
                         f"{cost.trials:>8} {cost.gpu_hours_per_trial * cost.trials:>9.4g}{note}")
        missing = [phase for cost in costs for phase in cost.missing]
        if missing:
            lines.append(f"  estimate      no measured row, so the grid's training.trial.gpu_hours "
                         f"({training.trial.gpu_hours:g} GPU-h per trial) stands in, for:")
            lines += [f"                  {phase.describe()}" for phase in missing]
        measured = sum(c.gpu_hours_per_trial * c.trials for c in costs if not c.missing)
        estimated = sum(c.gpu_hours_per_trial * c.trials for c in costs if c.missing)
        total = measured + estimated
        lines.append(f"  training      {len(self.models)} trials = {total:.4g} GPU-hours "
                     f"({measured:.4g} measured + {estimated:.4g} estimated)")
        clock = ", ".join(f"{gpus} GPU{'s' if gpus > 1 else ''} {total / gpus:.4g} h ({total / gpus / 24:.1f} days)"
                          for gpus in WALL_CLOCK_GPUS)
        lines.append(f"  wall-clock    training on {clock}, with every GPU busy")
        return lines


def _kind_order(spec: SISRSpec) -> tuple:
    return ARCHS.index(spec.arch), spec.scale, LOSSES.index(spec.loss)
