"""A real multi-node Ray cluster (a head and a second node started with `ray start` on this machine):
the whole smoke pipeline runs against it through its address, on the loopback S3 server, and both nodes work."""

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from conftest import S3_KEYS, _free_port, processes, wait_for
from srfp.gridspec import load_grid
from srfp.storage import Storage


def two_model_grid(path) -> str:
    """The smoke grid cut to EDSR x2 and x4 with L1 (2 models), trained briefly, and attribution."""
    grid = yaml.safe_load(open(load_grid("smoke").source))
    grid["models"].update(archs=["EDSR"], datasets=["div2k"], losses=["L1"])
    grid["training"].update(iterations=20, checkpoint_every=10, lr_halve_every=10)
    grid["classifier"].update(head_epochs=1, finetune_epochs=1)
    grid["tasks"] = {"attribution": True, "parsers": [], "all_model_parsers": []}
    path.write_text(yaml.safe_dump(grid))
    return str(path)


@pytest.fixture
def cluster(tmp_path, s3_server):
    """Two Ray nodes of one CPU each, with the loopback S3 settings in their environment."""
    temp_dir = f"/tmp/srfp-cluster-{os.getpid()}"
    env = {**os.environ, **S3_KEYS, "AWS_ENDPOINT_URL": s3_server, "SRFP_CACHE": str(tmp_path / "cache"),
           "RAY_AUTH_MODE": "token"}  # every node and driver of the cluster uses the token in ~/.ray/auth_token
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"], env=env, check=True,
                   capture_output=True)  # creates the token only when there is none
    ray = [sys.executable, "-m", "ray.scripts.scripts", "start", "--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run([*ray, "--head", f"--port={port}", f"--temp-dir={temp_dir}", "--include-dashboard=false",
                        f"--dashboard-port={_free_port()}"], env=env, check=True, capture_output=True)
        subprocess.run([*ray, f"--address=127.0.0.1:{port}"], env=env, check=True, capture_output=True)
        yield f"127.0.0.1:{port}", {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        cluster = lambda: [pid for pid, (_, _, command) in processes().items()  # noqa: E731
                           if temp_dir in command or f":{port}" in command]
        for pid in cluster():
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not cluster(), timeout=60, what="the cluster's processes to end")


def test_the_pipeline_runs_on_two_ray_nodes_with_an_s3_root(cluster, tmp_path, boto3_client):
    address, env = cluster
    boto3_client.create_bucket(Bucket="cluster")
    grid = two_model_grid(tmp_path / "two.yaml")
    run = subprocess.run([sys.executable, "-m", "srfp.grid", "run", "--grid", grid, "--root", "s3://cluster/run",
                          "--address", address], env=env, capture_output=True, text=True, timeout=900)
    errors = [line for line in run.stderr.splitlines() if "Error" in line or line.startswith("error:")]
    assert run.returncode == 0, run.stdout[-2000:] + "\n".join(errors[-20:])
    nodes = subprocess.run([sys.executable, "-c", "import json, ray; ray.init(address=%r, log_to_driver=False); "
                            "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))" % address],
                           env=env, capture_output=True, text=True, check=True)
    alive = set(json.loads(nodes.stdout.strip().splitlines()[-1]))
    assert len(alive) == 2

    os.environ.update({**S3_KEYS, "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"]})
    root = Storage("s3://cluster/run")
    records = [json.loads(root.read_text(f"models/EDSR-div2k-x{s}-L1-s1.json")) for s in (2, 4)]
    assert {r["node"] for r in records} == alive  # the two trials ran at once, one on each node
    assert root.is_file("sr/model_id=EDSR-div2k-x4-L1-s1/_SUCCESS")
    assert root.is_file("classifiers/xception_narrow/attribution/predictions.parquet")
    assert root.is_file("report/report.md") and root.is_file("report/tables/model_quality.csv")
    keys = [o["Key"] for o in boto3_client.list_objects_v2(Bucket="cluster", Prefix="run/report/")["Contents"]]
    assert "run/report/tables/attribution_by_hyperparameter.csv" in keys

    status = subprocess.run([sys.executable, "-m", "srfp.grid", "status", "--grid", grid, "--root", "s3://cluster/run"],
                            env=env, capture_output=True, text=True, check=True).stdout
    assert "train         2 of 2 models trained" in status and "classify      1 of 1 classifiers complete" in status
    assert S3_KEYS["AWS_SECRET_ACCESS_KEY"] not in run.stdout + run.stderr + status
