"""A real multi-node Ray cluster (a head and a second node started with `ray start` on this machine):
the whole smoke pipeline runs against it through its address, its training data and root on the loopback
S3 server, and both nodes work; a data folder only the driver's node has stops `train` before any trial.
A local Ray, as `connect` starts it without an address, listens on the loopback interface only."""

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import yaml

from conftest import S3_KEYS, _free_port, processes, wait_for
from srfp.datasets import bundled_photos
from srfp.gridspec import Resources, load_grid
from srfp.sisr.tuning import trial_nodes
from srfp.storage import Storage


def write_training_data(storage: Storage) -> None:
    """The bundled photos in the layouts `data download` writes: everyday as DIV2K (its last photo the
    validation image, as the smoke grid holds it out), science as the flat Flickr2K folder."""
    everyday = sorted((bundled_photos() / "everyday").iterdir())
    for path in everyday:
        storage.write_bytes(f"DIV2K/DIV2K_{'valid' if path == everyday[-1] else 'train'}_HR/{path.name}",
                            path.read_bytes())
    for path in sorted((bundled_photos() / "science").iterdir()):
        storage.write_bytes(f"Flickr2K/{path.name}", path.read_bytes())


def two_model_grid(path, data: str) -> str:
    """The smoke grid cut to EDSR x2 and x4 with L1 (2 models), trained briefly, and attribution, with its
    training data in the official layouts under ``data``."""
    grid = yaml.safe_load(open(load_grid("smoke").source))
    grid["models"].update(archs=["EDSR"], datasets=["div2k"], losses=["L1"])
    grid["data"].update(div2k={"layout": "div2k", "uri": f"{data}/DIV2K"},
                        flickr2k={"layout": "flickr2k", "uri": f"{data}/Flickr2K"})
    grid["training"].update(iterations=20, checkpoint_every=10, lr_halve_every=10)
    grid["classifier"].update(head_epochs=1, finetune_epochs=1)
    grid["tasks"] = {"attribution": True, "parsers": [], "all_model_parsers": []}
    path.write_text(yaml.safe_dump(grid))
    return str(path)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_server):
    """Two Ray nodes of one CPU each, with the loopback S3 settings in their environment. The head (where the
    driver runs) and the second node have different home folders, as two machines would."""
    folder = tmp_path_factory.mktemp("cluster")
    temp_dir = f"/tmp/srfp-cluster-{os.getpid()}"
    env = {**os.environ, **S3_KEYS, "AWS_ENDPOINT_URL": s3_server, "SRFP_CACHE": str(folder / "cache"),
           "HOME": str(folder / "home"),
           "RAY_AUTH_MODE": "token"}  # every node and driver of the cluster uses the token in ~/.ray/auth_token
    env.pop("RAY_ADDRESS", None)
    second_node_env = {**env, "HOME": str(folder / "second-home"),
                       "RAY_AUTH_TOKEN_PATH": str(folder / "home" / ".ray" / "auth_token")}
    port = _free_port()
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"], env=env, check=True,
                   capture_output=True)
    ray = [sys.executable, "-m", "ray.scripts.scripts", "start", "--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run([*ray, "--head", f"--port={port}", f"--temp-dir={temp_dir}", "--include-dashboard=false",
                        f"--dashboard-port={_free_port()}"], env=env, check=True, capture_output=True)
        subprocess.run([*ray, f"--address=127.0.0.1:{port}"], env=second_node_env, check=True, capture_output=True)
        yield f"127.0.0.1:{port}", {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    finally:
        cluster = lambda: [pid for pid, (_, _, command) in processes().items()  # noqa: E731
                           if temp_dir in command or f":{port}" in command]
        for pid in cluster():
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not cluster(), timeout=60, what="the cluster's processes to end")


def test_the_pipeline_runs_on_two_ray_nodes_with_its_data_and_root_on_s3(cluster, tmp_path, boto3_client,
                                                                          monkeypatch):
    address, env = cluster
    for key in (*S3_KEYS, "AWS_ENDPOINT_URL"):
        monkeypatch.setenv(key, env[key])
    boto3_client.create_bucket(Bucket="cluster")
    write_training_data(Storage("s3://cluster/data"))
    grid = two_model_grid(tmp_path / "two.yaml", "s3://cluster/data")
    run = subprocess.run([sys.executable, "-m", "srfp.grid", "run", "--grid", grid, "--root", "s3://cluster/run",
                          "--address", address], env=env, capture_output=True, text=True, timeout=900)
    errors = [line for line in run.stderr.splitlines() if "Error" in line or line.startswith("error:")]
    assert run.returncode == 0, run.stdout[-2000:] + "\n".join(errors[-20:])
    assert "train: training data readable on 1 other node" in run.stdout
    nodes = subprocess.run([sys.executable, "-c", "import json, ray; ray.init(address=%r, log_to_driver=False); "
                            "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))" % address],
                           env=env, capture_output=True, text=True, check=True)
    alive = set(json.loads(nodes.stdout.strip().splitlines()[-1]))
    assert len(alive) == 2

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


def test_a_data_folder_only_the_drivers_node_has_stops_train_before_any_trial(cluster, tmp_path):
    address, env = cluster
    write_training_data(Storage(os.path.join(env["HOME"], "srfp-data")))  # the second node's ~ has none
    grid = two_model_grid(tmp_path / "local.yaml", "~/srfp-data")
    run = subprocess.run([sys.executable, "-m", "srfp.grid", "train", "--grid", grid, "--root", str(tmp_path / "run"),
                          "--address", address], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    error = next(line for line in run.stderr.splitlines() if line.startswith("error:"))
    assert re.match(r"error: trials on [\d.]+ \(node [0-9a-f]{8}\) cannot read the training data: ", error)
    assert error.count("(node ") == 1  # the second node; the head, where the driver runs, has the data
    assert "div2k: no training images at ~/srfp-data/DIV2K (layout div2k)" in error
    assert "put it on S3 (`python -m srfp.grid data download --dest s3://BUCKET/PREFIX`" in error
    assert "or on a shared file system mounted at the same path on every node" in error
    assert not (tmp_path / "run" / "tune").exists() and not (tmp_path / "run" / "models").exists()


def test_the_nodes_that_can_take_a_trial():
    def node(name, alive=True, **resources):
        return {"NodeID": name, "Alive": alive, "Resources": resources}

    nodes = [node("head", CPU=0.0), node("gpu", CPU=8.0, GPU=1.0), node("lost", alive=False, CPU=8.0, GPU=1.0),
             node("cpu", CPU=8.0)]
    assert [n["NodeID"] for n in trial_nodes(nodes, Resources(cpus=8, gpus=1))] == ["gpu"]
    assert [n["NodeID"] for n in trial_nodes(nodes, Resources(cpus=1, gpus=0))] == ["gpu", "cpu"]


def descendants(pid: int) -> set[int]:
    """``pid`` and every process it started, directly or not."""
    children: dict[int, list[int]] = {}
    for child, (parent, _, _) in processes().items():
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        found.add(todo[-1])
        todo.extend(children.get(todo.pop(), []))
    return found


def test_a_local_ray_listens_on_the_loopback_interface_only(ray_local):
    """GCS, raylet, the driver's and the workers' gRPC servers, the agents and the metrics endpoint of the
    local Ray that connect() started in this process (its processes are this one and its descendants)."""
    import ray

    ray.get(ray.remote(lambda: None).remote())  # a worker, listening as every worker does
    ours = descendants(os.getpid())
    sockets = subprocess.run(["ss", "--no-header", "--listening", "--tcp", "--udp", "--numeric", "--processes"],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    listening = [line.split()[4] for line in sockets if {int(p) for p in re.findall(r"pid=(\d+)", line)} & ours]
    assert len(listening) >= 5, sockets  # GCS, raylet (2), the driver, a worker, the agents, the dashboard
    assert all(re.fullmatch(r"(127\.0\.0\.1|\[::ffff:127\.0\.0\.1\]|\[::1\]):\d+", address)
               for address in listening), listening


def test_a_parquet_read_in_a_worker_starts_no_footer_reader(ray_local, tmp_path):
    """Ray Data's Parquet reader V2 starts a pool of actors to read footers for every read (32 by default, a process
    each); connect() has the driver and every worker of the run read with V1, which starts none."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    from ray.util.state import list_actors

    for number in range(3):
        pq.write_table(pa.table({"number": [number]}), tmp_path / f"{number}.parquet")
    paths = [str(path) for path in sorted(tmp_path.glob("*.parquet"))]

    def footer_readers() -> int:  # the state API lists finished actors too; the address: this session's Ray, not
        # the latest one started on the machine (the two-node cluster of the tests above, while its fixture lives)
        return len(list_actors(address=ray.get_runtime_context().gcs_address, limit=10_000,
                               filters=[("class_name", "=", "FooterReader")], raise_on_missing_output=False))

    before = footer_readers()
    rows = ray.get(ray.remote(lambda files: ray.data.read_parquet(files).take_all()).remote(paths))
    assert sorted(row["number"] for row in rows) == [0, 1, 2]
    assert footer_readers() - before == 0
    assert not ray.data.DataContext.get_current().use_datasource_v2  # the driver's reads too
