"""The plan: every model and classifier a grid asks for, and what it will cost. Every stage takes its work from here."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from srfp.errors import UserError
from srfp.gridspec import GridSpec
from srfp.spec import ATTRIBUTES, VALUE_PREFIXES, SISRSpec
from srfp.tasks import Task, parse_holdout, tasks_of


class SelectionError(UserError, ValueError):
    """An ``--only`` selection that names an unknown attribute or value."""


def parse_selection(text: str | None) -> dict[str, set[str]]:
    """``"arch=RCAN,scale=4"`` -> ``{"arch": {"RCAN"}, "scale": {"4"}}``; ``arch=EDSR|RCAN`` selects either."""
    selection: dict[str, set[str]] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
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
        return len(self.models) * self.grid.training.trial.gpu_hours

    def classifier_gpu_hours(self) -> float:
        worker = self.grid.classifier.worker
        return len(self.tasks) * worker.gpu_hours * max(worker.gpus, 1)

    def render(self) -> str:
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
        trial = grid.training.trial
        lines.append("rough cost (from the grid's per-trial estimates):")
        lines.append(f"  training      {len(self.models)} trials x {trial.gpu_hours:g} GPU-h = {self.training_gpu_hours():g} GPU-hours"
                     f" ({trial.gpus:g} GPU, {trial.cpus:g} CPU per trial)")
        shares = " / ".join(f"{split} {share}" for split, share in grid.photos.split.items())
        lines.append(f"  superresolve  {len(self.models)} models x every photo of the manifest (split {shares})")
        lines.append(f"  classifiers   {len(self.tasks)} tasks x {grid.classifier.worker.gpu_hours:g} GPU-h = "
                     f"{self.classifier_gpu_hours():g} GPU-hours ({grid.classifier.worker.gpus:g} GPU per task)")
        return "\n".join(lines)
