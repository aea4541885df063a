"""The command line: plan prints the whole plan; user errors are one clear line and exit status 2."""

import os
import subprocess
import sys

from srfp.grid import main


def test_plan_prints_models_counts_tasks_and_cost(capsys):
    assert main(["plan", "--grid", "paper"]) == 0
    out = capsys.readouterr().out
    assert "108 models, 19 classifier tasks" in out
    assert "EDSR-div2k-x2-L1-s1" in out and "RCAN-div2k-x4-ResNet_GAN-s3" in out
    assert "arch     EDSR: 36, RCAN: 36, RDN: 36" in out
    assert "seed     1: 72, 2: 18, 3: 18" in out
    assert "parse-dataset-holdout-RCAN" in out and "48 / 24" in out
    assert "108 trials = 270 GPU-hours" in out  # 36 x 6 / 2 + 36 x 6 / 4 + 36 x 6 / 2: EDSR, RDN, RCAN share GPUs
    assert "RDN     36 trials x 1.5 GPU-h (0.25 GPU, 2 CPU per trial: 4 per GPU)" in out


def test_only_selects_a_subset_of_models(capsys):
    assert main(["plan", "--grid", "paper", "--only", "arch=RCAN,scale=4,seed=s1"]) == 0
    out = capsys.readouterr().out
    assert "12 models" in out and "EDSR-" not in out.split("published models")[0]


def test_user_errors_are_one_line_with_exit_status_2(capsys):
    assert main(["plan", "--grid", "paper", "--only", "arch=VDSR"]) == 2
    assert "arch=VDSR matches no model of the grid; values in the grid: EDSR, RCAN, RDN" in capsys.readouterr().err
    assert main(["plan", "--grid", "missing.yaml"]) == 2


def test_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "srfp.grid", "plan"], capture_output=True, text=True, check=True)
    assert "grid smoke" in result.stdout


def test_run_goes_through_every_stage_into_a_relative_root(tmp_path):
    import yaml

    from srfp.gridspec import resolve_grid_path

    env = {**os.environ, "SRFP_CACHE": str(tmp_path / "cache")}
    env.pop("RAY_ADDRESS", None)
    grid = yaml.safe_load(resolve_grid_path("smoke").read_text())
    grid["training"].update(iterations=40, checkpoint_every=20, lr_halve_every=20)
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(grid))
    result = subprocess.run([sys.executable, "-m", "srfp.grid", "run", "--grid", "short.yaml", "--root", "relative/run",
                             "--only", "arch=EDSR,dataset=div2k,loss=L1,scale=2"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    stages = [line for line in result.stdout.splitlines() if line.startswith("== ")]
    names = ["plan", "photos", "train", "superresolve", "published superresolve", "classify", "report"]
    assert [line for line in stages if " done in " not in line] == [f"== {name}" for name in names]
    assert [line.split(" done in ")[0] for line in stages if " done in " in line] == [f"== {name}" for name in [*names, "run"]]
    assert "published superresolve: skipped; no weights folder" in result.stdout
    assert "classify: skipped; classifiers compare every model of the grid" in result.stdout
    assert "Running Dataset" not in result.stdout + result.stderr  # no terminal: Ray Data's progress stays out of logs
    root = tmp_path / "relative" / "run"
    assert (root / "photos" / "manifest.parquet").is_file()
    assert (root / "models" / "EDSR-div2k-x2-L1-s1.safetensors").is_file()
    assert "EDSR-div2k-x2-L1-s1" in (root / "models" / "psnr.csv").read_text()
    assert (root / "sr" / "model_id=EDSR-div2k-x2-L1-s1" / "_SUCCESS").is_file()


def test_only_with_empty_items_is_refused_rather_than_selecting_everything(capsys):
    assert main(["plan", "--grid", "smoke", "--only", ",,,"]) == 2
    assert "--only: '' is not allowed; expected ATTRIBUTE=VALUE" in capsys.readouterr().err
