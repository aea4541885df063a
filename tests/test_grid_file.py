"""Grid files: the paper's grid exactly, the smoke grid in its shape, and errors that name file, field and value."""

from collections import Counter
from pathlib import Path

import pytest
import yaml

from srfp.grid import main
from srfp.gridspec import GridError, load_grid, resolve_grid_path
from srfp.plan import Plan
from srfp.tasks import HoldoutError, parse_holdout


def test_paper_grid_has_the_studys_108_models():
    specs = load_grid("paper").specs()
    assert len(specs) == 108
    assert len({s.model_id for s in specs}) == 108
    count = lambda attribute: Counter(s.value(attribute) for s in specs)  # noqa: E731
    assert count("arch") == {"EDSR": 36, "RDN": 36, "RCAN": 36}
    assert count("scale") == {2: 54, 4: 54}
    assert count("loss") == {"L1": 36, "VGG_GAN": 36, "ResNet_GAN": 36}
    assert count("dataset") == {"div2k": 54, "flickr2k": 18, "quarter_div2k": 18, "quarter_flickr2k": 18}
    assert count("seed") == {1: 72, 2: 18, 3: 18}
    assert all(s.dataset == "div2k" for s in specs if s.seed != 1)


def test_paper_grid_has_the_18_parsers_of_table_3_plus_attribution():
    plan = Plan.of(load_grid("paper"))
    parsers = [t for t in plan.tasks if t.kind == "parser"]
    assert len(parsers) == 18
    assert sum(t.holdout is None for t in parsers) == 3
    holdouts = {(t.target, t.holdout.token) for t in parsers if t.holdout}
    assert holdouts == {("scale", v) for v in ("L1", "RCAN", "ResNet_GAN", "flickr2k", "s3")} \
        | {("loss", v) for v in ("RCAN", "flickr2k", "s3")} \
        | {("arch", v) for v in ("L1", "ResNet_GAN", "flickr2k", "s3")} \
        | {("dataset", v) for v in ("L1", "RCAN", "ResNet_GAN")}
    assert [t.name for t in plan.tasks if t.kind == "attribution"] == ["attribution"]


def test_parsers_train_without_the_held_out_value_and_test_on_it():
    plan = Plan.of(load_grid("paper"))
    rcan = plan.task("scale", "rcan")
    assert {s.arch for s in rcan.train_models(plan.models)} == {"EDSR", "RDN"}
    assert {s.arch for s in rcan.test_models(plan.models)} == {"RCAN"}
    dataset = plan.task("dataset", "L1")
    assert {s.seed for s in dataset.train_models(plan.models) + dataset.test_models(plan.models)} == {1}
    assert (len(dataset.train_models(plan.models)), len(dataset.test_models(plan.models))) == (48, 24)
    seed3 = plan.task("arch", "s3")
    assert (len(seed3.train_models(plan.models)), len(seed3.test_models(plan.models))) == (90, 18)


def test_smoke_grid_has_the_same_shape_made_tiny():
    paper, smoke = load_grid("paper"), load_grid("smoke")
    assert 1 < len(smoke.specs()) <= 16
    assert {t.target for t in Plan.of(smoke).tasks} == {t.target for t in Plan.of(paper).tasks}
    assert smoke.training.iterations <= 1000 and smoke.photos.source == "bundled"


def _write(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(resolve_grid_path("smoke").read_text())
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["models"].update(archs=["EDSR", "VDSR"]),
     "models.archs[1]: 'VDSR' is not allowed; allowed values: EDSR, RDN, RCAN"),
    (lambda d: d["models"].update(scales=[2, 3]), "models.scales[1]: 3 is not allowed; allowed values: 2, 4"),
    (lambda d: d["training"].update(batch_size="sixteen"), "training.batch_size: 'sixteen' is not allowed; expected an integer"),
    (lambda d: d["training"].update(bach_size=4), "training.bach_size: unknown field; allowed fields: iterations,"),
    (lambda d: d["models"].update(seeds={2: ["div3k"]}), "models.seeds.2[0]: 'div3k' is not allowed"),
    (lambda d: d.pop("data"), "data: missing"),
    (lambda d: d["tasks"]["parsers"][0].update(target="colour"),
     "tasks.parsers[0].target: 'colour' is not allowed; allowed values: scale, loss, arch, dataset"),
    (lambda d: d["tasks"]["parsers"][0].update(holdouts=["L3"]), "tasks.parsers[0].holdouts[0]: unknown holdout value 'L3'; valid values:"),
    (lambda d: d["tasks"]["parsers"][0].update(holdouts=["x2"]), "cannot hold out a value of the target (scale) itself"),
    (lambda d: d["photos"].update(split={"train": 1, "test": 1}), "photos.split: keys ['test', 'train'] are not allowed"),
])
def test_a_bad_grid_file_names_the_file_the_field_and_the_allowed_values(tmp_path, edit, message):
    path = _write(tmp_path, edit)
    with pytest.raises(GridError) as error:
        load_grid(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_invalid_yaml_and_missing_files_are_reported(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [unclosed")
    with pytest.raises(GridError, match="not valid YAML"):
        load_grid(broken)
    with pytest.raises(GridError, match="bundled grids: smoke, paper"):
        load_grid(tmp_path / "nope.yaml")


def test_unknown_holdout_lists_every_valid_value():
    with pytest.raises(HoldoutError) as error:
        parse_holdout("vdsr")
    message = str(error.value)
    for token in ("EDSR", "RCAN", "div2k", "quarter_flickr2k", "L1", "VGG_GAN", "ResNet_GAN", "s3", "x4"):
        assert token in message


@pytest.mark.parametrize("token, attribute, value", [("rcan", "arch", "RCAN"), ("L1", "loss", "L1"),
                                                     ("resnet+adv", "loss", "ResNet_GAN"), ("Flickr2K", "dataset", "flickr2k"),
                                                     ("s3", "seed", 3)])
def test_holdout_tokens_are_case_insensitive_and_accept_the_papers_spelling(token, attribute, value):
    holdout = parse_holdout(token)
    assert (holdout.attribute, holdout.value) == (attribute, value)


def test_a_bundled_grid_name_is_not_shadowed_by_a_folder_of_that_name(tmp_path, monkeypatch):
    from srfp.gridspec import load_grid

    (tmp_path / "smoke").mkdir()  # e.g. a run's storage root named after its grid
    monkeypatch.chdir(tmp_path)
    assert load_grid("smoke").name == "smoke"


def _set(section: str, **values):
    """An edit of the smoke grid: ``section`` is a dotted path (``training.trial``), ``""`` the top level."""
    def edit(data):
        for key in filter(None, section.split(".")):
            data = data.setdefault(key, {})
        data.update(values)
    return edit


@pytest.mark.parametrize("edit, message", [
    (_set("superres", tile_size=-1), "superres.tile_size: -1 is not allowed; expected at least 0"),
    (_set("superres", tile_overlap=16), "superres.tile_overlap: no longer a setting: tiles overlap by each model's "
                                        "receptive radius"),
    (_set("training", patch_size={2: 0, 4: 96}), "training.patch_size.2: 0 is not allowed; expected at least 1"),
    (_set("training.adversarial", patch_size=0),
     "training.adversarial.patch_size: 0 is not allowed; expected at least 32"),
    (_set("classifier", vote_size=0), "classifier.vote_size: 0 is not allowed; expected at least 1"),
    (_set("classifier", false_alarm_rate=1.5),
     "classifier.false_alarm_rate: 1.5 is not allowed; expected a number above 0 and below 1"),
    (_set("spectral", false_alarm_rate=0), "spectral.false_alarm_rate: 0.0 is not allowed; expected a number above 0"),
    (_set("training", learning_rate=0), "training.learning_rate: 0.0 is not allowed; expected a number above 0"),
    (_set("classifier", learning_rate=-1e-3),
     "classifier.learning_rate: -0.001 is not allowed; expected a number above 0"),
    (_set("data", validation_images=0), "data.validation_images: 0 is not allowed; expected at least 1"),
    (_set("classifier", crop_size=0), "classifier.crop_size: 0 is not allowed; expected at least 1"),
    (_set("superres", actors=-1), "superres.actors: -1 is not allowed; expected at least 0"),
    (_set("classifier", max_concurrent_tasks=-2),
     "classifier.max_concurrent_tasks: -2 is not allowed; expected at least 0"),
    (_set("training", max_failures=-1), "training.max_failures: -1 is not allowed; expected at least 0"),
    (_set("classifier", max_failures=-1), "classifier.max_failures: -1 is not allowed; expected at least 0"),
    (_set("training.trial", cpus=-1), "training.trial.cpus: -1.0 is not allowed; expected at least 0"),
    (_set("training.trial", cpus=0), "training.trial.cpus: 0.0 is not allowed; expected a number above 0"),
    (_set("classifier.worker", cpus=0), "classifier.worker.cpus: 0.0 is not allowed; expected a number above 0"),
    (_set("superres.actor", gpus=-0.5), "superres.actor.gpus: -0.5 is not allowed; expected at least 0"),
    (_set("models", seeds={1: []}), "models.seeds.1: [] is not allowed; expected 'all' or a non-empty list"),
    (_set("archs", EDSR={"n_resblock": 2}), "archs.EDSR: unknown option 'n_resblock'; allowed options: n_resblocks,"),
    (_set("classifier", crop_size=300),
     "classifier.crop_size: 300 is not allowed; expected at most photos.long_side (256)"),
    (_set("", name="../../x"), "name: '../../x' is not allowed; expected one folder name of letters, digits, -, _"),
    (_set("", name=".."), "name: '..' is not allowed"),
])
def test_plan_refuses_an_out_of_range_value_naming_file_field_value_and_range(tmp_path, capsys, edit, message):
    path = _write(tmp_path, edit)
    assert main(["plan", "--grid", str(path)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {path}: {message}")
