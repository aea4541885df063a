"""The catalogue of the study's published models (grids/published.yaml): its content, validation and plan lines."""

import json

import pytest
import yaml

from srfp.grid import main
from srfp.published import CatalogueError, catalogue_path, load_catalogue

# The paper's Table 4, as issue 15 transcribes it: model, loss, scales.
TABLE_4 = [("EDSR", "L1", (2, 4)), ("EnhanceNet", "adversarial", (4,)), ("RDN", "L1", (2, 4)),
           ("ProSR", "L1", (4,)), ("ProGanSR", "adversarial", (4,)), ("RCAN", "L1", (2, 4)),
           ("ESRGAN", "adversarial", (4,)), ("SAN", "L1", (4,)), ("SRFBN", "L1", (2, 4)),
           ("SPSR", "adversarial", (4,)), ("DRN", "L1", (4,)), ("NCSR", "adversarial", (4,))]
# srfp architectures with the official layouts; input ranges from the official inference scripts.
NATIVE = {"EDSR": 255, "RDN": 255, "RCAN": 255, "ESRGAN": 1, "SRFBN": 255, "DRN": 255, "SAN": 255, "SPSR": 1}


def test_the_catalogue_lists_the_16_models_of_table_4():
    catalogue = load_catalogue()
    listed = {(entry.model_id, entry.loss) for entry in catalogue.models}
    expected = {(f"{name}-NA-x{scale}-{name}-NA-pretrained", loss) for name, loss, scales in TABLE_4 for scale in scales}
    assert listed == expected and len(catalogue.models) == 16
    assert {(entry.name, entry.arch, entry.input_range) for entry in catalogue.models if entry.run == "native"} \
        == {(name, name, input_range) for name, input_range in NATIVE.items()}
    assert all(entry.ingest and "python -m srfp.grid ingest" in entry.ingest
               for entry in catalogue.models if entry.run == "ingest")


def _broken(tmp_path, change) -> str:
    data = yaml.safe_load(catalogue_path().read_text())
    change(data["models"])
    path = tmp_path / "published.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(("change", "message"), [
    (lambda models: models[0].pop("arch"), "models[0]: EDSR-NA-x2-EDSR-NA-pretrained: arch and input_range are "
                                           "required for run: native"),
    (lambda models: models[2].pop("ingest"), "models[2]: EnhanceNet-NA-x4-EnhanceNet-NA-pretrained: ingest (the "
                                             "steps that make the images) is required for run: ingest"),
    (lambda models: models[0].update(loss="VGG_GAN"), "models[0].loss: 'VGG_GAN' is not allowed; allowed values: "
                                                      "L1, adversarial"),
    (lambda models: models[0]["weights"][0].update(sha256_prefix="0EDF"), "sha256_prefix: '0EDF' is not allowed"),
    (lambda models: models[1].update(scale=2), "models: EDSR-NA-x2-EDSR-NA-pretrained is listed twice"),
    (lambda models: models[0].update(arch="VDSR"), "arch 'VDSR' has no srfp architecture; allowed values: EDSR"),
    (lambda models: models[0].pop("licence"), "models[0].licence: missing"),
])
def test_an_invalid_catalogue_is_refused_naming_the_entry(tmp_path, change, message):
    path = _broken(tmp_path, change)
    with pytest.raises(CatalogueError) as error:
        load_catalogue(path)
    assert str(error.value).startswith(path) and message in str(error.value)


def test_plan_lists_the_published_models_with_their_shards_under_root(tmp_path, capsys):
    marker = tmp_path / "sr" / "model_id=ESRGAN-NA-x4-ESRGAN-NA-pretrained" / "_SUCCESS"
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"rows": 7}))
    assert main(["plan", "--grid", "smoke", "--root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "published models (published.yaml): 16, 12 native, 4 ingest" in lines
    published = {line.split()[0]: line.split()[1:] for line in lines if "-NA-pretrained" in line}
    assert published["ESRGAN-NA-x4-ESRGAN-NA-pretrained"] == ["native", "ESRGAN", "shard", "complete", "Apache-2.0"]
    assert published["ProSR-NA-x4-ProSR-NA-pretrained"][:3] == ["ingest", "shard", "missing"]
    assert "(no official weights address)" in " ".join(published["RDN-NA-x4-RDN-NA-pretrained"])


def test_plan_without_root_lists_the_run_kinds_only(capsys):
    assert main(["plan", "--grid", "smoke"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  EDSR-NA-x2"))
    assert line.split() == ["EDSR-NA-x2-EDSR-NA-pretrained", "native", "EDSR", "MIT"]


def test_the_published_models_weights_are_present_missing_or_not_needed_in_a_weights_folder(tmp_path):
    catalogue = load_catalogue()
    edsr = next(entry for entry in catalogue.models if entry.model_id == "EDSR-NA-x2-EDSR-NA-pretrained")
    path = edsr.weights_path(tmp_path, edsr.weights[0])
    path.parent.mkdir()
    path.write_bytes(b"weights")
    lines = {line.split()[0]: line.split()[1:] for line in catalogue.render(weights=tmp_path)[1:]}
    assert lines["EDSR-NA-x2-EDSR-NA-pretrained"][:4] == ["native", "EDSR", "weights", "present"]
    assert lines["EDSR-NA-x4-EDSR-NA-pretrained"][:4] == ["native", "EDSR", "weights", "missing"]
    assert lines["RDN-NA-x4-RDN-NA-pretrained"][:4] == ["native", "RDN", "weights", "missing"]  # none published
    assert lines["ProSR-NA-x4-ProSR-NA-pretrained"][:3] == ["ingest", "weights", "n/a"]
