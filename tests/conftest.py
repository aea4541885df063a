"""Shared fixtures: the real images in ../shared/data (skipped only when absent) and a loopback S3 server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-value-xyz",
           "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: real photos and models. Absent in a checkout without it; then the test is skipped."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    return SHARED_DATA


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server (moto) on loopback for the whole session; yields its endpoint URL."""
    port = _free_port()
    executable = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    process = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        process.kill()
        raise RuntimeError("moto_server did not start")
    yield endpoint
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def ray_local(s3_server, tmp_path_factory):
    """A local Ray (2 CPUs) for the session, started with the loopback S3 settings in its environment."""
    import ray

    from srfp.cluster import connect

    os.environ.update({**S3_KEYS, "AWS_ENDPOINT_URL": s3_server,
                       "SRFP_CACHE": str(tmp_path_factory.mktemp("pair-cache"))})
    connect(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A fresh bucket on the loopback server, with the AWS environment pointing at it; yields its name."""
    for key, value in {**S3_KEYS, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(key, value)
    bucket = f"srfp-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def boto3_client(s3_server):
    """boto3 as a second, independent S3 client."""
    return boto3.client("s3", endpoint_url=s3_server, **{k.lower(): v for k, v in S3_KEYS.items()
                                                        if k != "AWS_REGION"}, region_name="us-east-1")


def smoke_grid(adversarial: dict | None = None, **training):
    """The smoke grid with some training settings replaced (``iterations=6``, ``adversarial={...}``)."""
    import dataclasses

    from srfp.gridspec import load_grid

    grid = load_grid("smoke")
    if adversarial:
        training["adversarial"] = dataclasses.replace(grid.training.adversarial, **adversarial)
    return dataclasses.replace(grid, training=dataclasses.replace(grid.training, **training))


def trained_root(tmp_path, grid, specs):
    """A storage root with the photo set built and the given models trained (plain PyTorch, no Ray)."""
    from srfp.photos import build_photos
    from srfp.sisr.train import train_model
    from srfp.storage import Storage

    storage = Storage(tmp_path / "run")
    build_photos(grid.photos, storage, log=lambda *_: None)
    for spec in specs:
        train_model(spec, grid, storage)
    return storage


def untrained_root(path: Path, grid, published: dict[str, int] | None = None):
    """A storage root with the photo set and a complete shard for every model of the grid, made by
    untrained (randomly initialised, seeded per model) networks of each model's arch and scale: real
    super-resolution with distinct fingerprints in seconds. ``published`` adds models of another
    source ({name: scale}) made the same way."""
    import torch

    from srfp.photos import build_photos, read_manifest, read_photo
    from srfp.sisr.archs import TINY, create_model
    from srfp.spec import PublishedModel
    from srfp.storage import Storage
    from srfp.superres.core import superresolve_photo
    from srfp.superres.shards import ModelInfo, make_row, write_shard

    storage = Storage(path)
    build_photos(grid.photos, storage, log=lambda *_: None)
    photos = [(photo, read_photo(storage, photo["image_id"]))
              for photo in read_manifest(storage).to_dict("records")]
    models = [(ModelInfo.of_spec(spec), spec.arch) for spec in grid.specs()]
    models += [(ModelInfo(PublishedModel(name, scale).model_id, "pretrained", name, "NA", scale, "NA", None), "RCAN")
               for name, scale in (published or {}).items()]
    for number, (info, arch) in enumerate(models):
        torch.manual_seed(number)
        network = create_model(arch, info.scale, **(grid.archs.get(arch) or TINY[arch])).eval()
        rows = [make_row(info, photo, *superresolve_photo(network, image, info.scale, torch.device("cpu"), 0, 16))
                for photo, image in photos]
        write_shard(storage, info, rows, "float32")
    return storage


@pytest.fixture(scope="session")
def classified_root(tmp_path_factory, ray_local):
    """The smoke grid's 16 models and two published ones (untrained networks), classified through the CLI
    with 2 epochs (head, then all) of one crop per image, in one `classify`: attribution, the scale parser
    holding out L1 and the scale parser of every model side by side (Tune trials two at a time, their
    workers half a CPU each), then attribution of the published models from the attribution backbone."""
    import yaml

    from srfp import grid as cli
    from srfp.gridspec import load_grid

    folder = tmp_path_factory.mktemp("classified")
    root = untrained_root(folder / "run", load_grid("smoke"), published={"ESRGAN": 4, "SwinIR": 2})
    quick = yaml.safe_load(open(load_grid("smoke").source))
    quick["classifier"].update(crops_per_image=1, head_epochs=1, finetune_epochs=1)
    quick["tasks"] = {"attribution": True, "parsers": [{"target": "scale", "holdouts": ["L1"]}],
                      "all_model_parsers": ["scale"]}
    (folder / "quick.yaml").write_text(yaml.safe_dump(quick))
    assert cli.main(["classify", "--grid", str(folder / "quick.yaml"), "--root", root.uri]) == 0
    return root


def start_cli(arguments: list[str], tmp_path: Path) -> subprocess.Popen:
    """``python -m srfp.grid ARGUMENTS`` in its own process group (so a test can kill all it started)."""
    env = {**os.environ, "SRFP_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path / f"cli-{time.monotonic_ns()}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "srfp.grid", *arguments], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(condition, timeout=240, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, command line) of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                table[int(entry.name)] = (int(fields[1]), int(fields[2]), command)
            except (OSError, ValueError):
                continue
    return table


def ray_workers(driver: subprocess.Popen, title: str) -> list[int]:
    """Worker processes whose title starts with ``title`` (``ray::ImplicitFunc``, ``ray::RayTrainWorker``...)
    in the local Ray that a CLI process started (the children of its raylet)."""
    table = processes()
    raylets = {pid for pid, (_, group, command) in table.items() if group == driver.pid and "raylet" in command}
    return [pid for pid, (parent, _, command) in table.items() if parent in raylets and command.startswith(title)]


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a CLI process and everything it started (its local Ray), and wait until all are gone."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    wait_for(lambda: not any(group == process.pid for _, group, _ in processes().values()), timeout=60,
             what="the killed process group to end")


def cuda_tagged_bytes(obj) -> bytes:
    """``torch.save`` of ``obj`` with every storage recorded as on ``cuda:0``, as a checkpoint written on a GPU is:
    loading it without ``map_location`` fails on a machine without CUDA."""
    import io

    import torch

    def tag(storage):
        return "cuda:0"

    def restore(storage, location):
        return None  # the built-in CUDA deserializer handles "cuda:0"

    torch.serialization.register_package(-100, tag, restore)  # consulted before the built-in CPU tagger
    try:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
    finally:  # torch has no public unregister
        torch.serialization._package_registry[:] = [entry for entry in torch.serialization._package_registry
                                                    if entry[1] is not tag]
    return buffer.getvalue()
