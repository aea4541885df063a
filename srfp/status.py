"""What each stage has finished, read from the storage root alone (no Ray, no running job needed)."""

from __future__ import annotations

from srfp.classify.loop import read_progress
from srfp.classify.results import is_complete, read_result, task_folder
from srfp.gridspec import ClassifierSettings
from srfp.lease import running
from srfp.photos import MANIFEST
from srfp.plan import Plan
from srfp.published import load_catalogue
from srfp.sisr.train import is_trained, training_progress
from srfp.storage import Storage
from srfp.superres.shards import complete_models, shard_status
from srfp.tasks import Task, attribution_task


def render_status(plan: Plan, storage: Storage) -> str:
    lines = [f"status of {storage.uri} (grid {plan.grid.name}, {len(plan.models)} models)",
             *(f"running       {holder.stage}: {holder.describe()}" for holder in running(storage)),
             f"photos        {'built' if storage.is_file(MANIFEST) else 'missing: run `photos`'}"]
    trained = superresolved = 0
    rows = []
    for spec in plan.models:
        model_id = spec.model_id
        training = model_training_state(storage, model_id)
        shard = shard_status(storage, model_id)
        trained += training == "trained"
        superresolved += shard.state == "complete"
        rows.append(f"  {model_id:<36} {training:<36} superres: {shard.state}"
                    + (f" ({shard.rows} images)" if shard.state == "complete" else ""))
    lines.append(f"train         {trained} of {len(plan.models)} models trained")
    lines.append(f"superresolve  {superresolved} of {len(plan.models)} shards complete")
    tasks = classifier_lines(plan, storage)
    lines.append(f"classify      {sum('accuracy' in line for line in tasks)} of {len(tasks)} classifiers complete "
                 f"({plan.grid.classifier.backbone})")
    report = storage.uri_of("report/report.md") if storage.is_file("report/report.md") else None
    lines.append(f"report        {'written: ' + report if report else 'not written: run `report`'}")
    return "\n".join(lines + ["", "models:"] + rows + ["", "classifiers:"] + tasks + ["", *published_lines(plan, storage)])


def published_lines(plan: Plan, storage: Storage) -> list[str]:
    """The published and external models with complete shards (ingested or made by ``published superresolve``),
    the classifier that attributes them, and the catalogue's published models with their shards' states and,
    when the grid names a weights folder (``published.weights``), whether their weights are there."""
    models = [model for model in complete_models(storage) if model.source != "custom"]
    rows = [f"  {model.model_id:<42} {model.source:<10} {model.display_name}: dataset {model.dataset}, loss "
            f"{model.loss} ({shard_status(storage, model.model_id).rows} images)" for model in models]
    task = attribution_task("published", init_from="attribution")
    return [f"published and external models with complete shards: {len(models)}"
            + ("" if len(models) >= 2 else " (attributing them needs two: `ingest` or `published superresolve`)"),
            *rows, *_task_lines(plan.grid.classifier, [task], storage), "",
            *load_catalogue().render(storage, plan.grid.published.weights)]


def model_training_state(storage: Storage, model_id: str) -> str:
    """trained, the iteration of its last checkpoint (from the small progress file beside it), or not trained."""
    if is_trained(storage, model_id):
        return "trained"
    progress = training_progress(storage, model_id)
    return f"training: iteration {progress['iteration']} of {progress['iterations']}" if progress else "not trained"


def classifier_lines(plan: Plan, storage: Storage) -> list[str]:
    return _task_lines(plan.grid.classifier, plan.tasks, storage)


def _task_lines(settings: ClassifierSettings, tasks: list[Task], storage: Storage) -> list[str]:
    """Each task's test accuracy, or the epoch its training has reached."""
    epochs = settings.head_epochs + settings.finetune_epochs
    lines = []
    for task in tasks:
        folder = task_folder(settings.backbone, task)
        if is_complete(storage, folder):
            summary = read_result(storage, folder)["summary"]
            state = f"test accuracy {summary['accuracy_1_image']:.3f} (chance {summary['chance']:.3f})"
        else:
            progress = read_progress(storage, folder)
            state = f"training: epoch {progress['epoch']} of {epochs}" if progress else "not started"
        lines.append(f"  {task.name:<36} {state}")
    return lines
