"""Storage roots: local folders and S3 (a real S3 protocol server on loopback), one interface."""

import os
import socket
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import _free_port, wait_for
from srfp.storage import Storage, StorageError


def test_local_writes_are_atomic_and_leave_no_temporary_files(tmp_path):
    storage = Storage(tmp_path / "run")
    storage.write_text("models/a.json", "{}")
    storage.write_bytes("models/a.json", b'{"x": 1}')
    assert storage.read_text("models/a.json") == '{"x": 1}'
    assert os.listdir(tmp_path / "run" / "models") == ["a.json"]


def test_a_failed_local_write_keeps_the_old_content(tmp_path, monkeypatch):
    storage = Storage(tmp_path)
    storage.write_text("state.txt", "old")

    def broken_replace(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        storage.write_text("state.txt", "new")
    assert storage.read_text("state.txt") == "old"
    assert os.listdir(tmp_path) == ["state.txt"]


def test_a_relative_root_is_made_absolute_for_workers_in_other_directories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = Storage("runs/smoke")
    assert storage.uri == (tmp_path / "runs" / "smoke").as_posix()


def test_listing_exists_and_delete(tmp_path):
    storage = Storage(tmp_path)
    for path in ("sr/model_id=a/part-0.parquet", "sr/model_id=a/_SUCCESS", "sr/model_id=b/part-0.parquet"):
        storage.write_bytes(path, b"x")
    assert storage.list("sr", recursive=True) == ["sr/model_id=a/_SUCCESS", "sr/model_id=a/part-0.parquet",
                                                  "sr/model_id=b/part-0.parquet"]
    assert storage.list_dirs("sr") == ["sr/model_id=a", "sr/model_id=b"]
    assert storage.list("missing") == []
    assert storage.is_file("sr/model_id=a/_SUCCESS") and not storage.exists("sr/model_id=c")
    storage.delete("sr/model_id=a")
    assert storage.list_dirs("sr") == ["sr/model_id=b"]


def test_unsupported_uris_are_rejected():
    with pytest.raises(StorageError, match="use a local folder or s3://bucket/prefix"):
        Storage("gs://bucket/run")
    with pytest.raises(StorageError, match="has no bucket"):
        Storage("s3:///run")


def test_s3_root_reads_and_writes_through_the_endpoint_override(s3_bucket, boto3_client):
    storage = Storage(f"s3://{s3_bucket}/runs/one")
    storage.write_text("models/EDSR-div2k-x2-L1-s1.json", '{"arch": "EDSR"}')
    assert storage.read_text("models/EDSR-div2k-x2-L1-s1.json") == '{"arch": "EDSR"}'
    assert storage.list("models") == ["models/EDSR-div2k-x2-L1-s1.json"]
    # boto3, a second client, sees the same object at the same key.
    body = boto3_client.get_object(Bucket=s3_bucket, Key="runs/one/models/EDSR-div2k-x2-L1-s1.json")["Body"].read()
    assert body == b'{"arch": "EDSR"}'
    assert storage.uri_of("models") == f"s3://{s3_bucket}/runs/one/models"


def test_parquet_written_through_s3_storage_reads_back_with_pyarrow(s3_bucket, boto3_client):
    storage = Storage(f"s3://{s3_bucket}/run")
    table = pa.table({"model_id": ["a", "b"], "psnr": [30.5, 31.0]})
    pq.write_table(table, storage.path("sr/part-0.parquet"), filesystem=storage.fs)
    assert pq.read_table(storage.path("sr/part-0.parquet"), filesystem=storage.fs).equals(table)
    keys = [o["Key"] for o in boto3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert keys == ["run/sr/part-0.parquet"]


@pytest.fixture
def s3_server_with_auth():
    """A second loopback S3 server that checks access keys (and knows none)."""
    port = _free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    server = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: _port_open(port), timeout=30, what="moto_server")
    yield f"http://127.0.0.1:{port}"
    server.kill()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _cli(arguments, **env):
    return subprocess.run([sys.executable, "-m", "srfp.grid", *arguments], capture_output=True, text=True,
                          env={**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **env}, timeout=120)


def test_wrong_s3_credentials_are_a_clear_error_that_never_shows_the_secret(s3_server_with_auth, tmp_path):
    secret = "wrong-secret-do-not-print-1234"
    result = _cli(["photos", "--root", "s3://bucket/run"], AWS_ACCESS_KEY_ID="AKIAWRONG", AWS_SECRET_ACCESS_KEY=secret,
                  AWS_REGION="us-east-1", AWS_ENDPOINT_URL=s3_server_with_auth)
    assert result.returncode == 2
    assert "access denied. Check the AWS credentials" in result.stderr and "s3://bucket/run" in result.stderr
    assert secret not in result.stdout + result.stderr


def test_missing_s3_credentials_say_what_to_set(tmp_path):
    result = _cli(["status", "--root", "s3://bucket/run"], AWS_CONFIG_FILE=str(tmp_path / "none"),
                  AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true",
                  AWS_REGION="us-east-1", HOME=str(tmp_path))
    assert result.returncode == 2
    assert "s3://bucket/run: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in result.stderr
