"""plan --calibration FILE: the training cost from measured rows, the grid's estimate where a row is missing,
and clear errors for a bad file."""

import argparse
import json
import re
from pathlib import Path

import pytest

from srfp.grid import cmd_plan, main

# The smoke grid's EDSR models: 400 iterations at batch 8, patches 48 (x2) and 96 (x4); VGG_GAN models train
# 390 iterations of L1 warm-up and 10 adversarial ones, both at patch 32.
ROWS = [
    {"scale": 2, "loss": "L1", "phase": "l1", "patch_size": 48, "seconds_per_iteration": 0.5, "gpu_share": 1.0},
    {"scale": 4, "loss": "L1", "phase": "l1", "patch_size": 96, "seconds_per_iteration": 0.9, "gpu_share": 0.5},
    {"scale": 2, "loss": "VGG_GAN", "phase": "l1", "patch_size": 32, "seconds_per_iteration": 0.3, "gpu_share": 1.0},
    {"scale": 2, "loss": "VGG_GAN", "phase": "adversarial", "patch_size": 32, "seconds_per_iteration": 2.0,
     "gpu_share": 0.25},
    {"scale": 4, "loss": "VGG_GAN", "phase": "l1", "patch_size": 32, "seconds_per_iteration": 0.4, "gpu_share": 1.0},
    {"scale": 4, "loss": "VGG_GAN", "phase": "adversarial", "patch_size": 32, "seconds_per_iteration": 3.0,
     "gpu_share": 1.0},
]
EDSR_ONLY = "arch=EDSR"


def calibration_file(path, rows=ROWS, **fields):
    document = {"device": "Test GPU", "torch": "2.14.1", "commit": "abc1234", "peak_tflops": None,
                "measured": "2026-12-01T00:00:00Z",
                "rows": [{"arch": "EDSR", "batch_size": 8, "images_per_second": 8 / row["seconds_per_iteration"],
                          "flop_utilisation": None, **row} for row in rows], **fields}
    path.write_text(json.dumps(document))
    return str(path)


def gpu_hours(row, iterations):
    return iterations * row["seconds_per_iteration"] * row["gpu_share"] / 3600


def total_gpu_hours(out: str) -> float:
    return float(re.search(r"8 trials = ([0-9.e+-]+) GPU-hours", out).group(1))


def test_plan_with_a_calibration_file_gives_the_measured_total(tmp_path, capsys):
    l1_x2, l1_x4, warmup_x2, adversarial_x2, warmup_x4, adversarial_x4 = ROWS
    per_dataset = (gpu_hours(l1_x2, 400) + gpu_hours(l1_x4, 400)
                   + gpu_hours(warmup_x2, 390) + gpu_hours(adversarial_x2, 10)
                   + gpu_hours(warmup_x4, 390) + gpu_hours(adversarial_x4, 10))
    assert main(["plan", "--only", EDSR_ONLY, "--calibration", calibration_file(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert total_gpu_hours(out) == pytest.approx(2 * per_dataset, rel=1e-3)  # two datasets, seed 1
    assert "Test GPU, torch 2.14.1, commit abc1234, 2026-12-01T00:00:00Z" in out
    assert not re.search(r"\bestimate\b", out)
    assert "16 GPUs" in out


def test_a_missing_row_is_named_and_the_grids_estimate_stands_in(tmp_path, capsys):
    measured = ROWS[:-1]  # no adversarial row for x4 VGG_GAN: its two models fall back to 0.01 GPU-h each
    l1_x2, l1_x4, warmup_x2, adversarial_x2, _ = measured
    per_dataset = (gpu_hours(l1_x2, 400) + gpu_hours(l1_x4, 400)
                   + gpu_hours(warmup_x2, 390) + gpu_hours(adversarial_x2, 10))
    assert main(["plan", "--only", EDSR_ONLY, "--calibration", calibration_file(tmp_path / "c.json", measured)]) == 0
    out = capsys.readouterr().out
    assert "EDSR x4 VGG_GAN phase adversarial at batch 8, patch 32" in out
    assert re.search(r"EDSR x4 VGG_GAN .* estimate$", out, re.MULTILINE)
    assert total_gpu_hours(out) == pytest.approx(2 * per_dataset + 2 * 0.01, rel=1e-3)


def test_a_row_measured_at_another_patch_size_does_not_count(tmp_path, capsys):
    other_patch = [{**ROWS[0], "patch_size": 96}, *ROWS[1:]]
    assert main(["plan", "--only", EDSR_ONLY, "--calibration", calibration_file(tmp_path / "c.json", other_patch)]) == 0
    assert "EDSR x2 L1 phase l1 at batch 8, patch 48" in capsys.readouterr().out


def test_without_a_calibration_file_the_cost_is_the_grids_estimate(capsys):
    assert main(["plan", "--only", EDSR_ONLY]) == 0
    cmd_plan(argparse.Namespace(grid="smoke", only=EDSR_ONLY))  # as run calls it: its arguments have no --calibration
    out = capsys.readouterr().out
    assert out.count("8 trials x 0.01 GPU-h = 0.08 GPU-hours") == 2 and "measured" not in out


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ({"commit": None}, "commit: None is not allowed; expected a string"),
    ({"rows": [{**ROWS[0], "seconds_per_iteration": -0.5}]},
     "rows[0]: seconds_per_iteration: -0.5 is not allowed; expected a positive number"),
    ({"rows": [{key: value for key, value in ROWS[0].items() if key != "gpu_share"}]},
     "rows[0].gpu_share: missing; expected a number"),
    ({"rows": [ROWS[0], ROWS[0]]}, "rows[1]: measures the same arch, scale, loss, phase"),
])
def test_a_bad_calibration_file_is_one_error_line_with_exit_status_2(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    if isinstance(content, str):
        path.write_text(content)
    else:
        calibration_file(path, **content)
    assert main(["plan", "--calibration", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [captured.err.strip()] and captured.err.startswith(f"error: {path}: ")
    assert message in captured.err


def test_the_h200_figures_measured_with_cuda_graphs_cost_the_paper_grid_352_gpu_hours_one_trial_per_gpu(capsys):
    calibration = Path(__file__).parents[1] / "bench" / "h200-measured.json"
    assert main(["plan", "--grid", "paper", "--calibration", str(calibration)]) == 0
    out = capsys.readouterr().out
    assert "commit ee65ddb" in out
    # EDSR 79.2 + RDN 90.9 + RCAN 181.6: RCAN x4 L1 alone is 300,000 x 0.0636 s = 5.3 GPU-h
    assert float(re.search(r"108 trials = ([0-9.]+) GPU-hours", out).group(1)) == pytest.approx(351.6, abs=0.1)
    assert re.search(r"RCAN x4 L1 +0\.0636 +5\.3 +6 +31\.8", out)
    assert not re.search(r"\bestimate\b", out.split("superresolve and classifiers")[1].split("superresolve ")[0])


def test_issue_13s_h200_figures_cost_the_paper_grid_about_1270_gpu_hours(capsys):
    calibration = Path(__file__).parents[1] / "bench" / "h200-issue13.json"
    assert main(["plan", "--grid", "paper", "--calibration", str(calibration)]) == 0
    out = capsys.readouterr().out
    assert float(re.search(r"108 trials = ([0-9.]+) GPU-hours", out).group(1)) == pytest.approx(1270, rel=0.03)
    assert not re.search(r"\bestimate\b", out)

