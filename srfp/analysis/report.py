"""The report: the study's tables and figures from whatever a run has computed.

``write_report`` reads the storage root only (models, shards, classifier predictions) and writes
``report/report.md``, ``report/tables/*.csv`` and ``report/figures/*.png``. Each section says what it
still lacks and which command computes it, so a partial run gives a partial report.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from srfp.analysis import figures, openset
from srfp.analysis.accuracy import grouped_accuracy, seed_triplet_accuracy, vote_accuracy
from srfp.analysis.acutance import acutance_baseline
from srfp.analysis.measures import image_measures
from srfp.analysis.perceptual import LPIPS_SPLIT, lpips_of_models
from srfp.classify.results import all_results, read_predictions
from srfp.gridspec import GridSpec
from srfp.photos import MANIFEST, read_manifest
from srfp.pretrained import WeightsUnavailableError
from srfp.spec import TARGETS, PublishedModel
from srfp.storage import Storage
from srfp.superres.shards import ModelInfo, complete_models, read_shard
from srfp.tasks import tasks_of

#: Table 6's published models, at x4 (the paper's names).
TABLE6_PUBLISHED = ("EDSR", "RDN", "RCAN", "ESRGAN", "EnhanceNet")


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)

    def table(self, name: str, frame: pd.DataFrame, caption: str) -> None:
        self.tables[name] = frame
        self.lines += [f"{caption} (`tables/{name}.csv`)", "", markdown_table(frame), ""]

    def figure(self, name: str, png: bytes, caption: str) -> None:
        self.figures[name] = png
        self.lines += [f"![{caption}](figures/{name}.png)", "", f"*{caption}*", ""]

    def missing(self, what: str, command: str) -> None:
        self.lines += [f"> Not computed yet: {what}. Run `{command}`.", ""]


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, (float, np.floating)) else str(value)
    rows = [" | ".join(map(str, frame.columns)), " | ".join("---" for _ in frame.columns)]
    rows += [" | ".join(cell(v) for v in record) for record in frame.itertuples(index=False)]
    return "\n".join(f"| {row} |" for row in rows)


def _predictions(storage: Storage, result: dict) -> pd.DataFrame:
    return read_predictions(storage, result["folder"])


def model_quality(storage: Storage, models: list[ModelInfo], log=print) -> Section:
    """Table 6: PSNR over the photo set and on the validation images of training, and LPIPS on the test
    photos where the AlexNet weights are available, per model."""
    section = Section("Model quality (Table 6)")
    if not models:
        section.missing("super-resolved photos", "python -m srfp.grid superresolve")
        return section
    table = pd.DataFrame([{"model_id": model.model_id, "photo_psnr_db": float(np.mean(
        read_shard(storage, model.model_id, columns=["psnr"]).column("psnr").to_numpy()))} for model in models])
    if storage.is_file("models/psnr.csv"):
        validation = pd.read_csv(io.BytesIO(storage.read_bytes("models/psnr.csv")))
        table = table.merge(validation.rename(columns={"val_psnr": "validation_psnr_db"})[["model_id", "validation_psnr_db"]],
                            on="model_id", how="left")
    caption = ("Y-PSNR (dB, border of the scale cropped) of each model: mean over the photo set, and on the "
               "validation images at the end of training")
    try:
        distances = lpips_of_models(storage, models, log)
        table = table.merge(distances.groupby("model_id", as_index=False)["lpips"].mean()
                            .rename(columns={"lpips": f"{LPIPS_SPLIT}_lpips"}), on="model_id", how="left")
        caption += f"; LPIPS (v0.1, AlexNet; lower is closer to the photo): mean over the {LPIPS_SPLIT} photos"
    except WeightsUnavailableError as error:
        section.lines += [f"> LPIPS not computed: {error}. Then run `python -m srfp.grid report` again.", ""]
    section.table("model_quality", table, caption)
    published_beside_custom(section, table, models)
    return section


def published_beside_custom(section: Section, quality: pd.DataFrame, models: list[ModelInfo]) -> None:
    """Table 6's published rows: the x4 models of :data:`TABLE6_PUBLISHED` beside the custom x4 models' averages
    per architecture and loss; a published model without a complete shard is shown as missing."""
    info = pd.DataFrame([vars(model) for model in models])
    quality = quality.merge(info[["model_id", "source", "arch", "scale", "loss"]], on="model_id")
    measures = [column for column in quality.columns if column.endswith(("psnr_db", "lpips"))]
    custom = quality[(quality.source == "custom") & (quality.scale == 4)]
    rows = [{"model": f"custom {arch} {loss}", "models": len(group), "state": "complete", **group[measures].mean()}
            for (arch, loss), group in custom.groupby(["arch", "loss"])]
    missing = []
    for name in TABLE6_PUBLISHED:
        found = quality[quality.model_id == PublishedModel(name, 4).model_id]
        rows.append({"model": f"{name} x4 (published)", "models": len(found),
                     "state": "complete" if len(found) else "missing", **found[measures].mean()})
        missing += [] if len(found) else [name]
    section.table("model_quality_published", pd.DataFrame(rows), "Published x4 models beside the custom x4 models' "
                  "averages (per architecture and loss), as the study's Table 6")
    if missing:
        section.missing(f"the x4 shards of {', '.join(missing)} (EnhanceNet's images are ingested, as "
                        "grids/published.yaml says)", "python -m srfp.grid published superresolve --weights DIR")


def photo_credit(manifest: pd.DataFrame | None) -> list[str]:
    """Lines crediting a photo set collected from Flickr: its licences, and where each photo's credit is."""
    if manifest is None or "license" not in manifest or manifest["license"].isna().all():
        return []
    licences = manifest["license"].fillna("no listed source").value_counts()
    listed = ", ".join(f"{count} under {name}" for name, count in licences.items())
    return [f"The {len(manifest)} photos come from Flickr ({listed}). Each photo's owner, licence and page are in "
            "`photos/manifest.parquet` (columns owner_name, license, license_url, page_url); credit the photos as "
            "their licences require wherever they or images made from them are shared.", ""]


def dataset_statistics(measures: pd.DataFrame, manifest: pd.DataFrame | None) -> Section:
    """Table 5: images, pixels, PNG bits per pixel and greyscale entropy, by source and scale; the photos' credit."""
    section = Section("Dataset statistics (Table 5)")
    section.lines += photo_credit(manifest)
    if measures.empty:
        section.missing("super-resolved photos", "python -m srfp.grid superresolve")
        return section
    table = measures.groupby(["source", "scale"]).agg(
        models=("model_id", "nunique"), images=("image_id", "size"), pixels_per_image=("pixels", "mean"),
        png_bits_per_pixel=("png_bits_per_pixel", "mean"), grey_entropy_bits=("grey_entropy", "mean")).reset_index()
    section.table("dataset_statistics", table, "Super-resolved images by source and scale (means per image)")
    return section


def _headline(result: dict) -> dict:
    summary = result["summary"]
    return {"backbone": result["backbone"], "models": summary["models"], "test_images": summary["images"],
            "chance": summary["chance"], "accuracy_1_image": summary["accuracy_1_image"],
            f"accuracy_{summary['vote_size']}_image_vote": summary["accuracy_vote"],
            "accuracy_mean_probability_vote": summary["accuracy_vote_mean_probability"]}


def attribution(grid: GridSpec, storage: Storage, result: dict | None, spectral: dict | None = None) -> Section:
    """Table 2 (accuracy grouped by each hyperparameter; the headline also with the spectral classifier) and
    Figure 3 (seed triplets)."""
    section = Section("Attribution (Table 2, Figure 3)")
    if result is None:
        section.missing("the attribution classifier", "python -m srfp.grid attribute")
        return section
    settings = grid.classifier
    predictions = _predictions(storage, result)
    scored = predictions[predictions.role == "test"]
    section.table("attribution", pd.DataFrame([_headline(r) for r in (result, spectral) if r]),
                  f"Attribution over {result['summary']['classes']} models, by classifier")
    grouped = []
    for attribute in ("scale", "loss", "arch", "dataset"):
        table = grouped_accuracy(scored, attribute)
        table[f"accuracy_{settings.vote_size}_image_vote"] = [
            vote_accuracy(scored[scored[attribute] == value], result["labels"], settings.vote_size, settings.vote_repeats)
            for value in table["value"]]
        grouped.append(table)
    section.table("attribution_by_hyperparameter", pd.concat(grouped, ignore_index=True),
                  "Attribution accuracy for the test images of the models with each hyperparameter value")
    triplets = seed_triplet_accuracy(scored, result["labels"])
    if triplets.empty:
        section.lines += ["No seed triplets: the grid has no models that differ only in their seed "
                          "(the paper grid trains seeds 2 and 3 on DIV2K).", ""]
    else:
        by_group = triplets.groupby(["scale", "loss"])["correct"].agg(["mean", "size"]).reset_index()
        by_group = pd.concat([by_group, pd.DataFrame([{"scale": "all", "loss": "all", "mean": triplets["correct"].mean(),
                                                        "size": len(triplets)}])], ignore_index=True)
        section.table("seed_triplets", by_group.rename(columns={"mean": "accuracy", "size": "images"}),
                      "Seed triplets: how often an image's own model scores highest among its seed-mates")
        section.figure("seed_triplets", figures.seed_triplet_figure(triplets), "Seed-triplet accuracy by scale and loss")
    return section


def parsers(grid: GridSpec, results: dict[str, dict], spectral: dict[str, dict] | None = None) -> Section:
    """Table 3: each parser's 1-image / N-image accuracy on its held-out value, and chance (a second row per
    target for the spectral classifier, when it ran)."""
    section = Section("Parsers on held-out values (Table 3)")
    holdout_tasks = [task for task in tasks_of(grid) if task.kind == "parser" and task.holdout]
    rows, tokens = {}, []
    backbones = [(grid.classifier.backbone, results)] + ([("spectral", spectral)] if spectral else [])
    for task, (backbone, ran) in ((task, pair) for task in holdout_tasks for pair in backbones):
        tokens += [task.holdout.token] if task.holdout.token not in tokens else []
        result = ran.get(task.name)
        row = rows.setdefault((task.target, backbone), {"target": task.target, "backbone": backbone})
        if result:
            summary = result["summary"]
            row[task.holdout.token] = f"{summary['accuracy_1_image']:.3f} / {summary['accuracy_vote']:.3f}"
            row["chance"] = f"{summary['chance']:.3f}"
        else:
            row[task.holdout.token] = "not run"
    if not holdout_tasks:
        section.lines += ["The grid file asks for no holdout parsers.", ""]
        return section
    table = pd.DataFrame([{column: row.get(column, "") for column in ["target", "backbone", *tokens, "chance"]}
                          for row in rows.values()])
    section.table("parsers", table, f"Parser accuracy, 1 image / {grid.classifier.vote_size}-image vote, "
                  "on the models with the held-out value (columns); empty: the grid has no such parser")
    if any(not results.get(task.name) for task in holdout_tasks):
        section.missing("some parsers (marked \"not run\")", "python -m srfp.grid parse --all")
    return section


def acutance_section(grid: GridSpec, measures: pd.DataFrame, results: dict[str, dict],
                     spectral: dict[str, dict] | None = None) -> Section:
    """Table 7: the acutance k-NN baseline for each holdout parser, beside the classifiers where they ran."""
    section = Section("Acutance baseline (Table 7)")
    if measures.empty:
        section.missing("super-resolved photos", "python -m srfp.grid superresolve")
        return section
    specs, rows, waiting = grid.specs(), [], []
    settings = grid.classifier
    measured = set(measures["model_id"])
    for task in tasks_of(grid):
        if task.kind != "parser" or not task.holdout:
            continue
        train_ids = [s.model_id for s in task.train_models(specs)]
        test_ids = [s.model_id for s in task.test_models(specs)]
        if not measured.issuperset(train_ids + test_ids):
            waiting.append(task.name)
            continue
        baseline = acutance_baseline(measures, task.target, train_ids, test_ids, 20, settings.vote_size,
                                     settings.vote_repeats)
        result = results.get(task.name)
        rows.append({"task": task.name, "chance": baseline["chance"], "acutance_1_image": baseline["accuracy_1_image"],
                     f"acutance_{settings.vote_size}_image_vote": baseline["accuracy_vote"],
                     "classifier_1_image": result["summary"]["accuracy_1_image"] if result else np.nan,
                     **({"spectral_1_image": spectral[task.name]["summary"]["accuracy_1_image"]
                         if task.name in spectral else np.nan} if spectral else {}),
                     "k": baseline["k"]})
    if waiting:
        section.missing(f"the super-resolved photos of every model of {', '.join(waiting)}",
                        "python -m srfp.grid superresolve")
    if rows:
        section.table("acutance_baseline", pd.DataFrame(rows), "k-NN (k = 20) on the variance of the Laplacian of "
                      "the greyscale image, trained and tested on the same models and photos as each parser")
    return section


def unknown_models(grid: GridSpec, storage: Storage, results: dict[str, dict[str, dict]],
                   false_alarm_rate: float = 0.05) -> Section:
    """Beyond the study: the unknown-model detector of each holdout task and backbone (see
    :mod:`srfp.analysis.openset`), known images (the training models' test images) against unknown ones (the
    held-out models')."""
    section = Section("Unknown-model detection (beyond the study)")
    holdout_tasks = [task for task in tasks_of(grid) if task.kind == "parser" and task.holdout]
    rows = []
    for task in holdout_tasks:
        for backbone in (b for b in (grid.classifier.backbone, "spectral") if task.name in results.get(b, {})):
            measured = openset.detection(_predictions(storage, results[backbone][task.name]), false_alarm_rate)
            rows.append({"task": task.name, "backbone": backbone,
                         **(measured or {"known_images": 0, "unknown_images": 0, "auroc": np.nan})})
    if not rows:
        section.missing("holdout parsers", "python -m srfp.grid parse --all")
        return section
    section.table("unknown_models", pd.DataFrame(rows), "Each holdout parser's unknown-model score (1 - its highest "
                  "probability): AUROC of the held-out models' test images (unknown) against the training models' "
                  f"(known), and the share of unknown images flagged where {false_alarm_rate:.0%} of known ones are "
                  "(nan: classified by an older srfp, without the known images)")
    return section


def published_models(storage: Storage, results: dict[str, dict]) -> Section:
    """Figure 4: what the all-model parsers say about each published model."""
    section = Section("Published models seen by the parsers (Figure 4)")
    matrices, truths = {}, {}
    for target in TARGETS:
        result = results.get(f"parse-{target}-all")
        if not result or not result["published_models"]:
            continue
        rows = _predictions(storage, result)
        rows = rows[rows.role == "published"]
        matrix = pd.crosstab(rows.model_id, rows.predicted_label).reindex(columns=result["labels"], fill_value=0)
        matrices[target] = matrix
        truths[target] = dict(zip(rows.model_id, rows.true_label))
        section.table(f"published_{target}", matrix.reset_index(), f"Predicted {target} of each published model's "
                      "test images (counts)")
    if matrices:
        section.figure("published_parsers", figures.published_parser_figure(matrices, truths),
                       "Parser predictions for each published model; true values outlined where known")
    elif not any(r["published_models"] for r in results.values()):
        section.missing("published models", "python -m srfp.grid ingest FOLDER, then python -m srfp.grid parse --all")
    else:
        section.missing("parsers trained on every model", "python -m srfp.grid parse --target scale (and loss, arch)")
    return section


def published_attribution(storage: Storage, models: list[ModelInfo], result: dict | None,
                          spectral: dict | None = None) -> Section:
    """Attribution of the published and external models (``attribute --published``): the headline by classifier,
    each model's accuracy and the confusion matrix of its test images."""
    section = Section("Attribution of published and external models")
    if result is None:
        count = sum(model.source != "custom" for model in models)
        command = ("python -m srfp.grid attribute --published" if count >= 2 else
                   "python -m srfp.grid ingest FOLDER or python -m srfp.grid published superresolve, for two or more")
        section.missing(f"the classifier of the published and external models ({count} have complete shards)", command)
        return section
    section.table("attribution_published", pd.DataFrame([_headline(r) for r in (result, spectral) if r]),
                  f"Attribution over {result['summary']['classes']} published and external models, by classifier")
    for ran in (r for r in (result, spectral) if r):
        scored = _predictions(storage, ran)
        scored = scored[scored.role == "test"]
        names = {model.model_id: model.display_name for model in models}
        per_model = grouped_accuracy(scored, "model_id").rename(columns={"value": "model_id"})
        per_model.insert(2, "name", per_model["model_id"].map(names))
        section.table(f"attribution_published_models_{ran['backbone']}", per_model.drop(columns="attribute"),
                      f"Attribution accuracy of each published or external model's test images ({ran['backbone']})")
        matrix = pd.crosstab(scored.true_label, scored.predicted_label).reindex(
            index=ran["labels"], columns=ran["labels"], fill_value=0)
        section.table(f"attribution_published_confusion_{ran['backbone']}", matrix.rename_axis("true model").reset_index(),
                      f"Confusion matrix of the test images: true model (rows) by predicted model (columns), "
                      f"counts ({ran['backbone']})")
    return section


def tsne(storage: Storage, result: dict | None) -> Section:
    """Figure 2: t-SNE of the attribution classifier's features, by (scale, loss)."""
    from sklearn.manifold import TSNE

    section = Section("Classifier features (Figure 2)")
    if result is None:
        section.missing("the attribution classifier", "python -m srfp.grid attribute")
        return section
    predictions = _predictions(storage, result)
    panels = []
    for role, title in (("test", "custom models"), ("published", "published models, custom classifier")):
        rows = predictions[predictions.role == role]
        if len(rows) < 3:
            continue
        features = np.stack(rows.features.to_numpy())
        points = TSNE(perplexity=min(30.0, len(rows) - 1.0), init="pca", random_state=0).fit_transform(features)
        groups = ([f"x{s}, {loss}" for s, loss in zip(rows.scale, rows.loss)] if role == "test" else list(rows.arch))
        panels.append((f"{title} ({len(rows)} images)", points, groups))
    if panels:
        section.figure("tsne", figures.tsne_figure(panels), f"t-SNE of the {len(predictions.features.iloc[0])}-d "
                       f"features of the attribution classifier ({result['backbone']})")
    return section


def backbones(results: dict[str, dict[str, dict]]) -> Section:
    """Tables 8 and 9: the same tasks with other backbones, when they were run."""
    section = Section("Backbone comparison (Tables 8, 9)")
    if len(results) < 2:
        ran = f"Only the {next(iter(results))} backbone was run" if results else "No classifier was run yet"
        section.lines += [f"{ran}; run a grid file with another classifier.backbone on the same root to compare.", ""]
        return section
    rows = [{"backbone": backbone, "task": task, "accuracy_1_image": r["summary"]["accuracy_1_image"],
             "accuracy_vote": r["summary"]["accuracy_vote"]}
            for backbone, tasks in sorted(results.items()) for task, r in sorted(tasks.items())]
    section.table("backbones", pd.DataFrame(rows), "Test accuracy of each task with each backbone")
    return section


def build_report(grid: GridSpec, storage: Storage, log=print) -> list[Section]:
    results = all_results(storage)
    primary, spectral = results.get(grid.classifier.backbone, {}), results.get("spectral", {})
    models = complete_models(storage)
    measures = image_measures(storage, models, log)
    manifest = read_manifest(storage) if storage.is_file(MANIFEST) else None
    return [model_quality(storage, models, log), dataset_statistics(measures, manifest),
            attribution(grid, storage, primary.get("attribution"), spectral.get("attribution")),
            published_attribution(storage, models, primary.get("attribution-published"),
                                  spectral.get("attribution-published")),
            parsers(grid, primary, spectral), acutance_section(grid, measures, primary, spectral),
            unknown_models(grid, storage, results), published_models(storage, primary),
            tsne(storage, primary.get("attribution")), backbones(results)]


def write_report(grid: GridSpec, storage: Storage, log=print) -> str:
    """Write report.md, its tables and figures under ``<root>/report``; returns report.md's URI."""
    sections = build_report(grid, storage, log)
    lines = [f"# Fingerprints of super-resolution networks: grid {grid.name}", "",
             f"Storage root: `{storage.uri}`. Classifier backbone: {grid.classifier.backbone}.", ""]
    for section in sections:
        lines += [f"## {section.title}", "", *section.lines]
        for name, table in section.tables.items():
            storage.write_text(f"report/tables/{name}.csv", table.to_csv(index=False))
        for name, png in section.figures.items():
            storage.write_bytes(f"report/figures/{name}.png", png)
    storage.write_text("report/report.md", "\n".join(lines))
    return storage.uri_of("report/report.md")
