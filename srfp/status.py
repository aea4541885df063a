"""What each stage has finished, read from the storage root alone (no Ray, no running job needed)."""

from __future__ import annotations

from srfp.classify.loop import read_progress
from srfp.classify.results import is_complete, read_result, task_folder
from srfp.lease import running
from srfp.photos import MANIFEST
from srfp.plan import Plan
from srfp.sisr.train import is_trained, training_progress
from srfp.storage import Storage
from srfp.superres.shards import shard_status


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
    return "\n".join(lines + ["", "models:"] + rows + ["", "classifiers:"] + tasks)


def model_training_state(storage: Storage, model_id: str) -> str:
    """trained, the iteration of its last checkpoint (from the small progress file beside it), or not trained."""
    if is_trained(storage, model_id):
        return "trained"
    progress = training_progress(storage, model_id)
    return f"training: iteration {progress['iteration']} of {progress['iterations']}" if progress else "not trained"


def classifier_lines(plan: Plan, storage: Storage) -> list[str]:
    settings = plan.grid.classifier
    epochs = settings.head_epochs + settings.finetune_epochs
    lines = []
    for task in plan.tasks:
        folder = task_folder(settings.backbone, task)
        if is_complete(storage, folder):
            summary = read_result(storage, folder)["summary"]
            state = f"test accuracy {summary['accuracy_1_image']:.3f} (chance {summary['chance']:.3f})"
        else:
            progress = read_progress(storage, folder)
            state = f"training: epoch {progress['epoch']} of {epochs}" if progress else "not started"
        lines.append(f"  {task.name:<36} {state}")
    return lines
