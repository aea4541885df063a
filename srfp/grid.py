"""The command line: ``python -m srfp.grid COMMAND``. It parses arguments and calls the stages, nothing more."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from contextlib import ExitStack, contextmanager

from srfp.calibration import load_calibration
from srfp.classify.backbones import BACKBONES
from srfp.download import DATASETS, download
from srfp.errors import UserError
from srfp.flickr import REDISTRIBUTABLE, FlickrError
from srfp.gridspec import load_grid
from srfp.lease import Lease
from srfp.photos import build_photos
from srfp.plan import Plan
from srfp.published import load_catalogue
from srfp.spec import TARGETS
from srfp.storage import Storage, credentials_out_of_environment


def _root(args, grid, writable: bool = True) -> Storage:
    """The run's storage root, checked before any work: readable, and writable unless the command only reads."""
    storage = Storage(args.root or f"srfp-runs/{grid.name}")
    storage.check(writable)
    return storage


def cmd_plan(args) -> None:
    calibration_file = getattr(args, "calibration", None)  # run reuses this stage without the option
    calibration = load_calibration(calibration_file) if calibration_file else None
    root = _given_root(args)
    print(Plan.of(load_grid(args.grid), args.only).render(calibration))
    print()
    print("\n".join(load_catalogue().render(root)))


def _given_root(args) -> Storage | None:
    """The storage root given with --root, checked readable; None when none is given."""
    if not getattr(args, "root", None):
        return None
    storage = Storage(args.root)
    storage.check(writable=False)
    return storage


def cmd_photos(args) -> None:
    grid = load_grid(args.grid)
    root = _root(args, grid)
    if grid.photos.collect:
        from srfp.collect import collect_source

        collect_source(grid.photos)
    build_photos(grid.photos, root, force=_forced(args, "photos"))


def _forced(args, stage: str) -> bool:
    """Whether the command was asked to delete and redo ``stage`` (``STAGE --force``, ``run --force STAGE``)."""
    return stage in (getattr(args, "force", None) or ())


def cmd_photos_collect(args) -> None:
    from srfp.collect import collect
    from srfp.flickr import FlickrClient, api_key

    client = FlickrClient(api_key(args.api_key_file))
    dest = Storage(args.dest)
    collect(client, args.tags.split(","), args.per_tag, dest, _licence_ids(args.licenses), args.min_megapixels)
    print(f"photos collected in {dest.uri}, credited in {dest.uri_of('sources.csv')}; set photos.source to "
          f"{dest.uri} in the grid file")


def _licence_ids(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(item) for item in text.split(","))
    except ValueError:
        raise FlickrError(f"--licenses {text!r}: expected Flickr licence ids, comma-separated, e.g. 4,5,9,10") from None


def cmd_train(args) -> None:
    from srfp.cluster import connect  # Ray and torch load only for the stages that need them
    from srfp.sisr.train import prepare_training
    from srfp.sisr.tuning import train_grid

    grid = load_grid(args.grid)
    plan = Plan.of(grid, args.only)
    storage = _root(args, grid)
    prepare_training(storage, plan.models, grid, force=_forced(args, "train"))
    connect(args.address)
    table = train_grid(grid, plan.models, storage)
    print(f"validation PSNR (Y, dB) of {len(table)} trained models, also in {storage.uri_of('models/psnr.csv')}:")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


def cmd_superresolve(args) -> None:
    from srfp.cluster import connect
    from srfp.superres.pipeline import superresolve_grid
    from srfp.superres.shards import prepare_shards

    grid = load_grid(args.grid)
    specs, storage = Plan.of(grid, args.only).models, _root(args, grid)
    prepare_shards(storage, specs, grid.superres.precision, force=_forced(args, "superresolve"))
    connect(args.address)
    superresolve_grid(grid, specs, storage)


def cmd_ingest(args) -> None:
    from srfp.superres.ingest import IngestError, ingest, write_templates

    grid = load_grid(args.grid)
    if args.template:
        write_templates(args.folder, args.template.split(","), args.scale, _root(args, grid, writable=False))
        return
    report = ingest(args.folder, _root(args, grid))
    for path, reason in report.problems:
        print(f"problem: {path}: {reason}")
    print(f"ingest: {len(report.ingested)} models ingested, {len(report.already_complete)} already complete, "
          f"{len(report.problems)} problems")
    if report.problems:
        raise IngestError(args.folder, f"{len(report.problems)} problems, listed above")


def _classify(args, grid, tasks) -> None:
    from srfp.classify.stage import classify
    from srfp.cluster import connect

    connect(args.address)
    classify(grid, _root(args, grid), tasks)


def cmd_attribute(args) -> None:
    from srfp.tasks import attribution_task

    grid = load_grid(args.grid)
    population = "published" if args.published else "custom"
    init_from = args.init_from or ("attribution" if args.published else None)
    _classify(args, grid, [attribution_task(population, init_from)])


def cmd_parse(args) -> None:
    from srfp.tasks import parser_tasks

    grid = load_grid(args.grid)
    _classify(args, grid, parser_tasks(grid, args.holdout, args.target, args.all))


def cmd_classify(args) -> None:
    """Every classifier of the grid; and attribution of published models when two or more are ingested."""
    from srfp.superres.shards import complete_models
    from srfp.tasks import attribution_task, tasks_of

    grid = load_grid(args.grid)
    if args.only:
        print("classify: skipped; classifiers compare every model of the grid, and --only selects a part of it")
        return
    tasks = tasks_of(grid)
    if grid.tasks.attribution and sum(m.source != "custom" for m in complete_models(_root(args, grid))) >= 2:
        tasks.append(attribution_task("published", init_from="attribution"))
    _classify(args, grid, tasks)


def cmd_report(args) -> None:
    from srfp.analysis.report import write_report

    grid = load_grid(args.grid)
    print(f"report: {write_report(grid, _root(args, grid))}")


def cmd_predict(args) -> None:
    from pathlib import Path

    from srfp.classify.identify import identify, render

    grid = load_grid(args.grid)
    text = render(identify(_root(args, grid, writable=False), args.images, args.backbone), args.format)
    if args.output:
        Path(args.output).write_text(text + "\n")
        print(f"predict: {args.output}")
    else:
        print(text)


def cmd_status(args) -> None:
    from srfp.status import render_status

    grid = load_grid(args.grid)
    print(render_status(Plan.of(grid, args.only), _root(args, grid, writable=False)))


def cmd_data(args) -> None:
    download(args.only.split(","), args.dest, args.mirror, args.keep_archives, args.staging)


def cmd_published_fetch(args) -> None:
    from srfp.published_fetch import fetch_weights

    files = fetch_weights(load_catalogue(), args.dest, args.only)
    print(f"published fetch: {len(files)} weight files verified under {args.dest}")


def cmd_published_superresolve(args) -> None:
    grid = load_grid(args.grid)
    folder = getattr(args, "weights", None) or grid.published.weights  # run reuses this stage without the option
    if not folder:
        print("published superresolve: skipped; no weights folder: give --weights DIR or set published.weights in "
              "the grid file (python -m srfp.grid published fetch --dest DIR gets the weights)")
        return
    from srfp.cluster import connect
    from srfp.superres.published import native_entries, superresolve_published
    from srfp.superres.shards import prepare_shards

    catalogue, storage = load_catalogue(), _root(args, grid)
    prepare_shards(storage, native_entries(catalogue), grid.superres.precision, force=_forced(args, "superresolve"))
    connect(args.address)
    superresolve_published(grid, catalogue, folder, storage)


#: The stages of ``run``, in order; each skips what storage says is complete.
PIPELINE = (("plan", cmd_plan), ("photos", cmd_photos), ("train", cmd_train), ("superresolve", cmd_superresolve),
            ("published superresolve", cmd_published_superresolve), ("classify", cmd_classify), ("report", cmd_report))


#: The stages whose work ``--force`` deletes and redoes.
FORCEABLE = ("photos", "train", "superresolve")


def cmd_run(args) -> None:
    started = time.monotonic()
    for name, stage in PIPELINE:
        print(f"== {name}")
        stage_started = time.monotonic()
        stage(args)
        print(f"== {name} done in {_duration(time.monotonic() - stage_started)}")
    print(f"== run done in {_duration(time.monotonic() - started)}")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m srfp.grid",
                                   description="Fingerprints of super-resolution networks, at cluster scale.")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, function, help_text, grid=True, root=False, ray=False, only=True, leases=(), group=commands):
        sub = group.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(function=function, leases=leases)
        if grid:
            sub.add_argument("--grid", default="smoke",
                             help="grid file, or a bundled grid name: smoke (default), paper")
        if grid and only:
            sub.add_argument("--only", default=None, metavar="SELECTION",
                             help="only models matching ATTRIBUTE=VALUE[,...], e.g. arch=RCAN,scale=4")
        if root:
            sub.add_argument("--root", default=None,
                             help="storage root: a folder or s3://bucket/prefix (default: srfp-runs/<grid name>)")
        if ray:
            sub.add_argument("--address", default=None,
                             help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
        return sub

    def force_option(sub, stage, work):
        sub.add_argument("--force", action="store_const", const=[stage], default=None,
                         help=f"delete {work} first and redo it (when it was made with other settings: see README, "
                              "\"What survives what\")")

    plan = command("plan", cmd_plan, "print every model, task and the rough cost of a grid, and the published "
                   "models of grids/published.yaml")
    plan.add_argument("--root", default=None,
                      help="storage root (a folder or s3://bucket/prefix) to report the published models' shards "
                           "in (default: none)")
    plan.add_argument("--calibration", default=None, metavar="FILE",
                      help="training speeds measured by bench/train_throughput.py --json FILE: the training cost "
                           "becomes measured GPU-hours instead of the grid's estimate")
    photos = command("photos", cmd_photos, "build the photo set (Flickr1K) every model super-resolves", root=True,
                     only=False, leases=("photos",))
    force_option(photos, "photos", "the stored photo set")
    photos_commands = photos.add_subparsers(dest="photos_command", metavar="ACTION")
    gather = photos_commands.add_parser("collect", help="collect a photo source from Flickr, one folder per tag",
                                        description="collect a photo source from Flickr, one folder per tag, with "
                                                    "sources.csv crediting every photo")
    gather.set_defaults(function=cmd_photos_collect, leases=())
    gather.add_argument("--tags", required=True, help="Flickr tags, comma-separated, e.g. city,food,landscape")
    gather.add_argument("--per-tag", required=True, type=int, metavar="N", help="photos to keep per tag")
    gather.add_argument("--dest", required=True, help="folder to collect into, or s3://bucket/prefix")
    gather.add_argument("--licenses", default=",".join(map(str, REDISTRIBUTABLE)), metavar="IDS",
                        help="Flickr licence ids to keep, comma-separated (default: %(default)s: CC BY 2.0, "
                             "CC BY-SA 2.0, CC0, Public Domain Mark)")
    gather.add_argument("--min-megapixels", type=float, default=2.0, help="smallest photo kept (default: 2)")
    gather.add_argument("--api-key-file", default=None, metavar="FILE",
                        help="file holding the Flickr API key (default: $FLICKR_API_KEY)")
    train = command("train", cmd_train, "train every model of the grid as Ray Tune trials, skipping finished ones",
                    root=True, ray=True, leases=("train",))
    train.add_argument("--resume", action="store_true",
                       help="continue an interrupted run; always done: finished models are skipped and "
                            "unfinished ones continue from their checkpoints")
    force_option(train, "train", "the selected models' weights, records and checkpoints")
    superresolve = command("superresolve", cmd_superresolve,
                           "super-resolve the photo set with every trained model (Ray Data)",
                           root=True, ray=True, leases=("superresolve",))
    force_option(superresolve, "superresolve", "the selected models' shards")
    ingest = command("ingest", cmd_ingest, "import images super-resolved elsewhere, one folder per model",
                     root=True, only=False, leases=("superresolve",))
    ingest.add_argument("folder", help="folder with one subfolder per model, each with a model.yaml")
    ingest.add_argument("--template", default=None, metavar="NAME[,NAME...]",
                        help="instead of ingesting, prepare FOLDER for these models: the photos' low-resolution "
                             "inputs in FOLDER/lr-inputs/x<scale> and a model.yaml template per model")
    ingest.add_argument("--scale", type=int, default=4, help="with --template: the models' scale (default: 4)")
    attribute = command("attribute", cmd_attribute, "train and test the attribution classifier (Ray Train)",
                        root=True, ray=True, only=False, leases=("classify",))
    attribute.add_argument("--published", action="store_true",
                           help="attribute the ingested published models instead of the grid's")
    attribute.add_argument("--init-from", default=None, metavar="TASK",
                           help="start from this classifier's backbone (default with --published: attribution)")
    parse = command("parse", cmd_parse, "train and test parsers that infer a hyperparameter (Ray Train)",
                    root=True, ray=True, only=False, leases=("classify",))
    parse.add_argument("--holdout", default=None, metavar="VALUE",
                       help="the held-out value (e.g. rcan, L1, resnet_gan, flickr2k, s3): trained without it, tested on it")
    parse.add_argument("--target", default=None, choices=TARGETS,
                       help="the hyperparameter to infer (default with --holdout: every one the holdout allows); "
                            "without --holdout: the parser trained on every model")
    parse.add_argument("--all", action="store_true", help="every parser of the grid file")
    command("classify", cmd_classify, "every classifier of the grid file: attribution, every parser, and attribution "
            "of the ingested published models (Ray Train)", root=True, ray=True, leases=("classify",))
    command("report", cmd_report, "write the study's tables and figures for what the run has computed",
            root=True, only=False, leases=("report",))
    command("status", cmd_status, "show what every stage has finished, from storage alone", root=True)
    predict = command("predict", cmd_predict, "which of the root's models made each image file, and whether one did "
                      "at all (the spectral classifiers, or --backbone's)", root=True, only=False)
    predict.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders of them")
    predict.add_argument("--backbone", default="spectral", choices=("spectral", *BACKBONES),
                         help="the classifiers that answer: the spectral ones (default) or those of a "
                              "classifier.backbone trained on the root")
    predict.add_argument("--format", default="table", choices=("table", "csv", "json"), help="output format")
    predict.add_argument("--output", default=None, metavar="FILE", help="write the answers to FILE")
    run = command("run", cmd_run, "run every stage of the pipeline in order, skipping finished work", root=True,
                  ray=True, leases=("photos", "train", "superresolve", "classify", "report"))
    run.add_argument("--force", action="append", default=None, choices=FORCEABLE, metavar="STAGE",
                     help=f"delete a stage's work first and redo it: {', '.join(FORCEABLE)} (repeat for several)")
    data = command("data", None, "get the training datasets", grid=False)
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = data_commands.add_parser("download", help="download DIV2K and Flickr2K and verify their checksums")
    fetch.set_defaults(function=cmd_data)
    fetch.add_argument("--dest", required=True,
                       help="folder to download into, e.g. ~/srfp-data, or s3://bucket/prefix to upload to")
    fetch.add_argument("--staging", default=None, metavar="DIR",
                       help="with an s3:// --dest: the local folder to download and verify in, kept so that an "
                            "interrupted run resumes (default: a temporary folder)")
    fetch.add_argument("--only", default=",".join(DATASETS), help=f"datasets, comma-separated: {', '.join(DATASETS)}")
    fetch.add_argument("--mirror", default=None, help="base URL of a mirror holding the same file names")
    fetch.add_argument("--keep-archives", action="store_true", help="keep the archives after unpacking")
    published = command("published", None, "the study's published models (grids/published.yaml)", grid=False)
    published_commands = published.add_subparsers(dest="published_command", required=True, metavar="ACTION")
    weights = published_commands.add_parser(
        "fetch", help="download the native published models' official weights and verify them",
        description="download the native published models' official weights into DIR/<model_id>/<file> and "
                    "verify them; list the ingest-only models with the steps that make their images")
    weights.set_defaults(function=cmd_published_fetch)
    weights.add_argument("--dest", required=True, metavar="DIR", help="folder to download into, e.g. ~/srfp-weights")
    weights.add_argument("--only", default=None, metavar="NAME", help="one model: its name (e.g. RCAN, every scale) "
                         "or its model id")
    published_sr = command("superresolve", cmd_published_superresolve, "super-resolve the photo set with every native "
                           "published model whose weights are in the weights folder (Ray Data, as superresolve); the "
                           "others are listed with where their weights come from", root=True, ray=True, only=False,
                           leases=("superresolve",), group=published_commands)
    published_sr.add_argument("--weights", default=None, metavar="DIR",
                              help="the weights folder of published fetch (default: the grid's published.weights)")
    force_option(published_sr, "superresolve", "the published models' shards")
    return main


@contextmanager
def _stage_leases(args, argv: list[str]):
    """Hold, while the command runs, the lease of every stage it writes (a command that only reads takes none),
    so that a second command writing the same stage of the same root stops before any work."""
    with ExitStack() as held:
        if args.leases:
            storage = _root(args, load_grid(args.grid))
            command = shlex.join(["python", "-m", "srfp.grid", *argv])
            for stage in args.leases:
                held.enter_context(Lease(storage, stage, command))
        yield


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    try:
        with credentials_out_of_environment(), _stage_leases(args, argv):  # keys out of every Ray log
            args.function(args)
    except UserError as error:  # the user's to fix: one line, exit status 2, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
