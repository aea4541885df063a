"""cluster.yaml: valid for Ray's cluster launcher, and shaped for the paper grid on AWS."""

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from srfp.gridspec import load_grid

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def config() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_cluster_yaml_passes_rays_own_cluster_config_schema():
    validate_config(prepare_config(config()))


def test_a_misspelled_field_fails_the_same_check():
    broken = config()
    broken["available_node_types"]["gpu_spot"]["max_worker"] = 3
    with pytest.raises(Exception, match="max_worker"):
        validate_config(prepare_config(broken))


def test_gpu_workers_on_demand_and_on_spot_within_the_autoscaling_bounds():
    cluster = config()
    types = cluster["available_node_types"]
    workers = {name: t for name, t in types.items() if name != cluster["head_node_type"]}
    assert {t["node_config"]["InstanceType"] for t in workers.values()} == {"g5.2xlarge"}  # 1 GPU, 8 vCPUs
    assert [t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") for t in workers.values()].count("spot") == 1
    assert all(t["min_workers"] == 0 for t in workers.values())
    assert sum(t["max_workers"] for t in workers.values()) == cluster["max_workers"]
    assert types[cluster["head_node_type"]]["resources"] == {"CPU": 0}  # no trial lands on the head
    paper = load_grid("paper")
    assert paper.training.trial.cpus <= 8 and paper.classifier.worker.cpus <= 8 and paper.superres.actor.gpus == 0.5


def test_every_node_installs_this_checkout_and_reaches_s3_through_an_instance_profile():
    cluster = config()
    assert cluster["file_mounts"]["~/srfp"] == "."
    assert any("pip install" in c and "-e ~/srfp" in c for c in cluster["setup_commands"])
    assert all(t["node_config"]["IamInstanceProfile"]["Name"] == "srfp-s3-access"
               for t in cluster["available_node_types"].values())
    text = CLUSTER.read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text and "aws_secret_access_key" not in text
    assert "--dashboard-port=8265" in " ".join(cluster["head_start_ray_commands"])
    assert all("RAY_AUTH_MODE=token" in " ".join(cluster[k]) for k in ("head_start_ray_commands", "worker_start_ray_commands"))
